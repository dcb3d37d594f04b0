"""How far a person's mouth moves in a video: the range of the inner-lip gap.

``python -m benchmarks.articulation_video VIDEO [--upscale 4] [--name NAME] [--out DIR]``
tracks every frame with MediaPipe's Face Landmarker (small videos upscaled first, as the
tracker finds small faces poorly) and reports the inner-lip gap and the mouth width over
the outer eye-corner distance (:mod:`engine.articulation`): 5th percentile, median and 95th
percentile over the frames where one face was found. A video of a real person talking gives
the range the rendered mouth should reach (``benchmarks.quality`` reports the model's).
Writes ``articulation_<name>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np

from benchmarks.provenance import RESULTS, write_result
from engine.articulation import gap_and_width
from engine.errors import EngineError
from engine.tracking import FaceTracker


def measure(video: Path, *, upscale: int) -> dict[str, Any]:
    try:
        with av.open(str(video)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
    except (av.error.FFmpegError, OSError) as exc:
        raise EngineError(f"{video}: cannot read it as a video ({exc})") from exc
    if not frames:
        raise EngineError(f"{video}: no video frames")
    landmarks = np.full((len(frames), 478, 2), np.nan)
    with FaceTracker(video=False, max_faces=1) as tracker:
        for index, original in enumerate(frames):
            frame: np.ndarray = original
            if upscale > 1:
                size = (frame.shape[1] * upscale, frame.shape[0] * upscale)
                frame = cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC)
            faces = tracker.detect(frame)
            if faces:
                landmarks[index] = faces[0].landmarks[:, :2]
    gap, width = gap_and_width(landmarks)
    found = np.isfinite(gap)
    if not found.any():
        raise EngineError(f"{video}: no face found in any frame")
    percentiles = (5, 50, 95)
    return {
        "what": "inner-lip gap and mouth width over the outer eye-corner distance, MediaPipe "
        "on every frame",
        "video": str(video),
        "frames": len(frames),
        "frames_with_face": int(found.sum()),
        "upscale": upscale,
        "gap": dict(
            zip(
                ("p05", "median", "p95"),
                np.percentile(gap[found], percentiles).round(4).tolist(),
                strict=True,
            )
        ),
        "width": dict(
            zip(
                ("p05", "median", "p95"),
                np.percentile(width[found], percentiles).round(4).tolist(),
                strict=True,
            )
        ),
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.articulation_video", description=__doc__.splitlines()[0]
    )
    parser.add_argument("video", type=Path, help="a video of a person talking")
    parser.add_argument("--upscale", type=int, default=4, help="upscale frames by this first")
    parser.add_argument("--name", default=None, help="result name (default: the file's stem)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        report = measure(args.video, upscale=max(1, args.upscale))
    except EngineError as exc:
        print(f"error: {exc}")  # noqa: T201
        return 2
    name = args.name or args.video.stem
    write_result(
        args.out / f"articulation_{name}.json", report, "benchmarks.articulation_video", argv
    )
    print(json.dumps(report, indent=1))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
