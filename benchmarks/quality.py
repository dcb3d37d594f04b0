"""Lip-sync and image quality of an avatar model on the held-out clips of a dataset.

``python -m benchmarks.quality --model default --data DATASET [--voice en-us+f3] [--out DIR]``

For every held-out clip of the held-out voice (``--voice all``: every held-out clip):

1. the motion model predicts the clip's dynamics from its audio (log-mel of the clip's
   16 kHz track, the subject's default style); *lip error*: mean 3D lip-point distance of
   the prediction to the tracked dynamics, px at a 256-px crop;
2. the generator renders every frame from the predicted dynamics (target: the real frame
   with its lower face masked; reference: the clip's first frame, mouth closed), the crop
   is blended into the 256-px face crop (upscaled from the generator's size) as the
   frame compositor does;
3. MediaPipe's Face Landmarker tracks the rendered and the real crops the same way;
   *LMD*: mean distance of the 40 lip landmarks, px at 256; *mouth-opening correlation*:
   Pearson correlation of the inner-lip gaps, pooled over all frames; *A/V offset*: the lag
   of the rendered mouth motion against the real one (which is in sync with the speech, see
   the tracker test of the dataset) that maximises their correlation, ±5 frames, and the
   lag of each against the speech loudness for reference;
4. *closing*: time from the end of speech (the clip's phone timings; and from the end of
   sound, where the audio falls below the silence gate's level for good) to a rendered
   mouth that stays within 1 px of its leading-silence gap for 3 frames; the same
   measure on the real video for comparison;
5. *self-reconstruction*: the generator on the tracked dynamics, PSNR and SSIM of the
   composited face region (the blend support), at the generator's resolution and at
   256 px.

Writes ``quality.json`` and ``quality_strip.png`` (ground truth above, output below) to
``--out`` (default ``benchmarks/results``).
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
from engine.lipsync_metrics import (
    best_lag,
    closing_delay_ms,
    lip_distance_px,
    mouth_gap_px,
    pearson,
)
from engine.silence_gate import mel_energy
from engine.speech.phonemes import SILENCE
from engine.tracking import FaceTracker
from engine.train.joint import DEFAULT_GATE, predict_split
from engine.train.losses import psnr, ssim
from engine.train.motion import LipGeometry, pixels_per_unit

log = logging.getLogger(__name__)

METRIC_PX = 256
MAX_LAG_FRAMES = 5
BATCH = 16
GOALS = {
    "mouth_opening_correlation": ">= 0.8",
    "lmd_px": "<= 2.5",
    "av_offset_frames": "within +-1",
    "psnr_db": ">= 30",
    "ssim": ">= 0.9",
    "closing_ms": "<= 80",
}


@dataclass
class ClipResult:
    clip: ClipEntry
    real: np.ndarray  # (T, 256, 256, 3) uint8
    rendered: np.ndarray  # (T, 256, 256, 3) uint8
    real_landmarks: np.ndarray  # (T, 478, 2), NaN where no face
    rendered_landmarks: np.ndarray
    rig_landmarks: np.ndarray | None  # (T, 478, 2) at 256 px
    loudness: np.ndarray  # (T,) mean log-mel energy per video frame
    lip_error_px: np.ndarray  # (valid frames,) predicted vs tracked dynamics
    reconstruction: dict[str, np.ndarray]  # psnr/ssim per frame at both sizes
    speech_start_s: float
    speech_end_s: float
    sound_end_s: float  # where the audio falls silent for good (the silence gate's level)


def _speech_span(clip: ClipEntry) -> tuple[float, float]:
    spoken = [phone for phone in clip.meta.get("phones", []) if phone[0] != SILENCE]
    if not spoken:
        return float("nan"), float("nan")
    return float(spoken[0][1]), float(spoken[-1][2])


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
    reference_frame: int,
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Render every frame of a clip from ``coefficients`` (T, K): the 256-px composites
    (T, S, S, 3) uint8 and the composites at the generator's size with their targets
    (float, for PSNR/SSIM)."""
    generator = model.generator.generator
    config = generator.config
    size = config.image_size
    full = crops.shape[1]
    mapper = model.generator.mapper(subject)
    reference = _to_tensor(crops[reference_frame : reference_frame + 1], size)
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


