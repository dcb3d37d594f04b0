"""Speech from a file: any container PyAV opens, decoded with ``engine.audio_file``."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np

from engine.audio_file import read_audio
from presenter.errors import PresenterError
from presenter.media import CHUNK_MS
from presenter.sources.base import WholeSignalSource


class FileSource(WholeSignalSource):
    """A file's first audio stream (channels averaged) in ~20 ms chunks at its own rate.

    The file must exist when the source is made; it is decoded (in a thread) on the first
    read, and then yields as fast as it is asked.
    """

    def __init__(self, path: str | Path, *, chunk_ms: float = CHUNK_MS) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise PresenterError(f"audio file {self.path} does not exist")
        super().__init__(f"file:{self.path.name}", chunk_ms=chunk_ms)
        self.sample_rate: int | None = None

    async def _load(self) -> tuple[np.ndarray, int]:
        audio, rate = await asyncio.to_thread(read_audio, self.path)
        if not self._closed:
            self.sample_rate = rate
        return audio, rate
