"""Test doubles for the stream's pacing tests (the stream tests use the real engine).

* :class:`FakeEngine`: a stand-in for :class:`engine.facade.AvatarEngine` with the same
  timing (frame ``k`` ready once ``(k + 1) * 640 + delay`` samples of the 16 kHz engine clock
  have arrived, the same resampler delay, indices that continue across ``reset()``), tiny
  images and a ``speaking`` weight from the level of the frame's own audio. An ``on_render``
  hook runs in the worker thread for each batch, e.g. ``VirtualClock.sleep_blocking`` to
  simulate render time. It implements the whole :class:`engine.frames.StreamEngine`
  protocol (checked in the tests).
* :class:`Recorder`: reads a subscription's audio, video and events in background tasks and
  keeps them with the clock time each was received.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

from engine.frames import ENGINE_TIMELINE, RenderedFrame, SpeakingStyle, Timeline
from engine.streaming_resample import StreamingResampler
from presenter.clock import Clock
from presenter.media import AudioChunk, SegmentEvent, VideoOut
from presenter.subscription import StreamClosed, Subscription

T = TypeVar("T")
ENGINE_RATE = ENGINE_TIMELINE.rate
FRAME = ENGINE_TIMELINE.frame_samples  # engine samples per frame at 25 fps


class FakeEngine:
    """See the module docstring. ``frames_rendered`` counts rendered frames."""

    def __init__(
        self,
        *,
        delay_samples: int = 1320,
        frame_size: tuple[int, int] = (8, 8),
        speaking_level: float = 0.01,
        on_render: Callable[[int], None] | None = None,
    ) -> None:
        self.base_delay = delay_samples
        self.frame_size = frame_size
        self.speaking_level = speaking_level
        self.on_render = on_render
        self.frames_rendered = 0
        self.resets = 0
        self.dropped = 0  # frames dropped with drop_ready()
        self._resampler: StreamingResampler | None = None
        self._audio = np.zeros(0, np.float32)  # engine-rate samples since the last reset
        self._emitted = 0  # frames made ready since the last reset
        self._ready: list[tuple[int, float]] = []  # (frame since reset, speaking)
        self._next_index = 0
        self.style = "default"
        self.closed = False

    @property
    def kind(self) -> str:
        return "test"

    @property
    def timeline(self) -> Timeline:
        return ENGINE_TIMELINE

    @property
    def loop_frames(self) -> int:
        return 1

    @property
    def delay_samples(self) -> int:
        resampler = self._resampler
        extra = 0 if resampler is None else math.ceil(resampler.delay_samples_out)
        return self.base_delay + extra

    @property
    def frames_ready(self) -> int:
        return len(self._ready)

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        if self._resampler is None or self._resampler.rate_in != sample_rate:
            self._resampler = StreamingResampler(sample_rate, ENGINE_RATE)
        samples = self._resampler.push(np.asarray(pcm, np.float32))
        self._audio = np.concatenate([self._audio, samples])
        self._make_ready()

    def _make_ready(self) -> None:
        while (self._emitted + 1) * FRAME + self.base_delay <= len(self._audio):
            span = self._audio[self._emitted * FRAME : (self._emitted + 1) * FRAME]
            speaking = float(np.abs(span).max(initial=0.0) > self.speaking_level)
            self._ready.append((self._emitted, speaking))
            self._emitted += 1

    def pull(self) -> list[RenderedFrame]:
        ready, self._ready = self._ready, []
        if ready and self.on_render is not None:
            self.on_render(len(ready))
        frames = []
        height, width = self.frame_size
        for _, speaking in ready:
            index = self._next_index
            self._next_index += 1
            image = np.full((height, width, 3), index % 256, np.uint8)
            frames.append(RenderedFrame(index, image, speaking))
        self.frames_rendered += len(frames)
        return frames

    def drop_ready(self, keep: int = 0) -> int:
        """Drop the ready frames but the newest ``keep``; their indices are used up."""
        count = max(0, len(self._ready) - keep)
        del self._ready[:count]
        self._next_index += count
        self.dropped += count
        return count

    def flush(self) -> None:
        """End of speech: the look-ahead is filled with silence (the last, partial frame
        becomes ready); the next audio starts over."""
        whole = -(-len(self._audio) // FRAME) * FRAME
        silence = np.zeros(whole + self.base_delay - len(self._audio), np.float32)
        self._audio = np.concatenate([self._audio, silence])
        self._make_ready()
        self._resampler = None
        self._audio = np.zeros(0, np.float32)
        self._emitted = 0

    def reset(self) -> None:
        self.resets += 1
        self._ready.clear()
        self._resampler = None
        self._audio = np.zeros(0, np.float32)
        self._emitted = 0

    def set_style(self, style: SpeakingStyle) -> str:
        if style.subject is not None:
            self.style = style.subject
        elif style.code is not None:
            self.style = "code"
        else:
            self.style = "default" if style.reference is None else "reference"
        return self.style

    def close(self) -> None:
        self.closed = True


@dataclass
class Recorder:
    """Everything a subscription delivers, with the clock time it was received."""

    subscription: Subscription
    clock: Clock
    audio: list[tuple[float, AudioChunk]] = field(default_factory=list)
    video: list[tuple[float, VideoOut]] = field(default_factory=list)
    events: list[tuple[float, SegmentEvent]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def start(self) -> Recorder:
        loop = asyncio.get_running_loop()
        subscription = self.subscription
        self._tasks = [
            loop.create_task(self._read(subscription.next_audio, self.audio)),
            loop.create_task(self._read(subscription.next_video, self.video)),
            loop.create_task(self._read(subscription.next_event, self.events)),
        ]
        return self

    async def _read(
        self, next_item: Callable[[], Awaitable[T]], into: list[tuple[float, T]]
    ) -> None:
        try:
            while True:
                item = await next_item()
                into.append((self.clock.now(), item))
                self._changed.set()
        except StreamClosed:
            self._changed.set()

    async def until(self, condition: Callable[[Recorder], bool]) -> None:
        """Wait until ``condition(self)`` holds (checked after each item received)."""
        while not condition(self):
            if all(task.done() for task in self._tasks):
                raise StreamClosed("the subscription closed before the condition held")
            self._changed.clear()
            await self._changed.wait()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    @property
    def pcm(self) -> np.ndarray:
        """The received audio, concatenated."""
        chunks = [chunk.pcm for _, chunk in self.audio]
        return np.concatenate(chunks) if chunks else np.zeros(0, np.float32)

    @property
    def frames(self) -> list[VideoOut]:
        return [frame for _, frame in self.video]
