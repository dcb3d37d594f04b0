"""Audio that a program pushes in as it has it: a TTS engine's frames, a call's audio.

``push(pcm, sample_rate)`` appends (mono float32 in [-1, 1], or int16), ``end()`` says that
nothing more comes: the stream plays what was pushed and the segment ends. The stream reads
as the audio arrives; when it has nothing yet it waits (the stream plays silence meanwhile
and counts a source underrun). Not a live source by default: pushed audio usually comes
faster than real time (a TTS engine) and must all be played.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Self

import numpy as np

from engine.audio import pcm_to_float
from presenter.media import AudioChunk


def as_float_mono(pcm: np.ndarray, channels: int = 1) -> np.ndarray:
    """``pcm`` (int16 or float, interleaved when ``channels`` > 1) as mono float32."""
    samples = pcm_to_float(pcm)
    if channels > 1:
        if samples.size % channels:
            raise ValueError(f"{samples.size} samples are not a whole number of {channels}")
        samples = samples.reshape(-1, channels).mean(axis=1, dtype=np.float32)
    elif samples.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {samples.shape}")
    return np.ascontiguousarray(samples, dtype=np.float32)


class PushedAudioSource:
    """An :class:`~presenter.sources.base.AudioSource` fed by ``push`` until ``end``."""

    def __init__(self, name: str = "pushed", *, live: bool = False) -> None:
        self.name = name
        self.live = live
        self.pushed_samples = 0
        self._pieces: deque[AudioChunk] = deque()
        self._pts: dict[int, int] = {}  # per sample rate: the next chunk's pts
        self._ended = False
        self._closed = False
        self._wake = asyncio.Event()

    @property
    def ended(self) -> bool:
        return self._ended or self._closed

    def push(self, pcm: np.ndarray, sample_rate: int, *, channels: int = 1) -> None:
        if self.ended:
            raise ValueError(f"source {self.name!r} has ended: it takes no more audio")
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {sample_rate}")
        samples = as_float_mono(pcm, channels)
        if not len(samples):
            return
        pts = self._pts.get(sample_rate, 0)
        self._pieces.append(AudioChunk(samples, sample_rate, pts))
        self._pts[sample_rate] = pts + len(samples)
        self.pushed_samples += len(samples)
        self._wake.set()

    def end(self) -> None:
        """Nothing more comes: the source ends once what was pushed has been read."""
        self._ended = True
        self._wake.set()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> AudioChunk:
        while not self._pieces:
            if self._ended or self._closed:
                raise StopAsyncIteration
            self._wake.clear()
            await self._wake.wait()
        if self._closed:
            raise StopAsyncIteration
        return self._pieces.popleft()

    def close(self) -> None:
        """Stop: what was pushed and not read is dropped."""
        self._closed = True
        self._pieces.clear()
        self._wake.set()
