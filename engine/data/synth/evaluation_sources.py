"""Speech sources for evaluation only: every clip they give is in the held-out split.

- ``flite``: a text-to-speech engine that no training source uses (Flite's clustergen
  voices slt, rms and awb in turn, see ``engine.speech.flite``), over a fixed list of
  sentences from the sentence generator with a seed of their own;
- ``human2``: a second real speaker, the announcer of Warzone 2100
  (``engine.speech.warzone_announcer``), aligned with pocketsphinx like the first one.

Their clip sets are fixed: a plan's minutes, seed and shares do not change them and they
are never topped up, so figures measured on them compare across corpora. Each is 2.5 to 3
minutes of speech. Planning them never changes the clips of the training sources.
"""

from __future__ import annotations

from typing import Final

import numpy as np

from engine.data.synth.corpus import EVALUATION_ONLY_SOURCES, ClipSpec, _stable_hash
from engine.errors import EngineError
from engine.speech.utterance import Utterance

FLITE_CLIP_COUNT: Final = 30  # about 5.8 s of speech each
FLITE_SENTENCE_SEED: Final = 909_090_909  # the sentences of no other plan
FLITE_STRETCH_RANGE: Final = (0.9, 1.15)  # duration stretch, drawn per clip
HUMAN2_CLIP_COUNT: Final = 105  # about 1.45 s of speech each
SPLIT: Final = "heldout"


def plan_evaluation_clips(sources: tuple[str, ...], *, limit: int | None = None) -> list[ClipSpec]:
    """The fixed clips of the evaluation-only sources among ``sources`` (deterministic);
    ``limit``: only the first that many of each source's list."""
    specs: list[ClipSpec] = []
    if "flite" in sources:
        from engine.speech.flite import FLITE_VOICES
        from engine.speech.sentences import SentenceGenerator

        rng = np.random.default_rng(FLITE_SENTENCE_SEED)
        count = min(FLITE_CLIP_COUNT, limit or FLITE_CLIP_COUNT)
        texts = SentenceGenerator(seed=FLITE_SENTENCE_SEED).take(count)
        for index, text in enumerate(texts):
            specs.append(
                ClipSpec(
                    clip_id=f"flite-{SPLIT}-{index:05d}",
                    source="flite",
                    split=SPLIT,
                    seed=_stable_hash("flite", index),
                    text=text,
                    flite_voice=FLITE_VOICES[index % len(FLITE_VOICES)],
                    length_scale=round(float(rng.uniform(*FLITE_STRETCH_RANGE)), 3),
                )
            )
    if "human2" in sources:
        from engine.speech.warzone_announcer import WarzoneAnnouncer

        lines = sorted(
            WarzoneAnnouncer().lines(), key=lambda line: _stable_hash("human2", line.name)
        )
        for line in lines[: min(HUMAN2_CLIP_COUNT, limit or HUMAN2_CLIP_COUNT)]:
            specs.append(
                ClipSpec(
                    clip_id=f"human2-{SPLIT}-{line.name}",
                    source="human2",
                    split=SPLIT,
                    seed=_stable_hash("human2", line.name),
                    text=line.transcript,
                    prompt=line.name,
                )
            )
    return specs


def check_evaluation_sources(sources: tuple[str, ...]) -> None:
    """Raise ``EngineError`` (saying what to install) when a source here is unusable."""
    if "flite" in sources:
        from engine.speech.flite import FLITE_VOICES, FliteLibrary

        library = FliteLibrary()
        for voice in FLITE_VOICES:
            library.sample_rate(voice)
    if "human2" in sources:
        from engine.speech.warzone_announcer import WarzoneAnnouncer

        WarzoneAnnouncer().lines()


class EvaluationSpeech:
    """The evaluation-only sources of one worker process, each made on first use."""

    def __init__(self) -> None:
        self._flite: object | None = None
        self._announcer: object | None = None
        self._aligner: object | None = None

    def utterance(self, spec: ClipSpec) -> Utterance:
        if spec.source not in EVALUATION_ONLY_SOURCES:
            raise EngineError(f"{spec.source} is not an evaluation-only source")
        if spec.source == "flite":
            from engine.speech.flite import FliteLibrary, FliteVoice

            if self._flite is None:
                self._flite = FliteLibrary()
            assert isinstance(self._flite, FliteLibrary)
            voice = FliteVoice(
                voice=spec.flite_voice, duration_stretch=spec.length_scale, library=self._flite
            )
            return voice.synthesize(spec.text)
        from engine.speech.alignment import ForcedAligner
        from engine.speech.warzone_announcer import WarzoneAnnouncer

        if self._announcer is None:
            self._announcer = WarzoneAnnouncer()
            self._aligner = ForcedAligner()
        assert isinstance(self._announcer, WarzoneAnnouncer)
        assert isinstance(self._aligner, ForcedAligner)
        return self._announcer.utterance(self._announcer.line(spec.prompt), aligner=self._aligner)
