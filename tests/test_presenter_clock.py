"""Clocks: the virtual clock moves only when told (or when every paced task sleeps)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from presenter.clock import Clock, RealClock, VirtualClock


def test_advance_wakes_sleepers_in_deadline_order() -> None:
    async def main() -> None:
        clock = VirtualClock(start=10.0, participants=2)
        woken: list[tuple[str, float]] = []

        async def sleeper(name: str, deadline: float) -> None:
            await clock.sleep_until(deadline)
            woken.append((name, clock.now()))

        tasks = [
            asyncio.create_task(sleeper("late", 11.0)),
            asyncio.create_task(sleeper("early", 10.5)),
        ]
        await asyncio.sleep(0)
        assert clock.sleeping == 2 and clock.next_deadline == 10.5
        clock.advance(0.4)
        await asyncio.sleep(0)
        assert woken == []
        clock.advance(0.1)
        await asyncio.sleep(0)
        assert woken == [("early", 10.5)]
        clock.advance_to(12.0)
        await asyncio.gather(*tasks)
        assert woken == [("early", 10.5), ("late", 12.0)]
        with pytest.raises(ValueError, match="forward"):
            clock.advance(-1.0)
        # A deadline already past returns at once.
        await clock.sleep_until(1.0)

    asyncio.run(main())


def test_auto_advance_runs_a_paced_task_at_its_exact_deadlines() -> None:
    async def main() -> None:
        clock = VirtualClock(auto_advance=True)
        seen: list[float] = []

        async def paced() -> None:
            for tick in range(1, 101):
                await clock.sleep_until(tick * 0.02)
                seen.append(clock.now())
                await asyncio.to_thread(sum, range(100))  # work on a thread: time stands still
                assert clock.now() == seen[-1]

        await paced()
        assert seen == [tick * 0.02 for tick in range(1, 101)]

    asyncio.run(main())


def test_run_until_steps_each_deadline_and_waits_for_the_work() -> None:
    async def main() -> None:
        clock = VirtualClock()
        seen: list[float] = []

        async def paced() -> None:
            tick = 0
            while True:
                tick += 1
                await clock.sleep_until(tick * 0.1)
                await asyncio.to_thread(sum, range(1000))
                seen.append(clock.now())

        task = asyncio.create_task(paced())
        await clock.run_until(0.55)
        assert seen == pytest.approx([0.1, 0.2, 0.3, 0.4, 0.5])
        assert clock.now() == 0.55
        await clock.run_for(0.05)
        assert seen[-1] == pytest.approx(0.6)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert clock.sleeping == 0

    asyncio.run(main())


def test_advance_from_another_thread() -> None:
    async def main() -> None:
        clock = VirtualClock()
        sleeper = asyncio.create_task(clock.sleep_until(1.0))
        await asyncio.sleep(0)
        thread = threading.Thread(target=clock.advance, args=(1.5,))
        thread.start()
        thread.join()
        await asyncio.wait_for(sleeper, timeout=10)
        assert clock.now() == 1.5

    asyncio.run(main())


def test_real_clock_is_the_loop_clock() -> None:
    async def main() -> None:
        clock: Clock = RealClock()
        loop = asyncio.get_running_loop()
        before = clock.now()
        assert abs(before - loop.time()) < 1.0
        await clock.sleep_until(before + 0.01)
        assert clock.now() >= before + 0.01
        await clock.sleep_until(before - 5.0)  # past: returns at once

    asyncio.run(main())