def evaluate_clips(
    model: AvatarModel,
    data: Path,
    clips: list[ClipEntry],
    *,
    predictions: dict[str, np.ndarray],
) -> list[ClipResult]:
    header = read_header(data)
    if header.crop.size != METRIC_PX:
        log.info("crops are %d px; measures are scaled to %d px", header.crop.size, METRIC_PX)
    motion = model.motion
    lips = LipGeometry(
        motion.basis,
        motion.identities,
        pixels_per_unit(motion.template, header.crop.face_fraction, METRIC_PX),
    )
    config = model.generator.config
    support_small = lower_face_region(config, config.image_size, margin=config.blend_margin)
    support_full = lower_face_region(config, METRIC_PX, margin=config.blend_margin)
    results = []
    with FaceTracker(video=False, max_faces=1) as tracker:
        for number, clip in enumerate(clips, 1):
            folder = clip_dir(data, clip.id)
            crops = read_crop_video(folder / CROPS_NAME)
            if crops.shape[1] != METRIC_PX:
                crops = np.stack([cv2.resize(f, (METRIC_PX, METRIC_PX)) for f in crops])
            track = read_track(folder / TRACK_NAME)
            valid = track["valid"].astype(bool)
            predicted = predictions[clip.id]
            # The tracked dynamics in the model's own basis (a dataset prepared apart from
            # the model's training data has a basis of its own).
            tracked = motion.basis.encode(
                track["lower_face"], identity=model.generator.identities[clip.subject]
            )
            error = lips.displacement_px(torch.from_numpy(predicted[valid] - tracked[valid]))
            lip_error = torch.linalg.vector_norm(error, dim=-1).mean(dim=-1).numpy()
            reference_frame = int(np.flatnonzero(valid)[0])
            rendered, _, _ = render_clip(model, clip.subject, crops, predicted, reference_frame)
            rebuilt, small_out, small_target = render_clip(
                model, clip.subject, crops, tracked, reference_frame
            )
            reconstruction = {
                f"{k}_small": v
                for k, v in _region_scores(small_out, small_target, support_small).items()
            }
            reconstruction.update(
                {
                    f"{k}_256": v
                    for k, v in _region_scores(
                        _to_tensor(rebuilt, METRIC_PX), _to_tensor(crops, METRIC_PX), support_full
                    ).items()
                }
            )
            scale = METRIC_PX / header.crop.size
            rig = track.get("ground_truth_landmarks2d")
            start, end = _speech_span(clip)
            loud = np.flatnonzero(mel_energy(track["mel"]) > DEFAULT_GATE.silent_level)
            hop_s = header.mel.hop_ms / 1000.0
            sound_end = (
                float(loud[-1] * hop_s + header.mel.window_ms / 2000.0) if loud.size else end
            )
            results.append(
                ClipResult(
                    clip=clip,
                    real=crops,
                    rendered=rendered,
                    real_landmarks=track_crops(tracker, crops),
                    rendered_landmarks=track_crops(tracker, rendered),
                    rig_landmarks=None if rig is None else rig[:, :, :2] * scale,
                    loudness=_clip_loudness(track["mel"], clip.frames),
                    lip_error_px=lip_error,
                    reconstruction=reconstruction,
                    speech_start_s=start,
                    speech_end_s=end,
                    sound_end_s=sound_end,
                )
            )
            log.info("%d/%d %s: %d frames", number, len(clips), clip.id, clip.frames)
    return results


