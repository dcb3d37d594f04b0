"""Training the motion model on the small real dataset: loss, silence, resume, checkpoint."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.data.prep.dataset import read_basis, read_header
from engine.errors import EngineError
from engine.motion import MotionConfig, MotionModel, load_motion_checkpoint
from engine.train.motion import (
    LOG_NAME,
    PLOT_NAME,
    STATE_NAME,
    LipGeometry,
    LossWeights,
    MotionTrainConfig,
    evaluate_motion,
    evaluation_references,
    motion_losses,
    pixels_per_unit,
    predict_clip,
    train_motion,
)
from engine.train.sequences import MotionSequences, emphasis_frames, silence_frames
from engine.weights import load_checkpoint
from tests.conftest import SmallDataset

STEPS = 50  # per leg: N steps, then resumed to 2N


def _config(dataset: Path, out_dir: Path, basis_size: int, steps: int) -> MotionTrainConfig:
    return MotionTrainConfig(
        data_dir=dataset,
        out_dir=out_dir,
        model=MotionConfig(
            num_coefficients=basis_size,
            width=48,
            layers=2,
            heads=2,
            style_dim=16,
            style_hidden=32,
            dropout=0.05,
        ),
        steps=steps,
        decay_steps=2 * STEPS,
        batch_size=8,
        sequence_frames=16,
        lr=3e-3,
        warmup_steps=10,
        log_every=10,
        eval_every=25,
        checkpoint_every=STEPS,
        progress=False,
        augment=None,  # the clean data: the thresholds below are for it
    )


@pytest.fixture
def one_thread():
    """Training on one core: the speed the defaults are sized for, and no oversubscription."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _train_records(log_path: Path) -> list[dict]:
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    return [r for r in records if "loss" in r]


def test_silence_labels_from_phones() -> None:
    phones = [["SIL", 0.0, 0.41], ["AH", 0.41, 0.6], ["SIL", 0.6, 0.7], ["T", 0.7, 0.8]]
    silent = silence_frames(phones, 24, 25)
    centres = (np.arange(24) + 0.5) / 25
    expected = (centres < 0.41) | ((centres >= 0.6) & (centres < 0.7)) | (centres >= 0.8)
    np.testing.assert_array_equal(silent, expected)
    assert not silence_frames([], 5, 25).any()


def test_emphasis_labels_closures_and_open_vowels() -> None:
    phones = [["SIL", 0.0, 0.2], ["M", 0.2, 0.32], ["AA", 0.32, 0.52], ["S", 0.52, 0.6]]
    emphasised = emphasis_frames(phones, 16, 25)
    centres = (np.arange(16) + 0.5) / 25
    np.testing.assert_array_equal(emphasised, (centres >= 0.2) & (centres < 0.52))
    assert not emphasis_frames([], 5, 25).any()


def test_the_opening_loss_weighs_the_extremes(small_dataset: SmallDataset) -> None:
    """An error in the mouth opening on a closure or an open vowel costs ``1 + emphasis``
    times what it costs elsewhere; a prediction equal to the target costs nothing."""
    dataset = small_dataset.dataset
    basis, template, identities = read_basis(dataset)
    config = MotionConfig(num_coefficients=basis.num_components)
    train = MotionSequences(dataset, "train", config)
    batch = train.sample(
        np.random.default_rng(3), batch_size=16, frames=16, edge_frames=0, style_frames=(50, 75)
    )
    assert batch.emphasis.any() and (~batch.emphasis & batch.valid).any()
    face = read_header(dataset).crop.face_fraction
    lips = LipGeometry(basis, identities, pixels_per_unit(template, face, 256))
    std = torch.ones(basis.num_components)
    only_opening = LossWeights(coefficients=0.0, lips=0.0, velocity=0.0, silence=0.0)
    _, exact = motion_losses(
        batch.target, batch, coefficient_std=std, lips=lips, weights=only_opening
    )
    assert exact["loss"] == pytest.approx(0.0, abs=1e-6)
    # Move the mouth (the first component: mostly the jaw) on the chosen frames only.
    push = torch.zeros_like(batch.target)
    push[..., 0] = 0.3
    costs = {}
    for name, frames in (("extremes", batch.emphasis), ("others", ~batch.emphasis)):
        chosen = frames & batch.valid
        moved = batch.target + push * chosen[..., None]
        subject = batch.subjects[0]  # the small corpus has one face
        errors = (lips.opening_px(moved, subject) - lips.opening_px(batch.target, subject)).abs()
        _, terms = motion_losses(moved, batch, coefficient_std=std, lips=lips, weights=only_opening)
        weight = batch.valid.float() * (1.0 + only_opening.emphasis * batch.emphasis)
        costs[name] = terms["opening_px"] * float(weight.sum()) / float(errors[chosen].sum())
    assert costs["extremes"] == pytest.approx(1.0 + only_opening.emphasis, rel=1e-3)
    assert costs["others"] == pytest.approx(1.0, rel=1e-3)


