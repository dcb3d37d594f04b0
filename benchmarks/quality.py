"""Lip-sync and image quality of an avatar model on the held-out clips of a dataset.

``python -m benchmarks.quality --model default --data DATASET
[--sources espeak,piper,human,flite,human2] [--voice V] [--out DIR]``

For every held-out clip of the sources (``--voice``: of that voice only), in rows per
source, the model next to its baselines (``benchmarks/quality_rows.py``: the model without
its silence gate, a loudness-driven mouth, the mean mouth, the real video against the rig's
ground truth), each rendered and measured as the model is:

1. the motion model predicts the clip's dynamics from its audio (log-mel of the clip's
   16 kHz track, the subject's default style); *lip error*: mean 3D lip-point distance of
   the prediction to the tracked dynamics, px at a 256-px crop;
2. the generator renders every frame from the predicted dynamics onto one still frame (the
   clip's first frame, mouth at rest, as target and reference: as the presenter renders
   onto its avatar's frames, and nothing of the real mouth reaches the rendering), the crop
   is blended into the 256-px face crop (upscaled from the generator's size) as the
   frame compositor does;
3. MediaPipe's Face Landmarker tracks the rendered and the real crops the same way;
   *LMD*: mean distance of the 40 lip landmarks, px at 256; *mouth-opening correlation*:
   Pearson correlation of the inner-lip gaps, pooled over all frames and over the speech
   frames only (the phone timings); *A/V offset*: the lag
   of the rendered mouth motion against the real one (which is in sync with the speech, see
   the tracker test of the dataset) that maximises their correlation, ±5 frames, and the
   lag of each against the speech loudness for reference;
4. *closing*: time from the last phone's end (the clip's phone timings; and from the end of
   sound, where the audio falls below the silence gate's level for good) to a rendered
   mouth that stays within 1 px of its leading-silence gap for 3 frames; the same
   measure on the real video for comparison;
5. *articulation* (:mod:`engine.articulation`): inner-lip gap and mouth width over the
   eye-corner distance, medians over the middle half of each phone per class; closure
   (/p b m/ over open vowels), open over close vowels, rounding (rounded over spread
   width), the gap's 5th and 95th percentiles; for every variant, the real (rig) video
   tracked and the rig's ground truth; ``quality_visemes.png``: per viseme class (open
   vowel, /p b m/, /f v/, /uw/) the rig's frames above the model's;
6. *self-reconstruction*: the generator on the tracked dynamics onto the real frames,
   PSNR and SSIM of the composited face region (the blend support), at the generator's
   resolution and at 256 px.

Writes ``quality.json`` (``results``: the model's figures on the espeak held-out voice, as
earlier reports; ``by_source``: the rows, goals and pass/fail per source) and the
pictures of ``benchmarks/quality_strips.py`` to ``--out`` (default
``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from benchmarks.provenance import write_result
from benchmarks.quality_rows import (
    GOALS,
    MAX_LAG_FRAMES,
    REAL,
    ClipMeasure,
    articulation_markdown,
    markdown_table,
    source_rows,
    variant_row,
)
from benchmarks.quality_strips import VisemeStrips, speech_span, write_strip
from engine.avatar_model import AvatarModel, load_avatar_model
from engine.data.prep.dataset import (
    CROPS_NAME,
    TRACK_NAME,
    ClipEntry,
    clip_dir,
    read_crop_video,
    read_header,
    read_track,
)
from engine.errors import EngineError
from engine.generator import composite, lower_face_region, mask_lower_face
from engine.lipsync_baselines import LoudnessMouth, fit_loudness_mouth, speech_envelope
from engine.lipsync_metrics import last_phone_end_s, speech_frames
from engine.silence_gate import mel_energy
from engine.tracking import FaceTracker
from engine.train.joint import DEFAULT_GATE, predict_split
from engine.train.losses import psnr, ssim
from engine.train.motion import LipGeometry, pixels_per_unit

log = logging.getLogger(__name__)

METRIC_PX = 256
BATCH = 16


def _to_tensor(frames: np.ndarray, size: int) -> torch.Tensor:
    """(N, S, S, 3) uint8 -> (N, 3, size, size) float in [0, 1] (area resampling down)."""
    if frames.shape[1] != size:
        frames = np.stack(
            [cv2.resize(f, (size, size), interpolation=cv2.INTER_AREA) for f in frames]
        )
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(0, 3, 1, 2))).float() / 255.0


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    array = images.clamp(0.0, 1.0).mul(255.0).round().byte().permute(0, 2, 3, 1).numpy()
    return np.ascontiguousarray(array)


@torch.no_grad()
def render_clip(
    model: AvatarModel,
    subject: str,
    crops: np.ndarray,
    coefficients: np.ndarray,
    reference_image: np.ndarray,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Render onto the target frames ``crops`` (T, S, S, 3) from ``coefficients`` (T, K)
    with the reference ``reference_image`` (S, S, 3): the 256-px composites (T, S, S, 3)
    uint8 and the composites at the generator's size with their targets (float, for
    PSNR/SSIM). Pass a still frame repeated as ``crops`` to measure lip sync: nothing of
    the targets' own mouths then reaches the rendering."""
    generator = model.generator.generator
    config = generator.config
    size = config.image_size
    full = crops.shape[1]
    mapper = model.generator.mapper(subject)
    reference = _to_tensor(reference_image[None], size)
    outputs, small_outputs, small_targets = [], [], []
    for first in range(0, crops.shape[0], BATCH):
        chunk = crops[first : first + BATCH]
        target = _to_tensor(chunk, size)
        values = np.asarray(coefficients[first : first + BATCH], np.float32)
        geometry = torch.from_numpy(np.stack([mapper(v) for v in values]))
        crop, mask = generator(
            mask_lower_face(target, config),
            reference.expand(target.shape[0], -1, -1, -1),
            geometry,
            torch.from_numpy(values),
        )
        small_outputs.append(composite(crop, mask, target).clamp(0.0, 1.0))
        small_targets.append(target)
        big = F.interpolate(crop, size=(full, full), mode="bilinear", align_corners=False)
        big_mask = F.interpolate(mask, size=(full, full), mode="bilinear", align_corners=False)
        outputs.append(_to_uint8(composite(big, big_mask.clamp(0, 1), _to_tensor(chunk, full))))
    return np.concatenate(outputs), torch.cat(small_outputs), torch.cat(small_targets)


