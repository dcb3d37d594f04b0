"""The joint stage: the generator fine-tuned on the motion model's predicted dynamics."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.data.prep.dataset import read_basis
from engine.errors import EngineError
from engine.generator import load_generator
from engine.motion import MotionConfig, load_motion_checkpoint
from engine.silence_gate import SilenceGate, rest_coefficients
from engine.train.generator import GeneratorTrainConfig, train_generator
from engine.train.joint import JointTrainConfig, MixedDynamics, predict_split, train_joint
from engine.train.motion import MotionTrainConfig, train_motion
from engine.train.sequences import MotionSequences
from presenter.cli import main
from tests.conftest import SmallDataset
from tests.test_generator_training import SMALL_MODEL


@pytest.fixture(scope="module")
def trained(small_dataset: SmallDataset, tmp_path_factory: pytest.TempPathFactory):
    """A small motion model and a small generator, both trained a few steps."""
    root = tmp_path_factory.mktemp("joint")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        motion = train_motion(
            MotionTrainConfig(
                data_dir=small_dataset.dataset,
                out_dir=root / "motion",
                model=MotionConfig(
                    num_coefficients=read_basis(small_dataset.dataset)[0].num_components,
                    width=32,
                    layers=1,
                    heads=2,
                    style_dim=16,
                    style_hidden=16,
                    dropout=0.0,
                ),
                steps=20,
                decay_steps=20,
                batch_size=4,
                sequence_frames=8,
                warmup_steps=5,
                log_every=10,
                eval_every=20,
                checkpoint_every=20,
                progress=False,
            )
        )
        generator = train_generator(
            GeneratorTrainConfig(
                dataset=small_dataset.dataset,
                output=root / "generator",
                model=SMALL_MODEL,
                steps=4,
                clips_per_batch=2,
                frames_per_clip=2,
                active_clips=2,
                log_every=2,
                eval_every=4,
                eval_frames=2,
                checkpoint_every=4,
                threads=1,
            )
        )
    finally:
        torch.set_num_threads(threads)
    return root, motion, generator


def test_predictions_use_the_subjects_default_style_and_the_gate(small_dataset, trained):
    _, motion_path, _ = trained
    checkpoint = load_motion_checkpoint(motion_path)
    predictions = predict_split(checkpoint, small_dataset.dataset, "heldout", gate=None)
    clips = MotionSequences(small_dataset.dataset, "heldout", checkpoint.config)
    assert sorted(predictions) == sorted(clip.id for clip in clips.clips)
    # The whole clip in one pass with the subject's stored default style code.
    number = 0
    clip = clips.clips[number]
    style = torch.from_numpy(checkpoint.styles[clip.subject])[None]
    mel, _, _, _ = clips.sequence(number, 0, clip.frames)
    with torch.no_grad():
        expected = checkpoint.model.transformer.forward_sequence(torch.from_numpy(mel)[None], style)
    assert predictions[clip.id].shape == (clip.frames, checkpoint.config.num_coefficients)
    np.testing.assert_allclose(predictions[clip.id], expected[0].numpy(), atol=1e-5)
    # Through the silence gate (the default, as at inference): speech frames keep the
    # prediction, silent frames take the rest pose, the rest lies between the two.
    gated = predict_split(checkpoint, small_dataset.dataset, "heldout")[clip.id]
    weights = SilenceGate().clip_weights(
        clip.mel, clip.frames, checkpoint.config, silence=clips.silence_value
    )
    rest = rest_coefficients(checkpoint.model, checkpoint.styles[clip.subject],
                             silence=clips.silence_value)  # fmt: skip
    assert (weights == 0).any() and (weights == 1).any()
    np.testing.assert_allclose(gated[weights == 1], predictions[clip.id][weights == 1], atol=1e-6)
    np.testing.assert_allclose(
        gated[weights == 0], np.broadcast_to(rest, gated[weights == 0].shape), atol=1e-6
    )


def test_mixed_dynamics_is_seeded_by_step_and_mixes_by_fraction():
    predictions = {"a": np.full((10, 3), 7.0, np.float32)}
    batch = {
        "dynamics": torch.zeros(64, 3),
        "clip_id": ["a"] * 64,
        "frame": list(range(10)) * 6 + [0, 1, 2, 3],
    }
    half = MixedDynamics(predictions, 0.5, seed=3)
    first = half(batch, 11)
    assert torch.equal(first, half(batch, 11))  # the same step draws the same samples
    assert not torch.equal(first, half(batch, 12))
    predicted_rows = (first == 7.0).all(dim=1)
    assert ((first == 0.0).all(dim=1) | predicted_rows).all()
    assert 16 < int(predicted_rows.sum()) < 48
    assert bool((MixedDynamics(predictions, 1.0, seed=3)(batch, 0) == 7.0).all())
    assert bool((MixedDynamics(predictions, 0.0, seed=3)(batch, 0) == 0.0).all())


def test_joint_stage_starts_from_the_generator_and_records_it(small_dataset, trained):
    root, motion_path, generator_path = trained
    threads = torch.get_num_threads()
    try:
        out = root / "joint-cli"
        code = main(
            [
                "train", "joint", "--data", str(small_dataset.dataset), "--out", str(out),
                "--motion", str(motion_path.parent), "--generator", str(generator_path),
                "--steps", "2", "--threads", "1",
            ]
        )  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    assert code == 0
    joint = load_generator(out / "generator.safetensors")
    training = joint.header["training"]
    assert training["dynamics_source"] == "predicted"
    assert "joint stage" in training["description"]
    assert training["train_config"]["initial_weights"] == str(generator_path)
    assert training["train_config"]["adversarial_start"] == 0
    # Two steps moved the weights a little from where the generator left them, not far.
    start = load_generator(generator_path).generator.state_dict()
    moved = [
        float((value - start[name]).abs().max())
        for name, value in joint.generator.state_dict().items()
        if value.is_floating_point()
    ]
    assert 0.0 < max(moved) < 0.05


def test_joint_stage_refuses_missing_checkpoints(small_dataset, trained, tmp_path):
    _, motion_path, _ = trained
    config = JointTrainConfig(
        dataset=small_dataset.dataset,
        output=tmp_path / "x",
        motion=motion_path,
        generator=tmp_path / "missing.safetensors",
    )
    with pytest.raises(EngineError, match="no generator checkpoint"):
        train_joint(config)
    with pytest.raises(ValueError, match="predicted_fraction"):
        replace(config, predicted_fraction=1.5)
    assert main(["train", "joint", "--data", str(small_dataset.dataset), "--out", "x"]) == 2


def test_cli_help_lists_the_joint_stage(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    assert "joint" in capsys.readouterr().out
