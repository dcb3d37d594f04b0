"""``AvatarStream``: an avatar that is always on air, lip-synced to whatever it is told to say.

Threads
-------
The stream owns one engine and makes every engine call on ONE worker thread
(:mod:`presenter.engine_worker`), so the event loop never blocks on the model. Everything
else lives on the event loop: the pacing, the delay line and the release (here), the queued
sources (:mod:`presenter.playback`) and the consumers (:mod:`presenter.subscription`).

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
others, with the engine's ``drop_ready(keep)`` (drop the ready frames but the newest
``keep``, their indices used up). A restart (an interruption, an early start) is planned
the same way: when the worker comes to it late, only its newest frames that can still be on
time are rendered, and the engine's frames are mapped by the count it reports skipped. A
frame not there at its release time is dropped; drops are logged at most once per
``log_interval_s``. When the event loop itself stalls (the pacing is more than
``reanchor_after_ms`` late), the schedule is re-anchored on the present instead of bursting
to catch up; pts stay contiguous.

Consumers
---------
``subscribe()`` returns a :class:`~presenter.subscription.Subscription` with bounded queues
(a budget in ms): a lagging subscriber loses its oldest video frames, never audio; a
subscriber more than its audio budget behind is closed
(:class:`~presenter.subscription.StreamClosed`) rather than fed a stream with holes.

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
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np

from engine.frames import RenderedFrame, StreamEngine
from presenter.clock import Clock, RealClock
from presenter.engine_worker import EngineFeed, EngineJob
from presenter.errors import PresenterError
from presenter.media import CHUNK_SAMPLES, OUTPUT_RATE, AudioChunk, SegmentEvent, VideoOut
from presenter.playback import Playback, Playlist
from presenter.sources.base import AudioSource
from presenter.stamp import click_burst, stamp_audio, stamp_video
from presenter.subscription import StreamClosed, Subscribers
from presenter.trace import FrameTrace

log = logging.getLogger(__name__)

R = TypeVar("R")


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
    live_samples_dropped: int  # samples of live sources dropped to keep their latency down
    interrupts: int


def _ceil_to(value: int, step: int) -> int:
    return -(-value // step) * step


def _ms_to_samples(ms: float) -> int:
    return math.ceil(ms * OUTPUT_RATE / 1000)


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
        try:
            self.timeline = engine.timeline.at_rate(OUTPUT_RATE)
            self.timeline.pts_per_frame  # noqa: B018 - raises unless whole ticks of 90 kHz
        except ValueError as exc:
            raise PresenterError(f"the engine's frames do not fit the stream: {exc}") from exc
        self.frame_samples = self.timeline.frame_samples  # F: output samples per frame (1920)
        if self.frame_samples % CHUNK_SAMPLES:
            raise PresenterError(
                f"a video frame of {self.frame_samples} samples at {OUTPUT_RATE} Hz is not a "
                f"whole number of {CHUNK_SAMPLES}-sample chunks"
            )
        self.fps = self.timeline.fps
        # The engine is fed 48 kHz from now on; its delay includes that rate's resampler.
        engine.reset()
        engine.push_audio(np.zeros(0, np.float32), OUTPUT_RATE)
        self.engine_delay_samples = max(
            0, math.ceil(engine.delay_samples * OUTPUT_RATE / engine.timeline.rate)
        )
        budget_samples = _ms_to_samples(self.config.render_budget_ms)
        self.render_budget_samples = max(CHUNK_SAMPLES, _ceil_to(budget_samples, CHUNK_SAMPLES))
        self.delay_samples = (
            self.frame_samples
            + _ceil_to(self.engine_delay_samples, CHUNK_SAMPLES)
            + self.render_budget_samples
        )
        # pacing
        self._anchor_time = 0.0
        self._anchor_pos = 0
        self._tick_pos = 0  # stream sample at the end of the current tick
        # outputs in waiting
        self._delay_line: deque[AudioChunk] = deque()
        self._frames: dict[int, VideoOut] = {}
        self._next_frame = 0  # next frame index to release
        self._playlist = Playlist(
            read_ahead=_ms_to_samples(self.config.source_buffer_ms),
            live_budget=_ms_to_samples(self.config.live_buffer_ms),
        )
        self._subscribers = Subscribers(
            video_fps=self.fps,
            video_queue_ms=self.config.video_queue_ms,
            audio_queue_ms=self.config.audio_queue_ms,
        )
        # a new consumer: it gets what is released from now on (Subscribers.add)
        self.subscribe = self._subscribers.add
        # state, counters
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self._failure: str | None = None
        self._dropped_unlogged = 0
        self._last_lag_log = -math.inf
        # the counts of StreamStats that the stream itself keeps (the others: feed, playlist)
        self._counts = dict.fromkeys(
            ("frames_emitted", "frames_dropped", "audio_chunks", "reanchors", "interrupts"), 0
        )
        self._burst = click_burst() if self.config.stamp else None
        # when each frame passed each stage (presenter.trace); the video encoder adds its own
        self.trace: FrameTrace | None = (
            FrameTrace(self.config.trace_frames, timeline=self.timeline)
            if self.config.trace_frames
            else None
        )
        self._traced_input = 0  # the next frame whose input moment is not traced yet
        # the input on its way to the engine, and the frames back (on the engine's worker)
        self._feed = EngineFeed(
            engine,
            timeline=self.timeline,
            engine_delay_samples=self.engine_delay_samples,
            clock=self.clock,
            trace=self.trace,
            release_time=lambda index: self.release_time(self.timeline.frame_start(index)),
            deliver=self._hold_for_release,
            fail=self._fail,
        )

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
        return StreamStats(
            **self._counts,
            frames_rendered=self._feed.frames_rendered,
            render_skips=self._feed.render_skips,
            source_underruns=self._playlist.underruns,
            live_samples_dropped=self._playlist.live_samples_dropped,
        )

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def busy(self) -> bool:
        """A source is playing or queued (its audio may still be in the delay line)."""
        return self._playlist.busy

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
        self._feed.start()
        self._anchor_time = self.clock.now()
        self._anchor_pos = self._tick_pos
        self._task = loop.create_task(self._run(), name="avatar-stream")

    async def __aenter__(self) -> AvatarStream:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def say(self, source: AudioSource) -> Playback:
        """Queue a source; sources play one after another."""
        if self._closed:
            source.close()
            raise StreamClosed(self._failure or "the stream is closed")
        playback = self._playlist.add(source)
        if self.running:
            self._playlist.playing()  # if it is its turn, read it from now (for an early start)
        return playback

    play = say

    def interrupt(self) -> int:
        """Drop queued sources, queued audio and rendered frames now; the stream is idle
        from the returned output sample on (the next frame boundary to leave)."""
        self._counts["interrupts"] += 1
        boundary = self.timeline.frame_start(self._next_frame)
        self._publish(self._playlist.interrupt(boundary))
        silent = np.zeros(CHUNK_SAMPLES, np.float32)
        self._delay_line = deque(
            chunk if chunk.pts < boundary else AudioChunk(silent, OUTPUT_RATE, chunk.pts)
            for chunk in self._delay_line
        )
        self._frames.clear()
        self._feed.interrupt(self._next_frame)
        return boundary

    async def run_on_engine(self, call: Callable[[StreamEngine], R]) -> R:
        """Run ``call(engine)`` on the engine's worker, between two engine calls of the stream
        (the only place the engine may be used while the stream runs), and return its
        result; its exception is raised here and the stream goes on. Frames already rendered
        stay as they are: a change shows from the frames rendered after it (within ``D``)."""
        if self._closed or not self._feed.worker.running:
            raise StreamClosed(self._failure or "the stream is not running")
        return await self._feed.call(call)

    async def close(self) -> None:
        """Stop the stream: sources are closed, subscribers get ``StreamClosed``, the worker
        thread ends (after the engine call in flight, if any)."""
        self._closed = True
        reason = self._failure or "the stream is closed"
        self._feed.stop(StreamClosed(reason))
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end_all(reason)
        await self._feed.close()

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
        self._feed.stop(StreamClosed(self._failure))
        task = self._task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._end_all(self._failure)

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
        self._release()
        self._start_early()
        start = self._feed.captured
        pcm = self._playlist.next_input(start)
        self._delay_line.append(AudioChunk(pcm, OUTPUT_RATE, start))
        self._feed.add_input(pcm)
        self._trace_input()

    def _trace_input(self) -> None:
        """Trace: the frames that the input now completes (frame ``k`` needs ``(k + 1) F + E``
        samples) entered the stream at this tick's time."""
        trace = self.trace
        if trace is None:
            return
        complete = self.timeline.frame_of(self._feed.captured - self.engine_delay_samples)
        if self._traced_input >= complete:
            return
        entered = self.input_time(self._feed.captured - 1)
        at_ms = trace.now_ms() - (self.clock.now() - entered) * 1000.0
        while self._traced_input < complete:
            trace.input(self._traced_input, at_ms)
            self._traced_input += 1

    def _hold_for_release(self, frame: RenderedFrame, index: int, job: EngineJob) -> None:
        """The engine rendered stream frame ``index``: it waits for its release, unless it
        came too late (it is then counted as dropped when its time comes)."""
        if index < self._next_frame:
            return
        self._frames[index] = VideoOut(
            image=frame.image,
            pts_90k=self.timeline.video_pts(index),
            index=index,
            speaking=frame.speaking,
            format=frame.format,
        )
        if self.trace is not None:
            self.trace.rendered(
                index,
                submitted_ms=job.submitted_ms,
                stages_ms=frame.stages_ms,
                speaking=frame.speaking > 0.0,
            )

    def _start_early(self) -> None:
        """Early start: a source that is ready (not live, its first audio buffered) and
        comes while the stream is idle starts at the earliest frame the engine can still
        render in time, instead of at the input position: ``F + ceil_chunk(E)`` (about 140
        ms) sooner. That frame's audio, and the silence after it in the delay line, are
        replaced by the source's; the engine restarts there as after an interruption.
        Nothing that has left changes, and lips and sound stay together."""
        playlist = self._playlist
        feed = playlist.playing()
        if (
            feed is None
            or feed.started
            or feed.live
            or not self.config.early_start
            or self._feed.restart_waiting
            or not self._feed.indices.aligned
            or not playlist.settled
        ):
            return
        timeline = self.timeline
        lead = self.frame_samples + _ceil_to(self.engine_delay_samples, CHUNK_SAMPLES)
        # the input this tick will have reached: frame ``start / F`` is ready with it; and
        # every frame before it must be renderable from what the engine was already given
        # (the input not handed to it yet is replaced)
        reached = self._feed.captured + CHUNK_SAMPLES
        latest = min(reached - lead, self._feed.pushed - self.engine_delay_samples)
        first = max(timeline.frame_of(latest), self._next_frame)
        start = timeline.frame_start(first)
        gap = self._feed.captured - start
        if start < playlist.sound_end or gap <= 0 or feed.buffered <= gap:
            return  # not idle long enough, or not ready yet: it starts at the input position
        pcm = feed.take(gap)
        playlist.mark_started(feed, start)
        self._delay_line = deque(
            chunk
            if chunk.pts < start
            else AudioChunk(pcm[chunk.pts - start : chunk.end - start], OUTPUT_RATE, chunk.pts)
            for chunk in self._delay_line
        )
        for index in [index for index in self._frames if index >= first]:
            del self._frames[index]
        self._feed.start_early(first, pcm)

    # -- release ------------------------------------------------------------------------------
    def _release(self) -> None:
        """What is due leaves: audio chunks, their events, and the frames that go with them."""
        position = self._tick_pos - self.delay_samples  # everything before this leaves now
        while self._delay_line and self._delay_line[0].pts <= position:
            chunk = self._delay_line.popleft()
            if self._burst is not None:
                chunk = stamp_audio(chunk, self._burst)
            self._counts["audio_chunks"] += 1
            self._subscribers.deliver_audio(chunk)
            self._publish(self._playlist.released(chunk.end))
        while self.timeline.frame_start(self._next_frame) <= position:
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
                self._subscribers.deliver_video(frame)
            self._next_frame += 1

    def _note_drop(self) -> None:
        self._dropped_unlogged += 1
        now = self.clock.now()
        if now - self._last_lag_log >= self.config.log_interval_s:
            last = self._feed.estimate.last
            took = f"a frame took {last * 1000:.0f} ms to render; "
            log.warning(
                "video behind real time: %d frame(s) dropped since the last report (%sframes "
                "come every %.0f ms, the render budget is %.0f ms)",
                self._dropped_unlogged,
                took if last > 0 else "",
                1000 / self.fps,
                self.render_budget_samples * 1000 / OUTPUT_RATE,
            )
            self._dropped_unlogged = 0
            self._last_lag_log = now

    def _publish(self, events: list[SegmentEvent]) -> None:
        for event in events:
            self._subscribers.publish(event)

    # -- teardown -----------------------------------------------------------------------------
    def _end_all(self, reason: str) -> None:
        """Every source ends interrupted, every subscriber and waiting engine call is told."""
        self._publish(self._playlist.close(self.timeline.frame_start(self._next_frame)))
        self._subscribers.close(reason)
