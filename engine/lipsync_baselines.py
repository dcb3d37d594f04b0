"""Baselines for lip-sync figures: a mouth driven by loudness alone, and the mean mouth.

A model's lip-sync figures mean little on their own: a mouth that opens with the speech
envelope already correlates with the real one. The quality benchmark renders these
baselines through the same generator and measures them the same way.

*Loudness mouth*: per video frame the speech envelope ``e_t`` (the frame's mean log-mel
energy, floored at the silent level and smoothed over a few frames), shifted by a lag
``L`` (``e_{t-L}``: the mouth follows the sound by L frames), drives the dynamics through
a line: ``d_t = mean + e_{t-L} * direction`` with ``mean`` and ``direction`` (K,) fitted by
least squares to reference dynamics, the lag picked from a range by the lowest residual.
*Mean mouth*: ``d_t = mean`` of the reference dynamics for every frame.

Pure numpy: per-frame arrays in, per-frame arrays out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

SMOOTH_FRAMES = 3


def speech_envelope(
    loudness: np.ndarray, *, floor: float, smooth_frames: int = SMOOTH_FRAMES
) -> np.ndarray:
    """(T,) per-frame loudness (log energy; NaN where no audio) -> (T,) envelope: floored
    at ``floor`` (silence reads as the floor), minus it, and smoothed by a centred moving
    average of ``smooth_frames`` frames (edges: the average of the frames there are)."""
    values = np.asarray(loudness, np.float64)
    values = np.where(np.isfinite(values), np.maximum(values, floor), floor) - floor
    if smooth_frames <= 1 or values.size == 0:
        return values
    kernel = np.ones(smooth_frames)
    total = np.convolve(values, kernel, mode="same")
    count = np.convolve(np.ones_like(values), kernel, mode="same")
    return np.asarray(total / count)


def shift(signal: np.ndarray, lag: int) -> np.ndarray:
    """``signal`` delayed by ``lag`` frames (``out[t] = signal[t - lag]``), the ends held at
    the nearest sample."""
    values = np.asarray(signal)
    index = np.clip(np.arange(values.shape[0]) - lag, 0, values.shape[0] - 1)
    return values[index]


@dataclass(frozen=True)
class LoudnessMouth:
    mean: np.ndarray  # (K,) dynamics at zero envelope
    direction: np.ndarray  # (K,) change per unit of envelope
    lag: int  # frames the mouth follows the envelope by
    residual: float  # mean squared residual of the fit per coefficient

    def predict(self, envelope: np.ndarray) -> np.ndarray:
        """(T,) envelope -> (T, K) float32 dynamics."""
        driven = shift(np.asarray(envelope, np.float64), self.lag)
        return np.asarray(
            self.mean[None, :] + driven[:, None] * self.direction[None, :], np.float32
        )


def fit_loudness_mouth(
    envelopes: Sequence[np.ndarray],
    targets: Sequence[np.ndarray],
    valid: Sequence[np.ndarray],
    *,
    lags: Sequence[int],
) -> LoudnessMouth:
    """The least-squares line from the lagged envelope to the (T, K) ``targets`` over the
    ``valid`` frames of all clips, at the lag of ``lags`` with the lowest residual."""
    if not envelopes or not (len(envelopes) == len(targets) == len(valid)):
        raise ValueError("need the same, non-zero number of envelopes, targets and masks")
    best: LoudnessMouth | None = None
    for lag in lags:
        drive = np.concatenate(
            [
                shift(np.asarray(e, np.float64), lag)[m]
                for e, m in zip(envelopes, valid, strict=True)
            ]
        )
        target = np.concatenate(
            [np.asarray(d, np.float64)[m] for d, m in zip(targets, valid, strict=True)]
        )
        if drive.size < 2:
            raise ValueError("fewer than two valid frames to fit")
        design = np.stack([np.ones_like(drive), drive], axis=1)
        solution, *_ = np.linalg.lstsq(design, target, rcond=None)
        residual = float(np.mean((design @ solution - target) ** 2))
        if best is None or residual < best.residual:
            best = LoudnessMouth(solution[0], solution[1], int(lag), residual)
    assert best is not None
    return best
