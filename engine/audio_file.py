"""Reading speech from a file: any container PyAV opens (wav, mp3, ogg, m4a, mp4, ...)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.errors import EngineError


def decode_mono(
    container: av.container.InputContainer, path: Path
) -> tuple[np.ndarray, int, Fraction | None]:
    """The first audio stream of an open container: mono float32 samples (channels
    averaged) at the stream's own rate, and the time of its first sample (None if the
    stream does not say)."""
    if not container.streams.audio:
        raise EngineError(f"{path} has no audio stream")
    stream = container.streams.audio[0]
    converter = av.AudioResampler(format="fltp")  # keeps the source layout and rate
    chunks: list[np.ndarray] = []
    rate = 0
    start_time: Fraction | None = None
    try:
        for frame in container.decode(stream):
            if start_time is None and frame.pts is not None and frame.time_base:
                start_time = Fraction(frame.pts) * frame.time_base
            for converted in converter.resample(frame):
                rate = converted.sample_rate
                chunks.append(converted.to_ndarray().mean(axis=0))
        for converted in converter.resample(None):
            chunks.append(converted.to_ndarray().mean(axis=0))
    except av.FFmpegError as exc:
        raise EngineError(f"the audio of {path} is damaged ({exc}); re-export it") from exc
    if not chunks or rate <= 0:
        raise EngineError(f"{path} has an empty audio stream")
    return np.concatenate(chunks).astype(np.float32), rate, start_time


def read_audio(path: str | Path) -> tuple[np.ndarray, int]:
    """The first audio stream as mono float32 at its own sample rate (channels averaged)."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"audio file {path} does not exist")
    try:
        container = av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise EngineError(f"cannot read {path} as audio ({exc})") from exc
    with container:
        audio, rate, _ = decode_mono(container, path)
    return audio, rate
