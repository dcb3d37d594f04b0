"""The quality benchmark end to end: the shipped model on a freshly made held-out clip."""

from __future__ import annotations

import json

import cv2
import torch

from benchmarks import quality
from tests.conftest import SmallDataset


def test_quality_benchmark_on_a_new_heldout_voice_clip(small_dataset: SmallDataset, tmp_path):
    threads = torch.get_num_threads()
    try:
        code = quality.main(
            [
                "--model", "default", "--data", str(small_dataset.dataset),
                "--out", str(tmp_path), "--threads", "1",
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    report = json.loads((tmp_path / "quality.json").read_text())
    results = report["results"]
    assert results["clips"] >= 1 and report["clip_ids"][0].startswith("espeak-heldout")
    assert results["rendered_frames_with_face"] == 1.0
    # The small corpus is a new sample of the same avatar and held-out voice (its own seed
    # and sentences, its own tracking): the shipped model must lip-sync it.
    assert results["mouth_opening_correlation"] > 0.6
    assert results["lmd_px"] < 3.5
    assert abs(results["av_offset_frames"]) <= 1
    assert results["psnr_db"] > 26 and results["ssim"] > 0.85
    strip = cv2.imread(str(tmp_path / "quality_strip.png"))
    assert strip.shape == (512, 8 * 256, 3)


def test_a_dataset_without_that_voice_is_one_clear_error(small_dataset, tmp_path, capsys):
    code = quality.main(
        ["--data", str(small_dataset.dataset), "--voice", "en-zz", "--out", str(tmp_path)]
    )
    assert code == 2
    assert capsys.readouterr().out.strip() == (
        f"error: {small_dataset.dataset} has no held-out clips of voice 'en-zz'"
    )
