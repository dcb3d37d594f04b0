"""What flows through the presenter: audio chunks, video frames and segment markers.

One clock: the audio sample count. An ``AudioChunk``'s ``pts`` counts samples at its own
``sample_rate`` from the start of its stream; the stream's output is 48 kHz in 20 ms chunks
(``OUTPUT_RATE``, ``CHUNK_SAMPLES``). A video frame's ``pts_90k`` is on the 90 kHz RTP video
clock and derives from the same count: frame ``index`` starts at output sample
``index * 1920`` (25 fps), i.e. ``pts_90k = index * 3600``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.frames import VIDEO_CLOCK, OutputFormat

OUTPUT_RATE = 48000  # Hz: the stream's audio (WebRTC's Opus rate)
CHUNK_MS = 20
CHUNK_SAMPLES = OUTPUT_RATE * CHUNK_MS // 1000  # 960


@dataclass(frozen=True, eq=False)
class AudioChunk:
    """Mono float32 PCM; ``pts`` is its first sample, counted at ``sample_rate``."""

    pcm: np.ndarray
    sample_rate: int
    pts: int

    def __post_init__(self) -> None:
        if self.pcm.ndim != 1 or self.pcm.dtype != np.float32:
            raise ValueError(
                f"audio must be 1-D float32, got {self.pcm.dtype} with shape {self.pcm.shape}"
            )
        if self.sample_rate <= 0:
            raise ValueError(f"sample_rate must be positive, got {self.sample_rate}")

    @property
    def samples(self) -> int:
        return int(self.pcm.shape[0])

    @property
    def seconds(self) -> float:
        """Start time of the chunk in seconds."""
        return self.pts / self.sample_rate

    @property
    def end(self) -> int:
        """One past its last sample (the ``pts`` of the chunk that follows)."""
        return self.pts + self.samples


@dataclass(frozen=True, eq=False)
class VideoOut:
    """A finished video frame: RGB ``(H, W, 3)`` or I420 ``(H * 3 / 2, W)`` uint8."""

    image: np.ndarray
    pts_90k: int
    index: int  # frame number on the stream's clock (gaps where frames were dropped)
    speaking: float  # 0 at rest, 1 speaking (the engine's silence gate)
    format: OutputFormat = "rgb24"

    @property
    def seconds(self) -> float:
        return self.pts_90k / VIDEO_CLOCK


@dataclass(frozen=True)
class SegmentStart:
    """The first sample of a queued source left the stream at output sample ``pts``."""

    segment: int  # the Playback id
    name: str
    pts: int  # at OUTPUT_RATE


@dataclass(frozen=True)
class SegmentEnd:
    """A queued source is over: its last sample left the stream (``pts`` one past it), or it
    was interrupted (``pts``: where the stream went back to idle), or it failed."""

    segment: int
    name: str
    pts: int  # at OUTPUT_RATE
    interrupted: bool = False
    error: str | None = None


SegmentEvent = SegmentStart | SegmentEnd
