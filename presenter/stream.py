"""``AvatarStream``: an avatar that is always on air, lip-synced to whatever it is told to say.

Threads
-------
The stream owns one engine and makes every engine call on ONE worker thread (a single-thread
executor; torch and onnxruntime release the GIL), so the event loop never blocks on the
model. Everything else (pacing, sources, queues, subscribers) lives on the event loop.

One clock
---------
Everything is counted in output audio samples (48 kHz). A producer task paced by the
:class:`~presenter.clock.Clock` ticks every 20 ms (``CHUNK_SAMPLES`` = 960 samples): at the
tick that ends at stream sample ``n`` it takes the input chunk ``[n - 960, n)`` (the current
source's audio resampled to 48 kHz, or silence when nothing is playing), keeps it in the
audio delay line and hands it to the worker, which pushes it into the engine (the engine
resamples it to its 16 kHz clock) and renders the frames that became ready. Video frame
``k`` covers output samples ``[k F, (k + 1) F)`` with ``F = 1920`` (25 fps); its pts on the
90 kHz video clock is ``k * 3600``. When there is no speech the stream goes on all the
same: silence goes into the engine (the idle loop, mouth at rest) and silent audio comes
out, at the same clock.

The delay, exactly
------------------
Frame ``k`` can be rendered once the input reaches ``(k + 1) F + E`` samples, ``E`` the
engine's delay (``engine.delay_samples`` converted to 48 kHz: 1330 * 3 = 3990 samples, the
motion look-ahead + half a mel window - one hop + the 48 -> 16 kHz resampler's filter
delay). Input arrives in whole chunks, so frame ``k`` is ready at the tick ending at
``(k + 1) F + ceil_chunk(E)``; the stream then gives rendering a fixed budget ``R``
(``StreamConfig.render_budget_ms``, one frame = 40 ms by default, a whole number of
chunks). Hence the stream delay

    D = F + ceil_chunk(E) + R          (1920 + 4800 + 1920 = 8640 samples = 180 ms)

and both outputs are released at ``D`` after the start of what they show:

    audio chunk with pts p (48 kHz samples)  leaves at  t0 + (p + D) / 48000
    frame k (pts_90k = 3600 k)               leaves at  t0 + (k F + D) / 48000

so the frame showing sample ``p`` leaves with the audio chunk that carries it: lips and
sound are in sync by construction (``t0``: the clock time of stream sample 0). A new sample
of live input is heard ``D`` after it was captured. ``delay_samples`` / ``delay_seconds``
give ``D``.

Interruptions
-------------
``interrupt()`` drops the queued sources, the queued audio and the rendered frames at once
(audio from the next frame boundary ``P`` on is replaced by silence; at most one 20 ms chunk
of the old speech before ``P`` still leaves) and has the worker reset the engine and feed it
silence from ``P`` to where the input is, so that frame ``P / F`` — the very next frame to
leave, at most 40 ms later — is already at rest: back to idle within one frame. Engine
results that were in flight are discarded.

Early start
-----------
A source that is not live and has its first audio ready (a sentence already synthesised, a
file) and comes while the stream is idle does not have to start at the input position: the
silence of the last ``F + ceil_chunk(E)`` samples (140 ms) has entered the stream but not
left it. It starts at the earliest frame boundary the engine can still render in time
(``StreamConfig.early_start``): that silence, in the delay line and in the engine, is
replaced by the source's first samples and the engine restarts there as after an
interruption (frames of engine calls in flight before that frame are kept). Nothing that
has left changes; lips and sound stay together; ``say`` is heard about ``R`` after the
call instead of ``D``.

Falling behind
--------------
The producer never waits for the engine: each tick hands the worker the new input (when
the worker is still busy, the input piles up and goes in one call when it is free), so audio
leaves on schedule to the sample whatever rendering costs, and audio is never dropped. Video
is: before each engine call the stream estimates (from measured render times) which of the
frames that call makes ready can still be rendered before their release, and drops the
others: with ``drop_ready(keep)`` on the engine (a small extension of the facade: drop the
ready frames but the newest ``keep``, their indices used up) exactly those; without it, by
``engine.reset()`` at a frame boundary (which also restarts the engine's look-ahead, so more
frames are lost). A restart (an interruption, an early start) is planned the same way: when
the worker comes to it late, only its newest frames that can still be on time are rendered,
and the engine's frames are mapped by the count it reports skipped. A frame not there at its
release time is dropped; drops are logged at most
once per ``log_interval_s``. When the event loop itself stalls (the pacing is more than
``reanchor_after_ms`` late), the schedule is re-anchored on the present instead of bursting
to catch up; pts stay contiguous.

Consumers
---------
``subscribe()`` returns a :class:`Subscription` with bounded queues (a budget in ms): a
lagging subscriber loses its oldest video frames, never audio; a subscriber more than its
audio budget behind is closed (``StreamClosed``) rather than fed a stream with holes.

Trace
-----
``stream.trace`` (a :class:`~presenter.trace.FrameTrace`, ``StreamConfig.trace_frames``
frames) records in wall-clock ms when each frame's input was complete (the tick at which the
input reached ``(k + 1) F + E``, at its scheduled time), when the engine call that rendered
it was handed to the worker and returned (with the engine's stage times), and when it was
released or dropped; the shared video encoder and the viewers' tracks add when it was encoded
and sent. Released on time, ``released - input = R`` (plus the lateness of the release tick).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, TypeVar

import numpy as np

from engine.frames import RenderedFrame
from engine.streaming_resample import StreamingResampler
from presenter.clock import Clock, RealClock
from presenter.errors import PresenterError
from presenter.media import (
    CHUNK_SAMPLES,
    OUTPUT_RATE,
    VIDEO_CLOCK,
    AudioChunk,
    SegmentEnd,
    SegmentEvent,
    SegmentStart,
    VideoOut,
)
from presenter.sources.base import AudioSource
from presenter.stamp import click_burst, stamp_audio, stamp_video
from presenter.trace import FrameTrace

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class StreamClosed(PresenterError):
    """The stream (or this subscription) is closed; the message says why."""


class StreamEngine(Protocol):
    """What the stream needs of :class:`engine.facade.AvatarEngine`."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def samples_per_frame(self) -> int: ...

    @property
    def delay_samples(self) -> int: ...

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def pull(self) -> list[RenderedFrame]: ...

    def reset(self) -> None: ...


