"""Debian's Chromium driven by Playwright, the way the tests need it.

Playwright's own browser download does not work on these machines: the tests launch
``/usr/bin/chromium`` (installed by ``scripts/setup``) with autoplay allowed and sound on
(Playwright mutes by default), headless, with the background networking that a closed
network refuses switched off.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium_path() -> str | None:
    return CHROMIUM if shutil.which(CHROMIUM) else None


@contextmanager
def chromium_page() -> Iterator[Any]:
    """A new page in a fresh headless Chromium."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            ignore_default_args=["--mute-audio"],
        )
        try:
            yield browser.new_page()
        finally:
            browser.close()
