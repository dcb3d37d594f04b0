"""Training the generator on the small real dataset: losses, resume, checkpoint reload."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.data.prep.dataset import TalkingHeadDataset
from engine.generator import GeneratorConfig, load_generator
from engine.train.generator import (
    FINAL_NAME,
    LOG_NAME,
    PLOT_NAME,
    STATE_NAME,
    ClipBatchSampler,
    GeneratorTrainConfig,
    evaluate_reconstruction,
    train_generator,
)
from engine.train.logbook import LossLog
from engine.train.losses import mouth_weight_map, ms_ssim, ms_ssim_scales, psnr, ssim
from engine.weights import load_checkpoint

SMALL_MODEL = GeneratorConfig(
    image_size=64,
    min_resolution=8,
    channel_base=512,
    channel_min=16,
    channel_max=48,
    style_dim=32,
    mapping_layers=2,
)


def _config(small_dataset, output, **changes) -> GeneratorTrainConfig:
    values = {
        "dataset": small_dataset.dataset,
        "output": output,
        "model": SMALL_MODEL,
        "steps": 60,
        "clips_per_batch": 2,
        "frames_per_clip": 3,
        "active_clips": 3,
        "clip_swap_every": 10,
        "learning_rate": 2e-3,
        "log_every": 10,
        "eval_every": 30,
        "eval_frames": 8,
        "checkpoint_every": 30,
        "adversarial_start": 40,
        "seed": 7,
        "threads": 1,  # one intra-op thread: steadier when other jobs share the cores
        "description": "test run on the small synthetic corpus",
    }
    values.update(changes)
    return GeneratorTrainConfig(**values)


def _number(record: dict[str, object], key: str) -> float:
    value = record[key]
    assert isinstance(value, int | float), (key, value)
    return float(value)


def test_ms_ssim_is_safe_and_ordered():
    torch.manual_seed(0)
    clean = torch.rand(2, 3, 64, 64)
    noisy = (clean + 0.05 * torch.randn_like(clean)).clamp(0, 1)
    noisier = (clean + 0.2 * torch.randn_like(clean)).clamp(0, 1)
    assert ms_ssim_scales(64) == 3 and ms_ssim_scales(128) == 4 and ms_ssim_scales(512) == 5
    assert torch.allclose(ms_ssim(clean, clean), torch.ones(2))
    assert torch.all(ms_ssim(clean, noisy) > ms_ssim(clean, noisier))
    assert torch.all(ssim(clean, noisy) > ssim(clean, noisier))
    # Flat and anti-correlated images: finite values and gradients.
    flat = torch.zeros(2, 3, 64, 64, requires_grad=True)
    value = ms_ssim(flat, torch.ones(2, 3, 64, 64)).sum() + ms_ssim(flat, 1 - clean).sum()
    value.backward()
    assert flat.grad is not None
    assert torch.isfinite(value) and torch.isfinite(flat.grad).all()
    # A weight map restricts the average to where it is non-zero.
    weight = torch.zeros(2, 1, 64, 64)
    weight[..., 24:, :] = 1.0
    damaged = clean.clone()
    damaged[..., :8, :] = 0.0
    assert float(psnr(damaged, clean, weight=weight).min()) > 90.0
    assert float(psnr(damaged, clean).max()) < 30.0
    with pytest.raises(ValueError):
        ms_ssim(clean[..., :8, :8], clean[..., :8, :8])


def test_ssim_agrees_with_scikit_image():
    from skimage.metrics import structural_similarity

    torch.manual_seed(1)
    clean = torch.rand(1, 3, 48, 56)
    noisy = (clean + 0.1 * torch.randn_like(clean)).clamp(0, 1)
    expected = structural_similarity(
        clean[0].numpy(),
        noisy[0].numpy(),
        channel_axis=0,
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
    )
    assert float(ssim(clean, noisy)) == pytest.approx(float(expected), abs=1e-5)


def test_mouth_weight_map_covers_the_lips(small_dataset):
    dataset = TalkingHeadDataset(small_dataset.dataset, "train", image_size=64)
    sample = dataset[len(dataset) // 2]
    weight = mouth_weight_map(sample["landmarks"][None], 64)
    assert weight.shape == (1, 1, 64, 64)
    corner = sample["landmarks"][61]  # right mouth corner, pixels
    assert float(weight[0, 0, int(corner[1]), int(corner[0])]) == 1.0
    assert float(weight[0, 0, 2, 2]) == 0.0
    assert 0.02 < float(weight.mean()) < 0.3


def test_clip_batches_are_grouped_and_reproducible():
    clip_items = [np.arange(start, start + 20) for start in range(0, 200, 20)]
    sampler = ClipBatchSampler(
        clip_items, clips_per_batch=2, frames_per_clip=3, active_clips=4, swap_every=5, seed=1
    )
    for step in range(40):
        batch = sampler.batch(step)
        assert len(batch) == 6
        assert batch == sampler.batch(step)
        clips = {index // 20 for index in batch}
        assert len(clips) <= 2
        assert clips <= set(sampler.active(step))
    # Consecutive windows of active clips share all but one clip.
    assert len(set(sampler.active(4)) & set(sampler.active(5))) >= 3
    seen = {clip for step in range(0, 200, 5) for clip in sampler.active(step)}
    assert seen == set(range(10))


def test_training_learns_resumes_and_reloads(small_dataset, tmp_path, test_output):
    output = tmp_path / "generator-run"
    # First leg: 30 steps (an interrupted run leaves its state at the last checkpoint).
    train_generator(_config(small_dataset, output, steps=30))
    state_tensors, state_header = load_checkpoint(output / STATE_NAME)
    assert state_header["step"] == 30
    # Second leg: the same run asked for 60 steps resumes at 30 and continues the log.
    final = train_generator(_config(small_dataset, output, steps=60))
    assert final == output / FINAL_NAME
    records = LossLog(output / LOG_NAME).read()
    assert [_number(r, "step") for r in records] == [10, 20, 30, 40, 50, 60]
    first, last = records[0], records[-1]
    assert _number(last, "l1") < 0.6 * _number(first, "l1")
    assert _number(last, "ms_ssim_loss") < _number(first, "ms_ssim_loss")
    assert "d_loss" in last and "d_loss" not in records[2]  # adversarial from step 40
    assert {"heldout_psnr", "heldout_ssim"} <= set(last)
    assert _number(last, "heldout_psnr") > 15.0
    assert (output / PLOT_NAME).stat().st_size > 0
    (test_output / "generator-training-losses.png").write_bytes((output / PLOT_NAME).read_bytes())

    # The final checkpoint is self-describing and reproduces the trained network exactly.
    loaded = load_generator(final)
    header = loaded.header
    assert header["generator"]["image_size"] == 64
    assert header["generator"]["num_coefficients"] == loaded.basis.num_components
    assert header["training"]["steps"] == 60
    assert header["training"]["dynamics_source"] == "tracked"
    assert header["training"]["train_frames"] > 0
    assert set(header["projections"]) == set(loaded.projections)
    state_tensors, _ = load_checkpoint(output / STATE_NAME)
    for name, value in loaded.generator.state_dict().items():
        assert torch.equal(value, state_tensors[f"generator.{name}"]), name
    heldout = TalkingHeadDataset(small_dataset.dataset, "heldout", image_size=64)
    items = sorted({int(i) for i in np.linspace(0, len(heldout) - 1, 8)})
    mappers = {subject: loaded.mapper(subject) for subject in loaded.projections}
    metrics = evaluate_reconstruction(loaded.generator, mappers, heldout, items)
    assert metrics["heldout_psnr"] == pytest.approx(_number(last, "heldout_psnr"), abs=1e-4)
    assert metrics["heldout_ssim"] == pytest.approx(_number(last, "heldout_ssim"), abs=1e-5)

    # The resumed run is the run that never stopped: same batches, optimiser state, RNG.
    straight = tmp_path / "uninterrupted"
    train_generator(_config(small_dataset, straight, steps=60))
    for resumed, whole in zip(records, LossLog(straight / LOG_NAME).read(), strict=True):
        for key in ("l1", "ms_ssim_loss", "d_loss", "heldout_psnr"):
            if key in resumed:
                assert _number(whole, key) == pytest.approx(_number(resumed, key), rel=1e-4)

    # Rerunning a finished run changes nothing.
    before = (output / FINAL_NAME).stat().st_mtime_ns
    assert train_generator(_config(small_dataset, output, steps=60)) == final
    assert (output / FINAL_NAME).stat().st_mtime_ns == before


def test_predicted_dynamics_hook_drives_the_generator(small_dataset, tmp_path):
    calls: list[tuple[int, int]] = []

    def halved(batch, step):
        calls.append((len(batch["clip_id"]), step))
        return batch["dynamics"] * 0.5

    config = _config(
        small_dataset, tmp_path / "hooked", steps=2, log_every=1, eval_every=2, eval_frames=2
    )
    final = train_generator(replace(config, checkpoint_every=100), dynamics_source=halved)
    assert calls == [(6, 0), (6, 1)]
    assert load_generator(final).header["training"]["dynamics_source"] == "predicted"
