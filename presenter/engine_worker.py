"""The stream's side of the engine: one worker thread, what it is handed, and where the
frames it returns belong.

Every engine call of a running stream is made on ONE worker thread (a single-thread
executor; torch and the graph runtimes release the GIL), so the event loop never blocks on
the model. A call is a :class:`EngineJob`: the operations for the engine (:data:`EngineOp`:
push audio, drop ready frames, restart) and any :meth:`EngineWorker.call` functions waiting
for it, run in that order, then ``pull()``. One job is in flight at a time; the stream hands
over what piled up when the worker is free.

The engine counts its frames on its own; the stream counts them on the output clock. The
two agree until the engine restarts (an interruption, an early start: ``reset()`` and new
input from a chosen stream frame on) or skips ready frames (``drop_ready``). A
:class:`FrameIndexMap` keeps the correspondence across both: a restart gives its first
frame back the stream index it was started at (plus the frames the engine reports it
skipped), and results of calls made before an interruption are discarded (all of them) or,
before an early start, kept only for frames before the start. It is plain bookkeeping,
testable without an event loop, as is :func:`frames_in_time` (which of the frames a call
makes ready can still be rendered before their release).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from engine.frames import RenderedFrame, StreamEngine, Timeline
from presenter.clock import Clock
from presenter.trace import FrameTrace

R = TypeVar("R")


@dataclass(frozen=True, eq=False)
class PushAudio:
    """Push this audio (at the stream's rate) into the engine."""

    pcm: np.ndarray


@dataclass(frozen=True)
class DropReady:
    """Skip the engine's ready frames but the newest ``keep`` (their indices used up)."""

    keep: int


@dataclass(frozen=True)
class Restart:
    """Reset the engine: pending audio and frames dropped; what is pushed next starts over."""


EngineOp = PushAudio | DropReady | Restart


def apply_ops(engine: StreamEngine, ops: list[EngineOp], sample_rate: int) -> int:
    """Run ``ops`` on ``engine`` in order; returns the frames ``DropReady`` skipped."""
    skipped = 0
    for op in ops:
        match op:
            case PushAudio(pcm=pcm):
                if len(pcm):
                    engine.push_audio(pcm, sample_rate)
            case DropReady(keep=keep):
                skipped += int(engine.drop_ready(keep=keep))
            case Restart():
                engine.reset()
    return skipped


@dataclass(frozen=True)
class EngineCall(Generic[R]):
    """A function to run on the worker between two engine calls; its outcome is handed back
    to the event loop through ``future``."""

    function: Callable[[StreamEngine], R]
    future: asyncio.Future[R]

    def run(self, engine: StreamEngine) -> None:
        loop = self.future.get_loop()
        try:
            result = self.function(engine)
        except Exception as exc:
            loop.call_soon_threadsafe(settle, self.future, None, exc)
        else:
            loop.call_soon_threadsafe(settle, self.future, result, None)


def settle(future: asyncio.Future[Any], result: object, error: BaseException | None) -> None:
    """Give ``future`` its result or error, unless its caller gave up waiting."""
    if future.done():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


@dataclass(frozen=True)
class EngineJob:
    """One engine call in flight."""

    future: asyncio.Future[tuple[list[RenderedFrame], int]]  # frames, frames skipped
    epoch: int  # the index map's epoch when it was handed over
    anchor: int | None  # stream index of the engine's first frame after a restart in it
    began: float  # clock time it was handed to the worker
    submitted_ms: float  # the same, in wall-clock ms (for the trace)


class FrameIndexMap:
    """Which stream frame each frame the engine returns is (see the module docstring)."""

    def __init__(self) -> None:
        self.epoch = 0  # moves on at each restart: results of older calls are stale
        self.next_render = 0  # stream index of the next frame the engine will render
        self._anchor_index = 0  # stream index of the engine's next frame (after a restart)
        self._offset: int | None = None  # stream index - engine index (from the next frame)
        self._keep_before: int | None = None  # stale results are kept below this frame

    @property
    def aligned(self) -> bool:
        """A frame has come back since the last restart: the engine's clock is known."""
        return self._offset is not None

    def interrupted(self) -> None:
        """Every call in flight is stale: its frames are discarded."""
        self.epoch += 1
        self._keep_before = None

    def started_early(self, frame: int) -> None:
        """The engine restarts at stream frame ``frame``: frames of calls in flight before it
        are still right and kept; the rest are discarded."""
        self.epoch += 1
        self._keep_before = frame

    def skipped(self, count: int) -> None:
        """The next call skips ``count`` ready frames (``DropReady``)."""
        self.next_render += count

    def place(
        self, epoch: int, anchor: int | None, skipped: int, indices: list[int]
    ) -> tuple[list[int | None], bool]:
        """The stream index of each engine frame ``indices`` that a call of ``epoch`` returned
        (None: discard it), and whether the call was current (its frames count as
        rendered). ``anchor``: the stream frame the call restarted the engine at (if it did);
        ``skipped``: the ready frames it skipped."""
        if epoch == self.epoch:
            if anchor is not None:
                # the engine restarted at the anchor: its first frame back is the anchor's,
                # or a later one when the engine skipped the first
                self._anchor_index = self.next_render = anchor + skipped
                self._offset = None
            elif self._offset is None:
                # no frame back since the restart yet, and the engine skipped more
                self._anchor_index += skipped
            placed: list[int | None] = []
            for engine_index in indices:
                if self._offset is None:
                    self._offset = self._anchor_index - engine_index
                placed.append(engine_index + self._offset)
                self.next_render = engine_index + self._offset + 1
            return placed, True
        below, offset = self._keep_before, self._offset
        if below is None or offset is None:
            return [None] * len(indices), False
        # made before an early start: its frames before the start are still right
        return [i + offset if i + offset < below else None for i in indices], False


class RenderEstimate:
    """What a frame takes to render (clock seconds, a moving average of the engine's calls)."""

    def __init__(self) -> None:
        self.seconds = 0.0  # 0: not measured yet
        self.last = 0.0  # the last call's

    def measured(self, per_frame: float) -> None:
        self.last = per_frame
        previous = self.seconds
        self.seconds = per_frame if previous <= 0 else 0.7 * previous + 0.3 * per_frame

    def halve(self) -> None:
        """A call rendered nothing in time: assume faster, to try again soon (the load may
        have eased)."""
        self.seconds *= 0.5


def frames_in_time(
    *,
    first: int,
    newest: int,
    estimate: float,
    now: float,
    release_time: Callable[[int], float],
) -> tuple[int, int]:
    """(frames ``first`` .. ``newest`` ready to render, how many of the newest of them can be
    rendered before their release at ``estimate`` seconds a frame). ``release_time(k)``: the
    clock time frame ``k`` leaves."""
    ready = newest - first + 1
    if ready <= 0 or estimate <= 0.0:
        return max(0, ready), max(0, ready)
    for keep in range(ready, 0, -1):
        oldest = newest - keep + 1
        # Rendered oldest first: frame oldest + i is done at now + (i + 1) * estimate; both
        # sides grow linearly in i, so checking the two ends suffices.
        if now + estimate <= release_time(oldest) and (
            now + keep * estimate <= release_time(newest)
        ):
            return ready, keep
    return ready, 0


class EngineWorker:
    """The worker thread that makes every engine call, one :class:`EngineJob` at a time.

    ``sample_rate``: the rate of the audio in :class:`PushAudio` operations."""

    def __init__(self, engine: StreamEngine, *, sample_rate: int) -> None:
        self.engine = engine
        self.sample_rate = sample_rate
        self.job: EngineJob | None = None  # the call in flight
        self._calls: list[EngineCall[Any]] = []  # functions waiting for the worker
        self._executor: ThreadPoolExecutor | None = None

    @property
    def running(self) -> bool:
        return self._executor is not None

    @property
    def idle(self) -> bool:
        """Running, and no call in flight."""
        return self._executor is not None and self.job is None

    @property
    def calls_waiting(self) -> bool:
        return bool(self._calls)

    def start(self) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="avatar-engine")

    def queue_call(self, function: Callable[[StreamEngine], R]) -> asyncio.Future[R]:
        """``function(engine)`` runs on the worker before the next job's operations."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._calls.append(EngineCall(function, future))
        return future

    def submit(
        self,
        ops: list[EngineOp],
        *,
        epoch: int,
        anchor: int | None,
        began: float,
        submitted_ms: float,
    ) -> EngineJob:
        """Hand the worker ``ops`` and the calls waiting; it then pulls the ready frames."""
        assert self._executor is not None and self.job is None
        calls, self._calls = self._calls, []
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._run_job, ops, calls)
        self.job = EngineJob(future, epoch, anchor, began, submitted_ms)
        return self.job

    def finished(self, job: EngineJob) -> None:
        if self.job is job:
            self.job = None

    def fail_calls(self, error: BaseException) -> None:
        """The calls still waiting get ``error``."""
        calls, self._calls = self._calls, []
        for call in calls:
            settle(call.future, None, error)

    async def close(self) -> None:
        """End the worker, after the call in flight (the engine is free afterwards)."""
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.to_thread(executor.shutdown, True)

    def _run_job(
        self, ops: list[EngineOp], calls: list[EngineCall[Any]]
    ) -> tuple[list[RenderedFrame], int]:
        """The worker thread: the only place the engine is used while the stream runs.
        Returns the frames rendered and how many ready frames were skipped before them."""
        engine = self.engine
        for call in calls:
            call.run(engine)
        skipped = apply_ops(engine, ops, self.sample_rate)
        return engine.pull(), skipped


class EngineFeed:
    """The stream's input on its way to the engine, and the engine's frames on their way
    back with their stream index.

    Each 20 ms the stream hands in its input chunk (:meth:`add_input`); whenever the worker is
    free it gets everything that piled up, planned so that only frames that can still be
    on time are rendered (the others are dropped with ``DropReady``). ``release_time(k)``:
    when stream frame ``k`` leaves; ``deliver(frame, index, job)``: a frame came back as
    stream frame ``index`` (it may be too late: the stream decides); ``fail(error)``: the
    engine raised.
    """

    def __init__(
        self,
        engine: StreamEngine,
        *,
        timeline: Timeline,
        engine_delay_samples: int,
        clock: Clock,
        trace: FrameTrace | None,
        release_time: Callable[[int], float],
        deliver: Callable[[RenderedFrame, int, EngineJob], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        self.timeline = timeline  # the stream's (its rate is the rate of the input)
        self.engine_delay_samples = engine_delay_samples  # at the stream's rate
        self.clock = clock
        self.trace = trace
        self._release_time = release_time
        self._deliver = deliver
        self._fail = fail
        self.worker = EngineWorker(engine, sample_rate=timeline.rate)
        self.indices = FrameIndexMap()
        self.estimate = RenderEstimate()
        self.captured = 0  # input samples taken in
        self.pushed = 0  # input samples handed to the worker
        self.frames_rendered = 0  # frames the engine rendered for the stream as it is
        self.render_skips = 0  # calls that skipped frames to keep up
        self._pending: list[np.ndarray] = []  # input not handed to the worker yet
        # a restart waiting for the worker: (stream frame it starts at, the input from that
        # frame's first sample up to where the input was then)
        self._restart: tuple[int, np.ndarray] | None = None
        self._stopped = False

    @property
    def restart_waiting(self) -> bool:
        return self._restart is not None

    def start(self) -> None:
        self.worker.start()

    def add_input(self, pcm: np.ndarray) -> None:
        self._pending.append(pcm)
        self.captured += len(pcm)
        self.hand_over()

    def interrupt(self, frame: int) -> None:
        """The engine starts over at stream frame ``frame`` with silence; nothing of the calls
        in flight is used."""
        self.indices.interrupted()
        self._pending.clear()
        start = self.timeline.frame_start(frame)
        self._restart = (frame, np.zeros(max(0, self.captured - start), np.float32))
        self.hand_over()

    def start_early(self, frame: int, pcm: np.ndarray) -> None:
        """The engine starts over at stream frame ``frame`` with ``pcm`` (the input from its
        first sample to the input position); calls in flight keep their frames before it."""
        self.indices.started_early(frame)
        self._pending.clear()
        self._restart = (frame, pcm)

    def call(self, function: Callable[[StreamEngine], R]) -> asyncio.Future[R]:
        """``function(engine)`` on the worker, before its next engine operations."""
        future = self.worker.queue_call(function)
        self.hand_over()
        return future

    def stop(self, reason: BaseException) -> None:
        """Nothing more is handed over; the calls waiting get ``reason``."""
        self._stopped = True
        self.worker.fail_calls(reason)

    async def close(self) -> None:
        """End the worker (after :meth:`stop`), after the call in flight."""
        await self.worker.close()

    def hand_over(self) -> None:
        """Hand the worker what is pending, unless it is busy: it then gets everything that
        piled up at once when it is done."""
        worker = self.worker
        if not worker.idle or self._stopped:
            return
        ops: list[EngineOp] = []
        anchor: int | None = None  # stream index of the engine's first frame after a restart
        if self._restart is not None:
            # After an interruption (or an early start): the engine starts over at a frame
            # that has not left yet, fed what the input is from there on (silence after an
            # interruption), so that frame is rendered before it is due.
            anchor, restart_pcm = self._restart
            self._restart = None
            ops = [Restart(), PushAudio(np.concatenate([restart_pcm, *self._pending]))]
            ready, keep = self._frames_in_time(first=anchor)
            if keep < ready:
                # The worker was late to the restart (a call in flight took long): as below,
                # only the frames that can still be on time are rendered; the anchor moves
                # on by the frames the engine skips.
                self._skipping(keep)
                ops.append(DropReady(keep))
        elif self._pending:
            ops = [PushAudio(np.concatenate(self._pending))]
            ready, keep = self._frames_in_time(first=self.indices.next_render)
            if keep < ready:
                # Some ready frames could not be on time: drop them rather than fall behind.
                self._skipping(keep)
                ops.append(DropReady(keep))
                self.indices.skipped(ready - keep)
        elif not worker.calls_waiting:
            return
        self._pending.clear()
        self.pushed = self.captured
        job = worker.submit(
            ops,
            epoch=self.indices.epoch,
            anchor=anchor,
            began=self.clock.now(),
            submitted_ms=self.trace.now_ms() if self.trace is not None else 0.0,
        )
        self.clock.hold(job.future)
        job.future.add_done_callback(lambda _: self._job_done(job))

    def _frames_in_time(self, first: int) -> tuple[int, int]:
        """(frames the engine will have ready after the pending push, counted from frame
        ``first``, and how many of the newest of them can be rendered in time)."""
        newest = self.timeline.frame_of(self.captured - self.engine_delay_samples) - 1
        return frames_in_time(
            first=first,
            newest=newest,
            estimate=self.estimate.seconds,
            now=self.clock.now(),
            release_time=self._release_time,
        )

    def _skipping(self, keep: int) -> None:
        """A call renders only the newest ``keep`` of its ready frames: counted; with none
        kept the estimate is halved, to try again soon (the load may have eased)."""
        self.render_skips += 1
        if keep == 0:
            self.estimate.halve()

    def _job_done(self, job: EngineJob) -> None:
        self.worker.finished(job)
        future = job.future
        if future.cancelled():
            return
        error = future.exception()
        if error is not None:
            if not self._stopped:
                self._fail(error)
            return
        frames, skipped = future.result()
        if frames:
            self.estimate.measured((self.clock.now() - job.began) / len(frames))
        placed, current = self.indices.place(
            job.epoch, job.anchor, skipped, [frame.index for frame in frames]
        )
        if current:
            self.frames_rendered += len(frames)
        for frame, index in zip(frames, placed, strict=True):
            if index is not None:
                self._deliver(frame, index, job)
        self.hand_over()