def test_sequences_show_silence_around_the_clips(small_dataset: SmallDataset) -> None:
    basis, _, _ = read_basis(small_dataset.dataset)
    config = MotionConfig(num_coefficients=basis.num_components)
    train = MotionSequences(small_dataset.dataset, "train", config)
    assert len(train) > 0
    for clip in train.clips:
        # Every synthetic clip starts and ends in silence (0.4 s lead, 0.5 s tail).
        assert clip.silence[:5].all() and clip.silence[-5:].all()
        assert not clip.silence.all()
    natural = np.mean(np.concatenate([c.silence[c.valid] for c in train.clips]))
    first = -6
    mel, target, valid, silence = train.sequence(0, first, 16)
    assert mel.shape == (config.window_frames + 4 * 15, 80)
    assert silence[:6].all() and valid[:6].all()
    np.testing.assert_array_equal(target[:6], np.repeat(train.clips[0].coefficients[:1], 6, 0))
    # Mel frames before the clip start are digital silence (the log floor).
    np.testing.assert_array_equal(mel[: -first * 4 + config.past_frames], train.silence_value)
    batch = train.sample(
        np.random.default_rng(0), batch_size=64, frames=16, edge_frames=12, style_frames=(50, 75)
    )
    seen = float(batch.silence[batch.valid].float().mean())
    assert seen > natural + 0.05
    assert batch.reference.shape == (64, 75, basis.num_components)
    assert batch.reference_mask.sum(dim=1).min() >= 1


@pytest.mark.usefixtures("one_thread")
def test_training_learns_resumes_exactly_and_reloads(
    small_dataset: SmallDataset, tmp_path: Path
) -> None:
    dataset = small_dataset.dataset
    basis, template, identities = read_basis(dataset)
    k = basis.num_components
    resumed_dir, straight_dir = tmp_path / "resumed", tmp_path / "straight"

    first_leg = train_motion(_config(dataset, resumed_dir, k, STEPS))
    _, state_header = load_checkpoint(resumed_dir / STATE_NAME)
    assert state_header["step"] == STEPS
    assert load_motion_checkpoint(first_leg).header["training"]["step"] == STEPS

    final = train_motion(_config(dataset, resumed_dir, k, 2 * STEPS))
    _, state_header = load_checkpoint(resumed_dir / STATE_NAME)
    assert state_header["step"] == 2 * STEPS
    records = [json.loads(line) for line in (resumed_dir / LOG_NAME).read_text().splitlines()]
    train_steps = [r["step"] for r in records if "loss" in r]
    assert train_steps == list(range(10, 2 * STEPS + 1, 10))
    eval_steps = [r["step"] for r in records if "heldout_lip_px" in r]
    assert eval_steps == [25, 50, 75, 100]
    assert (resumed_dir / PLOT_NAME).stat().st_size > 0

    # The training loss falls clearly.
    losses = [r["loss"] for r in _train_records(resumed_dir / LOG_NAME)]
    assert np.mean(losses[-2:]) < 0.75 * np.mean(losses[:2]), losses

    # Resuming gives exactly what an uninterrupted run gives.
    straight = train_motion(_config(dataset, straight_dir, k, 2 * STEPS))
    resumed_model = load_motion_checkpoint(final).model.state_dict()
    straight_model = load_motion_checkpoint(straight).model.state_dict()
    assert resumed_model.keys() == straight_model.keys()
    for name, value in resumed_model.items():
        assert torch.equal(value, straight_model[name]), name
    assert _train_records(resumed_dir / LOG_NAME) == _train_records(straight_dir / LOG_NAME)

    # The checkpoint reproduces the held-out metrics logged during training.
    checkpoint = load_motion_checkpoint(final)
    header = checkpoint.header
    np.testing.assert_array_equal(checkpoint.basis.components, basis.components)
    np.testing.assert_array_equal(checkpoint.template, template)
    assert checkpoint.identities.keys() == identities.keys()
    assert checkpoint.styles.keys() == identities.keys()
    dataset_header = read_header(dataset)
    assert header["mel_mean"] == pytest.approx(dataset_header.mel_mean)
    data = header["data"]
    assert data["clips"] == {
        "train": len(dataset_header.clips_in("train")),
        "heldout": len(dataset_header.clips_in("heldout")),
    }
    assert set(data["minutes_by_source"]["train"]) == {
        clip.meta["source"] for clip in dataset_header.clips_in("train")
    }
    train = MotionSequences(dataset, "train", checkpoint.config)
    heldout = MotionSequences(dataset, "heldout", checkpoint.config)
    references = evaluation_references(train, heldout, 75)
    lips = LipGeometry(checkpoint.basis, checkpoint.identities, header["px_per_unit"])
    metrics = evaluate_motion(checkpoint.model, heldout, references, lips)
    logged = next(r for r in reversed(records) if "heldout_lip_px" in r)
    for name, value in metrics.items():
        assert value == pytest.approx(logged[f"heldout_{name}"], abs=2e-6), name
    assert 0.0 < metrics["lip_px"] < 20.0
    reference, mask = (torch.from_numpy(array) for array in references[0])
    first = predict_clip(checkpoint.model, heldout, 0, reference, mask)
    again = predict_clip(load_motion_checkpoint(final).model, heldout, 0, reference, mask)
    assert torch.equal(first, again)
    # ... and exactly the predictions of the weights in the training state.
    state_tensors, _ = load_checkpoint(resumed_dir / STATE_NAME)
    trained = MotionModel(checkpoint.config)
    trained.load_state_dict(
        {n.removeprefix("model."): v for n, v in state_tensors.items() if n.startswith("model.")}
    )
    assert torch.equal(predict_clip(trained.eval(), heldout, 0, reference, mask), first)
    # The stored default style is the style of the evaluation reference of that subject.
    subject = heldout.clips[0].subject
    with torch.no_grad():
        style = checkpoint.model.style(reference[None], mask[None])[0].numpy()
    np.testing.assert_allclose(checkpoint.styles[subject], style, atol=1e-6)

    # A different model cannot resume from this state.
    other = _config(dataset, resumed_dir, k, 3 * STEPS)
    assert other.model is not None
    with pytest.raises(EngineError, match="another model config"):
        train_motion(replace(other, model=replace(other.model, width=64)))
