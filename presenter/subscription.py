"""What a consumer of the stream holds: a :class:`Subscription` with bounded queues.

Each consumer gets its own audio, video and event queues, each bounded by a budget in ms:
a lagging subscriber loses its oldest video frames, never audio; one more than its audio
budget behind is closed (:class:`StreamClosed`) rather than fed a stream with holes.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Generic, TypeVar

from presenter.errors import PresenterError
from presenter.media import CHUNK_SAMPLES, OUTPUT_RATE, AudioChunk, SegmentEvent, VideoOut

log = logging.getLogger(__name__)

T = TypeVar("T")


class StreamClosed(PresenterError):
    """The stream (or this subscription) is closed; the message says why."""


class Channel(Generic[T]):
    """A bounded queue for one consumer: drops its oldest item when full (``drop_oldest``),
    or refuses the item (``put`` returns False)."""

    def __init__(self, limit: int, *, drop_oldest: bool) -> None:
        self.limit = max(1, limit)
        self.drop_oldest = drop_oldest
        self.items: deque[T] = deque()
        self.dropped = 0
        self._waiter: asyncio.Future[None] | None = None
        self._closed: StreamClosed | None = None

    def put(self, item: T) -> bool:
        if self._closed is not None:
            return False
        if len(self.items) >= self.limit:
            if not self.drop_oldest:
                return False
            self.items.popleft()
            self.dropped += 1
        self.items.append(item)
        self._wake()
        return True

    def close(self, reason: StreamClosed) -> None:
        if self._closed is None:
            self._closed = reason
        self._wake()

    async def get(self) -> T:
        while not self.items:
            if self._closed is not None:
                raise StreamClosed(str(self._closed))
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._waiter = waiter
            try:
                await waiter
            finally:
                self._waiter = None
        return self.items.popleft()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


class Subscription:
    """One consumer's view of the stream: its own bounded audio, video and event queues.

    ``next_audio()`` / ``next_video()`` / ``next_event()`` wait for the next item and raise
    :class:`StreamClosed` once the stream (or this subscription) is closed and the queue is
    empty. Video beyond ``video_queue_ms`` drops the oldest frames (``video_dropped``); audio
    is never dropped: a subscriber more than ``audio_queue_ms`` behind is closed instead.
    """

    def __init__(
        self,
        detach: Callable[[Subscription], None],
        *,
        video_frames: int,
        audio_chunks: int,
        events: int = 256,
        audio: bool = True,
        video: bool = True,
        lossy: bool = False,
    ) -> None:
        self._detach = detach
        self.wants_audio = audio
        self.wants_video = video
        self._audio: Channel[AudioChunk] = Channel(audio_chunks, drop_oldest=lossy)
        self._video: Channel[VideoOut] = Channel(video_frames, drop_oldest=True)
        self._events: Channel[SegmentEvent] = Channel(events, drop_oldest=True)
        self.closed = False

    async def next_audio(self) -> AudioChunk:
        return await self._audio.get()

    async def next_video(self) -> VideoOut:
        return await self._video.get()

    async def next_event(self) -> SegmentEvent:
        return await self._events.get()

    async def audio(self) -> AsyncIterator[AudioChunk]:
        """The audio chunks until the stream closes."""
        with contextlib.suppress(StreamClosed):
            while True:
                yield await self._audio.get()

    async def video(self) -> AsyncIterator[VideoOut]:
        """The video frames until the stream closes."""
        with contextlib.suppress(StreamClosed):
            while True:
                yield await self._video.get()

    @property
    def video_dropped(self) -> int:
        return self._video.dropped

    @property
    def pending(self) -> tuple[int, int]:
        """(audio chunks, video frames) queued and not yet read."""
        return len(self._audio.items), len(self._video.items)

    def close(self, reason: str = "unsubscribed") -> None:
        if self.closed:
            return
        self.closed = True
        error = StreamClosed(reason)
        for channel in (self._audio, self._video, self._events):
            channel.close(error)
        self._detach(self)

    # -- the stream's side --------------------------------------------------------------
    def deliver_audio(self, chunk: AudioChunk) -> None:
        if not self.wants_audio:
            return
        if not self._audio.put(chunk) and not self.closed:
            limit_ms = self._audio.limit * 1000 * CHUNK_SAMPLES // OUTPUT_RATE
            log.warning("a subscriber fell more than %d ms of audio behind: closed", limit_ms)
            self.close(f"the subscriber fell more than {limit_ms} ms of audio behind")

    def deliver_video(self, frame: VideoOut) -> None:
        if self.wants_video:
            self._video.put(frame)

    def deliver_event(self, event: SegmentEvent) -> None:
        self._events.put(event)


class Subscribers:
    """The stream's consumers: what it releases goes to each of them.

    ``video_fps`` sizes the video queues; ``video_queue_ms`` / ``audio_queue_ms`` are the
    default budgets of a new subscription."""

    def __init__(self, *, video_fps: float, video_queue_ms: float, audio_queue_ms: float) -> None:
        self.video_fps = video_fps
        self.video_queue_ms = video_queue_ms
        self.audio_queue_ms = audio_queue_ms
        self._members: list[Subscription] = []
        self._closed: str | None = None  # why no one can subscribe any more

    def add(
        self,
        *,
        video_queue_ms: float | None = None,
        audio_queue_ms: float | None = None,
        audio: bool = True,
        video: bool = True,
        lossy: bool = False,
    ) -> Subscription:
        """A new consumer; it gets what is released from now on (``audio`` / ``video``
        False: none of that kind; events always). ``lossy``: beyond its audio budget it
        loses its oldest audio instead of being closed. Raises :class:`StreamClosed` once the
        stream is closed."""
        if self._closed is not None:
            raise StreamClosed(self._closed)
        video_ms = self.video_queue_ms if video_queue_ms is None else video_queue_ms
        audio_ms = self.audio_queue_ms if audio_queue_ms is None else audio_queue_ms
        subscription = Subscription(
            self._detach,
            video_frames=max(1, math.ceil(video_ms * self.video_fps / 1000)),
            audio_chunks=max(2, math.ceil(audio_ms * OUTPUT_RATE / 1000 / CHUNK_SAMPLES)),
            audio=audio,
            video=video,
            lossy=lossy,
        )
        self._members.append(subscription)
        return subscription

    def deliver_audio(self, chunk: AudioChunk) -> None:
        for subscription in list(self._members):
            subscription.deliver_audio(chunk)

    def deliver_video(self, frame: VideoOut) -> None:
        for subscription in list(self._members):
            subscription.deliver_video(frame)

    def publish(self, event: SegmentEvent) -> None:
        for subscription in list(self._members):
            subscription.deliver_event(event)

    def close(self, reason: str) -> None:
        """Close every subscription (each gets ``StreamClosed(reason)`` once drained); no new
        one is taken."""
        self._closed = reason
        members, self._members = self._members, []
        for subscription in members:
            subscription.close(reason)

    def _detach(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._members.remove(subscription)
