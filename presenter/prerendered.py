"""``PrerenderedEngine``: the stream's engine replaced by frames rendered once, at start.

``python -m presenter serve --engine prerendered`` runs the same presenter, stream, server,
encoders and viewers as the live avatar, with this engine instead of the model: for each
frame the audio fed so far completes it hands out the next frame of a sequence that the
real engine rendered once at start (its idle loop at rest, forth and back, in the engine's
output format), at no cost and with no look-ahead (``delay_samples`` 0). The stream's delay
is then one frame + the render budget (20 ms for a frame cost of 0: ``D`` = 60 ms), and what
a latency benchmark measures on it is the transport alone: stream, encoders, network,
browser.

Its timing is the engine's (frame ``k`` covers engine samples ``[k * 640, (k + 1) * 640)``
at 16 kHz; indices go on across ``reset()``; ``drop_ready(keep)`` uses up the indices of
what it drops), so the stream treats it as it treats the model.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from engine.frames import (
    ENGINE_TIMELINE,
    OUTPUT_FORMATS,
    STAGES,
    OutputFormat,
    RenderedFrame,
    SpeakingStyle,
    Timeline,
)
from presenter.errors import PresenterError

if TYPE_CHECKING:
    from engine.frames import StreamEngine


class PrerenderedEngine:
    """A :class:`~engine.frames.StreamEngine` over a fixed sequence of frames (looped).

    ``images``: the frames, all of one shape, in ``format`` (``yuv420p``: I420, ``(H * 3 / 2,
    W)``; ``rgb24``: ``(H, W, 3)``). The sequence repeats from its start after its last frame.
    """

    # the cost of a frame (nothing is rendered): the server's render budget is sized from it
    frame_ms = 0.0

    def __init__(
        self,
        images: Sequence[np.ndarray],
        *,
        format: OutputFormat = "yuv420p",
        timeline: Timeline = ENGINE_TIMELINE,
    ) -> None:
        if not images:
            raise PresenterError("a pre-rendered engine needs at least one frame")
        if format not in OUTPUT_FORMATS:
            raise PresenterError(f"format must be one of {OUTPUT_FORMATS}, got {format!r}")
        shape = images[0].shape
        if any(image.shape != shape or image.dtype != np.uint8 for image in images):
            raise PresenterError("the pre-rendered frames must all be uint8 of one shape")
        self.images = list(images)
        for image in self.images:
            image.flags.writeable = False  # handed out as they are, every loop
        self.format: OutputFormat = format
        self._timeline = timeline
        self._rate_in: int | None = None  # the rate audio comes in at (since the last reset)
        self._samples_in = 0  # input samples since the last reset
        self._made = 0  # frames completed since the last reset (handed out or dropped)
        self._ready = 0  # completed and not handed out yet
        self._next_index = 0  # index of the next frame handed out

    @classmethod
    def from_engine(cls, engine: StreamEngine, frames: int) -> PrerenderedEngine:
        """``frames`` frames of ``engine`` fed silence (its idle loop at rest, in its output
        format), rendered now in one call; ``engine`` is reset before and after."""
        if frames <= 0:
            raise PresenterError(f"frames must be positive, got {frames}")
        timeline = engine.timeline
        rate, step = timeline.rate, timeline.frame_samples
        engine.reset()
        engine.push_audio(np.zeros(0, np.float32), rate)
        silence = frames * step + engine.delay_samples + step
        engine.push_audio(np.zeros(silence, np.float32), rate)
        rendered = engine.pull()[:frames]
        engine.reset()
        if len(rendered) < frames:
            raise PresenterError(f"the engine rendered {len(rendered)} of {frames} frames")
        return cls(
            [frame.image for frame in rendered],
            format=rendered[0].format,
            timeline=timeline,
        )

    # -- the stream engine interface ----------------------------------------------------------
    @property
    def kind(self) -> str:
        return "prerendered"

    @property
    def timeline(self) -> Timeline:
        return self._timeline

    @property
    def loop_frames(self) -> int:
        return len(self.images)

    @property
    def delay_samples(self) -> int:
        """No look-ahead: a frame is ready as soon as its own audio is in."""
        return 0

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames."""
        rows, width = self.images[0].shape[:2]
        return (rows * 2 // 3, width) if self.format == "yuv420p" else (rows, width)

    @property
    def frames_ready(self) -> int:
        return self._ready

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        """Count the audio (mono, any rate; the rate may change only after ``reset()``)."""
        if np.ndim(pcm) != 1:
            raise PresenterError(f"audio must be mono (1-D), got shape {np.shape(pcm)}")
        if sample_rate <= 0:
            raise PresenterError(f"sample rate must be positive, got {sample_rate}")
        if self._rate_in != sample_rate:
            if self._samples_in > 0:
                raise PresenterError(
                    f"the stream's rate is {self._rate_in} Hz, got {sample_rate} Hz; reset() "
                    "before changing rates"
                )
            self._rate_in = sample_rate
        self._samples_in += len(pcm)
        self._complete((self._samples_in * self._timeline.rate) // sample_rate)

    def _complete(self, samples: int) -> None:
        """The frames that ``samples`` samples (at the engine's rate) since the last reset
        complete are ready."""
        complete = self._timeline.frame_of(samples)
        self._ready += complete - self._made
        self._made = complete

    def pull(self) -> list[RenderedFrame]:
        """The next frame of the sequence for each completed frame, in order (no cost: the
        stage times are all 0)."""
        frames = []
        for _ in range(self._ready):
            index = self._next_index
            self._next_index += 1
            frames.append(
                RenderedFrame(
                    index=index,
                    image=self.images[index % len(self.images)],
                    speaking=0.0,
                    format=self.format,
                    stages_ms=dict.fromkeys(STAGES, 0.0),
                )
            )
        self._ready = 0
        return frames

    def drop_ready(self, keep: int = 0) -> int:
        """Skip the completed frames but the newest ``keep``; their indices are used up."""
        count = max(0, self._ready - max(0, keep))
        self._ready -= count
        self._next_index += count
        return count

    def flush(self) -> None:
        """End of speech: a partial frame's audio completes it; the next audio starts over."""
        if self._rate_in is not None:
            samples = math.ceil(self._samples_in * self._timeline.rate / self._rate_in)
            frames = math.ceil(samples / self._timeline.frame_samples)
            self._complete(self._timeline.frame_start(frames))
        self._start_over()

    def reset(self) -> None:
        """Drop what is pending (completed frames, a partial frame's audio); indices go on."""
        self._start_over()
        self._ready = 0

    def set_style(self, style: SpeakingStyle) -> str:
        raise PresenterError("the pre-rendered engine has no speaking style to change")

    def _start_over(self) -> None:
        self._rate_in = None
        self._samples_in = 0
        self._made = 0

    def close(self) -> None:
        """Nothing to release: the frames are plain arrays."""
