"""Tracker agreement on synthetic clips: MediaPipe lip landmarks vs the rig's ground truth.

A dataset made by ``presenter data prep`` from a ``data synth`` corpus carries, for every
clip, the rig's ground-truth landmarks beside the tracked ones. :func:`measure` reports the
mean distance between the tracked and the true lip landmarks (40 points: outer and inner
contours) in pixels at a 256-px face-crop scale, per source, split and viseme.
``benchmarks/tracker_agreement.py`` writes it with a plot; the data tests check it on a
small corpus.
"""

from __future__ import annotations

import platform
from collections import defaultdict
from pathlib import Path

import numpy as np

from engine.data.prep.dataset import clip_dir, read_header, read_track
from engine.errors import EngineError
from engine.face3d import LIPS, LIPS_INNER, LIPS_OUTER
from engine.speech.phonemes import PHONE_TO_VISEME, VISEMES, phone_per_frame

REFERENCE_CROP = 256  # px: the distances are scaled to a face crop of this size
GOAL_PX = 2.0


def measure(data_dir: Path) -> dict[str, object]:
    """The agreement figures of ``data_dir``'s clips that have rig ground truth (under
    ``_frames``: every usable frame's mean lip distance, for a histogram)."""
    header = read_header(data_dir)
    scale = REFERENCE_CROP / header.crop.size
    by_group: dict[str, list[np.ndarray]] = defaultdict(list)
    by_viseme: dict[str, list[np.ndarray]] = defaultdict(list)
    outer_all, inner_all, per_frame_all = [], [], []
    clips = [clip for clip in header.clips if clip.has_ground_truth]
    if not clips:
        raise EngineError(
            f"{data_dir} has no clips with rig ground truth (make it from a `data synth` corpus)"
        )
    for clip in clips:
        track = read_track(
            clip_dir(data_dir, clip.id) / "track.safetensors",
            ["landmarks2d", "ground_truth_landmarks2d", "valid", "interpolated"],
        )
        usable = track["valid"].astype(bool) & ~track["interpolated"].astype(bool)
        error = (
            np.linalg.norm(
                track["landmarks2d"][:, :, :2] - track["ground_truth_landmarks2d"][:, :, :2],
                axis=-1,
            )
            * scale
        )  # (T, 478) px at 256
        per_frame = error[:, list(LIPS)].mean(axis=1)[usable]
        outer_all.append(error[:, list(LIPS_OUTER)].mean(axis=1)[usable])
        inner_all.append(error[:, list(LIPS_INNER)].mean(axis=1)[usable])
        per_frame_all.append(per_frame)
        by_group[f"{clip.meta.get('source', 'video')}/{clip.split}"].append(per_frame)
        phones = phone_per_frame(clip.meta["phones"], clip.frames, header.fps)
        visemes = np.array([PHONE_TO_VISEME[p] for p in phones])
        for viseme in VISEMES:
            by_viseme[viseme].append(
                error[:, list(LIPS)].mean(axis=1)[usable & (visemes == viseme)]
            )
    frames = np.concatenate(per_frame_all)

    def stats(values: np.ndarray) -> dict[str, float]:
        if values.size == 0:
            return {"frames": 0}
        return {
            "frames": int(values.size),
            "mean_px": round(float(values.mean()), 3),
            "median_px": round(float(np.median(values)), 3),
            "p95_px": round(float(np.percentile(values, 95)), 3),
        }

    return {
        "what": "mean distance between MediaPipe lip landmarks (40 points) tracked on rendered "
        "synthetic frames and the rig's ground truth, px at a 256-px face crop",
        "data": str(data_dir),
        "clips": len(clips),
        "goal_px": GOAL_PX,
        "all": stats(frames),
        "outer_contour": stats(np.concatenate(outer_all)),
        "inner_contour": stats(np.concatenate(inner_all)),
        "by_source_split": {k: stats(np.concatenate(v)) for k, v in sorted(by_group.items())},
        "by_viseme": {k: stats(np.concatenate(v)) for k, v in by_viseme.items()},
        "machine": platform.platform(),
        "_frames": frames,
    }
