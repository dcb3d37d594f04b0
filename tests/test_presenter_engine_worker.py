"""presenter/engine_worker.py without an event loop: the engine operations, the frame index
map across restarts, and which frames can still be rendered in time."""

from __future__ import annotations

import numpy as np

from engine.frames import STREAM_ENGINE_CALLS, STREAM_ENGINE_PROPERTIES, StreamEngine
from presenter.engine_worker import (
    DropReady,
    FrameIndexMap,
    PushAudio,
    RenderEstimate,
    Restart,
    apply_ops,
    frames_in_time,
)
from tests.stream_doubles import FRAME, FakeEngine


def test_the_protocol_lists_what_the_engine_process_answers() -> None:
    assert set(STREAM_ENGINE_CALLS) == {
        "push_audio", "pull", "flush", "reset", "drop_ready", "set_style"
    }  # fmt: skip
    assert set(STREAM_ENGINE_PROPERTIES) == {
        "kind", "timeline", "delay_samples", "frame_size", "loop_frames"
    }  # fmt: skip
    assert isinstance(FakeEngine(), StreamEngine)


def test_operations_run_in_order_on_the_engine() -> None:
    engine = FakeEngine(delay_samples=0)
    audio = np.full(FRAME * 5, 0.5, np.float32)
    skipped = apply_ops(engine, [PushAudio(audio), DropReady(keep=2)], 16000)
    assert skipped == 3 and engine.dropped == 3
    assert [frame.index for frame in engine.pull()] == [3, 4]
    skipped = apply_ops(engine, [PushAudio(audio[:FRAME]), Restart(), PushAudio(audio)], 16000)
    assert skipped == 0 and engine.resets == 1
    assert [frame.index for frame in engine.pull()] == [5, 6, 7, 8, 9]  # indices go on
    assert apply_ops(engine, [PushAudio(np.zeros(0, np.float32))], 16000) == 0


def test_frames_map_one_to_one_until_a_restart() -> None:
    indices = FrameIndexMap()
    placed, current = indices.place(indices.epoch, None, 0, [0, 1, 2])
    assert placed == [0, 1, 2] and current and indices.next_render == 3 and indices.aligned
    indices.skipped(2)  # the next call drops two ready frames
    assert indices.next_render == 5
    placed, _ = indices.place(indices.epoch, None, 2, [5, 6])
    assert placed == [5, 6]


def test_an_interruption_discards_calls_in_flight_and_restarts_at_its_anchor() -> None:
    indices = FrameIndexMap()
    indices.place(indices.epoch, None, 0, [0, 1, 2, 3])
    stale = indices.epoch
    indices.interrupted()
    assert indices.place(stale, None, 0, [4, 5]) == ([None, None], False)
    # the restart: the engine's next frames (its own indices go on at 6) are stream 10, 11
    placed, current = indices.place(indices.epoch, 10, 0, [6, 7])
    assert placed == [10, 11] and current and indices.next_render == 12


def test_a_restart_that_skips_frames_moves_its_anchor_on() -> None:
    indices = FrameIndexMap()
    indices.place(indices.epoch, None, 0, [0])
    indices.interrupted()
    # the worker came late to the restart at stream frame 8: the engine skipped 3 frames and
    # rendered none yet; the next call skips 2 more before its first frame
    assert indices.place(indices.epoch, 8, 3, []) == ([], True)
    assert not indices.aligned and indices.next_render == 11
    placed, _ = indices.place(indices.epoch, None, 2, [20, 21])
    assert placed == [13, 14]


def test_an_early_start_keeps_the_frames_before_it() -> None:
    indices = FrameIndexMap()
    indices.place(indices.epoch, None, 0, [0, 1])
    stale = indices.epoch
    indices.started_early(4)
    placed, current = indices.place(stale, None, 0, [2, 3, 4, 5])
    assert placed == [2, 3, None, None] and not current
    placed, _ = indices.place(indices.epoch, 4, 0, [6, 7])
    assert placed == [4, 5]


def test_only_the_newest_frames_that_can_be_on_time_are_rendered() -> None:
    def release(index: int) -> float:
        return 0.04 * index  # frame k leaves at 40 k ms

    # nothing measured yet: every ready frame is rendered
    assert frames_in_time(first=0, newest=4, estimate=0.0, now=0.0, release_time=release) == (
        5,
        5,
    )
    # 30 ms a frame at t = 100 ms: frames 3..9 ready; the newest 6 are done in time (the
    # oldest of them, 4, done at 130 ms <= 160 ms; the newest, 9, at 280 ms <= 360 ms)
    assert frames_in_time(first=3, newest=9, estimate=0.03, now=0.1, release_time=release) == (
        7,
        6,
    )
    # too slow for any of them
    assert frames_in_time(first=0, newest=2, estimate=1.0, now=0.1, release_time=release) == (
        3,
        0,
    )
    assert frames_in_time(first=5, newest=4, estimate=0.03, now=0.0, release_time=release) == (
        0,
        0,
    )


def test_the_render_estimate_is_a_moving_average() -> None:
    estimate = RenderEstimate()
    estimate.measured(0.02)
    assert estimate.seconds == 0.02 and estimate.last == 0.02
    estimate.measured(0.04)
    assert abs(estimate.seconds - 0.026) < 1e-12 and estimate.last == 0.04
    estimate.halve()
    assert abs(estimate.seconds - 0.013) < 1e-12