def summarise(results: list[ClipResult], fps: float) -> dict[str, Any]:
    real_gaps = [mouth_gap_px(r.real_landmarks) for r in results]
    rendered_gaps = [mouth_gap_px(r.rendered_landmarks) for r in results]
    lmd = np.concatenate([lip_distance_px(r.rendered_landmarks, r.real_landmarks) for r in results])
    found = np.concatenate([np.isfinite(g) for g in rendered_gaps])
    av = best_lag(real_gaps, rendered_gaps, max_lag=MAX_LAG_FRAMES, fps=fps)
    real_vs_audio = best_lag(
        [r.loudness for r in results], real_gaps, max_lag=MAX_LAG_FRAMES, fps=fps
    )
    rendered_vs_audio = best_lag(
        [r.loudness for r in results], rendered_gaps, max_lag=MAX_LAG_FRAMES, fps=fps
    )
    closing: list[float | None] = []
    closing_real: list[float | None] = []
    closing_sound: list[float | None] = []
    for result, real_gap, rendered_gap in zip(results, real_gaps, rendered_gaps, strict=True):
        lead = int(result.speech_start_s * fps) - 2
        if lead < 3 or not np.isfinite(result.speech_end_s):
            continue
        for gaps, end, into in (
            (rendered_gap, result.speech_end_s, closing),
            (real_gap, result.speech_end_s, closing_real),
            (rendered_gap, result.sound_end_s, closing_sound),
        ):
            rest = float(np.nanmedian(gaps[:lead]))
            into.append(closing_delay_ms(gaps, end, fps=fps, rest_gap=rest))
    rig = [r for r in results if r.rig_landmarks is not None]
    recon = {
        key: float(np.mean(np.concatenate([r.reconstruction[key] for r in results])))
        for key in results[0].reconstruction
    }
    closed = [c for c in closing if c is not None]
    closed_sound = [c for c in closing_sound if c is not None]
    per_clip = [pearson(a, b) for a, b in zip(rendered_gaps, real_gaps, strict=True)]
    summary: dict[str, Any] = {
        "clips": len(results),
        "frames": int(sum(r.clip.frames for r in results)),
        "rendered_frames_with_face": round(float(found.mean()), 4),
        "lip_error_px": round(float(np.concatenate([r.lip_error_px for r in results]).mean()), 3),
        "lmd_px": round(float(np.nanmean(lmd)), 3),
        "mouth_opening_correlation": round(
            pearson(np.concatenate(rendered_gaps), np.concatenate(real_gaps)), 4
        ),
        "mouth_opening_correlation_per_clip_mean": round(float(np.nanmean(per_clip)), 4),
        "av_offset_frames": av.frames,
        "av_offset_ms": round(av.ms, 1),
        "av_offset_correlation": round(av.correlation, 4),
        "mouth_vs_speech_lag_ms": {
            "real": round(real_vs_audio.ms, 1),
            "rendered": round(rendered_vs_audio.ms, 1),
        },
        "closing_ms": {
            "clips": len(closing),
            "never_closed": len(closing) - len(closed),
            "median": round(float(np.median(closed)), 1) if closed else None,
            "max": round(float(np.max(closed)), 1) if closed else None,
            "within_80ms": round(float(np.mean([c <= 80 for c in closed])), 4) if closed else None,
            "p90": round(float(np.percentile(closed, 90)), 1) if closed else None,
            "from_sound_end": {
                "median": round(float(np.median(closed_sound)), 1) if closed_sound else None,
                "max": round(float(np.max(closed_sound)), 1) if closed_sound else None,
                "never_closed": len(closing_sound) - len(closed_sound),
                "within_80ms": round(float(np.mean([c <= 80 for c in closed_sound])), 4)
                if closed_sound
                else None,
            },
            "real_video_median": round(
                float(np.median([c for c in closing_real if c is not None])), 1
            )
            if any(c is not None for c in closing_real)
            else None,
        },
        "psnr_db": round(recon["psnr_small"], 2),
        "ssim": round(recon["ssim_small"], 4),
        "psnr_db_256": round(recon["psnr_256"], 2),
        "ssim_256": round(recon["ssim_256"], 4),
    }
    if rig:
        assert all(r.rig_landmarks is not None for r in rig)
        summary["vs_rig_ground_truth"] = {
            "mouth_opening_correlation": round(
                pearson(
                    np.concatenate([mouth_gap_px(r.rendered_landmarks) for r in rig]),
                    np.concatenate([mouth_gap_px(r.rig_landmarks) for r in rig]),  # type: ignore[arg-type]
                ),
                4,
            ),
            "lmd_px": round(
                float(
                    np.nanmean(
                        np.concatenate(
                            [
                                lip_distance_px(r.rendered_landmarks, r.rig_landmarks)  # type: ignore[arg-type]
                                for r in rig
                            ]
                        )
                    )
                ),
                3,
            ),
        }
    return summary


