"""Lip-sync measures on tracked landmarks: lip distance, mouth opening, A/V lag, closing.

All functions take plain arrays: (T, 478, 2) landmarks in pixels with NaN rows where no
face was found, per-frame signals of length T; they need only the lip indices of
:mod:`engine.face3d`. ``benchmarks/quality.py`` reports them for a model's rendering; the
tests check them on signals with known answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.face3d import INNER_LIP_PAIRS, LIPS
from engine.speech.phonemes import SILENCE, phone_per_frame


def mouth_gap_px(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 2) -> (T,) inner-lip gap in pixels: the mean distance of the three facing
    inner-lip pairs (centre and both sides). NaN where the landmarks are NaN."""
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] < 478 or points.shape[2] < 2:
        raise ValueError(f"expected (T, 478, 2) landmarks, got {points.shape}")
    upper = points[:, [pair[0] for pair in INNER_LIP_PAIRS], :2]
    lower = points[:, [pair[1] for pair in INNER_LIP_PAIRS], :2]
    return np.asarray(np.linalg.norm(lower - upper, axis=-1).mean(axis=-1))


def lip_distance_px(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """(T,) mean distance of the 40 lip landmarks (outer and inner contours) between two
    (T, 478, 2) landmark sequences: the per-frame LMD. NaN where either is NaN."""
    a = np.asarray(first, dtype=np.float64)[:, list(LIPS), :2]
    b = np.asarray(second, dtype=np.float64)[:, list(LIPS), :2]
    if a.shape != b.shape:
        raise ValueError(f"landmark sequences differ in shape: {a.shape} vs {b.shape}")
    return np.asarray(np.linalg.norm(a - b, axis=-1).mean(axis=-1))


def pearson(first: np.ndarray, second: np.ndarray) -> float:
    """Correlation of two signals over the samples where both are finite."""
    a, b = np.asarray(first, np.float64), np.asarray(second, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    a, b = a[keep] - a[keep].mean(), b[keep] - b[keep].mean()
    denominator = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def speech_frames(phones: Sequence[Sequence[object]], frames: int, fps: float) -> np.ndarray:
    """(frames,) bool: the phone at the centre of the video frame is speech (not silence,
    and inside the timed phones)."""
    if not phones:
        return np.zeros(frames, dtype=bool)
    return np.asarray(phone_per_frame(phones, frames, fps) != SILENCE, dtype=bool)


def last_phone_end_s(phones: Sequence[Sequence[object]]) -> float:
    """End of the last spoken (non-silence) phone of ``(label, start, end)`` phones; NaN
    when none is spoken."""
    spoken = [float(phone[2]) for phone in phones if phone[0] != SILENCE]  # type: ignore[arg-type]
    return spoken[-1] if spoken else float("nan")


def pooled_correlation(
    first: Sequence[np.ndarray],
    second: Sequence[np.ndarray],
    masks: Sequence[np.ndarray] | None = None,
) -> float:
    """:func:`pearson` of per-clip signals pooled over clips, over the frames where
    ``masks`` (per clip, bool) hold, or all frames."""
    if masks is None:
        masks = [np.ones(np.asarray(a).shape[0], bool) for a in first]
    a = np.concatenate([np.asarray(x)[m] for x, m in zip(first, masks, strict=True)])
    b = np.concatenate([np.asarray(x)[m] for x, m in zip(second, masks, strict=True)])
    return pearson(a, b)


@dataclass(frozen=True)
class Lag:
    frames: int  # integer lag of the best correlation; positive: ``delayed`` comes later
    ms: float  # sub-frame lag from a parabola through the peak and its neighbours
    correlation: float  # the normalised correlation at ``frames``


def best_lag(
    reference: Sequence[np.ndarray], delayed: Sequence[np.ndarray], *, max_lag: int, fps: float
) -> Lag:
    """The lag of ``delayed`` against ``reference`` that maximises their correlation,
    pooled over clips (each pair of signals mean-removed on its own; NaN samples are
    skipped). Positive lag: ``delayed`` follows ``reference``."""
    if len(reference) != len(delayed) or not reference:
        raise ValueError("need the same, non-zero number of reference and delayed signals")
    lags = list(range(-max_lag, max_lag + 1))
    products = np.zeros(len(lags))
    norm_a = np.zeros(len(lags))
    norm_b = np.zeros(len(lags))
    for a_raw, b_raw in zip(reference, delayed, strict=True):
        a_all, b_all = np.asarray(a_raw, np.float64), np.asarray(b_raw, np.float64)
        if a_all.shape != b_all.shape:
            raise ValueError(f"signal lengths differ: {a_all.shape} vs {b_all.shape}")
        a_all = a_all - np.nanmean(a_all)
        b_all = b_all - np.nanmean(b_all)
        n = a_all.size
        for index, lag in enumerate(lags):
            # delayed[t + lag] against reference[t]
            a = a_all[max(0, -lag) : n - max(0, lag)]
            b = b_all[max(0, lag) : n - max(0, -lag)]
            keep = np.isfinite(a) & np.isfinite(b)
            products[index] += float((a[keep] * b[keep]).sum())
            norm_a[index] += float((a[keep] ** 2).sum())
            norm_b[index] += float((b[keep] ** 2).sum())
    correlation = products / np.sqrt(np.maximum(norm_a * norm_b, 1e-24))
    peak = int(np.argmax(correlation))
    offset = 0.0
    if 0 < peak < len(lags) - 1:
        left, centre, right = correlation[peak - 1 : peak + 2]
        curvature = left - 2 * centre + right
        if curvature < 0:
            offset = float(0.5 * (left - right) / curvature)
    return Lag(
        frames=int(lags[peak]),
        ms=float((lags[peak] + offset) * 1000.0 / fps),
        correlation=float(correlation[peak]),
    )


def closing_delay_ms(
    gap: np.ndarray,
    speech_end_s: float,
    *,
    fps: float,
    rest_gap: float,
    margin: float = 1.0,
    hold_frames: int = 3,
) -> float | None:
    """Time from the end of speech to the centre of the first frame (centred after the end)
    from which the gap stays within ``margin`` of ``rest_gap`` for ``hold_frames`` frames;
    None if it never closes. A mouth closed on the first such frame scores that frame's
    centre, 0-40 ms at 25 fps."""
    values = np.asarray(gap, np.float64)
    centres = (np.arange(values.size) + 0.5) / fps
    for frame in np.flatnonzero(centres > speech_end_s):
        window = values[frame : frame + hold_frames]
        if window.size == hold_frames and bool(np.all(window <= rest_gap + margin)):
            return float((centres[frame] - speech_end_s) * 1000.0)
    return None
