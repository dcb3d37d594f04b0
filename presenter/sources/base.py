"""The ``AudioSource`` protocol, a helper that cuts a whole signal into chunks and the base
of the sources that have their whole signal at once (file, text-to-speech, array)."""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import Protocol, Self, runtime_checkable

import numpy as np

from presenter.media import CHUNK_MS, AudioChunk


@runtime_checkable
class AudioSource(Protocol):
    """An async iterator of ``AudioChunk`` s that can be closed early.

    A source that delivers in real time (a microphone, a call) has ``live = True``: the
    stream then drops its backlog rather than let it become latency."""

    name: str
    live: bool

    def __aiter__(self) -> AsyncIterator[AudioChunk]: ...

    async def __anext__(self) -> AudioChunk: ...

    def close(self) -> None:
        """Stop: release what the source holds; iteration ends. Safe to call twice."""
        ...


def chunked(
    audio: np.ndarray, sample_rate: int, chunk_ms: float = CHUNK_MS
) -> Iterator[AudioChunk]:
    """``audio`` (mono) as consecutive float32 chunks of ``chunk_ms`` (the last may be short)."""
    samples = np.asarray(audio, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"audio must be mono (1-D), got shape {samples.shape}")
    step = max(1, round(sample_rate * chunk_ms / 1000))
    for start in range(0, len(samples), step):
        yield AudioChunk(np.ascontiguousarray(samples[start : start + step]), sample_rate, start)


class WholeSignalSource(ABC):
    """An ``AudioSource`` of one whole signal: ``_load`` runs once, on the first read, and
    its audio then comes in ``chunk_ms`` chunks as fast as it is asked.

    ``close()`` (safe to call twice) ends the iteration, also while ``_load`` runs; the
    source closes itself when the signal is exhausted. ``prefetch()`` starts ``_load`` at
    once (in the background) instead of at the first read.
    """

    def __init__(self, name: str, *, chunk_ms: float = CHUNK_MS, live: bool = False) -> None:
        self.name = name
        self.chunk_ms = chunk_ms
        self.live = live  # True: treat it as delivered in real time (see AudioSource)
        self._chunks: Iterator[AudioChunk] | None = None
        self._loading: asyncio.Future[tuple[np.ndarray, int]] | None = None
        self._closed = False

    @abstractmethod
    async def _load(self) -> tuple[np.ndarray, int]:
        """The whole signal (mono) and its sample rate."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> AudioChunk:
        if self._closed:
            raise StopAsyncIteration
        if self._chunks is None:
            self.prefetch()
            assert self._loading is not None
            try:
                audio, rate = await self._loading
            except asyncio.CancelledError:
                if self._closed:  # close() while loading
                    raise StopAsyncIteration from None
                raise
            if self._closed:
                raise StopAsyncIteration
            self._chunks = chunked(audio, rate, self.chunk_ms)
        chunk = next(self._chunks, None)
        if chunk is None:
            self.close()
            raise StopAsyncIteration
        return chunk

    def prefetch(self) -> None:
        """Start loading the signal now (needs a running event loop)."""
        if self._loading is None and not self._closed:
            self._loading = asyncio.ensure_future(self._load())

    def close(self) -> None:
        self._closed = True
        self._chunks = None
        loading = self._loading
        if loading is not None and not loading.done():
            loading.cancel()
