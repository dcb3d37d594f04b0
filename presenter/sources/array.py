"""Speech already in memory (a numpy signal), e.g. PCM received whole over a socket."""

from __future__ import annotations

import numpy as np

from engine.audio import pcm_to_float
from presenter.media import CHUNK_MS
from presenter.sources.base import WholeSignalSource


class ArraySource(WholeSignalSource):
    """A mono signal at ``sample_rate`` in ~20 ms chunks (float PCM in [-1, 1] or int16)."""

    def __init__(
        self,
        audio: np.ndarray,
        sample_rate: int,
        *,
        name: str = "pcm",
        chunk_ms: float = CHUNK_MS,
        live: bool = False,
    ) -> None:
        self.audio = pcm_to_float(audio)
        if self.audio.ndim != 1:
            raise ValueError(f"audio must be mono (1-D), got shape {self.audio.shape}")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        self.sample_rate = int(sample_rate)
        super().__init__(name, chunk_ms=chunk_ms, live=live)

    async def _load(self) -> tuple[np.ndarray, int]:
        return self.audio, self.sample_rate
