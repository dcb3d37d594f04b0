"""The lip-sync measures of the quality benchmark, on signals with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from engine.face3d import INNER_LIP_PAIRS, LIPS
from engine.lipsync_metrics import (
    best_lag,
    closing_delay_ms,
    last_phone_end_s,
    lip_distance_px,
    mouth_gap_px,
    pearson,
    pooled_correlation,
    speech_frames,
)


def _smooth_signal(rng: np.random.Generator, length: int) -> np.ndarray:
    raw = rng.normal(size=length + 8)
    return np.convolve(raw, np.hanning(7), mode="same")[4 : 4 + length]


@pytest.mark.parametrize("shift", [-3, -1, 0, 2])
def test_best_lag_recovers_a_known_shift(shift: int) -> None:
    rng = np.random.default_rng(5)
    references, delayed = [], []
    for length in (80, 120, 95):
        signal = _smooth_signal(rng, length + 10)
        references.append(signal[5 : 5 + length])
        delayed.append(signal[5 - shift : 5 - shift + length])  # delayed[t] = ref[t - shift]
    lag = best_lag(references, delayed, max_lag=5, fps=25)
    assert lag.frames == shift
    assert lag.correlation > 0.99
    assert abs(lag.ms - shift * 40.0) < 8.0


def test_best_lag_finds_a_sub_frame_delay_and_skips_nan() -> None:
    time = np.arange(400) / 25.0
    reference = np.sin(2 * np.pi * 1.3 * time) + 0.5 * np.sin(2 * np.pi * 0.37 * time)
    late = np.sin(2 * np.pi * 1.3 * (time - 0.02)) + 0.5 * np.sin(2 * np.pi * 0.37 * (time - 0.02))
    late[50:60] = np.nan
    lag = best_lag([reference], [late], max_lag=4, fps=25)
    assert lag.frames in (0, 1)
    assert 12.0 < lag.ms < 28.0  # 20 ms, from the parabola through the peak


def test_pearson_ignores_nan_and_handles_constant() -> None:
    a = np.array([1.0, 2.0, np.nan, 4.0])
    assert pearson(a, 2 * a + 1) == pytest.approx(1.0)
    assert pearson(a, -a) == pytest.approx(-1.0)
    assert np.isnan(pearson(np.ones(4), a))


def test_mouth_gap_and_lip_distance_on_constructed_landmarks() -> None:
    points = np.zeros((2, 478, 2))
    for _upper, lower in INNER_LIP_PAIRS:
        points[0, lower, 1] = 3.0  # 3 px gap
        points[1, lower, 1] = 9.0
    np.testing.assert_allclose(mouth_gap_px(points), [3.0, 9.0])
    moved = points.copy()
    moved[:, list(LIPS), 0] += 2.0
    np.testing.assert_allclose(lip_distance_px(points, moved), [2.0, 2.0])
    missing = points.copy()
    missing[1] = np.nan
    assert np.isnan(mouth_gap_px(missing)[1])
    with pytest.raises(ValueError):
        mouth_gap_px(np.zeros((2, 10, 2)))


def test_closing_delay_counts_from_the_end_of_speech() -> None:
    fps = 25.0
    gap = np.full(50, 1.0)
    gap[10:30] = 8.0  # speaking; closes at frame 30 (centre 1.22 s)
    assert closing_delay_ms(gap, 1.19, fps=fps, rest_gap=1.0) == pytest.approx(30.0)
    gap[30:32] = 4.0  # two more open frames: closed from frame 32 (centre 1.30 s)
    assert closing_delay_ms(gap, 1.19, fps=fps, rest_gap=1.0) == pytest.approx(110.0)
    gap[32:] = 5.0
    assert closing_delay_ms(gap, 1.19, fps=fps, rest_gap=1.0) is None


PHONES = [["SIL", 0.0, 0.4], ["HH", 0.4, 0.52], ["AY", 0.52, 0.8], ["SIL", 0.8, 1.2]]


def test_speech_frames_follow_the_phone_timings() -> None:
    speech = speech_frames(PHONES, 30, 25.0)
    # frame k is centred at (k + 0.5) / 25 s: frames 10..19 lie in 0.4-0.8 s
    assert np.flatnonzero(speech).tolist() == list(range(10, 20))
    assert not speech_frames([], 5, 25.0).any()


def test_last_phone_end_is_the_end_of_the_last_spoken_phone() -> None:
    assert last_phone_end_s(PHONES) == pytest.approx(0.8)
    assert np.isnan(last_phone_end_s([["SIL", 0.0, 1.0]]))


def test_closing_from_the_last_phone_on_a_clip() -> None:
    fps = 25.0
    gap = np.full(30, 1.0)
    gap[10:22] = 6.0  # open through the speech and two frames past its end (0.8 s)
    end = last_phone_end_s(PHONES)
    # closed from frame 22, centred at 0.9 s: 100 ms after the last phone
    assert closing_delay_ms(gap, end, fps=fps, rest_gap=1.0) == pytest.approx(100.0)


def test_speech_only_correlation_leaves_the_silence_out() -> None:
    rng = np.random.default_rng(4)
    speech = np.zeros(60, bool)
    speech[15:45] = True
    real = np.where(speech, 3.0 + rng.normal(size=60), 0.0)
    # a mouth that is shut in silence and open but random in speech: pooled it correlates
    # with the real one through the silence alone, over speech it does not
    rendered = np.where(speech, 3.0 + rng.normal(size=60), 0.0)
    pooled = pooled_correlation([rendered], [real])
    speech_only = pooled_correlation([rendered], [real], [speech])
    assert pooled > 0.8
    assert abs(speech_only) < 0.4
    assert speech_only == pytest.approx(pearson(rendered[speech], real[speech]))
    # pooled over clips: the frames of both clips together
    both = pooled_correlation(
        [real[:30], real[30:]], [real[:30], real[30:]], [speech[:30], speech[30:]]
    )
    assert both == pytest.approx(1.0)