def track_crops(tracker: FaceTracker, frames: np.ndarray) -> np.ndarray:
    """(T, 478, 2) landmarks of the single face in each crop; NaN where none is found."""
    result = np.full((frames.shape[0], 478, 2), np.nan, dtype=np.float64)
    for index, frame in enumerate(frames):
        faces = tracker.detect(frame)
        if faces:
            result[index] = faces[0].landmarks[:, :2]
    return result


def _region_scores(
    output: torch.Tensor, target: torch.Tensor, weight: torch.Tensor
) -> dict[str, np.ndarray]:
    weight = weight.expand(output.shape[0], -1, -1, -1)
    return {
        "psnr": psnr(output, target, weight=weight).numpy(),
        "ssim": ssim(output, target, weight=weight).numpy(),
    }


def _clip_loudness(mel: np.ndarray, frames: int) -> np.ndarray:
    energy = mel_energy(mel)
    per_frame = np.full(frames, np.nan)
    for t in range(frames):
        span = energy[4 * t : 4 * t + 4]
        if span.size:
            per_frame[t] = span.mean()
    return per_frame


@dataclass
class _ClipInputs:
    """What the first pass reads of a clip: enough to fit the baselines."""

    clip: ClipEntry
    track: dict[str, np.ndarray]
    valid: np.ndarray
    tracked: np.ndarray  # (T, K) tracked dynamics in the model's basis
    loudness: np.ndarray
    envelope: np.ndarray


def _source(clip: ClipEntry) -> str:
    return str(clip.meta.get("source", "video"))


def _read_inputs(model: AvatarModel, data: Path, clip: ClipEntry) -> _ClipInputs:
    track = read_track(clip_dir(data, clip.id) / TRACK_NAME)
    loudness = _clip_loudness(track["mel"], clip.frames)
    # The tracked dynamics in the model's own basis (a dataset prepared apart from the
    # model's training data may have a basis of its own).
    tracked = model.motion.basis.encode(
        track["lower_face"], identity=model.generator.identities[clip.subject]
    )
    return _ClipInputs(
        clip=clip,
        track=track,
        valid=track["valid"].astype(bool),
        tracked=np.asarray(tracked, np.float32),
        loudness=loudness,
        envelope=speech_envelope(loudness, floor=DEFAULT_GATE.silent_level),
    )


