"""Any talking-head video -> the project's dataset (see :mod:`engine.data.prep.dataset`).

Per video (in worker processes when ``workers > 1``): decode at 25 fps and 16 kHz, track one
face per frame (MediaPipe, video mode), reject the clip when too many frames do not show
exactly one face, fill short tracking gaps, compute stabilised crop transforms, write the
crops video and the per-frame arrays. Then, over all kept clips: one identity shape per
subject, the dynamics PCA fitted on the train split, coefficients for every clip, and the
mel statistics of the train split.

``basis`` (a motion checkpoint, or a dataset folder) skips the fit: the identity shapes,
the dynamics basis and its template are taken from it, so the coefficients are in that
model's coordinates (a held-out set prepared apart from the training data, to measure a
trained model on). The mel statistics are still those of the clips given; a motion model
carries its own.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file
from tqdm import tqdm

from engine.audio import MelConfig, float_to_pcm16, log_mel, pcm_to_float
from engine.data.prep.dataset import (
    BASIS_NAME,
    CLIPS_DIR,
    CROPS_NAME,
    HEADER_NAME,
    SPLITS,
    TRACK_NAME,
    ClipEntry,
    CropVideoWriter,
    DatasetHeader,
    clip_dir,
    read_track,
    write_basis,
    write_header,
    write_track,
)
from engine.data.prep.fixed_basis import FixedBasis, load_fixed_basis
from engine.data.prep.video import FrameRateSummary, decode_audio, iter_frames, probe_video
from engine.errors import EngineError
from engine.face3d import (
    LIPS,
    LOWER_FACE,
    DynamicsBasis,
    canonical_template,
    canonicalise,
    identity_shape,
    mouth_opening,
)
from engine.face_crop import CropConfig, crop_transforms, transform_points, warp_crop
from engine.tracking import NUM_BLENDSHAPES, NUM_LANDMARKS, FaceTracker

log = logging.getLogger(__name__)

VIDEO_EXTENSIONS = (".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v")
HELDOUT_PERCENT = 10
_MAX_PCA_FRAMES = 60000


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    crop: CropConfig = field(default_factory=CropConfig)
    mel: MelConfig = field(default_factory=MelConfig)
    max_skipped_fraction: float = 0.1
    max_gap_frames: int = 5  # tracking gaps up to this long are interpolated
    dynamics_components: int | None = None  # None: as many as dynamics_variance needs
    dynamics_variance: float = 0.98
    closed_fraction: float = 0.2  # identity shape: frames with the lowest mouth opening


@dataclass(frozen=True, kw_only=True)
class _VideoJob:
    path: Path
    clip_id: str
    out_dir: Path
    subject: str | None
    config: PrepareConfig


@dataclass(frozen=True, kw_only=True)
class _ClipOutcome:
    source: str
    frames: int
    entry: ClipEntry | None = None
    reason: str = ""


@dataclass(frozen=True, kw_only=True)
class PrepareReport:
    out_dir: Path
    header: DatasetHeader
    rejected: dict[str, str]  # source path -> one-line reason
    frames: int  # video frames processed (kept and rejected clips)
    seconds: float

    @property
    def kept(self) -> list[str]:
        return [clip.id for clip in self.header.clips]

    @property
    def frames_per_second(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def heldout_by_name(path: str | Path) -> bool:
    """Deterministic ~10 % held-out split from the file name alone."""
    digest = hashlib.sha256(Path(path).name.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 100 < HELDOUT_PERCENT


def _expand_videos(videos: Sequence[str | Path]) -> list[Path]:
    paths: list[Path] = []
    for item in videos:
        path = Path(item)
        if path.is_dir():
            found = sorted(
                child
                for child in path.rglob("*")
                if child.is_file() and child.suffix.lower() in VIDEO_EXTENSIONS
            )
            if not found:
                log.warning("%s: no video files (%s) inside", path, ", ".join(VIDEO_EXTENSIONS))
            paths.extend(found)
        else:
            paths.append(path)
    return paths


def _clip_ids(paths: list[Path]) -> list[str]:
    stems = [re.sub(r"[^A-Za-z0-9._-]+", "_", path.stem).strip("._") or "clip" for path in paths]
    counts: dict[str, int] = {}
    for stem in stems:
        counts[stem] = counts.get(stem, 0) + 1
    ids = []
    for stem, path in zip(stems, paths, strict=True):
        if counts[stem] > 1:
            digest = hashlib.sha256(str(path.resolve()).encode("utf-8")).hexdigest()[:8]
            ids.append(f"{stem}-{digest}")
        else:
            ids.append(stem)
    return ids


def _read_sidecar(path: Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        return {}
    try:
        values = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise EngineError(f"sidecar {sidecar} is not valid JSON ({exc}); fix or remove it") from exc
    if not isinstance(values, dict):
        raise EngineError(f"sidecar {sidecar} must hold a JSON object; fix or remove it")
    return values


def fill_tracking_gaps(
    detected: np.ndarray, arrays: Sequence[np.ndarray], max_gap: int
) -> tuple[np.ndarray, np.ndarray]:
    """Fill, in place, the rows of ``arrays`` (each (T, ...)) where ``detected`` is False.

    A gap of at most ``max_gap`` frames with detected frames on both sides is linearly
    interpolated and counts as valid; other gaps copy the nearest detected frame and stay
    invalid. Returns (valid, interpolated) masks.
    """
    detected = np.asarray(detected, dtype=bool)
    total = len(detected)
    valid = detected.copy()
    interpolated = np.zeros(total, dtype=bool)
    if not detected.any():
        return valid, interpolated
    edges = np.diff(np.concatenate([[0], (~detected).astype(np.int8), [0]]))
    starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    for start, stop in zip(starts, stops, strict=True):
        inner = start > 0 and stop < total
        if inner and stop - start <= max_gap:
            weights = (np.arange(start, stop) - (start - 1)) / (stop - (start - 1))
            for values in arrays:
                shape = (-1,) + (1,) * (values.ndim - 1)
                before, after = values[start - 1], values[stop]
                values[start:stop] = (1 - weights.reshape(shape)) * before + weights.reshape(
                    shape
                ) * after
            valid[start:stop] = True
            interpolated[start:stop] = True
            continue
        for frame in range(start, stop):
            use_before = start > 0 and (stop >= total or frame - (start - 1) <= stop - frame)
            nearest = start - 1 if use_before else stop
            for values in arrays:
                values[frame] = values[nearest]
    return valid, interpolated


def _reject(job: _VideoJob, frames: int, reason: str) -> _ClipOutcome:
    return _ClipOutcome(source=str(job.path), frames=frames, reason=reason)


def _prepare_clip(job: _VideoJob, progress: Callable[[int], None] | None = None) -> _ClipOutcome:
    """First pass over one video; writes crops.mp4 and track.safetensors (no coefficients)."""
    config = job.config
    try:
        probe_video(job.path)
        meta = _read_sidecar(job.path)
        # Kept as int16 in the track; the mel is that of the samples kept, exactly.
        audio = float_to_pcm16(decode_audio(job.path, sample_rate=config.mel.sample_rate))
    except EngineError as exc:
        return _reject(job, 0, str(exc))
    mel = log_mel(pcm_to_float(audio), config.mel)

    landmarks: list[np.ndarray] = []
    blendshapes: list[np.ndarray] = []
    poses: list[np.ndarray] = []
    face_counts: list[int] = []
    source_frames: list[int] = []
    summary = FrameRateSummary()
    try:
        with FaceTracker(video=True, max_faces=2) as tracker:
            for frame in iter_frames(job.path, summary=summary):
                faces = tracker.detect(frame.rgb, timestamp_ms=round(frame.time * 1000))
                face_counts.append(len(faces))
                source_frames.append(frame.source_index)
                if len(faces) == 1:
                    landmarks.append(faces[0].landmarks)
                    blendshapes.append(faces[0].blendshapes)
                    poses.append(faces[0].pose)
                else:
                    landmarks.append(np.zeros((NUM_LANDMARKS, 3), np.float32))
                    blendshapes.append(np.zeros(NUM_BLENDSHAPES, np.float32))
                    poses.append(np.eye(4, dtype=np.float32))
                if progress is not None:
                    progress(1)
    except EngineError as exc:
        return _reject(job, len(face_counts), str(exc))

    total = len(face_counts)
    counts = np.asarray(face_counts)
    no_face, several = int((counts == 0).sum()), int((counts > 1).sum())
    skipped = no_face + several
    if skipped > config.max_skipped_fraction * total or skipped == total:
        return _reject(
            job,
            total,
            f"{job.path.name}: {skipped} of {total} frames ({100 * skipped / total:.0f}%) do not "
            f"show exactly one face ({no_face} none, {several} several), over the "
            f"{100 * config.max_skipped_fraction:.0f}% allowed; trim it to one visible face",
        )
    landmark_array = np.stack(landmarks).astype(np.float64)
    blend_array = np.stack(blendshapes).astype(np.float64)
    pose_array = np.stack(poses).astype(np.float64)
    valid, interpolated = fill_tracking_gaps(
        counts == 1, [landmark_array, blend_array, pose_array], config.max_gap_frames
    )
    transforms = crop_transforms(landmark_array, valid, config.crop)

    folder = clip_dir(job.out_dir, job.clip_id)
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with CropVideoWriter(folder / CROPS_NAME, config.crop.size) as writer:
            for frame in iter_frames(job.path, quiet=True):
                if frame.index >= total:
                    break
                writer.write(warp_crop(frame.rgb, transforms[frame.index], config.crop.size))
        if writer.frames != total:
            raise EngineError(
                f"{job.path.name}: decoded {writer.frames} frames the second time, {total} the "
                "first; re-export the video"
            )
        canonical = canonicalise(landmark_array)
        arrays: dict[str, np.ndarray] = {
            "landmarks2d": transform_points(transforms, landmark_array).astype(np.float32),
            "lower_face": canonical[:, list(LOWER_FACE)].astype(np.float32),
            "crop_transforms": transforms.astype(np.float32),
            "valid": valid,
            "interpolated": interpolated,
            "blendshapes": blend_array.astype(np.float32),
            "pose": pose_array.astype(np.float32),
            "mouth_opening": mouth_opening(canonical).astype(np.float32),
            "source_frame": np.asarray(source_frames, dtype=np.int64),
            "mel": mel,
            "audio": audio,
        }
        ground_truth = _ground_truth_in_crop(job.path, arrays["source_frame"], transforms)
        if ground_truth is not None:
            arrays["ground_truth_landmarks2d"] = ground_truth
        write_track(folder / TRACK_NAME, arrays)
    except EngineError as exc:
        shutil.rmtree(folder, ignore_errors=True)
        return _reject(job, total, str(exc))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise

    split = meta.get("split")
    if split not in SPLITS:
        if split is not None:
            log.warning("%s: sidecar split %r is not one of %s", job.path.name, split, SPLITS)
        split = "heldout" if heldout_by_name(job.path) else "train"
    subject = job.subject or str(meta.get("subject") or job.clip_id)
    entry = ClipEntry(
        id=job.clip_id,
        frames=total,
        mel_frames=int(mel.shape[0]),
        split=str(split),
        subject=subject,
        source=str(job.path),
        meta=meta,
        skipped={
            "no_face": no_face,
            "several_faces": several,
            "interpolated": int(interpolated.sum()),
            "invalid": int((~valid).sum()),
            "source_frames": summary.source_frames,
        },
        valid_frames=int(valid.sum()),
        has_ground_truth=ground_truth is not None,
    )
    return _ClipOutcome(source=str(job.path), frames=total, entry=entry)


def _ground_truth_in_crop(
    path: Path, source_frames: np.ndarray, transforms: np.ndarray
) -> np.ndarray | None:
    sidecar = path.with_suffix(".landmarks.safetensors")
    if not sidecar.is_file():
        return None
    try:
        landmarks = load_file(str(sidecar))["landmarks"]
    except (KeyError, OSError, ValueError) as exc:
        log.warning("%s: ignoring unreadable rig landmarks (%s)", sidecar.name, exc)
        return None
    if landmarks.ndim != 3 or landmarks.shape[1:] != (NUM_LANDMARKS, 2):
        log.warning("%s: rig landmarks have shape %s, ignored", sidecar.name, landmarks.shape)
        return None
    if int(source_frames.max()) >= landmarks.shape[0]:
        log.warning(
            "%s: %d rig frames for %d video frames, ignored",
            sidecar.name,
            landmarks.shape[0],
            int(source_frames.max()) + 1,
        )
        return None
    return transform_points(transforms, landmarks[source_frames]).astype(np.float32)


def _init_worker(level: int) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def _run_jobs(jobs: list[_VideoJob], workers: int, estimated_frames: int) -> list[_ClipOutcome]:
    outcomes: list[_ClipOutcome] = []
    with tqdm(total=estimated_frames, unit="frame", desc="prepare", dynamic_ncols=True) as bar:
        if workers <= 1 or len(jobs) <= 1:
            for job in jobs:
                outcomes.append(_prepare_clip(job, bar.update))
            return outcomes
        level = logging.getLogger("engine").getEffectiveLevel()
        with ProcessPoolExecutor(
            max_workers=workers,
            mp_context=get_context("spawn"),
            initializer=_init_worker,
            initargs=(level,),
        ) as pool:
            futures = {pool.submit(_prepare_clip, job): job for job in jobs}
            for future in as_completed(futures):
                outcome = future.result()
                bar.update(outcome.frames)
                outcomes.append(outcome)
    order = {str(job.path): index for index, job in enumerate(jobs)}
    return sorted(outcomes, key=lambda outcome: order[outcome.source])


def _evenly(indices: np.ndarray, limit: int) -> np.ndarray:
    if len(indices) <= limit:
        return indices
    return indices[np.linspace(0, len(indices) - 1, limit).round().astype(np.int64)]


def _finish(
    out_dir: Path,
    entries: list[ClipEntry],
    rejected: dict[str, str],
    config: PrepareConfig,
    fixed: FixedBasis | None = None,
) -> DatasetHeader:
    """Second pass: identity shapes, dynamics basis, coefficients, mel statistics, header."""
    tracks = {entry.id: read_track(clip_dir(out_dir, entry.id) / TRACK_NAME) for entry in entries}
    if fixed is not None:
        missing = sorted({entry.subject for entry in entries} - set(fixed.identities))
        if missing:
            raise EngineError(f"{fixed.source} has no identity shape for subjects {missing}")

    identities: dict[str, np.ndarray] = {}
    for subject in sorted({entry.subject for entry in entries}):
        if fixed is not None:
            identities[subject] = fixed.identities[subject]
            continue
        points, openings = [], []
        for entry in entries:
            if entry.subject == subject:
                track = tracks[entry.id]
                points.append(track["lower_face"][track["valid"]])
                openings.append(track["mouth_opening"][track["valid"]])
        identities[subject] = identity_shape(
            np.concatenate(points), np.concatenate(openings), closed_fraction=config.closed_fraction
        )

    fit_entries = [entry for entry in entries if entry.split == "train"]
    fitted_on = "train"
    if not fit_entries:
        if fixed is None:
            log.warning("no train clip: the dynamics basis and mel statistics use held-out clips")
        fit_entries, fitted_on = entries, "heldout"
    if fixed is None:
        offsets = np.concatenate(
            [
                tracks[entry.id]["lower_face"][tracks[entry.id]["valid"]]
                - identities[entry.subject]
                for entry in fit_entries
            ]
        )
        offsets = offsets[_evenly(np.arange(len(offsets)), _MAX_PCA_FRAMES)]
        if len(offsets) < 2:
            raise EngineError("fewer than two valid frames in the train split; add more video")
        basis = DynamicsBasis.fit(
            offsets, num_components=config.dynamics_components, variance=config.dynamics_variance
        )
        fitted_frames = len(offsets)
    else:
        basis, fitted_frames = fixed.basis, 0
        fitted_on = f"taken from {fixed.source}"

    mel_sum = np.zeros(config.mel.num_mels, np.float64)
    mel_squares = np.zeros(config.mel.num_mels, np.float64)
    mel_count = 0
    for entry in fit_entries:
        mel = tracks[entry.id]["mel"].astype(np.float64)
        mel_sum += mel.sum(axis=0)
        mel_squares += (mel**2).sum(axis=0)
        mel_count += mel.shape[0]
    mel_mean = mel_sum / max(mel_count, 1)
    mel_std = np.sqrt(np.maximum(mel_squares / max(mel_count, 1) - mel_mean**2, 1e-6))

    for entry in entries:
        track = dict(tracks[entry.id])
        track["coefficients"] = basis.encode(track["lower_face"], identities[entry.subject])
        write_track(clip_dir(out_dir, entry.id) / TRACK_NAME, track)
    template = canonical_template() if fixed is None else fixed.template
    write_basis(out_dir, basis, template=template, identities=identities)

    header = DatasetHeader(
        mel=config.mel,
        crop=config.crop,
        clips=entries,
        mel_mean=mel_mean.tolist(),
        mel_std=mel_std.tolist(),
        dynamics={
            "num_components": basis.num_components,
            "num_points": basis.num_points,
            "lip_points": len(LIPS),
            "explained_variance_ratio": basis.explained_variance_ratio.tolist(),
            "coefficient_std": np.sqrt(basis.variances).tolist(),
            "fitted_on": fitted_on,
            "fitted_frames": fitted_frames,
            "closed_fraction": config.closed_fraction,
            "units": "inter-ocular distances in the canonical head frame",
        },
        rejected=[{"source": source, "reason": reason} for source, reason in rejected.items()],
    )
    write_header(out_dir, header)
    return header


def default_workers(videos: int) -> int:
    """One process per two cores (MediaPipe and the H.264 codecs use threads too)."""
    return max(1, min(videos, (os.cpu_count() or 2) // 2))


def prepare(
    videos: Sequence[str | Path],
    out_dir: str | Path,
    *,
    crop_size: int = 256,
    max_skipped_fraction: float = 0.1,
    subject: str | None = None,
    workers: int | None = None,
    overwrite: bool = False,
    config: PrepareConfig | None = None,
    basis: str | Path | None = None,
) -> PrepareReport:
    """Prepare ``videos`` (files, or folders searched for video files) into ``out_dir``.

    Clips that cannot be used are rejected with a one-line reason (logged, in the report
    and in ``dataset.json``) while the others go on; :class:`EngineError` only when no
    clip is left. ``subject`` names the person in every video (else each clip's sidecar
    ``subject``, else the clip id). ``config`` gives the remaining settings; ``crop_size``
    and ``max_skipped_fraction`` override it. ``basis``: take the dynamics basis and the
    identity shapes from a motion checkpoint or a dataset instead of fitting them.
    """
    started = time.monotonic()
    base = config or PrepareConfig()
    config = replace(
        base,
        crop=replace(base.crop, size=crop_size),
        max_skipped_fraction=max_skipped_fraction,
    )
    if not 0.0 <= max_skipped_fraction < 1.0:
        raise ValueError(f"max_skipped_fraction must be in [0, 1), got {max_skipped_fraction}")
    out_dir = Path(out_dir)
    if (out_dir / HEADER_NAME).exists():
        if not overwrite:
            raise EngineError(
                f"{out_dir} already holds a dataset; choose another folder or overwrite it"
            )
        shutil.rmtree(out_dir / CLIPS_DIR, ignore_errors=True)
        for name in (HEADER_NAME, BASIS_NAME):
            (out_dir / name).unlink(missing_ok=True)
    fixed = load_fixed_basis(basis) if basis is not None else None
    paths = _expand_videos(videos)
    if not paths:
        raise EngineError("no video to prepare; give video files or folders holding them")
    out_dir.mkdir(parents=True, exist_ok=True)

    jobs = [
        _VideoJob(path=path, clip_id=clip_id, out_dir=out_dir, subject=subject, config=config)
        for path, clip_id in zip(paths, _clip_ids(paths), strict=True)
    ]
    estimated = 0
    for path in paths:
        try:
            estimated += probe_video(path).estimated_frames
        except EngineError:
            continue
    workers = default_workers(len(jobs)) if workers is None else max(1, workers)
    outcomes = _run_jobs(jobs, workers, estimated)

    rejected = {outcome.source: outcome.reason for outcome in outcomes if outcome.entry is None}
    for source, reason in rejected.items():
        log.warning("rejected %s: %s", source, reason)
    entries = [outcome.entry for outcome in outcomes if outcome.entry is not None]
    if not entries:
        reasons = "; ".join(rejected.values())
        raise EngineError(f"no usable clip among {len(jobs)} video(s): {reasons}")
    header = _finish(out_dir, entries, rejected, config, fixed)
    frames = sum(outcome.frames for outcome in outcomes)
    seconds = time.monotonic() - started
    log.info(
        "prepared %d clip(s) (%d rejected), %d frames in %.1f s (%.1f frames/s) into %s",
        len(entries),
        len(rejected),
        frames,
        seconds,
        frames / max(seconds, 1e-9),
        out_dir,
    )
    return PrepareReport(
        out_dir=out_dir, header=header, rejected=rejected, frames=frames, seconds=seconds
    )
