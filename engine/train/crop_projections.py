"""Fitting each subject's crop projection on a prepared dataset.

A subject's :class:`~engine.geometry_map.CropProjection` maps canonical lower-face points
into its stabilised face crop; it is fitted here by least squares on every valid tracked
frame of the subject's clips (running sums, so any number of frames fits in constant
memory) and stored with the generator.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from engine.data.prep.dataset import TRACK_NAME, clip_dir, read_basis, read_header, read_track
from engine.errors import EngineError
from engine.geometry_map import CropProjection, CropProjectionSums

log = logging.getLogger(__name__)


def fit_subject_projections(
    root: str | Path, *, splits: Iterable[str] = ("train",)
) -> dict[str, CropProjection]:
    """One :class:`CropProjection` per subject of a prepared dataset, fitted on the valid
    frames of its clips in ``splits`` (every split, for a subject with none there)."""
    header = read_header(root)
    basis, _, _ = read_basis(root)
    indices = [int(index) for index in basis.indices]
    wanted = set(splits)
    projections: dict[str, CropProjection] = {}
    for subject in sorted({clip.subject for clip in header.clips}):
        own = [clip for clip in header.clips if clip.subject == subject]
        chosen = [clip for clip in own if clip.split in wanted] or own
        sums = CropProjectionSums()
        frames = 0
        for clip in chosen:
            track = read_track(
                clip_dir(root, clip.id) / TRACK_NAME, ["lower_face", "landmarks2d", "valid"]
            )
            valid = track["valid"].astype(bool)
            sums.add(
                track["lower_face"][valid],
                track["landmarks2d"][valid][:, indices],
                header.crop.size,
            )
            frames += int(valid.sum())
        if frames == 0:
            raise EngineError(
                f"subject {subject!r} has no valid tracked frames in {root}; prepare the "
                "dataset again with video where one face is visible"
            )
        projection = sums.solve()
        log.info(
            "crop projection for %s: %d frames, rms residual %.2f px of %d",
            subject,
            frames,
            sums.residual_px(projection, header.crop.size),
            header.crop.size,
        )
        projections[subject] = projection
    return projections
