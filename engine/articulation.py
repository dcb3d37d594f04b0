"""How far a mouth articulates, measured on tracked landmarks and phone timings.

Two per-frame signals, both over the outer eye-corner distance (so a face's size and the
crop's scale drop out): the inner-lip gap (mean of the three facing inner-lip pairs) and the
mouth width (corner to corner). Per phone class, the median over the middle half of every
phone of the class (a phone too short to hold a frame centre in its middle half gives the
frame nearest its centre). The figures compare classes of the same clips:

- closure: the gap at /p b m/ over the gap at open vowels (lips that close: small);
- open over close: the gap at open vowels over the gap at close vowels (a jaw that moves);
- rounding: the width at rounded sounds over the width at spread vowels (a pucker: small);
- the range of the gap over every frame: 5th percentile (the lips close) and 95th.

Plain arrays in, plain numbers out: ``benchmarks/quality.py`` reports them for the corpus
rig's own frames, a model's rendering and the baselines; a real person's video gives the
same figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np

from engine.face3d import INNER_LIP_PAIRS, LEFT_EYE_CORNERS, MOUTH_CORNERS, RIGHT_EYE_CORNERS

# Phone classes (ARPAbet) the figures compare.
PHONE_CLASSES: Final[dict[str, frozenset[str]]] = {
    "open": frozenset({"AA", "AE", "AO", "AW", "AY"}),
    "close": frozenset({"IY", "UW", "IH", "UH"}),
    "bilabial": frozenset({"P", "B", "M"}),
    "labiodental": frozenset({"F", "V"}),
    "rounded": frozenset({"UW", "OW", "W", "OY"}),
    "spread": frozenset({"IY", "EY", "IH", "EH"}),
}

# Goals a person's articulation meets (the figures' names as in :class:`Articulation`).
ARTICULATION_GOALS: Final[dict[str, tuple[str, float]]] = {
    "closure": ("<=", 0.25),
    "open_over_close": (">=", 1.6),
    "rounding": ("<=", 0.85),
    "gap_p05": ("<=", 0.02),
    "gap_p95": (">=", 0.2),
}


def eye_corner_distance(landmarks: np.ndarray) -> np.ndarray:
    """(T, 478, 2+) -> (T,) distance between the two outer eye corners."""
    points = _points(landmarks)
    return np.asarray(
        np.linalg.norm(points[:, RIGHT_EYE_CORNERS[0]] - points[:, LEFT_EYE_CORNERS[0]], axis=-1)
    )


def gap_and_width(landmarks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(T, 478, 2+) -> the inner-lip gap and the mouth width per frame, each (T,) over the
    outer eye-corner distance; NaN where the landmarks are NaN."""
    points = _points(landmarks)
    scale = eye_corner_distance(points)
    upper = points[:, [pair[0] for pair in INNER_LIP_PAIRS]]
    lower = points[:, [pair[1] for pair in INNER_LIP_PAIRS]]
    gap = np.linalg.norm(lower - upper, axis=-1).mean(axis=-1)
    width = np.linalg.norm(points[:, MOUTH_CORNERS[0]] - points[:, MOUTH_CORNERS[1]], axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(gap / scale), np.asarray(width / scale)


def phone_middle_frames(
    phones: Sequence[Sequence[object]], frames: int, fps: float
) -> dict[str, np.ndarray]:
    """Per phone class, the frames whose centre lies in the middle half of a phone of that
    class (the frame nearest the phone's centre when none does); ``(label, start_s, end_s)``
    phones."""
    centres = (np.arange(frames) + 0.5) / fps
    chosen: dict[str, list[int]] = {name: [] for name in PHONE_CLASSES}
    for label, start, end in phones:
        start_s, end_s = float(start), float(end)  # type: ignore[arg-type]
        classes = [name for name, members in PHONE_CLASSES.items() if label in members]
        if not classes or end_s <= start_s:
            continue
        quarter = 0.25 * (end_s - start_s)
        inside = np.flatnonzero((centres >= start_s + quarter) & (centres < end_s - quarter))
        if inside.size == 0:
            nearest = int(np.floor(0.5 * (start_s + end_s) * fps))
            inside = np.array([nearest]) if 0 <= nearest < frames else inside
        for name in classes:
            chosen[name].extend(int(k) for k in inside)
    return {name: np.asarray(sorted(set(ks)), dtype=np.int64) for name, ks in chosen.items()}


@dataclass(frozen=True, kw_only=True)
class Articulation:
    """Articulation figures of a set of clips (NaN where a class had no frame)."""

    gap: dict[str, float]  # median gap per phone class
    width: dict[str, float]  # median width per phone class
    frames: dict[str, int]  # frames per phone class
    closure: float
    open_over_close: float
    rounding: float
    gap_p05: float
    gap_median: float
    gap_p95: float

    def figures(self) -> dict[str, float]:
        return {
            "closure": self.closure,
            "open_over_close": self.open_over_close,
            "rounding": self.rounding,
            "gap_p05": self.gap_p05,
            "gap_median": self.gap_median,
            "gap_p95": self.gap_p95,
        }

    def goals_met(self) -> dict[str, bool]:
        """Each goal of :data:`ARTICULATION_GOALS`: met or not (NaN: not met)."""
        met = {}
        for name, (sign, bound) in ARTICULATION_GOALS.items():
            value = self.figures()[name]
            met[name] = bool(value <= bound if sign == "<=" else value >= bound)
        return met

    def as_dict(self) -> dict[str, object]:
        return {
            "gap_by_class": self.gap,
            "width_by_class": self.width,
            "frames_by_class": self.frames,
            **self.figures(),
            "goals_met": self.goals_met(),
        }


def articulation(
    clips: Iterable[tuple[np.ndarray, Sequence[Sequence[object]]]], *, fps: float
) -> Articulation:
    """The figures over clips given as (landmarks (T, 478, 2+), phones) pairs: the class
    medians pool the frames of every clip, the range every frame."""
    per_class_gap: dict[str, list[np.ndarray]] = {name: [] for name in PHONE_CLASSES}
    per_class_width: dict[str, list[np.ndarray]] = {name: [] for name in PHONE_CLASSES}
    every_gap: list[np.ndarray] = []
    for landmarks, phones in clips:
        gap, width = gap_and_width(landmarks)
        every_gap.append(gap)
        for name, frames in phone_middle_frames(phones, gap.size, fps).items():
            per_class_gap[name].append(gap[frames])
            per_class_width[name].append(width[frames])
    gap_med = {name: _median(values) for name, values in per_class_gap.items()}
    width_med = {name: _median(values) for name, values in per_class_width.items()}
    counts = {
        name: int(sum(np.isfinite(v).sum() for v in values))
        for name, values in per_class_gap.items()
    }
    pooled = np.concatenate(every_gap) if every_gap else np.zeros(0)
    pooled = pooled[np.isfinite(pooled)]
    p05, p50, p95 = np.percentile(pooled, [5, 50, 95]) if pooled.size else (np.nan, np.nan, np.nan)
    return Articulation(
        gap=gap_med,
        width=width_med,
        frames=counts,
        closure=_ratio(gap_med["bilabial"], gap_med["open"]),
        open_over_close=_ratio(gap_med["open"], gap_med["close"]),
        rounding=_ratio(width_med["rounded"], width_med["spread"]),
        gap_p05=float(p05),
        gap_median=float(p50),
        gap_p95=float(p95),
    )


def articulation_table(rows: Mapping[str, Articulation]) -> str:
    """A markdown table of the figures, one row per named variant."""
    names = list(ARTICULATION_GOALS)
    head = "| variant | " + " | ".join(
        f"{name} ({sign} {bound})" for name, (sign, bound) in ARTICULATION_GOALS.items()
    )
    lines = [head + " |", "|---" * (len(names) + 1) + "|"]
    for variant, figures in rows.items():
        values = figures.figures()
        lines.append(f"| {variant} | " + " | ".join(f"{values[n]:.3f}" for n in names) + " |")
    return "\n".join(lines)


def _points(landmarks: np.ndarray) -> np.ndarray:
    points = np.asarray(landmarks, dtype=np.float64)
    if points.ndim != 3 or points.shape[1] < 478 or points.shape[2] < 2:
        raise ValueError(f"expected (T, 478, 2) landmarks, got {points.shape}")
    return points[..., :2]


def _median(values: list[np.ndarray]) -> float:
    pooled = np.concatenate(values) if values else np.zeros(0)
    pooled = pooled[np.isfinite(pooled)]
    return float(np.median(pooled)) if pooled.size else float("nan")


def _ratio(numerator: float, denominator: float) -> float:
    return float(numerator / denominator) if denominator > 0 else float("nan")
