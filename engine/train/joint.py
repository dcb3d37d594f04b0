"""The joint stage: the generator fine-tuned on the motion model's predicted dynamics.

The generator is first trained on tracked dynamics (:mod:`engine.train.generator`). At
inference it renders what the motion model predicts, which is smoother and less exact than
what the tracker measured, so the joint stage goes on from the trained generator with a
share of every batch rendered from the frozen motion model's predictions:

- the motion model predicts every train frame once, before training, with the subject's
  default style code (the one inference uses when no reference video is given);
- in every batch each sample renders its predicted coefficients with probability
  ``predicted_fraction`` (a function of seed, step and position: resumable), the tracked
  ones otherwise; the loss always compares with the real frame, so the generator learns to
  turn the model's dynamics into the frame the audio belongs to;
- the patch discriminator joins in from ``adversarial_start`` (by default at once: the
  reconstruction stage has settled before this stage begins).

The output folder is an ordinary generator run (``state.safetensors``, ``losses.jsonl``,
``generator.safetensors``); its header records both checkpoints it started from.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.data.prep.dataset import read_basis
from engine.errors import EngineError
from engine.generator import load_generator
from engine.motion import MotionCheckpoint, load_motion_checkpoint
from engine.silence_gate import SilenceGate, rest_coefficients
from engine.train.generator import GeneratorTrainConfig, train_generator
from engine.train.sequences import MotionSequences

log = logging.getLogger(__name__)

PREDICTION_CHUNK_FRAMES = 250
DEFAULT_GATE = SilenceGate()


@dataclass(frozen=True, kw_only=True)
class JointTrainConfig:
    dataset: Path
    output: Path
    motion: Path  # motion checkpoint (motion.safetensors)
    generator: Path  # generator checkpoint to start from (generator.safetensors)
    steps: int = 1000
    predicted_fraction: float = 0.5
    learning_rate: float = 5e-4
    adversarial_start: int = 0
    seed: int = 0
    threads: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if not 0.0 <= self.predicted_fraction <= 1.0:
            raise ValueError(f"predicted_fraction must be in [0, 1], got {self.predicted_fraction}")
        if self.learning_rate <= 0:
            raise ValueError("learning_rate must be positive")


@torch.no_grad()
def predict_split(
    checkpoint: MotionCheckpoint,
    dataset: Path,
    split: str = "train",
    *,
    gate: SilenceGate | None = DEFAULT_GATE,
) -> dict[str, np.ndarray]:
    """(T, K) float32 predicted coefficients for every clip of a split, each clip with its
    subject's default style code from the checkpoint, through the silence gate (as at
    inference; ``gate=None``: the model's raw output)."""
    model = checkpoint.model.eval()
    clips = MotionSequences(dataset, split, checkpoint.config)
    predictions: dict[str, np.ndarray] = {}
    for number, clip in enumerate(clips.clips):
        if clip.subject not in checkpoint.styles:
            raise EngineError(
                f"the motion model has no style for subject {clip.subject!r} "
                f"(it knows {sorted(checkpoint.styles)})"
            )
        style = torch.from_numpy(checkpoint.styles[clip.subject])[None]
        chunks = []
        for first in range(0, clip.frames, PREDICTION_CHUNK_FRAMES):
            count = min(PREDICTION_CHUNK_FRAMES, clip.frames - first)
            mel, _, _, _ = clips.sequence(number, first, count)
            chunks.append(model.transformer.forward_sequence(torch.from_numpy(mel)[None], style)[0])
        predicted = torch.cat(chunks).numpy().astype(np.float32)
        if gate is not None:
            silence = clips.silence_value
            rest = rest_coefficients(model, checkpoint.styles[clip.subject], silence=silence)
            weights = gate.clip_weights(clip.mel, clip.frames, checkpoint.config, silence=silence)
            predicted = gate.apply(predicted, weights, rest)
        predictions[clip.id] = predicted
    return predictions


@dataclass(frozen=True)
class MixedDynamics:
    """A :data:`engine.train.generator.DynamicsSource`: predicted coefficients for a seeded
    share of the samples of every batch, tracked ones for the rest."""

    predictions: Mapping[str, np.ndarray]
    fraction: float
    seed: int

    def choose(self, size: int, step: int) -> np.ndarray:
        """(size,) bool: which samples of the batch at ``step`` render predictions."""
        return np.random.default_rng([self.seed, 7919, step]).random(size) < self.fraction

    def __call__(self, batch: Mapping[str, Any], step: int) -> torch.Tensor:
        tracked: torch.Tensor = batch["dynamics"]
        chosen = self.choose(tracked.shape[0], step)
        if not chosen.any():
            return tracked
        rows = [
            torch.from_numpy(self.predictions[clip_id][int(frame)]) if pick else tracked[position]
            for position, (clip_id, frame, pick) in enumerate(
                zip(batch["clip_id"], batch["frame"], chosen, strict=True)
            )
        ]
        return torch.stack(rows)


def _check_same_basis(checkpoint: MotionCheckpoint, dataset: Path) -> None:
    basis, _, _ = read_basis(dataset)
    if not checkpoint.basis.same_as(basis):
        raise EngineError(
            f"the motion model was trained on another dynamics basis than {dataset}'s; "
            "train both models on the same prepared dataset"
        )


def train_joint(config: JointTrainConfig) -> Path:
    """Fine-tune ``config.generator`` on predicted dynamics; returns the new checkpoint."""
    for path, what in ((config.motion, "motion"), (config.generator, "generator")):
        if not Path(path).is_file():
            raise EngineError(f"no {what} checkpoint at {path}")
    checkpoint = load_motion_checkpoint(config.motion)
    _check_same_basis(checkpoint, config.dataset)
    start = load_generator(config.generator)
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        log.info("predicting the train split's dynamics with %s", config.motion)
        predictions = predict_split(checkpoint, config.dataset, "train")
    finally:
        torch.set_num_threads(previous_threads)
    base = GeneratorTrainConfig.from_dict(start.header["training"]["train_config"])
    train_config = replace(
        base,
        dataset=Path(config.dataset),
        output=Path(config.output),
        model=start.config,
        steps=config.steps,
        learning_rate=config.learning_rate,
        adversarial_start=config.adversarial_start,
        seed=config.seed,
        threads=config.threads,
        initial_weights=Path(config.generator),
        description=(
            f"joint stage: {config.generator} fine-tuned for {config.steps} steps, "
            f"{config.predicted_fraction:.0%} of the samples rendering the dynamics that "
            f"{config.motion} predicts"
        ),
    )
    source = MixedDynamics(predictions, config.predicted_fraction, config.seed)
    return train_generator(train_config, dynamics_source=source)
