"""The loudness-driven and mean mouths the quality benchmark compares the model with."""

from __future__ import annotations

import numpy as np
import pytest

from engine.lipsync_baselines import (
    LoudnessMouth,
    fit_loudness_mouth,
    shift,
    speech_envelope,
)


def test_envelope_is_floored_and_smoothed() -> None:
    loudness = np.array([-9.0, np.nan, -6.0, -3.0, -3.0, -3.0, -7.0, -9.0])
    raw = speech_envelope(loudness, floor=-6.0, smooth_frames=1)
    assert raw.tolist() == [0.0, 0.0, 0.0, 3.0, 3.0, 3.0, 0.0, 0.0]
    smooth = speech_envelope(loudness, floor=-6.0, smooth_frames=3)
    assert smooth[0] == 0.0 and smooth[2] == pytest.approx(1.0) and smooth[4] == pytest.approx(3.0)
    assert smooth[-1] == 0.0  # the edge averages the two frames there are


def test_shift_delays_and_holds_the_ends() -> None:
    signal = np.arange(5.0)
    assert shift(signal, 2).tolist() == [0.0, 0.0, 0.0, 1.0, 2.0]
    assert shift(signal, -1).tolist() == [1.0, 2.0, 3.0, 4.0, 4.0]


def test_fit_recovers_the_line_and_the_lag() -> None:
    rng = np.random.default_rng(0)
    mean = np.array([0.5, -1.0, 0.0])
    direction = np.array([2.0, 0.0, -0.5])
    envelopes, targets, valid = [], [], []
    for _ in range(3):
        envelope = np.abs(np.convolve(rng.normal(size=80), np.ones(5) / 5, mode="same"))
        truth = LoudnessMouth(mean, direction, lag=2, residual=0.0).predict(envelope)
        envelopes.append(envelope)
        targets.append(truth + rng.normal(scale=1e-3, size=truth.shape))
        mask = np.ones(80, bool)
        mask[:3] = False  # invalid frames are left out of the fit
        targets[-1][:3] = 99.0
        valid.append(mask)
    fitted = fit_loudness_mouth(envelopes, targets, valid, lags=range(-4, 5))
    assert fitted.lag == 2
    np.testing.assert_allclose(fitted.mean, mean, atol=5e-3)
    np.testing.assert_allclose(fitted.direction, direction, atol=5e-3)
    assert fitted.residual < 1e-5
    assert fitted.predict(envelopes[0]).dtype == np.float32


def test_fit_needs_matching_inputs() -> None:
    with pytest.raises(ValueError, match="same"):
        fit_loudness_mouth([np.ones(3)], [], [], lags=[0])
