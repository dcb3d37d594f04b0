"""Shared fixtures: where tests write what a person should look at, a small prepared corpus,
the shipped model on ONNX Runtime."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from engine.data.prep.pipeline import prepare
from engine.data.synth.corpus import CorpusPlan, generate_corpus

if TYPE_CHECKING:  # the engine's modules are imported where used: collection stays light
    from engine.avatar import Avatar
    from engine.avatar_model import AvatarModel
    from engine.backends import Backend
    from engine.facade import AvatarEngine

REPO = Path(__file__).resolve().parent.parent


def run_module(module: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m module args`` from the repository, its output captured as text."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture(scope="session", autouse=True)
def presenter_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """$PRESENTER_HOME in a temporary folder for the whole session (child processes inherit
    it): what the engine stores (the default avatar, compiled artefacts) never goes into the
    user's own."""
    path = tmp_path_factory.mktemp("presenter-home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PRESENTER_HOME", str(path))
        yield path


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


@dataclass(frozen=True)
class EngineParts:
    """What an ``AvatarEngine`` is made of: the model, an avatar and its runners (motion,
    the generator's encoder and synthesis)."""

    model: AvatarModel
    avatar: Avatar
    motion: Any
    encoder: Any
    synthesis: Any

    def engine(self, **config: Any) -> AvatarEngine:
        """A fresh engine on these parts; ``config``: ``EngineConfig`` fields."""
        from engine.facade import AvatarEngine, EngineConfig

        return AvatarEngine(
            model=self.model,
            avatar=self.avatar,
            config=EngineConfig(**config),
            motion_runner=self.motion,
            encoder_runner=self.encoder,
            synthesis_runner=self.synthesis,
        )


@dataclass(frozen=True)
class ShippedBackends:
    """The shipped model with its graphs on ONNX Runtime (batch 1)."""

    model: AvatarModel
    motion: Backend
    encoder: Backend
    synthesis: Backend

    def parts(self, avatar_seconds: float) -> EngineParts:
        """These backends with an idle loop of the default avatar ``avatar_seconds`` long
        (made here, not stored: the stored one is 6 s long)."""
        from engine.data.synth.default_avatar import make_default_avatar

        return EngineParts(
            model=self.model,
            avatar=make_default_avatar(seconds=avatar_seconds),
            motion=self.motion,
            encoder=self.encoder,
            synthesis=self.synthesis,
        )


@pytest.fixture(scope="session")
def shipped_backends() -> ShippedBackends:
    """The shipped model on ONNX Runtime, loaded and built once per test session."""
    from engine.avatar_model import load_avatar_model
    from engine.backends import create_backend, input_shapes
    from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis

    model = load_avatar_model()
    transformer, generator = model.motion.model.transformer, model.generator.generator
    encoder, synthesis = GeneratorEncoder(generator), GeneratorSynthesis(generator)
    return ShippedBackends(
        model=model,
        motion=create_backend("onnxrt", transformer, shapes=input_shapes(transformer, 1)),
        encoder=create_backend("onnxrt", encoder, shapes=input_shapes(encoder, 1)),
        synthesis=create_backend("onnxrt", synthesis, shapes=input_shapes(synthesis, 1)),
    )


def espeak_pcm16(text: str) -> tuple[Any, int]:
    """espeak-ng's (en-us) speech of ``text`` as int16 PCM, with its rate (22050 Hz): what a
    TTS service hands a framework."""
    from engine.audio import float_to_pcm16
    from engine.speech.espeak import EspeakVoice

    utterance = EspeakVoice(voice="en-us").synthesize(text)
    pcm = float_to_pcm16(utterance.audio)
    return pcm, utterance.sample_rate
