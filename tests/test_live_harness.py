"""The shipped live harness (presenter/testing/live_harness.py) without a browser: Playwright,
a dev extra, is imported only when a browser starts, and its absence says how to install it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from presenter.testing.live_harness import chromium
from tests.conftest import REPO


def test_importing_the_harness_does_not_import_playwright() -> None:
    code = "import sys, presenter.testing.live_harness; print('playwright' in sys.modules)"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == "False"


def test_without_playwright_starting_a_browser_names_the_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "playwright", None)
    monkeypatch.setitem(sys.modules, "playwright.sync_api", None)
    with pytest.raises(ImportError, match=r"Playwright, a dev extra: pip install"), chromium():
        pass
