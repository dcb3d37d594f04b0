"""Shared fixtures: where tests write what a person should look at."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def test_output() -> Path:
    """``test-output/`` at the repository root (or $PRESENTER_TEST_OUTPUT): kept after tests."""
    path = Path(os.environ.get("PRESENTER_TEST_OUTPUT", REPO / "test-output"))
    path.mkdir(parents=True, exist_ok=True)
    return path
