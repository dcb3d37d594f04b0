"""A spoken utterance with its phone and word timings: what every speech source returns."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from engine.speech.phonemes import ALL_PHONES


@dataclass(frozen=True, kw_only=True)
class TimedSpan:
    """A label over [start, end) seconds from the start of the utterance's audio."""

    label: str
    start: float
    end: float


@dataclass(frozen=True, kw_only=True)
class Utterance:
    """Mono float32 speech in [-1, 1] at its native rate, with ARPAbet phone and word timings.

    ``phones`` cover the audio from 0 to its end without gaps (silences are ``SIL`` spans).
    """

    audio: np.ndarray
    sample_rate: int
    text: str
    phones: tuple[TimedSpan, ...]
    words: tuple[TimedSpan, ...] = ()
    source: str = ""  # "espeak" | "piper" | "human"
    voice: str = ""  # voice / speaker identifier within the source
    extra: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.audio.ndim != 1 or self.audio.dtype != np.float32:
            raise ValueError(
                f"audio must be 1-D float32, got {self.audio.dtype} {self.audio.shape}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")
        for span in self.phones:
            if span.label not in ALL_PHONES:
                raise ValueError(f"phone {span.label!r} is not in the project's phone set")
            if span.end < span.start:
                raise ValueError(f"phone span ends before it starts: {span}")

    @property
    def duration(self) -> float:
        return len(self.audio) / self.sample_rate
