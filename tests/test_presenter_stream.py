"""AvatarStream with the real engine (the shipped model on ONNX Runtime) on a virtual clock.

The timing relation these tests hold the stream to (see presenter/stream.py):

* D = F + ceil_chunk(E) + R = 1920 + 4800 + 1920 = 8640 output samples (180 ms), with
  F = 1920 samples a frame, E = engine.delay_samples * 3 = 3990, R = the render budget.
* The audio chunk with pts p leaves at t0 + (p + D) / 48000; frame k (pts_90k = 3600 k) at
  t0 + (1920 k + D) / 48000: a frame leaves together with the audio chunk of its first sample.
* A frame's ``speaking`` weight depends on the audio from 600 + 30 samples before its span to
  3960 + 30 after its start (the silence gate's mel frames, plus the resampler's filter), so
  the first speaking frame of an utterance whose sound starts at sample s satisfies
  ``s - 3990 < 1920 k <= s``: the lips never lag the sound, and lead it by less than
  the engine's delay E (83 ms, the silence gate's look-ahead).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest

from presenter.clock import VirtualClock
from presenter.media import CHUNK_SAMPLES, OUTPUT_RATE
from presenter.sources import TtsSource
from presenter.stream import AvatarStream
from tests.conftest import EngineParts, ShippedBackends
from tests.stream_doubles import Recorder

F = 1920  # output samples per frame
D = 8640  # the stream's delay with the default render budget
E = 3990  # the engine's delay in output samples


@pytest.fixture(scope="module")
def parts(shipped_backends: ShippedBackends) -> EngineParts:
    """The shipped model on ONNX Runtime (built once), a short idle loop of the avatar."""
    return shipped_backends.parts(avatar_seconds=0.4)


def _run(
    parts: EngineParts, body: Callable[[AvatarStream, VirtualClock, Recorder], Awaitable[None]]
):
    async def main() -> None:
        clock = VirtualClock(auto_advance=True)
        async with AvatarStream(parts.engine(), clock=clock) as stream:
            assert stream.delay_samples == D and stream.engine_delay_samples == E
            recorder = Recorder(stream.subscribe(video_queue_ms=60_000), clock).start()
            await asyncio.wait_for(body(stream, clock, recorder), timeout=120)
            await recorder.stop()
            assert stream.stats.frames_dropped == 0

    asyncio.run(main())


def _assert_on_schedule(recorder: Recorder) -> None:
    """Contiguous pts from 0, every item released exactly D after its first sample."""
    pts = [chunk.pts for _, chunk in recorder.audio]
    assert pts == list(range(0, CHUNK_SAMPLES * len(pts), CHUNK_SAMPLES))
    indices = [frame.index for frame in recorder.frames]
    assert indices == list(range(len(indices)))
    for received, chunk in recorder.audio:
        assert received == pytest.approx((chunk.pts + D) / OUTPUT_RATE, abs=1e-9)
    for received, frame in recorder.video:
        assert frame.pts_90k == 3600 * frame.index
        assert received == pytest.approx((frame.index * F + D) / OUTPUT_RATE, abs=1e-9)


def test_idle_for_a_second(parts) -> None:
    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.audio) >= 50 and len(r.video) >= 25)
        recorder.audio[50:], recorder.video[25:] = [], []
        _assert_on_schedule(recorder)
        assert len(recorder.audio) == 50 and len(recorder.video) == 25
        assert not recorder.pcm.any() and len(recorder.pcm) == OUTPUT_RATE
        height, width = parts.avatar.frame_size
        for frame in recorder.frames:
            assert frame.speaking == 0.0 and frame.format == "rgb24"
            assert frame.image.shape == (height, width, 3) and frame.image.dtype == np.uint8
        # The idle loop plays (the head moves), it is not a still.
        assert not np.array_equal(recorder.frames[0].image, recorder.frames[5].image)

    _run(parts, body)


def test_a_sentence_plays_in_sync(parts) -> None:
    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.video) >= 8)  # idle first
        playback = stream.say(TtsSource("Hello, how are you?", voice="en-us+f3"))
        end = await playback.wait()
        assert not end.interrupted and playback.start_pts is not None
        await recorder.until(lambda r: r.frames[-1].index * F >= end.pts + 2 * F)
        _assert_on_schedule(recorder)
        pcm = recorder.pcm
        assert not pcm[: playback.start_pts].any() and not pcm[end.pts :].any()
        onset = int(np.argmax(np.abs(pcm) > 0.01))
        frames = recorder.frames
        first = next(frame for frame in frames if frame.speaking > 0)
        assert all(frame.speaking == 0.0 for frame in frames if frame.index < first.index)
        # The relation (module docstring): lips lead the sound by less than E, never lag it.
        assert onset - E < first.index * F <= onset
        # The frame leaves with the audio chunk that starts where it starts.
        chunk_time = {chunk.pts: received for received, chunk in recorder.audio}
        frame_time = {frame.index: received for received, frame in recorder.video}
        assert frame_time[first.index] == chunk_time[first.index * F]
        assert frame_time[first.index] <= chunk_time[onset // CHUNK_SAMPLES * CHUNK_SAMPLES]
        # Wherever the sound is loud, the mouth moves.
        for frame in frames:
            span = pcm[frame.index * F : (frame.index + 1) * F]
            if np.abs(span).max(initial=0.0) > 0.1:
                assert frame.speaking > 0, frame.index
        assert sum(frame.speaking == 1.0 for frame in frames) >= 15

    _run(parts, body)


def test_interrupt_returns_to_idle_within_one_frame(parts) -> None:
    async def body(stream: AvatarStream, clock: VirtualClock, recorder: Recorder) -> None:
        text = "This is a long sentence that is interrupted well before it ends."
        playback = stream.say(TtsSource(text, voice="en-us"))
        queued = stream.say(TtsSource("Nor will this one be heard.", voice="en-us"))
        await recorder.until(lambda r: sum(f.speaking > 0 for f in r.frames) >= 6)
        called = clock.now()
        released = recorder.audio[-1][1].end  # audio up to here has left
        boundary = stream.interrupt()
        assert released <= boundary <= released + CHUNK_SAMPLES and boundary % F == 0
        end = await playback.wait()
        assert end.interrupted and end.pts == boundary and (await queued.wait()).interrupted
        await recorder.until(lambda r: r.audio[-1][1].end >= boundary + OUTPUT_RATE)
        _assert_on_schedule(recorder)
        pcm = recorder.pcm
        assert np.abs(pcm[:boundary]).max() > 0.1  # it was speaking
        assert not pcm[boundary:].any()  # nothing of the dropped sources comes back
        after = [(t, f) for t, f in recorder.video if f.index * F >= boundary]
        assert after[0][1].index * F == boundary
        assert after[0][0] - called <= 0.04 + 1e-9  # the next frame to leave is at rest
        assert all(frame.speaking == 0.0 for _, frame in after)
        assert len(after) >= 25

    _run(parts, body)
