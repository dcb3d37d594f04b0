"""Shared fixtures: where tests write what a person should look at."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.data.prep.pipeline import prepare
from engine.data.synth.corpus import CorpusPlan, generate_corpus

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def test_output() -> Path:
    """``test-output/`` at the repository root (or $PRESENTER_TEST_OUTPUT): kept after tests."""
    path = Path(os.environ.get("PRESENTER_TEST_OUTPUT", REPO / "test-output"))
    path.mkdir(parents=True, exist_ok=True)
    return path


SMALL_CORPUS_PLAN = CorpusPlan(minutes=0.3, seed=3)


@dataclass(frozen=True)
class SmallDataset:
    corpus: Path  # written by `data synth`
    dataset: Path  # the corpus prepared by `data prep`


@pytest.fixture(scope="session")
def small_dataset(tmp_path_factory: pytest.TempPathFactory) -> SmallDataset:
    """A small real corpus of the default avatar (all three speech sources), prepared.

    Made once per test session (about a minute) and shared by every test that needs data.
    """
    root = tmp_path_factory.mktemp("small-corpus")
    generate_corpus(root / "corpus", plan=SMALL_CORPUS_PLAN, workers=2)
    prepare([root / "corpus" / "clips"], root / "dataset", workers=1)
    return SmallDataset(corpus=root / "corpus", dataset=root / "dataset")