def fit_baselines(inputs: list[_ClipInputs]) -> tuple[LoudnessMouth, np.ndarray]:
    """The loudness mouth and the mean dynamics, fitted to the tracked dynamics of
    ``inputs`` (least squares, lag searched over +-MAX_LAG_FRAMES)."""
    mouth = fit_loudness_mouth(
        [i.envelope for i in inputs],
        [i.tracked for i in inputs],
        [i.valid for i in inputs],
        lags=range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1),
    )
    mean = np.concatenate([i.tracked[i.valid] for i in inputs]).mean(axis=0)
    return mouth, np.asarray(mean, np.float32)


def measure_clip(
    model: AvatarModel,
    data: Path,
    tracker: FaceTracker,
    inputs: _ClipInputs,
    dynamics: dict[str, np.ndarray],
    *,
    crop_size: int,
    hop_s: float,
    window_s: float,
    fps: float,
) -> tuple[ClipMeasure, np.ndarray, np.ndarray]:
    """Render every variant of ``dynamics`` (name -> (T, K)) and the tracked dynamics,
    track them and the real frames; also returns the real and the model's 256-px frames.
    ``model_no_gate`` frames equal to ``model``'s are reused, not rendered again."""
    clip, track, valid = inputs.clip, inputs.track, inputs.valid
    motion = model.motion
    lips = LipGeometry(
        motion.basis,
        motion.identities,
        pixels_per_unit(motion.template, read_header(data).crop.face_fraction, METRIC_PX),
    )
    config = model.generator.config
    crops = read_crop_video(clip_dir(data, clip.id) / CROPS_NAME)
    if crops.shape[1] != METRIC_PX:
        crops = np.stack([cv2.resize(f, (METRIC_PX, METRIC_PX)) for f in crops])
    reference = crops[int(np.flatnonzero(valid)[0])]
    # Lip sync is rendered onto this still frame (the leading silence: mouth at rest), as
    # the presenter renders onto its avatar's frames: the real mouth cannot leak into it.
    still = np.broadcast_to(reference, crops.shape)
    error = lips.displacement_px(torch.from_numpy(dynamics["model"][valid] - inputs.tracked[valid]))
    lip_error = torch.linalg.vector_norm(error, dim=-1).mean(dim=-1).numpy()
    rendered: dict[str, np.ndarray] = {}
    model_frames = np.zeros(0)
    for name, values in dynamics.items():
        if name == "model_no_gate":
            differs = np.flatnonzero(np.abs(values - dynamics["model"]).max(axis=1) > 1e-6)
            landmarks = rendered["model"].copy()
            if differs.size:
                frames, _, _ = render_clip(
                    model, clip.subject, still[differs], values[differs], reference
                )
                landmarks[differs] = track_crops(tracker, frames)
            rendered[name] = landmarks
            continue
        frames, _, _ = render_clip(model, clip.subject, still, values, reference)
        rendered[name] = track_crops(tracker, frames)
        if name == "model":
            model_frames = frames
    rebuilt, small_out, small_target = render_clip(
        model, clip.subject, crops, inputs.tracked, reference
    )
    support_small = lower_face_region(config, config.image_size, margin=config.blend_margin)
    support_full = lower_face_region(config, METRIC_PX, margin=config.blend_margin)
    reconstruction = {
        f"{k}_small": v for k, v in _region_scores(small_out, small_target, support_small).items()
    }
    reconstruction.update(
        {
            f"{k}_256": v
            for k, v in _region_scores(
                _to_tensor(rebuilt, METRIC_PX), _to_tensor(crops, METRIC_PX), support_full
            ).items()
        }
    )
    rig = track.get("ground_truth_landmarks2d")
    phones = clip.meta.get("phones", [])
    start, _ = speech_span(phones)
    end = last_phone_end_s(phones)
    loud = np.flatnonzero(mel_energy(track["mel"]) > DEFAULT_GATE.silent_level)
    sound_end = float(loud[-1] * hop_s + window_s / 2.0) if loud.size else end
    measure = ClipMeasure(
        clip_id=clip.id,
        source=_source(clip),
        frames=clip.frames,
        real_landmarks=track_crops(tracker, crops),
        rig_landmarks=None if rig is None else rig[:, :, :2] * (METRIC_PX / crop_size),
        rendered=rendered,
        loudness=inputs.loudness,
        speech=speech_frames(phones, clip.frames, fps),
        phones=[tuple(phone) for phone in phones],
        speech_start_s=start,
        speech_end_s=end,
        sound_end_s=sound_end,
        lip_error_px=lip_error,
        reconstruction=reconstruction,
    )
    return measure, crops, model_frames


