"""``python -m benchmarks.articulation_video``: the range of a mouth in a video, on frames of
the corpus rig whose mouth is known to close and open, and one clear error for a file that
is not a video."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from engine.data.synth.render import AvatarRenderer, RenderConfig
from engine.data.synth.visemes import viseme_controls
from engine.video_file import write_mp4
from tests.conftest import run_module


def test_a_mouth_that_closes_and_opens(tmp_path: Path) -> None:
    renderer = AvatarRenderer(0, config=replace(RenderConfig(), idle_motion=False, blinks=False))
    shapes = ["PP", "aa"] * 5  # half the frames sealed, half wide open
    frames = [renderer.render_frame(viseme_controls(v), k)[0] for k, v in enumerate(shapes)]
    video = tmp_path / "mouth.mp4"
    write_mp4(video, frames)
    done = run_module(
        "benchmarks.articulation_video", str(video), "--upscale", "1", "--out", str(tmp_path)
    )
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads((tmp_path / "articulation_mouth.json").read_text())
    assert report["frames"] == report["frames_with_face"] == 10
    assert report["gap"]["p05"] < 0.03 and report["gap"]["p95"] > 0.15
    assert report["provenance"]["module"] == "benchmarks.articulation_video"


def test_a_file_that_is_not_a_video_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "notes.mp4"
    bad.write_text("not a video")
    done = run_module("benchmarks.articulation_video", str(bad), "--out", str(tmp_path))
    assert done.returncode == 2
    assert done.stdout.startswith(f"error: {bad}: cannot read it as a video")
    assert len(done.stdout.strip().splitlines()) == 1
