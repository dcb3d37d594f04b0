"""Silence in, mouth closed out: how soon after speech ends the predicted mouth closes.

``python -m benchmarks.motion_silence [--model default]`` speaks held-out-voice sentences
with espeak-ng (en-us+f3), feeds 0.5 s of silence, the speech and 1 s of silence through the
model's motion network (its raw prediction: no silence gate), and reports for each sentence
the time from the end of the last phone to the first frame whose predicted inner-lip gap
stays within 1 px (at a 256-px crop) of the gap during the leading silence for three frames.
Writes ``motion_silence.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from benchmarks.provenance import write_result
from engine.audio import MelConfig, log_mel, resample
from engine.avatar_model import load_avatar_model
from engine.frames import ENGINE_RATE, FPS
from engine.motion import slice_mel
from engine.speech.espeak import EspeakVoice
from engine.speech.phonemes import SILENCE
from engine.train.motion import LipGeometry, pixels_per_unit

SENTENCES = (
    "Please read the quiet notes aloud.",
    "What a lovely morning for a walk.",
    "She sells sea shells by the shore.",
    "Move the big brown box over there.",
)
RATE = ENGINE_RATE
LEAD_S, TAIL_S = 0.5, 1.0
CLOSED_MARGIN_PX = 1.0
CLOSED_FOR_FRAMES = 3


def measure(model_name: str, *, voice_name: str = "en-us+f3") -> dict[str, object]:
    model = load_avatar_model(model_name)
    checkpoint = model.motion
    lips = LipGeometry(
        checkpoint.basis,
        checkpoint.identities,
        pixels_per_unit(checkpoint.template, model.crop.face_fraction, 256),
    )
    subject = next(iter(checkpoint.styles))
    style = torch.from_numpy(checkpoint.styles[subject])[None]
    voice = EspeakVoice(voice=voice_name, rate_wpm=170)
    silence = float(np.log(MelConfig().log_floor))
    rows = []
    for text in SENTENCES:
        utterance = voice.synthesize(text)
        speech_end = max(p.end for p in utterance.phones if p.label != SILENCE)
        speech = resample(utterance.audio, utterance.sample_rate, RATE)[: int(speech_end * RATE)]
        lead, tail = np.zeros(int(LEAD_S * RATE), np.float32), np.zeros(int(TAIL_S * RATE))
        audio = np.concatenate([lead, speech, tail.astype(np.float32)])
        frames = int(len(audio) / RATE * FPS)
        start, stop = checkpoint.config.mel_range(0, frames)
        window = slice_mel(log_mel(audio), start, stop, silence=silence)
        with torch.no_grad():
            coefficients = checkpoint.model.transformer.forward_sequence(
                torch.from_numpy(window)[None], style
            )[0]
        gap = lips.opening_px(coefficients, subject).numpy()
        rest = float(np.median(gap[: int(LEAD_S * FPS) - 4]))
        end_s = LEAD_S + speech_end
        centres = (np.arange(frames) + 0.5) / FPS
        closed = next(
            (
                int(k)
                for k in np.flatnonzero(centres > end_s)
                if np.all(gap[k : k + CLOSED_FOR_FRAMES] <= rest + CLOSED_MARGIN_PX)
            ),
            None,
        )
        rows.append(
            {
                "text": text,
                "rest_gap_px": round(rest, 2),
                "max_gap_px": round(float(gap.max()), 2),
                "closed_after_ms": None
                if closed is None
                else round((centres[closed] - end_s) * 1e3),
            }
        )
    delays = [r["closed_after_ms"] for r in rows]
    return {
        "what": "time from the end of speech to a closed predicted mouth (gap within 1 px of "
        "the leading-silence gap for 3 frames), px at a 256-px crop",
        "model": model_name,
        "voice": voice_name,
        "goal_ms": 80,
        "sentences": rows,
        "worst_ms": None if None in delays else max(delays),  # type: ignore[type-var]
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.motion_silence", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--model",
        default="default",
        help="an avatar model: a name or a folder (default: the shipped one)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_num_threads(1)
    result = measure(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    write_result(args.out / "motion_silence.json", result, "benchmarks.motion_silence", argv)
    print(json.dumps(result, indent=1))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