def write_strip(result: ClipResult, path: Path, *, frames: int = 8) -> Path:
    """Ground truth above, output below, ``frames`` frames spread over the speech."""
    fps = 25.0
    start = int(result.speech_start_s * fps) if np.isfinite(result.speech_start_s) else 0
    end = int(result.speech_end_s * fps) if np.isfinite(result.speech_end_s) else len(result.real)
    picks = np.linspace(start, max(start, min(end, len(result.real) - 1)), frames).astype(int)
    top = np.concatenate([result.real[i] for i in picks], axis=1)
    bottom = np.concatenate([result.rendered[i] for i in picks], axis=1)
    strip = np.concatenate([top, bottom], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(strip, cv2.COLOR_RGB2BGR))
    return path


def select_clips(data: Path, voice: str) -> list[ClipEntry]:
    header = read_header(data)
    heldout = header.clips_in("heldout")
    if voice != "all":
        heldout = [c for c in heldout if f":{voice}:" in f"{c.meta.get('voice', '')}:"]
    if not heldout:
        raise EngineError(
            f"{data} has no held-out clips{'' if voice == 'all' else f' of voice {voice!r}'}"
        )
    return heldout


def measure(
    model_name: str, data: Path, *, voice: str, out: Path, max_clips: int | None = None
) -> dict[str, Any]:
    began = time.perf_counter()
    model = load_avatar_model(model_name)
    clips = select_clips(data, voice)[:max_clips]
    predictions = predict_split(model.motion, data, "heldout")
    header = read_header(data)
    results = evaluate_clips(model, data, clips, predictions=predictions)
    summary = summarise(results, float(header.fps))
    strip = write_strip(results[0], out / "quality_strip.png")
    return {
        "what": "lip-sync and face-region quality of the model's rendering of held-out clips "
        "(predicted dynamics from the clip's audio), measured with MediaPipe on 256-px crops",
        "model": model_name,
        "model_folder": str(model.folder),
        "model_training": {
            "motion_dataset": model.motion.header.get("training", {}).get("dataset"),
            "generator": model.generator.header.get("training", {}).get("description"),
        },
        "data": str(data),
        "clips_selected": f"held-out split, voice {voice}",
        "clip_ids": [r.clip.id for r in results],
        "generator_size_px": model.generator.config.image_size,
        "metric_px": METRIC_PX,
        "goals": GOALS,
        "results": summary,
        "strip": str(strip),
        "seconds": round(time.perf_counter() - began, 1),
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "torch_threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset")
    parser.add_argument(
        "--voice", default="en-us+f3", help="held-out voice to evaluate ('all': every clip)"
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument(
        "--max-clips", type=int, default=None, help="evaluate only the first N clips"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        report = measure(
            args.model, args.data, voice=args.voice, out=args.out, max_clips=args.max_clips
        )
    except EngineError as exc:
        print(f"error: {exc}")  # noqa: T201
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "quality.json", report, "benchmarks.quality", argv)
    print(json.dumps(report["results"], indent=1))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
