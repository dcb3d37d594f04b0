"""Tracker agreement on synthetic clips: MediaPipe lip landmarks vs the rig's ground truth.

``python -m benchmarks.tracker_agreement --data DATASET [--out DIR]`` reads a dataset made by
``presenter data prep`` from a ``data synth`` corpus, where every clip carries the rig's
ground-truth landmarks, and reports the mean distance between the tracked and the true lip
landmarks (40 points: outer and inner contours) in pixels at a 256-px face-crop scale, per
source, split and viseme (:func:`engine.data.tracker_agreement.measure`). Writes
``tracker_agreement.json`` and ``tracker_agreement.png``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from benchmarks.provenance import write_result
from engine.data.tracker_agreement import GOAL_PX, measure
from engine.speech.phonemes import VISEMES


def plot(result: dict[str, object], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frames = result["_frames"]
    assert isinstance(frames, np.ndarray)
    by_viseme = result["by_viseme"]
    assert isinstance(by_viseme, dict)
    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    left.hist(frames, bins=60, color="tab:blue")
    left.axvline(GOAL_PX, color="tab:red", linestyle="--", label=f"goal {GOAL_PX:g} px")
    left.set_xlabel("mean lip landmark distance per frame (px at 256)")
    left.set_ylabel("frames")
    left.legend()
    names = [v for v in VISEMES if by_viseme[v].get("frames")]
    right.bar(names, [by_viseme[v]["mean_px"] for v in names], color="tab:green")
    right.axhline(GOAL_PX, color="tab:red", linestyle="--")
    right.set_ylabel("mean px at 256")
    right.set_title("by viseme")
    figure.suptitle(f"tracker vs rig ground truth: {result['data']}")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.tracker_agreement", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--data", type=Path, required=True, help="a prepared dataset folder")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    result = measure(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    plot(result, args.out / "tracker_agreement.png")
    result.pop("_frames")
    write_result(args.out / "tracker_agreement.json", result, "benchmarks.tracker_agreement", argv)
    print(json.dumps({k: result[k] for k in ("all", "outer_contour", "inner_contour")}))  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
