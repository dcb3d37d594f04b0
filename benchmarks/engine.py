"""Engine throughput: ms per frame for each pipeline stage, per backend and thread count.

``python -m benchmarks.engine [--seconds 20] [--backends NAME,...] [--threads 1,2]
[--out DIR]`` (default backends: the CPU runtimes ``auto`` chooses among, eager first)

Speech from espeak-ng (a fixed text, 48 kHz as a live source would send it) is pushed into
:class:`engine.facade.AvatarEngine` in 20 ms chunks, frames pulled as they become ready, with
yuv420p output (what the video encoder takes); the engine is warmed up as the live server
does at start: the avatar's loop frames encoded (``AvatarEngine.encode_loop``, once per loop
frame, not per frame) and the idle loop rendered at rest once (``AvatarEngine.warm_idle``,
after which an idle frame is a kept one). Stages: features (resampling + log-mel +
windows), motion (Transformer + silence gate), geometry (the geometry map), generator,
compositing (paste-back into the 512x512 frame), colour (RGB -> I420). The whole engine's
time per frame is also given as a ratio to the 40 ms frame period (the real-time factor:
< 1 keeps up with 25 fps; the goal is <= 0.8, i.e. 32 ms, leaving 20 % headroom). Speaking
frames (the generator runs) and idle frames (the mouth at rest: a kept frame of the idle
loop, nearly free) are also reported apart: the mix of the two in the speech sets the
overall figure, the speaking figure is what the real-time budget must hold. Writes
``engine.json`` and ``engine.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.provenance import write_result
from engine.audio import resample
from engine.avatar_model import load_avatar_model
from engine.backend_registry import RUNTIMES
from engine.data.synth.default_avatar import stored_default_avatar
from engine.facade import AvatarEngine, EngineConfig
from engine.frames import FPS, STAGES
from engine.speech.espeak import EspeakVoice

log = logging.getLogger(__name__)

TEXT = (
    "Good morning, and welcome to the show. Today we look at how speech becomes motion, "
    "frame by frame, and how a face follows a voice in real time. "
)
RATE = 48000
CHUNK = RATE // 50
FRAME_MS = 1000.0 / FPS
GOAL_RATIO = 0.8
# the CPU runtimes auto chooses among, eager (the reference) first
CPU_RUNTIMES = tuple(
    entry.name for entry in reversed(RUNTIMES) if "cpu" in entry.devices and "cpu" in entry.auto_on
)


def speech(seconds: float) -> np.ndarray:
    voice = EspeakVoice(voice="en-us", rate_wpm=165)
    pieces: list[np.ndarray] = []
    total = 0.0
    while total < seconds:
        utterance = voice.synthesize(TEXT)
        audio = resample(np.asarray(utterance.audio, np.float32), utterance.sample_rate, RATE)
        pieces.extend([audio, np.zeros(RATE // 2, np.float32)])
        total += len(audio) / RATE + 0.5
    return np.concatenate(pieces)[: int(seconds * RATE)]


def _figures(frames: int, wall_s: float, stages_ms: dict[str, float]) -> dict[str, Any]:
    """ms per frame (wall) and per stage of ``frames`` frames that took ``wall_s``."""
    total = 1000.0 * wall_s / max(frames, 1)
    return {
        "frames": frames,
        "ms_per_frame": round(total, 2),
        "real_time_factor": round(total / FRAME_MS, 3),
        "stages_ms": {stage: round(stages_ms[stage] / max(frames, 1), 2) for stage in STAGES},
    }


def measure(engine: AvatarEngine, audio: np.ndarray) -> dict[str, Any]:
    """The engine's cost per frame over ``audio`` (pushed in 20 ms chunks after one second of
    warm-up): all frames, and apart the speaking frames (the generator runs) and the idle
    ones (the mouth at rest: a kept frame of the idle loop). Each push and pull's wall time
    is shared by the frames it returned; the stage times are each frame's own
    (``RenderedFrame.stages_ms``)."""
    for start in range(0, RATE, CHUNK):  # warm-up (caches, first runs), not counted
        engine.push_audio(audio[start : start + CHUNK], RATE)
        engine.pull()
    engine.times.clear()
    classes = ("all", "speaking", "idle")
    frames = dict.fromkeys(classes, 0)
    wall = dict.fromkeys(classes, 0.0)
    stages = {name: dict.fromkeys(STAGES, 0.0) for name in classes}
    pending = 0.0  # wall time of the calls since the last one that returned frames
    for start in range(RATE, len(audio), CHUNK):
        began = time.perf_counter()
        engine.push_audio(audio[start : start + CHUNK], RATE)
        pulled = engine.pull()
        pending += time.perf_counter() - began
        if not pulled:
            continue
        share, pending = pending / len(pulled), 0.0
        for frame in pulled:
            for name in ("all", "speaking" if frame.speaking > 0.0 else "idle"):
                frames[name] += 1
                wall[name] += share
                for stage in STAGES:
                    stages[name][stage] += frame.stages_ms.get(stage, 0.0)
    overall = _figures(frames["all"], wall["all"], stages["all"])
    return {
        **overall,
        "speaking": _figures(frames["speaking"], wall["speaking"], stages["speaking"]),
        "idle": _figures(frames["idle"], wall["idle"], stages["idle"]),
    }


def plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{r['backend']}\n{r['threads']} thr" for r in rows]
    figure, axis = plt.subplots(figsize=(1.4 * len(rows) + 3, 4.5))
    bottom = np.zeros(len(rows))
    for stage in STAGES:
        values = np.array([r["stages_ms"][stage] for r in rows])
        axis.bar(labels, values, bottom=bottom, label=stage)
        bottom += values
    axis.plot(labels, [r["ms_per_frame"] for r in rows], "kD", label="whole engine (wall)")
    axis.plot(
        labels, [r["speaking"]["ms_per_frame"] for r in rows], "ko", mfc="none",
        label="speaking frames only (wall)",
    )  # fmt: skip
    axis.axhline(FRAME_MS, color="red", linestyle="--", label="40 ms frame period")
    axis.axhline(FRAME_MS * GOAL_RATIO, color="orange", linestyle=":", label="goal 32 ms")
    axis.set_ylabel("ms per 512x512 frame")
    axis.set_title("AvatarEngine, streaming 48 kHz speech in 20 ms chunks")
    axis.legend(fontsize=7, loc="upper right")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.engine", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--backends", default=",".join(CPU_RUNTIMES))
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--model", default="default")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    model = load_avatar_model(args.model)
    avatar = stored_default_avatar(crop=model.crop)
    audio = speech(args.seconds + 1.0)
    rows = []
    for threads in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(threads)
        for backend in args.backends.split(","):
            engine = AvatarEngine(
                model=model,
                avatar=avatar,
                config=EngineConfig(backend=backend, threads=threads, output="yuv420p"),
            )
            engine.encode_loop()
            engine.warm_idle()
            row = {"backend": backend, "threads": threads, **measure(engine, audio)}
            log.info("%s", row)
            rows.append(row)
    best = min(rows, key=lambda r: r["ms_per_frame"])
    report = {
        "what": "AvatarEngine ms per 512x512 frame by stage, streaming espeak-ng speech at "
        "48 kHz in 20 ms chunks, yuv420p output, batch 1, warmed up as the server does (the "
        "loop frames encoded, the idle loop rendered at rest once); "
        "speaking frames (the generator runs) and idle frames (a kept frame of the idle "
        "loop) also apart",
        "model": args.model,
        "audio_seconds": args.seconds,
        "frame_period_ms": FRAME_MS,
        "goal_real_time_factor": GOAL_RATIO,
        "rows": rows,
        "best": {k: best[k] for k in ("backend", "threads", "ms_per_frame", "real_time_factor")},
    }
    write_result(args.out / "engine.json", report, "benchmarks.engine", argv)
    plot(rows, args.out / "engine.png")
    print(json.dumps(report["best"]))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
