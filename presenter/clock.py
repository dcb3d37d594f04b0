"""Injectable clocks: the event loop's (``RealClock``) and one moved by hand (``VirtualClock``).

Whatever paces itself in the presenter does so through a :class:`Clock`: it reads ``now()``
(seconds) and awaits ``sleep_until(deadline)``. Tests give it a :class:`VirtualClock`, so
timing logic runs deterministically and as fast as the computation allows.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from typing import Any, Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Seconds on this clock (monotonic; the origin is arbitrary)."""
        ...

    async def sleep_until(self, deadline: float) -> None:
        """Return once ``now() >= deadline`` (at once when it already is)."""
        ...

    def hold(self, work: asyncio.Future[Any]) -> None:
        """``work`` (e.g. a call on a worker thread) is in flight: a virtual clock does not
        move by itself until it is done (a real clock ignores this)."""
        ...


class RealClock:
    """The running event loop's clock (``loop.time()``; ``time.monotonic()`` outside a loop,
    which is what the default loop uses)."""

    def now(self) -> float:
        try:
            return asyncio.get_running_loop().time()
        except RuntimeError:
            return time.monotonic()

    async def sleep_until(self, deadline: float) -> None:
        delay = deadline - self.now()
        # asyncio.sleep(0) still yields, so a task that is behind lets others run.
        await asyncio.sleep(max(0.0, delay))

    def hold(self, work: asyncio.Future[Any]) -> None:
        pass


class VirtualClock:
    """Time that moves only when told to.

    * ``advance(seconds)`` / ``advance_to(t)`` move the time and wake every sleeper whose
      deadline has come (callable from any thread).
    * ``await run_until(t)`` / ``run_for(seconds)`` step from deadline to deadline, and after
      each step wait until everything is asleep again (see below), so that a paced task does
      all of one step's work (worker threads included) before the next.
    * ``auto_advance=True``: whenever everything is asleep, the time jumps to the earliest
      deadline by itself. A stream then runs as fast as it can compute, and every timing
      decision sees exactly the time its schedule says.

    "Everything is asleep": ``participants`` tasks sleep on the clock (``sleep_until``) and
    no held work (``hold``: a call running on a worker thread) is awake. Held work is taken
    to run on one worker thread: it is asleep while that thread sleeps on the clock with
    ``sleep_blocking`` (which is how a stand-in engine simulates render time).
    """

    def __init__(
        self, start: float = 0.0, *, auto_advance: bool = False, participants: int = 1
    ) -> None:
        if participants < 1:
            raise ValueError(f"participants must be at least 1, got {participants}")
        self._now = float(start)
        self._lock = threading.Lock()
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._thread_sleepers: list[tuple[float, int, threading.Event]] = []
        self._order = itertools.count()
        self._holds = 0
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._auto_pending = False
        self.auto_advance = auto_advance
        self.participants = participants

    def now(self) -> float:
        return self._now

    @property
    def sleeping(self) -> int:
        """Tasks asleep on the clock now."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    @property
    def next_deadline(self) -> float | None:
        self._purge()
        deadlines = [self._sleepers[0][0]] if self._sleepers else []
        with self._lock:
            if self._thread_sleepers:
                deadlines.append(self._thread_sleepers[0][0])
        return min(deadlines) if deadlines else None

    @property
    def idle(self) -> bool:
        """Everything is asleep (see the class docstring)."""
        with self._lock:
            thread_sleeping = len(self._thread_sleepers)
        return self.sleeping >= self.participants and self._holds <= thread_sleeping

    async def sleep_until(self, deadline: float) -> None:
        loop = asyncio.get_running_loop()
        self._loop = loop
        if deadline <= self._now:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = loop.create_future()
        heapq.heappush(self._sleepers, (float(deadline), next(self._order), future))
        self._check()
        try:
            await future
        finally:
            if not future.done():
                future.cancel()

    def hold(self, work: asyncio.Future[Any]) -> None:
        self._loop = asyncio.get_running_loop()
        self._holds += 1

        def release(_: asyncio.Future[Any]) -> None:
            self._holds -= 1
            self._check()

        work.add_done_callback(release)

    def sleep_blocking(self, seconds: float) -> None:
        """From a worker thread: block until the clock has moved ``seconds`` on."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the clock has not been used on an event loop yet")
        if seconds <= 0:
            return
        event = threading.Event()
        with self._lock:
            entry = (self._now + seconds, next(self._order), event)
            heapq.heappush(self._thread_sleepers, entry)
        loop.call_soon_threadsafe(self._check)
        event.wait()

    def advance(self, seconds: float) -> None:
        if seconds < 0:
            raise ValueError(f"time only moves forward, got {seconds} s")
        self.advance_to(self._now + seconds)

    def advance_to(self, t: float) -> None:
        with self._lock:
            if t < self._now:
                raise ValueError(f"time only moves forward: now {self._now}, asked {t}")
            self._now = float(t)
        loop = self._loop
        if loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            self._wake_due()
        elif not loop.is_closed():
            loop.call_soon_threadsafe(self._wake_due)

    async def run_until(self, t: float) -> None:
        """Step through every deadline up to ``t`` (see the class docstring), then set ``t``."""
        self._loop = asyncio.get_running_loop()
        while True:
            await self._all_asleep()
            deadline = self.next_deadline
            if deadline is None or deadline > t:
                break
            self.advance_to(max(deadline, self._now))
            await asyncio.sleep(0)
        if t > self._now:
            self.advance_to(t)

    async def run_for(self, seconds: float) -> None:
        await self.run_until(self._now + seconds)

    # -- internals --------------------------------------------------------------------------
    def _purge(self) -> None:
        while self._sleepers and self._sleepers[0][2].done():
            heapq.heappop(self._sleepers)

    def _wake_due(self) -> None:
        """Wake whoever's deadline has come: held work first. Tasks of the same instant wake
        once that work sleeps again or is done (``_check`` calls back here), so what the
        loop does at an instant never depends on how fast a worker thread runs."""
        with self._lock:
            while self._thread_sleepers and self._thread_sleepers[0][0] <= self._now:
                heapq.heappop(self._thread_sleepers)[2].set()
            held_awake = self._holds > len(self._thread_sleepers)
        if held_awake:
            return
        self._purge()
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():
                future.set_result(None)
        self._purge()

    def _check(self) -> None:
        """On the loop: wake the tasks that are due (held work may just have gone back to
        sleep or ended); when everything is asleep, tell who waits for that, or move on."""
        self._wake_due()
        if not self.idle:
            return
        for waiter in self._idle_waiters:
            if not waiter.done():
                waiter.set_result(None)
        self._idle_waiters.clear()
        if self.auto_advance and not self._auto_pending and self._loop is not None:
            self._auto_pending = True
            # Two loop turns first: tasks woken by what the sleeper just did run before time
            # moves (a consumer reads an item at the time it was released).
            self._loop.call_soon(self._loop.call_soon, self._auto_step)

    def _auto_step(self) -> None:
        self._auto_pending = False
        if not self.idle:
            return
        deadline = self.next_deadline
        if deadline is not None:
            self.advance_to(max(deadline, self._now))

    async def _all_asleep(self) -> None:
        if self.idle:
            return
        assert self._loop is not None
        waiter: asyncio.Future[None] = self._loop.create_future()
        self._idle_waiters.append(waiter)
        await waiter
