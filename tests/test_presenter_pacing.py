"""AvatarStream's clock, queues and policies, with a stand-in engine of the same timing.

Everything runs on a VirtualClock, so every time below is exact and nothing depends on how
fast this machine is. The real engine is exercised in test_presenter_stream.py.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import AsyncIterator, Awaitable, Callable

import numpy as np
import pytest

from engine.audio import resample
from presenter.clock import VirtualClock
from presenter.errors import PresenterError
from presenter.media import CHUNK_SAMPLES, OUTPUT_RATE, AudioChunk, SegmentEnd, SegmentStart
from presenter.sources import ArraySource
from presenter.stream import AvatarStream, StreamConfig
from presenter.subscription import StreamClosed
from tests.stream_doubles import FakeEngine, Recorder

F = 1920  # output samples per video frame


def _run(
    body: Callable[[AvatarStream, VirtualClock, Recorder], Awaitable[None]],
    *,
    engine: FakeEngine | None = None,
    config: StreamConfig | None = None,
    clock: VirtualClock | None = None,
) -> None:
    async def main() -> None:
        virtual = clock or VirtualClock(auto_advance=True)
        stream = AvatarStream(engine or FakeEngine(), clock=virtual, config=config)
        recorder = Recorder(stream.subscribe(video_queue_ms=60_000), virtual).start()
        await stream.start()
        try:
            await asyncio.wait_for(body(stream, virtual, recorder), timeout=60)
        finally:
            # close() waits for the engine call in flight: let a simulated render finish.
            closing = asyncio.ensure_future(stream.close())
            while not closing.done():
                await asyncio.wait({closing}, timeout=0.01)
                virtual.advance(0.1)
            await recorder.stop()

    asyncio.run(main())


def _tone(seconds: float, rate: int, frequency: float = 220.0) -> np.ndarray:
    t = np.arange(round(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * frequency * t)).astype(np.float32)


def _assert_contiguous(recorder: Recorder) -> None:
    pts = [chunk.pts for _, chunk in recorder.audio]
    assert pts == list(range(pts[0], pts[0] + CHUNK_SAMPLES * len(pts), CHUNK_SAMPLES))
    assert all(chunk.sample_rate == OUTPUT_RATE for _, chunk in recorder.audio)


def test_delay_and_release_times_are_exact() -> None:
    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        # D = one frame + the engine's delay (1320 * 3 + 10 * 3, rounded up to 20 ms chunks)
        # + the render budget (one frame).
        assert stream.engine_delay_samples == 3990
        assert stream.delay_samples == F + 4800 + F == 8640
        assert stream.delay_seconds == pytest.approx(0.18)
        await recorder.until(lambda r: len(r.audio) >= 100 and len(r.video) >= 50)
        _assert_contiguous(recorder)
        assert recorder.audio[0][1].pts == 0
        assert [frame.index for frame in recorder.frames[:50]] == list(range(50))
        assert [frame.pts_90k for frame in recorder.frames[:50]] == [k * 3600 for k in range(50)]
        for received, chunk in recorder.audio:
            assert received == pytest.approx((chunk.pts + 8640) / OUTPUT_RATE, abs=1e-9)
            assert not chunk.pcm.any()
        for received, frame in recorder.video:
            assert received == pytest.approx((frame.index * F + 8640) / OUTPUT_RATE, abs=1e-9)
            assert frame.speaking == 0.0 and frame.image.shape == (8, 8, 3)
        stats = stream.stats
        assert stats.frames_dropped == 0 and stats.render_skips == 0 and stats.reanchors == 0

    _run(body)


def test_sources_play_one_after_another_and_their_audio_leaves_unchanged() -> None:
    first = _tone(0.5, OUTPUT_RATE)
    second = _tone(0.3, 16000, 330.0)

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        one = stream.say(ArraySource(first, OUTPUT_RATE, name="one"))
        two = stream.play(ArraySource(second, 16000, name="two"))
        assert stream.busy
        end_one, end_two = await one.wait(), await two.wait()
        assert not end_one.interrupted and end_one.error is None and end_one.name == "one"
        assert one.start_pts is not None and two.start_pts is not None
        assert end_one.pts - one.start_pts == len(first)
        assert two.start_pts >= end_one.pts
        expected_two = resample(second, 16000, OUTPUT_RATE)
        assert end_two.pts - two.start_pts == len(expected_two)
        await recorder.until(lambda r: len(r.events) == 4)
        pcm = recorder.pcm
        np.testing.assert_array_equal(pcm[one.start_pts : end_one.pts], first)
        np.testing.assert_allclose(pcm[two.start_pts : end_two.pts], expected_two, atol=1e-5)
        assert not pcm[: one.start_pts].any() and not pcm[end_one.pts : two.start_pts].any()
        kinds = [(type(event), event.segment) for _, event in recorder.events]
        assert kinds == [(SegmentStart, 1), (SegmentEnd, 1), (SegmentStart, 2), (SegmentEnd, 2)]
        # An event leaves with the audio chunk that carries its sample.
        for received, event in recorder.events:
            sample = event.pts if isinstance(event, SegmentStart) else event.pts - 1
            chunk_pts = sample // CHUNK_SAMPLES * CHUNK_SAMPLES
            assert received == pytest.approx((chunk_pts + stream.delay_samples) / OUTPUT_RATE)
        # The stand-in engine speaks where the audio is loud: the frames line up with it.
        speaking = [frame.index for frame in recorder.frames if frame.speaking > 0]
        assert speaking[0] == one.start_pts // F
        assert not stream.busy

    _run(body)


def test_interrupt_drops_everything_queued_within_one_frame() -> None:
    engine = FakeEngine()

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        one = stream.say(ArraySource(_tone(2.0, OUTPUT_RATE), OUTPUT_RATE))
        two = stream.say(ArraySource(_tone(1.0, OUTPUT_RATE), OUTPUT_RATE))
        await recorder.until(lambda r: sum(f.speaking > 0 for f in r.frames) >= 5)
        called_at = clock.now()
        next_audio = recorder.audio[-1][1].end
        boundary = stream.interrupt()
        assert boundary % F == 0 and next_audio <= boundary <= next_audio + CHUNK_SAMPLES
        assert (await one.wait()).interrupted and (await two.wait()).interrupted
        assert (await one.wait()).pts == boundary
        await recorder.until(lambda r: r.audio[-1][1].pts >= boundary + OUTPUT_RATE)
        after = [frame for frame in recorder.frames if frame.index * F >= boundary]
        first_after = next(t for t, f in recorder.video if f.index * F >= boundary)
        assert first_after - called_at <= 0.04 + 1e-9
        assert after[0].index * F == boundary and all(f.speaking == 0.0 for f in after)
        assert [f.index for f in after] == list(range(after[0].index, after[-1].index + 1))
        assert not recorder.pcm[boundary:].any()
        _assert_contiguous(recorder)
        assert stream.stats.interrupts == 1 and stream.stats.frames_dropped == 0
        assert engine.resets >= 2 and not stream.busy  # one at start, one for the interruption

    _run(body, engine=engine)


def test_slow_rendering_drops_video_never_audio(caplog: pytest.LogCaptureFixture) -> None:
    clock = VirtualClock(auto_advance=True)
    # Each frame takes 60 ms of (virtual) time to render on the worker: within the render
    # budget of 100 ms, but slower than real time (40 ms a frame): at best 2/3 of the frames.
    engine = FakeEngine(on_render=lambda count: clock.sleep_blocking(0.06 * count))
    config = StreamConfig(render_budget_ms=100)
    caplog.set_level(logging.WARNING, logger="presenter.stream")

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: clock.now() >= 5.0)
        _assert_contiguous(recorder)
        stats = stream.stats
        assert stats.frames_dropped > 0 and stats.render_skips > 0 and stats.reanchors == 0
        assert stats.frames_emitted >= 0.55 * (stats.frames_emitted + stats.frames_dropped)
        # Audio keeps its schedule to the sample: latency does not grow.
        for received, chunk in recorder.audio:
            assert received == pytest.approx((chunk.pts + stream.delay_samples) / OUTPUT_RATE)
        # Frames come out in order, on time, each with the audio of its instant.
        for received, frame in recorder.video:
            assert received == pytest.approx((frame.index * F + stream.delay_samples) / OUTPUT_RATE)
        indices = [frame.index for frame in recorder.frames]
        assert indices == sorted(indices) and len(set(indices)) == len(indices)
        assert engine.dropped > 0 and engine.resets == 1  # dropped ready frames, no restart

    _run(body, engine=engine, clock=clock, config=config)
    warnings = [r for r in caplog.records if "behind real time" in r.getMessage()]
    assert 1 <= len(warnings) <= 6  # at most one a second


def test_a_stall_re_anchors_the_pacing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="presenter.stream")

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.audio) >= 20)
        clock.advance(1.0)  # the event loop stalls for a second
        await recorder.until(lambda r: clock.now() >= 3.0)
        _assert_contiguous(recorder)
        assert stream.stats.reanchors == 1
        shifts = [
            received - (chunk.pts + stream.delay_samples) / OUTPUT_RATE
            for received, chunk in recorder.audio
        ]
        # On schedule, then on a new schedule one second later: no burst to catch up.
        assert shifts[:20] == pytest.approx([0.0] * 20)
        assert shifts[21:] == pytest.approx([shifts[21]] * len(shifts[21:]))
        assert 1.0 - 0.02 <= shifts[21] <= 1.0 + 1e-9

    _run(body)
    assert any("re-anchoring" in r.getMessage() for r in caplog.records)


def test_subscribers_lagging_lose_video_never_audio() -> None:
    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        audio_only = stream.subscribe(video_queue_ms=200)
        stalled = stream.subscribe(audio_queue_ms=200)
        audio: list[AudioChunk] = []

        async def read_audio() -> None:
            async for chunk in audio_only.audio():
                audio.append(chunk)

        reader = asyncio.create_task(read_audio())
        await recorder.until(lambda r: len(r.audio) >= 60)
        assert audio_only.video_dropped > 0 and audio_only.pending[1] == 5
        assert [c.pts for c in audio] == [c.pts for _, c in recorder.audio[: len(audio)]]
        assert len(audio) >= len(recorder.audio) - 1
        assert stalled.closed
        with pytest.raises(StreamClosed, match="behind"):
            for _ in range(100):
                await stalled.next_audio()
        audio_only.close()
        await reader

    _run(body)


class _Failing:
    name = "failing"
    live = False

    def __init__(self) -> None:
        self.closed = False
        self._sent = False

    def __aiter__(self) -> AsyncIterator[AudioChunk]:
        return self

    async def __anext__(self) -> AudioChunk:
        if not self._sent:
            self._sent = True
            return AudioChunk(_tone(0.1, OUTPUT_RATE), OUTPUT_RATE, 0)
        raise PresenterError("the source broke")

    def close(self) -> None:
        self.closed = True


def test_a_failing_source_ends_with_its_error_and_the_stream_goes_on() -> None:
    source = _Failing()

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        playback = stream.say(source)
        end = await playback.wait()
        assert end.error == "PresenterError: the source broke" and not end.interrupted
        assert playback.start_pts is not None
        assert end.pts - playback.start_pts == round(0.1 * OUTPUT_RATE)
        assert source.closed
        count = len(recorder.audio)
        await recorder.until(lambda r: len(r.audio) >= count + 10)

    _run(body)


def test_close_ends_subscribers_and_queued_sources() -> None:
    async def main() -> None:
        clock = VirtualClock(auto_advance=True)
        stream = AvatarStream(FakeEngine(), clock=clock)
        subscription = stream.subscribe()
        await stream.start()
        playback = stream.say(ArraySource(_tone(5.0, OUTPUT_RATE), OUTPUT_RATE))
        await subscription.next_video()
        await stream.close()
        assert (await playback.wait()).interrupted
        with pytest.raises(StreamClosed):
            while True:
                await subscription.next_audio()
        with pytest.raises(StreamClosed):
            stream.say(ArraySource(_tone(0.1, OUTPUT_RATE), OUTPUT_RATE))
        assert not stream.running
        await stream.close()  # twice is fine

    asyncio.run(main())


def test_config_is_checked() -> None:
    with pytest.raises(ValueError, match="render_budget_ms"):
        StreamConfig(render_budget_ms=0)
    stream = AvatarStream(FakeEngine(), config=StreamConfig(render_budget_ms=30))
    assert stream.render_budget_samples == 1920  # rounded up to whole 20 ms chunks
    stream = AvatarStream(FakeEngine(), config=StreamConfig(render_budget_ms=100))
    assert stream.delay_samples == F + 4800 + 4800


def test_a_live_source_backlog_is_dropped_not_played_late() -> None:
    # E.g. a microphone that delivered a second's burst at once.
    live = ArraySource(_tone(1.0, OUTPUT_RATE), OUTPUT_RATE, name="live", live=True)

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        playback = stream.say(live)
        end = await playback.wait()
        assert playback.start_pts is not None
        # A second of audio arrived at once: only the newest 60 ms (the live budget) played.
        assert end.pts - playback.start_pts <= round(0.06 * OUTPUT_RATE)
        # and the stream counts what it dropped
        assert stream.stats.live_samples_dropped >= OUTPUT_RATE - round(0.06 * OUTPUT_RATE)

    _run(body)


def test_run_on_engine_runs_between_engine_calls_and_keeps_the_stream_going() -> None:
    import threading

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.frames) >= 5)
        threads = await stream.run_on_engine(lambda engine: threading.current_thread().name)
        assert threads.startswith("avatar-engine")  # the worker, not the event loop

        def refuse(engine: object) -> None:
            raise PresenterError("no such style")

        with pytest.raises(PresenterError, match="no such style"):
            await stream.run_on_engine(refuse)
        emitted = len(recorder.frames)
        await recorder.until(lambda r: len(r.frames) >= emitted + 5)  # still streaming
        assert stream.running

    _run(body)


def test_run_on_engine_after_close_is_refused() -> None:
    async def main() -> None:
        stream = AvatarStream(FakeEngine(), clock=VirtualClock(auto_advance=True))
        with pytest.raises(StreamClosed):
            await stream.run_on_engine(lambda engine: None)

    asyncio.run(main())


def test_a_ready_source_starts_early_when_idle() -> None:
    tone = _tone(0.6, OUTPUT_RATE)

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.frames) >= 30)
        said_at, input_at = clock.now(), stream.position
        one = stream.say(ArraySource(tone, OUTPUT_RATE, name="one"))
        two = stream.say(ArraySource(tone, OUTPUT_RATE, name="two"))  # queued: no early start
        end_one, end_two = await one.wait(), await two.wait()
        assert one.start_pts is not None and two.start_pts is not None
        # it starts in the idle past of the input: the frame the engine can still render in
        # time, so it is heard about F + E sooner than from the input position on
        assert one.start_pts % F == 0 and one.start_pts < input_at - F
        heard_at = (one.start_pts + stream.delay_samples) / OUTPUT_RATE
        budget = stream.render_budget_samples / OUTPUT_RATE
        assert heard_at - said_at <= budget + CHUNK_SAMPLES / OUTPUT_RATE + 1e-9
        assert 0 <= two.start_pts - end_one.pts <= CHUNK_SAMPLES  # after it, not early
        await recorder.until(lambda r: len(r.events) == 4)
        pcm = recorder.pcm
        np.testing.assert_array_equal(pcm[one.start_pts : end_one.pts], tone)
        np.testing.assert_array_equal(pcm[two.start_pts : end_two.pts], tone)
        assert not pcm[: one.start_pts].any()
        _assert_contiguous(recorder)
        # lips with the sound: the first speaking frame is the one holding the first sample,
        # and no frame was lost to the restart
        speaking = [frame.index for frame in recorder.frames if frame.speaking > 0]
        assert speaking[0] == one.start_pts // F
        indices = [frame.index for frame in recorder.frames]
        assert indices == list(range(indices[0], indices[-1] + 1))
        assert stream.stats.frames_dropped == 0
        received, first_event = recorder.events[0]
        assert isinstance(first_event, SegmentStart) and received == pytest.approx(heard_at)

    _run(body)


def test_early_start_can_be_switched_off() -> None:
    tone = _tone(0.3, OUTPUT_RATE)

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.frames) >= 30)
        input_at = stream.position
        one = stream.say(ArraySource(tone, OUTPUT_RATE))
        await one.wait()
        assert one.start_pts is not None and one.start_pts >= input_at

    _run(body, config=StreamConfig(early_start=False))


@pytest.mark.parametrize("slow_s", [0.25, 0.5, 1.0])
def test_an_early_start_behind_a_slow_engine_call_keeps_what_can_be_on_time(slow_s: float) -> None:
    """The engine call in flight when a ready source starts early takes longer than the
    render budget: the restart then renders only the frames that can still leave on time,
    the newest (none, when the call took so long that the next ones are due too), so lips
    follow the sound from as early as the engine allows and the frames it shows have the
    speech of their own instant."""
    tone = _tone(1.6, OUTPUT_RATE)
    clock = VirtualClock(auto_advance=True)
    # (the loop, the event to set, the time after which the next call is the slow one)
    armed: list[tuple[asyncio.AbstractEventLoop, asyncio.Event, float]] = []

    def render(count: int) -> None:
        # The slow call is chosen by the clock, not by when this thread reads the list, and
        # the loop is told before this thread sleeps: it learns it at the virtual time the
        # call began (the clock cannot move before), however late this thread runs.
        if armed and clock.now() > armed[0][2]:
            loop, began, _ = armed.pop()
            loop.call_soon_threadsafe(began.set)
            clock.sleep_blocking(slow_s)
        clock.sleep_blocking(0.02 * count)

    engine = FakeEngine(on_render=render)

    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.frames) >= 30)
        began = asyncio.Event()
        armed.append((asyncio.get_running_loop(), began, clock.now()))
        await began.wait()
        # at the next tick: everything of this instant has happened by then
        began_at = clock.now()
        await recorder.until(lambda r: r.audio[-1][0] > began_at)
        one = stream.say(ArraySource(tone, OUTPUT_RATE, name="one"))
        end = await one.wait()
        assert one.start_pts is not None
        await recorder.until(lambda r: len(r.events) == 2)
        shown = {frame.index: frame.speaking > 0 for frame in recorder.frames}
        # every frame shown has the speech of its own instant
        for index, speaking in shown.items():
            assert speaking == (one.start_pts <= index * F < end.pts), index
        # The slow call ends ~(slow_s + 20 ms) after the say: the frames due by then are lost,
        # the restart renders the next ones on time (with 250 ms, rendering everything from
        # the start frame on, all of it came too late: the first speaking frame shown was the
        # tenth, with 10 frames dropped; it is the seventh now).
        first = min(index for index, speaking in shown.items() if speaking)
        lost = math.ceil((slow_s + 0.02) / 0.04)
        assert first - one.start_pts // F <= lost
        assert stream.stats.frames_dropped <= lost + 1 and stream.stats.render_skips >= 1
        # and from then on every frame
        assert set(shown) >= set(range(first, end.pts // F))

    _run(body, engine=engine, clock=clock, config=StreamConfig(render_budget_ms=100))
