"""Voices and microphones the motion model never heard: its predicted mouth on held-out clips.

``python -m benchmarks.motion_transfer --model RUN_OR_CHECKPOINT [--model ...] --data DATASET
[--snr 20] [--kbps 16] [--out DIR]``

For every held-out clip of ``DATASET`` (a dataset prepared in the models' dynamics basis,
e.g. ``data prep ... --basis engine/assets/models/default``) and every model, per speech
source (the clip's sidecar ``source``), in two conditions:

- ``clean``: the clip's own log-mel;
- ``live``: the clip's 16 kHz audio with pink room noise at ``--snr`` dB below the
  speech's active power, then an Opus round trip at ``--kbps`` (what a browser microphone
  sends; :mod:`engine.train.audio_augment`), seeded per clip, then log-mel as the front end
  computes it.

The model predicts every frame with the subject's default style (its raw output, and through
the silence gate as at inference). Figures on the valid frames: *lip error*, the mean 3D
lip-point distance to the tracked dynamics in px at a 256-px crop; *opening correlation*,
the Pearson correlation of the predicted and the tracked inner-lip gap pooled over the
source's clips (all valid frames, and speech frames only). The reference: a mouth driven by
loudness alone (:mod:`engine.lipsync_baselines`, fitted to these very clips per condition,
which flatters it). The audio comes from the track (datasets that keep it) or from the
clip's source video, checked to give the track's log-mel. Writes ``motion_transfer.json``.
"""

from __future__ import annotations

import argparse
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.provenance import RESULTS, write_result
from engine.audio import log_mel, pcm_to_float
from engine.data.prep.dataset import (
    TRACK_NAME,
    ClipEntry,
    clip_dir,
    read_basis,
    read_header,
    read_track,
    track_array_names,
)
from engine.data.prep.video import decode_audio
from engine.errors import EngineError
from engine.lipsync_baselines import fit_loudness_mouth, speech_envelope
from engine.lipsync_metrics import pooled_correlation, speech_frames
from engine.motion import MotionCheckpoint, load_motion_checkpoint, slice_mel
from engine.silence_gate import mel_energy, rest_coefficients
from engine.train.audio_augment import add_noise, clip_seed, opus_round_trip
from engine.train.joint import DEFAULT_GATE
from engine.train.motion import LipGeometry, pixels_per_unit

log = logging.getLogger(__name__)

METRIC_PX = 256
CHUNK_FRAMES = 250
MAX_LAG_FRAMES = 5
CONDITIONS = ("clean", "live")


def clip_audio(root: Path, clip: ClipEntry, clean_mel: np.ndarray) -> np.ndarray:
    """The clip's float32 16 kHz audio: the track's, or its source video's (whose log-mel
    must be the track's)."""
    path = clip_dir(root, clip.id) / TRACK_NAME
    if "audio" in track_array_names(path):
        return pcm_to_float(read_track(path, ["audio"])["audio"])
    audio = decode_audio(Path(clip.source))
    mel = log_mel(audio)
    if mel.shape != clean_mel.shape or float(np.abs(mel - clean_mel).max()) > 1e-3:
        raise EngineError(f"{clip.source} does not give the log-mel of clip {clip.id}")
    return audio


def live_mic(audio: np.ndarray, clip_id: str, *, snr_db: float, kbps: float) -> np.ndarray:
    """Pink room noise at ``snr_db``, then Opus at ``kbps`` (seeded by the clip id)."""
    rng = np.random.default_rng(clip_seed(7, clip_id, 0))
    noisy = add_noise(audio, snr_db, "pink", rng)
    return opus_round_trip(np.clip(noisy, -1.0, 1.0), round(kbps * 1000))


@torch.no_grad()
def predict(checkpoint: MotionCheckpoint, mel: np.ndarray, frames: int, subject: str) -> Any:
    """(raw, gated) (T, K) predictions for a clip's (M, num_mels) log-mel."""
    config = checkpoint.config
    model = checkpoint.model.eval()
    silence = float(np.float32(np.log(1e-5)))
    style = torch.from_numpy(checkpoint.styles[subject])[None]
    chunks = []
    for first in range(0, frames, CHUNK_FRAMES):
        count = min(CHUNK_FRAMES, frames - first)
        start, stop = config.mel_range(first, count)
        window = slice_mel(mel, start, stop, silence=silence)
        chunks.append(model.transformer.forward_sequence(torch.from_numpy(window)[None], style)[0])
    raw = torch.cat(chunks).numpy().astype(np.float32)
    rest = rest_coefficients(model, checkpoint.styles[subject], silence=silence)
    weights = DEFAULT_GATE.clip_weights(mel, frames, config, silence=silence)
    return raw, DEFAULT_GATE.apply(raw, weights, rest)


def _loudness(mel: np.ndarray, frames: int) -> np.ndarray:
    energy = mel_energy(mel)
    return np.array([energy[4 * t : 4 * t + 4].mean() for t in range(frames)])