def model_summary(measures: list[ClipMeasure], fps: float) -> dict[str, Any]:
    """The model's headline figures on ``measures`` (the keys of the earlier reports)."""
    row = variant_row(measures, "model", fps)
    recon = {
        key: float(np.mean(np.concatenate([m.reconstruction[key] for m in measures])))
        for key in measures[0].reconstruction
    }
    closing = dict(row["closing_ms"])
    closing["from_sound_end"] = row["closing_ms_from_sound_end"]
    real = variant_row(measures, REAL, fps)
    if "closing_ms" in real:
        closing["real_video_median"] = real["closing_ms"]["median"]
    summary: dict[str, Any] = {
        "clips": len(measures),
        "frames": int(sum(m.frames for m in measures)),
        "rendered_frames_with_face": row["frames_with_face"],
        "lip_error_px": round(float(np.concatenate([m.lip_error_px for m in measures]).mean()), 3),
        "lmd_px": row["lmd_px"],
        "mouth_opening_correlation": row["mouth_opening_correlation"],
        "mouth_opening_correlation_speech": row["mouth_opening_correlation_speech"],
        "mouth_opening_correlation_per_clip_mean": row["mouth_opening_correlation_per_clip_mean"],
        "av_offset_frames": row["av_offset_frames"],
        "av_offset_ms": row["av_offset_ms"],
        "closing_ms": closing,
        "psnr_db": round(recon["psnr_small"], 2),
        "ssim": round(recon["ssim_small"], 4),
        "psnr_db_256": round(recon["psnr_256"], 2),
        "ssim_256": round(recon["ssim_256"], 4),
    }
    if "lmd_vs_rig_px" in row:
        summary["vs_rig_ground_truth"] = {
            "lmd_px": row["lmd_vs_rig_px"],
            "tracker_floor_lmd_px": real.get("lmd_px"),
        }
    return summary


def select_clips(
    data: Path, voice: str | None, sources: tuple[str, ...], max_clips: int | None = None
) -> list[ClipEntry]:
    """Held-out clips of ``sources`` (``voice``: of that voice only), in dataset order;
    ``max_clips``: the first N of each source."""
    heldout = [c for c in read_header(data).clips_in("heldout") if _source(c) in sources]
    if voice not in (None, "all"):
        heldout = [c for c in heldout if f":{voice}:" in f"{c.meta.get('voice', '')}:"]
    if not heldout:
        raise EngineError(
            f"{data} has no held-out clips"
            + (f" of voice {voice!r}" if voice not in (None, "all") else "")
        )
    if max_clips is not None:
        counts: dict[str, int] = {}
        kept = []
        for clip in heldout:
            counts[_source(clip)] = counts.get(_source(clip), 0) + 1
            if counts[_source(clip)] <= max_clips:
                kept.append(clip)
        heldout = kept
    return heldout


