"""The quality benchmark's rows: per held-out source, the model and its baselines measured
the same way, and the goals as ratios against the baselines.

Variants (each rendered through the same generator and tracked by the same tracker, see
``benchmarks/quality.py``):

- ``model``: the motion model's prediction through the silence gate (as at inference);
- ``model_no_gate``: its raw prediction;
- ``loudness``: :class:`engine.lipsync_baselines.LoudnessMouth`, fitted by least squares to
  the tracked dynamics of the measured clips of the same source (in-sample: an upper bound
  of what a loudness-driven mouth can do on them), lag searched;
- ``mean``: the mean of those tracked dynamics on every frame;
- ``real_video``: the real (rig) frames, tracked, against the rig's ground truth: the
  tracker's floor.

Figures of a row compare the variant's tracked mouth with the real video's tracked mouth
(LMD, mouth-opening correlation pooled and over speech frames only, A/V offset) and with
the rig's ground truth (LMD vs rig); ``real_video`` compares the tracked real mouth with the
rig's. Closing counts from the last phone's end (the rig's phone timings).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from engine.articulation import ARTICULATION_GOALS, articulation
from engine.lipsync_metrics import (
    best_lag,
    closing_delay_ms,
    lip_distance_px,
    mouth_gap_px,
    pearson,
    pooled_correlation,
)

MAX_LAG_FRAMES = 5
VARIANTS = ("model", "model_no_gate", "loudness", "mean")
REAL = "real_video"
RIG = "rig_ground_truth"  # the rig's own landmarks (articulation only)
CLOSED_WITHIN_MS = 80.0
# Goals, per source: the model against its baselines.
SPEECH_CORRELATION_MARGIN = 0.1  # model's speech-only correlation minus the loudness mouth's
LMD_FACTOR = 1.5  # the loudness (and mean) mouth's LMD over the model's
RIG_CORRELATION = 0.85  # the model's mouth opening against the rig's, driven by the same phones
GOALS = {
    "speech_correlation_over_loudness": f"model - loudness >= {SPEECH_CORRELATION_MARGIN}",
    "lmd_below_loudness": f"loudness / model >= {LMD_FACTOR}",
    "lmd_below_mean": f"mean / model >= {LMD_FACTOR}",
    "av_offset_frames": "model within +-1",
    "closing_from_last_phone_median_ms": f"model <= {CLOSED_WITHIN_MS:g}",
    "psnr_db": ">= 30 (self-reconstruction, all clips)",
    "ssim": ">= 0.9 (self-reconstruction, all clips)",
    "opening_correlation_vs_rig": f"model >= {RIG_CORRELATION} (pooled, the rig's ground truth)",
    **{
        f"articulation_{name}": f"model {sign} {bound}"
        for name, (sign, bound) in ARTICULATION_GOALS.items()
    },
}


@dataclass
class ClipMeasure:
    """Everything measured on one clip (no images kept)."""

    clip_id: str
    source: str
    frames: int
    real_landmarks: np.ndarray  # (T, 478, 2), NaN where no face
    rig_landmarks: np.ndarray | None  # (T, 478, 2) at the metric size
    rendered: dict[str, np.ndarray]  # variant -> (T, 478, 2) landmarks of its rendering
    loudness: np.ndarray  # (T,) per-frame log energy
    speech: np.ndarray  # (T,) bool: speech frames from the phone timings
    speech_start_s: float
    speech_end_s: float  # the last phone's end
    sound_end_s: float  # where the audio falls below the silence gate's level for good
    lip_error_px: np.ndarray  # model's predicted vs tracked dynamics, valid frames
    reconstruction: dict[str, np.ndarray] = field(default_factory=dict)
    phones: list[tuple[object, ...]] = field(default_factory=list)  # (label, start_s, end_s)


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), digits)


def _rounded(value: Any, digits: int = 4) -> Any:
    """Floats of a nested dict rounded (NaN -> None); everything else as it is."""
    if isinstance(value, dict):
        return {key: _rounded(item, digits) for key, item in value.items()}
    if isinstance(value, float):
        return _round(value, digits)
    return value


def closing_figures(
    gaps: list[np.ndarray], measures: list[ClipMeasure], fps: float, *, from_sound: bool
) -> dict[str, Any]:
    """Closing delays of ``gaps`` (one per clip) from the last phone's end (or the end of
    sound): rest is the median gap of the leading silence."""
    delays: list[float | None] = []
    for gap, measure in zip(gaps, measures, strict=True):
        lead = int(measure.speech_start_s * fps) - 2
        end = measure.sound_end_s if from_sound else measure.speech_end_s
        if lead < 3 or not np.isfinite(end):
            continue
        rest = float(np.nanmedian(gap[:lead]))
        delays.append(closing_delay_ms(gap, end, fps=fps, rest_gap=rest))
    closed = [d for d in delays if d is not None]
    return {
        "clips": len(delays),
        "never_closed": len(delays) - len(closed),
        "median": _round(float(np.median(closed)), 1) if closed else None,
        "p90": _round(float(np.percentile(closed, 90)), 1) if closed else None,
        "max": _round(float(np.max(closed)), 1) if closed else None,
        "within_80ms": _round(float(np.mean([d <= CLOSED_WITHIN_MS for d in closed])), 4)
        if closed
        else None,
    }


def variant_row(measures: list[ClipMeasure], variant: str, fps: float) -> dict[str, Any]:
    """One row: ``variant`` (or ``real_video``) on ``measures``."""
    rig = [m.rig_landmarks for m in measures]
    has_rig = all(r is not None for r in rig)
    if variant == REAL:
        if not has_rig:
            return {"note": "no rig ground truth in this data"}
        reference = [mouth_gap_px(r) for r in rig]  # type: ignore[arg-type]
        landmarks = [m.real_landmarks for m in measures]
        reference_landmarks = rig
    else:
        reference = [mouth_gap_px(m.real_landmarks) for m in measures]
        landmarks = [m.rendered[variant] for m in measures]
        reference_landmarks = [m.real_landmarks for m in measures]
    gaps = [mouth_gap_px(x) for x in landmarks]
    speech = [m.speech for m in measures]
    lmd = np.concatenate(
        [lip_distance_px(a, b) for a, b in zip(landmarks, reference_landmarks, strict=True)]  # type: ignore[arg-type]
    )
    av = best_lag(reference, gaps, max_lag=MAX_LAG_FRAMES, fps=fps)
    vs_sound = best_lag([m.loudness for m in measures], gaps, max_lag=MAX_LAG_FRAMES, fps=fps)
    shaped = articulation(
        [(x, m.phones) for x, m in zip(landmarks, measures, strict=True)], fps=fps
    )
    row: dict[str, Any] = {
        "lmd_px": _round(float(np.nanmean(lmd)), 3),
        "mouth_opening_correlation": _round(pooled_correlation(gaps, reference), 4),
        "mouth_opening_correlation_speech": _round(pooled_correlation(gaps, reference, speech), 4),
        "mouth_opening_correlation_per_clip_mean": _round(
            float(np.nanmean([pearson(a, b) for a, b in zip(gaps, reference, strict=True)])), 4
        ),
        "av_offset_frames": av.frames,
        "av_offset_ms": _round(av.ms, 1),
        "mouth_vs_speech_lag_ms": _round(vs_sound.ms, 1),
        "closing_ms": closing_figures(gaps, measures, fps, from_sound=False),
        "closing_ms_from_sound_end": closing_figures(gaps, measures, fps, from_sound=True),
        "frames_with_face": _round(
            float(np.mean(np.concatenate([np.isfinite(g) for g in gaps]))), 4
        ),
        "articulation": _rounded(shaped.as_dict()),
    }
    if variant != REAL and has_rig:
        vs_rig = np.concatenate(
            [lip_distance_px(a, r) for a, r in zip(landmarks, rig, strict=True)]  # type: ignore[arg-type]
        )
        row["lmd_vs_rig_px"] = _round(float(np.nanmean(vs_rig)), 3)
        rig_gaps = [mouth_gap_px(r) for r in rig]  # type: ignore[arg-type]
        row["mouth_opening_correlation_vs_rig"] = _round(pooled_correlation(gaps, rig_gaps), 4)
        vs_rig_lag = best_lag(rig_gaps, gaps, max_lag=MAX_LAG_FRAMES, fps=fps)
        row["av_offset_vs_rig_frames"] = vs_rig_lag.frames
        row["av_offset_vs_rig_ms"] = _round(vs_rig_lag.ms, 1)
        row["mouth_opening_correlation_vs_rig_speech"] = _round(
            pooled_correlation(gaps, [mouth_gap_px(r) for r in rig], speech),  # type: ignore[arg-type]
            4,
        )
    return row


def source_rows(measures: list[ClipMeasure], fps: float) -> dict[str, Any]:
    """The rows of one source, its data and its goals."""
    rows = {variant: variant_row(measures, variant, fps) for variant in (*VARIANTS, REAL)}
    if all(m.rig_landmarks is not None for m in measures):
        rows[RIG] = {
            "articulation": _rounded(
                articulation(
                    [(m.rig_landmarks, m.phones) for m in measures],  # type: ignore[misc]
                    fps=fps,
                ).as_dict()
            )
        }
    model, loudness, mean = rows["model"], rows["loudness"], rows["mean"]
    margin = (
        model["mouth_opening_correlation_speech"] - loudness["mouth_opening_correlation_speech"]
    )
    lmd_loudness = loudness["lmd_px"] / model["lmd_px"]
    lmd_mean = mean["lmd_px"] / model["lmd_px"]
    closing = model["closing_ms"]["median"]
    goals = {
        "speech_correlation_over_loudness": {
            "value": round(margin, 4),
            "pass": bool(margin >= SPEECH_CORRELATION_MARGIN),
        },
        "lmd_below_loudness": {
            "value": round(lmd_loudness, 2),
            "pass": bool(lmd_loudness >= LMD_FACTOR),
        },
        "lmd_below_mean": {"value": round(lmd_mean, 2), "pass": bool(lmd_mean >= LMD_FACTOR)},
        "av_offset_frames": {
            "value": model["av_offset_frames"],
            "pass": abs(model["av_offset_frames"]) <= 1,
        },
        "closing_from_last_phone_median_ms": {
            "value": closing,
            "pass": closing is not None and closing <= CLOSED_WITHIN_MS,
        },
    }
    versus_rig = model.get("mouth_opening_correlation_vs_rig")
    if versus_rig is not None:
        goals["opening_correlation_vs_rig"] = {
            "value": versus_rig,
            "pass": bool(versus_rig >= RIG_CORRELATION),
        }
    shaped = model["articulation"]
    for name in ARTICULATION_GOALS:
        goals[f"articulation_{name}"] = {
            "value": shaped[name],
            "pass": bool(shaped["goals_met"][name]),
        }
    floor = rows[REAL].get("lmd_px")
    above_floor = {
        variant: round(rows[variant]["lmd_vs_rig_px"] - floor, 3)
        for variant in VARIANTS
        if floor is not None and rows[variant].get("lmd_vs_rig_px") is not None
    }
    return {
        "clips": len(measures),
        "frames": int(sum(m.frames for m in measures)),
        "lmd_vs_rig_above_tracker_floor_px": above_floor,
        "speech_frames": int(sum(int(m.speech.sum()) for m in measures)),
        "clip_ids": [m.clip_id for m in measures],
        "rows": rows,
        "goals": goals,
    }


ARTICULATION_ROWS = {
    RIG: "the rig's ground truth (same phones)",
    REAL: "real (rig) video, tracked",
    "model": "model (silence gate on, as shipped)",
    "model_no_gate": "model without the silence gate",
    "loudness": "loudness mouth (fitted in-sample)",
    "mean": "mean mouth",
}

ROW_NAMES = {
    "model": "model (silence gate on, as shipped)",
    "model_no_gate": "model without the silence gate",
    "loudness": "loudness mouth (fitted in-sample)",
    "mean": "mean mouth",
    REAL: "real (rig) video, tracked, vs the rig's ground truth",
}


def _cell(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def markdown_table(source: dict[str, Any]) -> str:
    """One source's rows as a markdown table (the README's)."""
    lines = [
        "| variant | LMD px (vs tracked real) | LMD px vs rig | mouth-opening corr. pooled "
        "| speech only | A/V offset | closing from last phone, median / p90 ms "
        "| from sound end, median ms |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for variant, name in ROW_NAMES.items():
        row = source["rows"][variant]
        if "lmd_px" not in row:
            continue
        closing, sound = row["closing_ms"], row["closing_ms_from_sound_end"]
        lmd, vs_rig = row["lmd_px"], row.get("lmd_vs_rig_px")
        if variant == REAL:  # the tracker's floor: the tracked real mouth against the rig
            lmd, vs_rig = None, row["lmd_px"]
        lines.append(
            f"| {name} | {_cell(lmd)} | {_cell(vs_rig)} "
            f"| {_cell(row['mouth_opening_correlation'])} "
            f"| {_cell(row['mouth_opening_correlation_speech'])} "
            f"| {row['av_offset_frames']} ({_cell(row['av_offset_ms'], 1)} ms) "
            f"| {_cell(closing['median'], 1)} / {_cell(closing['p90'], 1)} "
            f"| {_cell(sound['median'], 1)} |"
        )
    return "\n".join(lines)


def articulation_markdown(source: dict[str, Any]) -> str:
    """One source's articulation figures as a markdown table: every variant next to the
    rig's own frames and ground truth."""
    names = list(ARTICULATION_GOALS)
    head = " | ".join(f"{n} ({sign} {bound:g})" for n, (sign, bound) in ARTICULATION_GOALS.items())
    lines = [f"| variant | {head} |", "|---" * (len(names) + 1) + "|"]
    for variant, label in ARTICULATION_ROWS.items():
        shaped = source["rows"].get(variant, {}).get("articulation")
        if shaped is not None:
            cells = " | ".join(_cell(shaped[n]) for n in names)
            lines.append(f"| {label} | {cells} |")
    return "\n".join(lines)