def measure(models: dict[str, Path], data: Path, *, snr_db: float, kbps: float) -> dict[str, Any]:
    header = read_header(data)
    basis, template, identities = read_basis(data)
    lips = LipGeometry(
        basis, identities, pixels_per_unit(template, header.crop.face_fraction, METRIC_PX)
    )
    checkpoints = {name: load_motion_checkpoint(path) for name, path in models.items()}
    clips = header.clips_in("heldout")
    if not clips:
        raise EngineError(f"{data} has no held-out clips")
    rows: dict[str, Any] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for clip in clips:
        track = read_track(clip_dir(data, clip.id) / TRACK_NAME, ["mel", "coefficients", "valid"])
        valid = track["valid"].astype(bool)
        target = track["coefficients"]
        audio = clip_audio(data, clip, track["mel"])
        mels = {
            "clean": track["mel"],
            "live": log_mel(live_mic(audio, clip.id, snr_db=snr_db, kbps=kbps)),
        }
        source = str(clip.meta.get("source", "video"))
        truth = lips.opening_px(torch.from_numpy(target), clip.subject).numpy()
        speech = speech_frames(clip.meta.get("phones", []), clip.frames, header.fps) & valid
        for condition, mel in mels.items():
            cell = rows["_clips"][condition][source]
            cell.append(
                {
                    "truth": truth,
                    "valid": valid,
                    "speech": speech,
                    "target": target,
                    "subject": clip.subject,
                    "loudness": _loudness(mel, clip.frames),
                }
            )
            for name, checkpoint in checkpoints.items():
                raw, gated = predict(checkpoint, mel, clip.frames, clip.subject)
                rows[name][condition][source].append((raw, gated))
    return _summarise(rows, list(checkpoints), lips)


def _figures(
    predictions: list[np.ndarray], clips: list[dict[str, Any]], lips: LipGeometry
) -> dict[str, float]:
    openings, errors = [], []
    for predicted, clip in zip(predictions, clips, strict=True):
        valid = clip["valid"]
        difference = lips.displacement_px(
            torch.from_numpy(predicted[valid] - clip["target"][valid])
        )
        errors.append(torch.linalg.vector_norm(difference, dim=-1).mean(dim=-1).numpy())
        openings.append(lips.opening_px(torch.from_numpy(predicted), clip["subject"]).numpy())
    truths = [clip["truth"] for clip in clips]
    return {
        "lip_px": round(float(np.concatenate(errors).mean()), 3),
        "opening_r": round(pooled_correlation(openings, truths, [c["valid"] for c in clips]), 3),
        "opening_r_speech": round(
            pooled_correlation(openings, truths, [c["speech"] for c in clips]), 3
        ),
    }


def _summarise(rows: dict[str, Any], names: list[str], lips: LipGeometry) -> dict[str, Any]:
    result: dict[str, Any] = {"models": {}, "loudness_mouth": {}, "clips": {}}
    for condition in CONDITIONS:
        for source, clips in sorted(rows["_clips"][condition].items()):
            result["clips"][source] = len(clips)
            mouth = fit_loudness_mouth(
                [speech_envelope(c["loudness"], floor=DEFAULT_GATE.silent_level) for c in clips],
                [c["target"] for c in clips],
                [c["valid"] for c in clips],
                lags=range(-MAX_LAG_FRAMES, MAX_LAG_FRAMES + 1),
            )
            driven = [
                mouth.predict(speech_envelope(c["loudness"], floor=DEFAULT_GATE.silent_level))
                for c in clips
            ]
            result["loudness_mouth"].setdefault(condition, {})[source] = _figures(
                driven, clips, lips
            )
            for name in names:
                pairs = rows[name][condition][source]
                figures = _figures([raw for raw, _ in pairs], clips, lips)
                gated = _figures([gated for _, gated in pairs], clips, lips)
                figures["gated_lip_px"] = gated["lip_px"]
                figures["gated_opening_r"] = gated["opening_r"]
                model = result["models"].setdefault(name, {})
                model.setdefault(condition, {})[source] = figures
    return result


def markdown(result: dict[str, Any]) -> str:
    """One row per model (and the loudness mouth) and condition; per source lip px and r."""
    sources = sorted(result["clips"])
    head = "| model | condition | " + " | ".join(f"{s}: lip px / r" for s in sources) + " |"
    lines = [head, "|" + "---|" * (2 + len(sources))]
    entries = [*result["models"].items(), ("loudness mouth", result["loudness_mouth"])]
    for name, by_condition in entries:
        for condition in CONDITIONS:
            cells = [
                f"{by_condition[condition][s]['lip_px']:.2f} / "
                f"{by_condition[condition][s]['opening_r']:.3f}"
                for s in sources
            ]
            lines.append(f"| {name} | {condition} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _model_path(value: str) -> Path:
    path = Path(value)
    return path / "motion.safetensors" if path.is_dir() else path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.motion_transfer")
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]PATH",
        help="a motion run folder, model folder or motion.safetensors (repeatable)",
    )
    parser.add_argument("--data", type=Path, required=True, help="a held-out dataset")
    parser.add_argument("--snr", type=float, default=20.0, help="live: room noise SNR in dB")
    parser.add_argument("--kbps", type=float, default=16.0, help="live: Opus bit rate")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the result")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)
    models = {}
    for value in args.model:
        name, _, path = value.rpartition("=")
        models[name or Path(path).name] = _model_path(path)
    result = measure(models, args.data, snr_db=args.snr, kbps=args.kbps)
    result["conditions"] = {
        "clean": "the clip's log-mel",
        "live": f"pink room noise at {args.snr:g} dB SNR, then Opus at {args.kbps:g} kbps",
    }
    result["models_evaluated"] = {name: str(path) for name, path in models.items()}
    write_result(args.out / "motion_transfer.json", result, "benchmarks.motion_transfer", argv)
    print(markdown(result))  # noqa: T201 - the command's output
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