def measure(
    model_name: str,
    data: Path,
    *,
    voice: str | None,
    sources: tuple[str, ...],
    out: Path,
    max_clips: int | None = None,
) -> dict[str, Any]:
    began = time.perf_counter()
    model = load_avatar_model(model_name)
    clips = select_clips(data, voice, sources, max_clips)
    predictions = predict_split(model.motion, data, "heldout")
    raw = predict_split(model.motion, data, "heldout", gate=None)
    header = read_header(data)
    fps = float(header.fps)
    if header.crop.size != METRIC_PX:
        log.info("crops are %d px; measures are scaled to %d px", header.crop.size, METRIC_PX)
    inputs = [_read_inputs(model, data, clip) for clip in clips]
    by_source: dict[str, list[_ClipInputs]] = {}
    for item in inputs:
        by_source.setdefault(_source(item.clip), []).append(item)
    baselines = {source: fit_baselines(items) for source, items in by_source.items()}
    measures: list[ClipMeasure] = []
    strip: Path | None = None
    visemes = VisemeStrips(fps)
    with FaceTracker(video=False, max_faces=1) as tracker:
        for number, item in enumerate(inputs, 1):
            mouth, mean = baselines[_source(item.clip)]
            dynamics = {
                "model": predictions[item.clip.id],
                "model_no_gate": raw[item.clip.id],
                "loudness": mouth.predict(item.envelope),
                "mean": np.repeat(mean[None], item.clip.frames, axis=0),
            }
            result, real, rendered = measure_clip(
                model, data, tracker, item, dynamics,
                crop_size=header.crop.size, hop_s=header.mel.hop_ms / 1000.0,
                window_s=header.mel.window_ms / 1000.0, fps=fps,
            )  # fmt: skip
            measures.append(result)
            visemes.add(result.phones, real, rendered)
            if strip is None:
                strip = write_strip(real, rendered, result.phones, out / "quality_strip.png")
            log.info("%d/%d %s: %d frames", number, len(inputs), item.clip.id, item.clip.frames)
    assert strip is not None
    viseme_strip = visemes.write(out / "quality_visemes.png")
    grouped: dict[str, list[ClipMeasure]] = {}
    for result in measures:
        grouped.setdefault(result.source, []).append(result)
    sources_report = {source: source_rows(items, fps) for source, items in grouped.items()}
    for source, (mouth, _) in baselines.items():
        sources_report[source]["loudness_mouth"] = {
            "fitted_on": "the tracked dynamics of these clips (least squares, in-sample)",
            "lag_frames": mouth.lag,
            "lag_ms": round(mouth.lag * 1000.0 / fps, 1),
            "residual": round(mouth.residual, 6),
        }
        sources_report[source]["self_reconstruction"] = {
            k: v
            for k, v in model_summary(grouped[source], fps).items()
            if k.startswith(("psnr", "ssim"))
        }
    headline = grouped.get("espeak", measures)
    return {
        "what": "lip-sync and face-region quality of the model's rendering of held-out clips "
        "(predicted dynamics from the clip's audio) next to baselines rendered and measured "
        "the same way (the model without its silence gate, a loudness-driven mouth, the mean "
        "mouth, the real video against the rig's ground truth), MediaPipe on 256-px crops, "
        "per held-out source",
        "model": model_name,
        "model_folder": str(model.folder),
        "model_training": {
            "motion_dataset": model.motion.header.get("training", {}).get("dataset"),
            "generator": model.generator.header.get("training", {}).get("description"),
        },
        "data": str(data),
        "clips_selected": f"held-out split, sources {','.join(sources)}"
        + (f", voice {voice}" if voice not in (None, "all") else ""),
        "clip_ids": [m.clip_id for m in measures],
        "generator_size_px": model.generator.config.image_size,
        "metric_px": METRIC_PX,
        "goals": GOALS,
        "results_cover": "the model on "
        + ("the espeak held-out voice's clips" if "espeak" in grouped else "every clip"),
        "results": model_summary(headline, fps),
        "by_source": sources_report,
        "strip": str(strip),
        "viseme_strip": None if viseme_strip is None else str(viseme_strip),
        "seconds": round(time.perf_counter() - began, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch_threads": torch.get_num_threads(),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.quality", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    parser.add_argument(
        "--voice", default=None, help="only the held-out clips of this voice (default: all)"
    )
    parser.add_argument(
        "--sources",
        default="espeak,piper,human,flite,human2",
        help="held-out sources to measure, each in rows of its own (default: every one the "
        "data holds: the training sources' held-out clips and the evaluation-only flite and "
        "human2)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--max-clips", type=int, default=None, help="evaluate only the first N clips of each source"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = measure(
            args.model,
            args.data,
            voice=args.voice,
            sources=tuple(s.strip() for s in args.sources.split(",") if s.strip()),
            out=args.out,
            max_clips=args.max_clips,
        )
    except EngineError as exc:
        print(f"error: {exc}")  # noqa: T201
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "quality.json", report, "benchmarks.quality", argv)
    gates = {source: rows["goals"] for source, rows in report["by_source"].items()}
    shown = {"results": report["results"], "goals": gates}
    print(json.dumps(shown, indent=1))  # noqa: T201
    for source, rows in report["by_source"].items():
        print(f"\n{source}: {rows['clips']} clips, {rows['frames']} frames")  # noqa: T201
        print(markdown_table(rows))  # noqa: T201
        print(articulation_markdown(rows))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