@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    render_budget_ms: float = 40.0  # time given to render a frame (rounded up to 20 ms steps)
    video_queue_ms: float = 200.0  # per subscriber: older frames are dropped
    audio_queue_ms: float = 2000.0  # per subscriber: more behind than this closes it
    source_buffer_ms: float = 200.0  # how far a source is read ahead
    live_buffer_ms: float = 60.0  # a live source's backlog beyond this is dropped
    reanchor_after_ms: float = 250.0  # the pacing re-anchors when it is this late
    log_interval_s: float = 1.0  # at most one "behind" warning per interval
    stamp: bool = False  # paint frame indices and put 1 s clicks in the audio (presenter.stamp)
    early_start: bool = True  # a ready source starts in the idle past (see "Early start")
    trace_frames: int = 3000  # frames the per-frame trace keeps (see "Trace"); 0: no trace

    def __post_init__(self) -> None:
        if self.render_budget_ms <= 0:
            raise ValueError(f"render_budget_ms must be positive, got {self.render_budget_ms}")
        if self.trace_frames < 0:
            raise ValueError(f"trace_frames must be >= 0, got {self.trace_frames}")
        for name in (
            "video_queue_ms",
            "audio_queue_ms",
            "source_buffer_ms",
            "live_buffer_ms",
            "reanchor_after_ms",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")


@dataclass(frozen=True)
class StreamStats:
    frames_rendered: int  # frames the engine rendered
    frames_emitted: int  # frames released to subscribers
    frames_dropped: int  # frames not there at their release time (late or skipped)
    audio_chunks: int  # 20 ms audio chunks released
    render_skips: int  # times the stream skipped rendering to keep up
    reanchors: int  # times the pacing re-anchored after a stall
    source_underruns: int  # chunks a playing source could not fill in time
    interrupts: int


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


# -- subscribers ----------------------------------------------------------------------------


class _Channel(Generic[T]):
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
        self._audio: _Channel[AudioChunk] = _Channel(audio_chunks, drop_oldest=lossy)
        self._video: _Channel[VideoOut] = _Channel(video_frames, drop_oldest=True)
        self._events: _Channel[SegmentEvent] = _Channel(events, drop_oldest=True)
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
    def _put_audio(self, chunk: AudioChunk) -> None:
        if not self.wants_audio:
            return
        if not self._audio.put(chunk) and not self.closed:
            limit_ms = self._audio.limit * 1000 * CHUNK_SAMPLES // OUTPUT_RATE
            log.warning("a subscriber fell more than %d ms of audio behind: closed", limit_ms)
            self.close(f"the subscriber fell more than {limit_ms} ms of audio behind")

    def _put_video(self, frame: VideoOut) -> None:
        if self.wants_video:
            self._video.put(frame)

    def _put_event(self, event: SegmentEvent) -> None:
        self._events.put(event)


# -- queued sources -------------------------------------------------------------------------


class Playback:
    """A source queued with ``AvatarStream.say``: ``await wait()`` gives its ``SegmentEnd``
    (when its last sample has left the stream, or when it was interrupted or failed)."""

    def __init__(self, segment: int, source: AudioSource) -> None:
        self.id = segment
        self.source = source
        self.name = str(getattr(source, "name", type(source).__name__))
        self.start_pts: int | None = None  # output sample of its first sample, once known
        self.result: SegmentEnd | None = None
        self._done = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.result is not None

    async def wait(self) -> SegmentEnd:
        await self._done.wait()
        assert self.result is not None
        return self.result

    def _finish(self, end: SegmentEnd) -> bool:
        if self.result is not None:
            return False
        self.result = end
        self._done.set()
        return True


class _Feed:
    """The playing source, read ahead by a task, resampled to 48 kHz, buffered.

    A live source (``source.live``, e.g. the microphone) delivers in real time, and what it
    delivers late must not pile up as latency: beyond ``live_budget`` samples buffered, the
    oldest are dropped."""

    def __init__(self, playback: Playback, budget: int, live_budget: int) -> None:
        self.playback = playback
        self.budget = budget
        self.live = bool(getattr(playback.source, "live", False))
        self.live_budget = live_budget
        self.dropped = 0  # samples of a live source dropped to keep its latency down
        self.pieces: deque[np.ndarray] = deque()
        self.buffered = 0
        self.exhausted = False
        self.started = False  # a sample of it went into the stream
        self.error: str | None = None
        self._space = asyncio.Event()
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        source = self.playback.source
        resampler: StreamingResampler | None = None
        try:
            async for chunk in source:
                if resampler is not None and resampler.rate_in != chunk.sample_rate:
                    self._append(resampler.flush())
                    resampler = None
                if resampler is None:
                    resampler = StreamingResampler(chunk.sample_rate, OUTPUT_RATE)
                self._append(resampler.push(chunk.pcm))
                while self.buffered >= self.budget:
                    self._space.clear()
                    await self._space.wait()
            if resampler is not None:
                self._append(resampler.flush())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("source %s failed: %s", self.playback.name, self.error)
        finally:
            self.exhausted = True
            source.close()

    def _append(self, samples: np.ndarray) -> None:
        if len(samples):
            self.pieces.append(samples)
            self.buffered += len(samples)
        if self.live and self.buffered > self.live_budget:
            excess = self.buffered - self.live_budget
            self.take(excess)
            self.dropped += excess

    @property
    def finished(self) -> bool:
        return self.exhausted and self.buffered == 0

    def take(self, count: int) -> np.ndarray:
        out: list[np.ndarray] = []
        while count > 0 and self.pieces:
            piece = self.pieces[0]
            if len(piece) <= count:
                out.append(self.pieces.popleft())
            else:
                out.append(piece[:count])
                self.pieces[0] = piece[count:]
            count -= len(out[-1])
        taken = np.concatenate(out) if out else np.zeros(0, np.float32)
        self.buffered -= len(taken)
        if self.buffered < self.budget:
            self._space.set()
        return taken

    def stop(self) -> None:
        self.task.cancel()
        self.playback.source.close()


_Op = np.ndarray | int | None
"""An engine operation: push this audio; ``drop_ready(keep=n)``; ``reset()``."""


@dataclass(frozen=True)
class _Call(Generic[R]):
    """A ``run_on_engine`` call: run on the worker, its outcome handed back to the loop."""

    function: Callable[[StreamEngine], R]
    future: asyncio.Future[R]

    def run(self, engine: StreamEngine) -> None:
        loop = self.future.get_loop()
        try:
            result = self.function(engine)
        except Exception as exc:
            loop.call_soon_threadsafe(_settle, self.future, None, exc)
        else:
            loop.call_soon_threadsafe(_settle, self.future, result, None)


def _settle(future: asyncio.Future[Any], result: object, error: Exception | None) -> None:
    if future.done():  # the caller gave up waiting
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass(frozen=True)
class _Job:
    future: asyncio.Future[tuple[list[RenderedFrame], int]]  # frames, frames skipped
    epoch: int
    anchor: int | None
    began: float  # clock time it was handed to the worker
    submitted_ms: float  # the same, in wall-clock ms (for the trace)


# -- the stream -----------------------------------------------------------------------------


class AvatarStream:
    """Audio in (queued sources), lip-synced video and held-back audio out; see the module
    docstring for the timing. Use ``async with AvatarStream(engine) as stream:`` (or
    ``await start()`` ... ``await close()``)."""

    def __init__(
        self,
        engine: StreamEngine,
        *,
        clock: Clock | None = None,
        config: StreamConfig | None = None,
    ) -> None:
        self.engine = engine
        self.clock: Clock = clock or RealClock()
        self.config = config or StreamConfig()
        rate = engine.timeline.rate
        frame = engine.timeline.frame_samples * OUTPUT_RATE
        if frame % rate or (frame // rate) % CHUNK_SAMPLES:
            raise PresenterError(
                f"a video frame of {engine.timeline.frame_samples} samples at {rate} Hz is not a "
                f"whole number of {CHUNK_SAMPLES}-sample chunks at {OUTPUT_RATE} Hz"
            )
        self.frame_samples = frame // rate  # F: output samples per video frame (1920)
        if (self.frame_samples * VIDEO_CLOCK) % OUTPUT_RATE:
            raise PresenterError("the frame rate gives no whole pts on the 90 kHz clock")
        self.pts_per_frame = self.frame_samples * VIDEO_CLOCK // OUTPUT_RATE  # 3600
        self.fps = OUTPUT_RATE / self.frame_samples
        # The engine is fed 48 kHz from now on; its delay includes that rate's resampler.
        engine.reset()
        engine.push_audio(np.zeros(0, np.float32), OUTPUT_RATE)
        self.engine_delay_samples = max(0, math.ceil(engine.delay_samples * OUTPUT_RATE / rate))
        budget_samples = math.ceil(self.config.render_budget_ms * OUTPUT_RATE / 1000)
        self.render_budget_samples = max(CHUNK_SAMPLES, _ceil_to(budget_samples, CHUNK_SAMPLES))
        self.delay_samples = (
            self.frame_samples
            + _ceil_to(self.engine_delay_samples, CHUNK_SAMPLES)
            + self.render_budget_samples
        )
        self._video_frames = max(1, math.ceil(self.config.video_queue_ms * self.fps / 1000))
        self._audio_chunks = max(
            2, math.ceil(self.config.audio_queue_ms * OUTPUT_RATE / 1000 / CHUNK_SAMPLES)
        )
        self._source_budget = math.ceil(self.config.source_buffer_ms * OUTPUT_RATE / 1000)
        self._live_budget = math.ceil(self.config.live_buffer_ms * OUTPUT_RATE / 1000)
        # pacing
        self._anchor_time = 0.0
        self._anchor_pos = 0
        self._tick_pos = 0  # stream sample at the end of the current tick
        self._captured = 0  # input samples taken into the stream
        self._pushed = 0  # input samples handed to the worker
        self._pending: list[np.ndarray] = []  # input chunks not handed to the worker yet
        self._job: _Job | None = None  # the engine call in flight
        # outputs in waiting
        self._delay_line: deque[AudioChunk] = deque()
        self._frames: dict[int, VideoOut] = {}
        self._next_frame = 0  # next frame index to release
        self._anchor_index = 0  # stream frame index of the engine's next frame (after a reset)
        self._offset: int | None = None  # stream index - engine index (from the next frame)
        self._next_render = 0  # stream index of the next frame the engine will render
        self._epoch = 0  # moves on at each interruption: older engine results are dropped
        # an engine restart waiting for the worker: (stream frame index it starts at, the
        # input from that frame's first sample up to where the input was then)
        self._restart: tuple[int, np.ndarray] | None = None
        self._keep_before: int | None = None  # frames of stale engine calls kept below this
        self._sound_end = 0  # input sample after the last sample a source gave
        self._calls: list[_Call[Any]] = []  # run_on_engine calls waiting for the worker
        # sources
        self._ids = itertools.count(1)
        self._queue: deque[Playback] = deque()
        self._feed: _Feed | None = None
        self._starts: deque[tuple[int, Playback]] = deque()
        self._ends: deque[tuple[int, Playback, str | None]] = deque()
        # consumers
        self._subscribers: list[Subscription] = []
        # state, counters
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failure: str | None = None
        self._render_estimate = 0.0  # clock seconds per rendered frame (moving average)
        self._last_render = 0.0  # the last measured
        self._dropped_unlogged = 0
        self._last_lag_log = -math.inf
        # AvatarEngine.drop_ready(keep) (if the engine has it) drops ready frames but the
        # newest ``keep`` without touching the look-ahead; else ``reset()`` has to do.
        self._can_drop = callable(getattr(engine, "drop_ready", None))
        self._counts = dict.fromkeys((field.name for field in fields(StreamStats)), 0)
        self._burst = click_burst() if self.config.stamp else None
        # when each frame passed each stage (presenter.trace); the video encoder adds its own
        self.trace: FrameTrace | None = (
            FrameTrace(self.config.trace_frames, pts_per_frame=self.pts_per_frame)
            if self.config.trace_frames
            else None
        )
        self._traced_input = 0  # the next frame whose input moment is not traced yet

    # -- public -----------------------------------------------------------------------------
    @property
    def delay_seconds(self) -> float:
        """``D`` in seconds: what a sample of input waits before it leaves (see the module
        docstring)."""
        return self.delay_samples / OUTPUT_RATE

    @property
    def sample_rate(self) -> int:
        return OUTPUT_RATE

    @property
    def stats(self) -> StreamStats:
        return StreamStats(**self._counts)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def busy(self) -> bool:
        """A source is playing or queued (its audio may still be in the delay line)."""
        return bool(self._queue or self._feed or self._ends)

    @property
    def position(self) -> int:
        """Stream samples (48 kHz) the producer has reached."""
        return self._tick_pos

    def input_time(self, sample: int) -> float:
        """Clock time at which the input chunk holding output sample ``sample`` was taken
        into the stream (per the current anchor): chunk ``[n - 960, n)`` at the tick ``n``."""
        end = (sample // CHUNK_SAMPLES + 1) * CHUNK_SAMPLES
        return self._anchor_time + (end - self._anchor_pos) / OUTPUT_RATE

    def release_time(self, pts: int) -> float:
        """Clock time at which output sample ``pts`` leaves (per the current anchor)."""
        return self._anchor_time + (pts + self.delay_samples - self._anchor_pos) / OUTPUT_RATE

    async def start(self) -> None:
        if self._closed:
            raise StreamClosed("the stream is closed")
        if self._task is not None:
            return
        loop = asyncio.get_running_loop()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar-engine")
        self._anchor_time = self.clock.now()
        self._anchor_pos = self._tick_pos
        self._task = loop.create_task(self._run(), name="avatar-stream")

    async def __aenter__(self) -> AvatarStream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def subscribe(
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
        loses its oldest audio instead of being closed."""
        if self._closed:
            raise StreamClosed(self._failure or "the stream is closed")
        frames = self._video_frames
        if video_queue_ms is not None:
            frames = max(1, math.ceil(video_queue_ms * self.fps / 1000))
        chunks = self._audio_chunks
        if audio_queue_ms is not None:
            chunks = max(2, math.ceil(audio_queue_ms * OUTPUT_RATE / 1000 / CHUNK_SAMPLES))
        subscription = Subscription(
            self._detach,
            video_frames=frames,
            audio_chunks=chunks,
            audio=audio,
            video=video,
            lossy=lossy,
        )
        self._subscribers.append(subscription)
        return subscription

    def say(self, source: AudioSource) -> Playback:
        """Queue a source; sources play one after another."""
        if self._closed:
            source.close()
            raise StreamClosed(self._failure or "the stream is closed")
        playback = Playback(next(self._ids), source)
        self._queue.append(playback)
        if self.running:
            self._playing()  # if it is its turn, start reading it now (for an early start)
        return playback

    play = say

    def interrupt(self) -> int:
        """Drop queued sources, queued audio and rendered frames now; the stream is idle
        from the returned output sample on (the next frame boundary to leave)."""
        self._counts["interrupts"] += 1
        self._epoch += 1
        boundary = self._next_frame * self.frame_samples
        dropped = self._drop_sources()
        kept: deque[tuple[int, Playback, str | None]] = deque()
        for end, playback, error in self._ends:
            if end <= boundary:
                kept.append((end, playback, error))
            else:
                dropped.append(playback)
        self._ends = kept
        self._starts = deque(
            (pts, playback)
            for pts, playback in self._starts
            if pts < boundary and all(playback is not other for other in dropped)
        )
        for playback in dropped:
            self._end(playback, boundary, interrupted=True)
        silent = np.zeros(CHUNK_SAMPLES, np.float32)
        self._delay_line = deque(
            chunk if chunk.pts < boundary else AudioChunk(silent, OUTPUT_RATE, chunk.pts)
            for chunk in self._delay_line
        )
        self._frames.clear()
        self._pending.clear()
        self._restart = (self._next_frame, np.zeros(max(0, self._captured - boundary), np.float32))
        self._keep_before = None
        self._sound_end = min(self._sound_end, boundary)
        self._submit()
        return boundary

    async def run_on_engine(self, call: Callable[[StreamEngine], R]) -> R:
        """Run ``call(engine)`` on the engine's worker, between two engine calls of the stream
        (the only place the engine may be used while the stream runs), and return its
        result; its exception is raised here and the stream goes on. Frames already rendered
        stay as they are: a change shows from the frames rendered after it (within ``D``)."""
        if self._closed or self._executor is None:
            raise StreamClosed(self._failure or "the stream is not running")
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._calls.append(_Call(call, future))
        self._submit()
        return await future

    async def close(self) -> None:
        """Stop the stream: sources are closed, subscribers get ``StreamClosed``, the worker
        thread ends (after the engine call in flight, if any)."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._shut(self._failure or "the stream is closed")
        executor, self._executor = self._executor, None
        if executor is not None:
            # Waits for an engine call in flight, so the engine is free afterwards.
            await asyncio.to_thread(executor.shutdown, True)

    # -- the producer -------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            while True:
                await self._tick()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        log.error("the avatar stream stopped: %s", exc, exc_info=exc)
        self._failure = f"the avatar stream stopped: {type(exc).__name__}: {exc}"
        self._closed = True
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._shut(self._failure)

    async def _tick(self) -> None:
        clock = self.clock
        tick = self._tick_pos + CHUNK_SAMPLES
        deadline = self._anchor_time + (tick - self._anchor_pos) / OUTPUT_RATE
        await clock.sleep_until(deadline)
        late = clock.now() - deadline
        if late > self.config.reanchor_after_ms / 1000:
            log.warning("the stream stalled for %.0f ms: re-anchoring its pacing", late * 1000)
            self._counts["reanchors"] += 1
            self._anchor_time += late
        self._tick_pos = tick
        self._emit()
        self._start_early()
        start = self._captured
        pcm = self._next_input()
        self._delay_line.append(AudioChunk(pcm, OUTPUT_RATE, start))
        self._pending.append(pcm)
        self._captured += CHUNK_SAMPLES
        self._trace_input()
        self._submit()

    def _trace_input(self) -> None:
        """Trace: the frames that the input now completes (frame ``k`` needs ``(k + 1) F + E``
        samples) entered the stream at this tick's time."""
        trace = self.trace
        if trace is None:
            return
        complete = (self._captured - self.engine_delay_samples) // self.frame_samples
        if self._traced_input >= complete:
            return
        entered = self.input_time(self._captured - 1)
        at_ms = trace.now_ms() - (self.clock.now() - entered) * 1000.0
        while self._traced_input < complete:
            trace.input(self._traced_input, at_ms)
            self._traced_input += 1

    def _submit(self) -> None:
        """Hand the worker what is pending, unless it is busy: it then gets everything that
        piled up at once when it is done."""
        if self._job is not None or self._executor is None or self._closed:
            return
        frame = self.frame_samples
        ops: list[_Op] = []
        anchor: int | None = None  # stream index of the engine's first frame after a reset
        render = True
        if self._restart is not None:
            # After an interruption (or an early start): the engine starts over at a frame
            # that has not left yet, fed what the input is from there on (silence after an
            # interruption), so that frame is rendered before it is due.
            anchor, restart_pcm = self._restart
            self._restart = None
            ops = [None, np.concatenate([restart_pcm, *self._pending])]
            ready, keep = self._render_plan(first=anchor)
            if keep < ready and self._can_drop:
                # The worker was late to the restart (a call in flight took long): as below,
                # only the frames that can still be on time are rendered.
                self._skipping(keep)
                ops.append(keep)  # the anchor moves on by the frames the engine skips
        elif self._pending:
            pcm = np.concatenate(self._pending)
            start = self._pushed
            ops = [pcm]
            ready, keep = self._render_plan()
            if keep < ready:
                # Some ready frames could not be on time: drop them rather than fall behind.
                self._skipping(keep)
                if self._can_drop:
                    ops = [pcm, keep]
                    self._next_render += ready - keep
                else:
                    boundary = self._captured // frame * frame
                    render = False
                    if boundary >= start:
                        # Without drop_ready() the facade drops ready frames only by a reset,
                        # which also makes its look-ahead refill (more frames are lost).
                        anchor = boundary // frame
                        ops = [pcm[: boundary - start], None, pcm[boundary - start :]]
                    # else: push now, drop at the next frame boundary
        elif not self._calls:
            return
        self._pending.clear()
        self._pushed = self._captured
        calls, self._calls = self._calls, []
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._work, ops, render, calls)
        submitted_ms = self.trace.now_ms() if self.trace is not None else 0.0
        job = _Job(future, self._epoch, anchor, self.clock.now(), submitted_ms)
        self._job = job
        self.clock.hold(future)
        future.add_done_callback(lambda _: self._done(job))

    def _skipping(self, keep: int) -> None:
        """A call renders only the newest ``keep`` of its ready frames: counted; with none
        kept the estimate is halved, to try again soon (the load may have eased)."""
        self._counts["render_skips"] += 1
        if keep == 0:
            self._render_estimate *= 0.5

    def _render_plan(self, first: int | None = None) -> tuple[int, int]:
        """(frames the engine will have ready after the pending push, how many of the newest
        of them can be rendered in time at the typical render time); ``first``: the frame
        the engine renders next (default: the next after those rendered; a restart's
        anchor)."""
        frame = self.frame_samples
        newest = (self._captured - self.engine_delay_samples) // frame - 1
        ready = newest - (self._next_render if first is None else first) + 1
        estimate = self._render_estimate
        if ready <= 0 or estimate <= 0.0:
            return max(0, ready), max(0, ready)
        now = self.clock.now()
        for keep in range(ready, 0, -1):
            first = newest - keep + 1
            # Rendered oldest first: frame first + i is done at now + (i + 1) * estimate; both
            # sides grow linearly in i, so checking the two ends suffices.
            if now + estimate <= self.release_time(first * frame) and (
                now + keep * estimate <= self.release_time(newest * frame)
            ):
                return ready, keep
        return ready, 0

    def _work(
        self, ops: list[_Op], render: bool, calls: list[_Call[Any]]
    ) -> tuple[list[RenderedFrame], int]:
        """The worker thread: the only place the engine is used while the stream runs.
        Returns the frames rendered and how many ready frames were skipped before them."""
        engine = self.engine
        for call in calls:
            call.run(engine)
        skipped = 0
        for op in ops:
            if op is None:
                engine.reset()
            elif isinstance(op, int):
                skipped += int(engine.drop_ready(keep=op))  # type: ignore[attr-defined]
            elif len(op):
                engine.push_audio(op, OUTPUT_RATE)
        return (engine.pull() if render else []), skipped

    def _done(self, job: _Job) -> None:
        if self._job is job:
            self._job = None
        future = job.future
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not self._closed:
                self._fail(error)
            return
        frames, skipped = future.result()
        if frames:
            per_frame = (self.clock.now() - job.began) / len(frames)
            self._last_render = per_frame
            previous = self._render_estimate
            self._render_estimate = per_frame if previous <= 0 else 0.7 * previous + 0.3 * per_frame
        if job.epoch == self._epoch:
            if job.anchor is not None:
                # the engine restarted at the anchor: its first frame back is the anchor's,
                # or a later one when the engine skipped the first (see _submit)
                self._anchor_index = self._next_render = job.anchor + skipped
                self._offset = None
            elif self._offset is None:
                # no frame back since the restart yet, and the engine skipped more
                self._anchor_index += skipped
            self._take_frames(frames, job)
        elif self._keep_before is not None and self._offset is not None:
            # made before an early start: its frames before the start are still right
            self._take_frames(frames, job, below=self._keep_before)
        self._submit()

    def _take_frames(
        self, frames: list[RenderedFrame], job: _Job, below: int | None = None
    ) -> None:
        for frame in frames:
            if self._offset is None:
                self._offset = self._anchor_index - frame.index
            index = frame.index + self._offset
            if below is not None:
                if index < below and index >= self._next_frame:
                    self._keep(frame, index, job)
                continue
            self._counts["frames_rendered"] += 1
            self._next_render = index + 1
            if index < self._next_frame:
                continue  # too late: counted as dropped when its time came
            self._keep(frame, index, job)

    def _keep(self, frame: RenderedFrame, index: int, job: _Job) -> None:
        """Frame ``index`` waits for its release."""
        self._frames[index] = self._video_out(frame, index)
        if self.trace is not None:
            self.trace.rendered(
                index,
                submitted_ms=job.submitted_ms,
                stages_ms=frame.stages_ms,
                speaking=frame.speaking > 0.0,
            )

    def _video_out(self, frame: RenderedFrame, index: int) -> VideoOut:
        return VideoOut(
            image=frame.image,
            pts_90k=index * self.pts_per_frame,
            index=index,
            speaking=frame.speaking,
            format=frame.format,
        )

    def _start_early(self) -> None:
        """Early start: a source that is ready (not live, its first audio buffered) and
        comes while the stream is idle starts at the earliest frame the engine can still
        render in time, instead of at the input position: ``F + ceil_chunk(E)`` (about 140
        ms) sooner. That frame's audio, and the silence after it in the delay line, are
        replaced by the source's; the engine restarts there as after an interruption.
        Nothing that has left changes, and lips and sound stay together."""
        feed = self._playing()
        if (
            feed is None
            or feed.started
            or feed.live
            or not self.config.early_start
            or self._restart is not None
            or self._offset is None
            or self._ends
            or self._starts
        ):
            return
        frame = self.frame_samples
        lead = frame + _ceil_to(self.engine_delay_samples, CHUNK_SAMPLES)
        # the input this tick will have reached: frame ``start / F`` is ready with it; and
        # every frame before it must be renderable from what the engine was already given
        # (the input not handed to it yet is replaced)
        reached = self._captured + CHUNK_SAMPLES
        latest = min(reached - lead, self._pushed - self.engine_delay_samples)
        start = max(latest // frame, self._next_frame) * frame
        gap = self._captured - start
        if start < self._sound_end or gap <= 0 or feed.buffered <= gap:
            return  # not idle long enough, or not ready yet: it starts at the input position
        pcm = feed.take(gap)
        feed.started = True
        feed.playback.start_pts = start
        self._starts.append((start, feed.playback))
        self._delay_line = deque(
            chunk
            if chunk.pts < start
            else AudioChunk(pcm[chunk.pts - start : chunk.end - start], OUTPUT_RATE, chunk.pts)
            for chunk in self._delay_line
        )
        for index in [index for index in self._frames if index * frame >= start]:
            del self._frames[index]
        self._epoch += 1
        self._keep_before = start // frame
        self._pending.clear()
        self._restart = (start // frame, pcm)

    def _playing(self) -> _Feed | None:
        """The source playing: its feed, opened from the queue's head when it is its turn
        (read ahead from then on)."""
        if self._feed is None and self._queue:
            self._feed = _Feed(self._queue.popleft(), self._source_budget, self._live_budget)
        return self._feed

    def _next_input(self) -> np.ndarray:
        """The input chunk: the playing source's audio, silence where there is none."""
        out = np.zeros(CHUNK_SAMPLES, np.float32)
        filled = 0
        while filled < CHUNK_SAMPLES:
            feed = self._playing()
            if feed is None:
                break
            if feed.buffered == 0 and not feed.exhausted:
                if feed.started:
                    self._counts["source_underruns"] += 1
                break  # not there yet (synthesis, a live source's jitter): silence
            piece = feed.take(CHUNK_SAMPLES - filled)
            if len(piece):
                if not feed.started:
                    feed.started = True
                    feed.playback.start_pts = self._captured + filled
                    self._starts.append((self._captured + filled, feed.playback))
                out[filled : filled + len(piece)] = piece
                filled += len(piece)
                self._sound_end = self._captured + filled
            if feed.finished:
                self._ends.append((self._captured + filled, feed.playback, feed.error))
                feed.stop()
                self._feed = None
        return out

    # -- release ------------------------------------------------------------------------------
    def _emit(self) -> None:
        position = self._tick_pos - self.delay_samples  # everything before this leaves now
        while self._delay_line and self._delay_line[0].pts <= position:
            chunk = self._delay_line.popleft()
            if self._burst is not None:
                chunk = stamp_audio(chunk, self._burst)
            self._counts["audio_chunks"] += 1
            for subscriber in list(self._subscribers):
                subscriber._put_audio(chunk)
            self._release_events(chunk.end)
        while self._next_frame * self.frame_samples <= position:
            frame = self._frames.pop(self._next_frame, None)
            if self.trace is not None:
                self.trace.released(self._next_frame, dropped=frame is None)
            if frame is None:
                self._counts["frames_dropped"] += 1
                self._note_drop()
            else:
                if self._burst is not None:
                    frame = stamp_video(frame)
                self._counts["frames_emitted"] += 1
                for subscriber in list(self._subscribers):
                    subscriber._put_video(frame)
            self._next_frame += 1

    def _release_events(self, released: int) -> None:
        while self._starts and self._starts[0][0] < released:
            pts, playback = self._starts.popleft()
            self._publish(SegmentStart(segment=playback.id, name=playback.name, pts=pts))
        while self._ends and self._ends[0][0] <= released:
            end, playback, error = self._ends.popleft()
            self._end(playback, end, error=error)

    def _note_drop(self) -> None:
        self._dropped_unlogged += 1
        now = self.clock.now()
        if now - self._last_lag_log >= self.config.log_interval_s:
            took = f"a frame took {self._last_render * 1000:.0f} ms to render; "
            log.warning(
                "video behind real time: %d frame(s) dropped since the last report (%sframes "
                "come every %.0f ms, the render budget is %.0f ms)",
                self._dropped_unlogged,
                took if self._last_render > 0 else "",
                1000 / self.fps,
                self.render_budget_samples * 1000 / OUTPUT_RATE,
            )
            self._dropped_unlogged = 0
            self._last_lag_log = now

    def _end(
        self, playback: Playback, pts: int, *, interrupted: bool = False, error: str | None = None
    ) -> None:
        event = SegmentEnd(
            segment=playback.id, name=playback.name, pts=pts, interrupted=interrupted, error=error
        )
        if playback._finish(event):
            self._publish(event)

    def _publish(self, event: SegmentEvent) -> None:
        for subscriber in list(self._subscribers):
            subscriber._put_event(event)

    # -- teardown -----------------------------------------------------------------------------
    def _drop_sources(self) -> list[Playback]:
        dropped: list[Playback] = []
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()
            dropped.append(feed.playback)
        while self._queue:
            playback = self._queue.popleft()
            playback.source.close()
            dropped.append(playback)
        return dropped

    def _shut(self, reason: str) -> None:
        boundary = self._next_frame * self.frame_samples
        for playback in self._drop_sources():
            self._end(playback, boundary, interrupted=True)
        for _, playback, error in self._ends:
            self._end(playback, boundary, interrupted=True, error=error)
        self._ends.clear()
        for subscriber in list(self._subscribers):
            subscriber.close(reason)
        self._subscribers.clear()
        calls, self._calls = self._calls, []
        for call in calls:
            _settle(call.future, None, StreamClosed(reason))

    def _detach(self, subscription: Subscription) -> None:
        with contextlib.suppress(ValueError):
            self._subscribers.remove(subscription)
