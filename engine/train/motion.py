"""Training the audio-to-dynamics motion model on a prepared dataset.

``train_motion(config)`` trains :class:`engine.motion.MotionModel` on random sequences of
consecutive frames of the train split (each with a style reference taken from another
segment of a clip of the same subject and voice), evaluates on the held-out split every
``eval_every`` steps, and writes into ``out_dir``:

- ``motion_state.safetensors``: model, optimiser, step and RNG state, every
  ``checkpoint_every`` steps; running the same command again resumes from it;
- ``motion_loss.jsonl`` / ``motion_loss.png``: the loss log and its curves;
- ``motion.safetensors``: the final model with its header (see
  :func:`engine.motion.save_motion_checkpoint`).

Losses (on valid frames; "normalised" means divided by the train coefficient std):

- ``coef``: squared error of the normalised coefficients, mean over coefficients;
- ``lips``: squared distance of the 40 lip points (decoded with the dynamics basis) in
  pixels of a ``metric_crop_px`` face crop, mean over points;
- ``velocity``: squared error of the frame-to-frame differences of the normalised
  coefficients;
- ``silence``: the ``lips`` term again on the frames whose phone is silence (and on the
  silent padding around clips), so that silence gives a mouth at rest.

Data sampling draws from a generator seeded with ``(seed, step)``, and the torch RNG state is
saved with each checkpoint, so a resumed run continues exactly like an uninterrupted one.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from engine.data.prep.dataset import read_basis
from engine.errors import EngineError
from engine.face3d import CHIN_TIP, INNER_LIP_PAIRS, LIPS, LOWER_FACE, DynamicsBasis
from engine.motion import MotionConfig, MotionModel, count_parameters, save_motion_checkpoint
from engine.train.audio_augment import AugmentConfig
from engine.train.logbook import LossLog
from engine.train.sequences import MotionBatch, MotionSequences
from engine.weights import flatten_state, load_checkpoint, save_checkpoint, unflatten_state

log = logging.getLogger(__name__)

STATE_NAME = "motion_state.safetensors"
FINAL_NAME = "motion.safetensors"
LOG_NAME = "motion_loss.jsonl"
PLOT_NAME = "motion_loss.png"
STATE_KIND = "motion-train-state"
EVAL_CHUNK_FRAMES = 256
NUM_LIP_POINTS = len(LIPS)


@dataclass(frozen=True, kw_only=True)
class LossWeights:
    coefficients: float = 1.0
    lips: float = 0.01  # per px² of lip-point error
    velocity: float = 1.0
    silence: float = 0.01  # per px² of lip-point error on silent frames
    # Mouth opening, L1 per px of inner-lip gap error: a median, not a mean, so an uncertain
    # frame is not pulled half way; ``emphasis`` more on closures and open vowels, the
    # extremes a hedging model misses.
    opening: float = 0.1
    emphasis: float = 3.0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if value < 0:
                raise ValueError(f"loss weight {name} must be >= 0, got {value}")


@dataclass(frozen=True, kw_only=True)
class MotionTrainConfig:
    data_dir: Path
    out_dir: Path
    model: MotionConfig | None = None  # None: the defaults, with the dataset's K
    steps: int = 3000
    batch_size: int = 8
    sequence_frames: int = 16
    edge_frames: int = 12  # silent padding a sequence may reach past either clip end
    style_min_frames: int = 50
    style_max_frames: int = 75
    lr: float = 1e-3
    lr_min_ratio: float = 0.1
    warmup_steps: int = 100
    decay_steps: int | None = None  # cosine decay length; None: ``steps``
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    seed: int = 0
    weights: LossWeights = field(default_factory=LossWeights)
    metric_crop_px: int = 256
    # Augmented versions of the train clips' audio (engine.train.audio_augment); None: off.
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    log_every: int = 10
    eval_every: int = 250
    checkpoint_every: int = 500
    progress: bool = True

    def __post_init__(self) -> None:
        positive = {
            "steps": self.steps,
            "batch_size": self.batch_size,
            "sequence_frames": self.sequence_frames,
            "style_min_frames": self.style_min_frames,
            "metric_crop_px": self.metric_crop_px,
            "log_every": self.log_every,
            "eval_every": self.eval_every,
            "checkpoint_every": self.checkpoint_every,
        }
        for name, value in positive.items():
            if value < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if self.sequence_frames < 2:
            raise ValueError("sequence_frames must be >= 2 (the velocity loss needs pairs)")
        if self.style_max_frames < self.style_min_frames:
            raise ValueError("style_max_frames must be >= style_min_frames")
        if self.edge_frames < 0 or self.warmup_steps < 0:
            raise ValueError("edge_frames and warmup_steps must be >= 0")
        if self.lr <= 0 or not 0.0 <= self.lr_min_ratio <= 1.0:
            raise ValueError("need lr > 0 and lr_min_ratio in [0, 1]")
        if self.decay_steps is not None and self.decay_steps < 1:
            raise ValueError("decay_steps must be >= 1")

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["data_dir"] = str(self.data_dir)
        values["out_dir"] = str(self.out_dir)
        values["augment"] = self.augment.to_dict() if self.augment else None
        return values


def learning_rate(config: MotionTrainConfig, step: int) -> float:
    """Linear warm-up, then cosine decay to ``lr * lr_min_ratio`` at ``decay_steps``."""
    if step < config.warmup_steps:
        return config.lr * (step + 1) / config.warmup_steps
    decay = config.decay_steps or config.steps
    progress = min(max(step - config.warmup_steps, 0) / max(decay - config.warmup_steps, 1), 1.0)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))
    return config.lr * (config.lr_min_ratio + (1.0 - config.lr_min_ratio) * cosine)


def pixels_per_unit(template: np.ndarray, face_fraction: float, crop_px: int) -> float:
    """Crop pixels per canonical unit (one inter-ocular distance) in a ``crop_px`` crop of
    the dataset's crop layout (eye line to chin spans ``face_fraction`` of the height)."""
    return float(face_fraction * crop_px / float(template[CHIN_TIP, 1]))


class LipGeometry:
    """Lip points and mouth opening from dynamics coefficients, in crop pixels (torch)."""

    def __init__(
        self,
        basis: DynamicsBasis,
        identities: dict[str, np.ndarray],
        px_per_unit: float,
    ) -> None:
        if tuple(int(i) for i in basis.indices[:NUM_LIP_POINTS]) != LIPS:
            raise EngineError("the dynamics basis does not start with the lip points")
        k, n = basis.num_components, basis.num_points
        components = basis.components.reshape(k, n, 3)[:, :NUM_LIP_POINTS]
        self.components = torch.as_tensor(components, dtype=torch.float32)  # (K, 40, 3)
        self.mean = torch.as_tensor(basis.mean.reshape(n, 3)[:NUM_LIP_POINTS], dtype=torch.float32)
        self.identities = {
            subject: torch.as_tensor(shape[:NUM_LIP_POINTS], dtype=torch.float32)
            for subject, shape in identities.items()
        }
        self.px_per_unit = px_per_unit
        self.upper = [LOWER_FACE.index(pair[0]) for pair in INNER_LIP_PAIRS]
        self.lower = [LOWER_FACE.index(pair[1]) for pair in INNER_LIP_PAIRS]

    def displacement_px(self, coefficient_change: Tensor) -> Tensor:
        """(..., K) change of coefficients -> (..., 40, 3) lip-point motion in pixels (the
        basis is linear: the lip error of a prediction is the displacement of its error)."""
        motion = torch.einsum("...k,kpd->...pd", coefficient_change, self.components)
        return motion * self.px_per_unit

    def offsets_px(self, coefficients: Tensor) -> Tensor:
        """(..., K) -> (..., 40, 3) lip offsets from the identity shape, in pixels."""
        return self.displacement_px(coefficients) + self.mean * self.px_per_unit

    def opening_px(self, coefficients: Tensor, subject: str) -> Tensor:
        """(..., K) -> (...) inner-lip gap (mean over three facing pairs) in pixels."""
        identity = self.identities.get(subject)
        if identity is None:
            raise EngineError(f"the dynamics basis has no identity shape for {subject!r}")
        points = self.offsets_px(coefficients) + identity * self.px_per_unit
        gap = points[..., self.lower, :] - points[..., self.upper, :]
        return torch.linalg.vector_norm(gap, dim=-1).mean(dim=-1)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    weight = mask.to(values.dtype)
    return (values * weight).sum() / weight.sum().clamp(min=1.0)


def motion_losses(
    prediction: Tensor,
    batch: MotionBatch,
    *,
    coefficient_std: Tensor,
    lips: LipGeometry,
    weights: LossWeights,
) -> tuple[Tensor, dict[str, float]]:
    """Total loss and its terms for predictions (B, L, K) of a batch."""
    valid = batch.valid
    error = (prediction - batch.target) / coefficient_std
    coef = _masked_mean(error.pow(2).mean(dim=-1), valid)
    lip_error = lips.displacement_px(prediction - batch.target)
    lip_squared = lip_error.pow(2).sum(dim=-1)  # (B, L, 40)
    lip_loss = _masked_mean(lip_squared.mean(dim=-1), valid)
    lip_px = _masked_mean(lip_squared.sqrt().mean(dim=-1), valid)
    pair_valid = valid[:, 1:] & valid[:, :-1]
    velocity = _masked_mean((error[:, 1:] - error[:, :-1]).pow(2).mean(dim=-1), pair_valid)
    silent = valid & batch.silence
    silence = _masked_mean(lip_squared.mean(dim=-1), silent)
    opening_error = torch.stack(
        [
            (lips.opening_px(p, subject) - lips.opening_px(t, subject)).abs()
            for p, t, subject in zip(prediction, batch.target, batch.subjects, strict=True)
        ]
    )  # (B, L)
    frame_weight = valid.to(prediction.dtype) * (1.0 + weights.emphasis * batch.emphasis)
    opening = (opening_error * frame_weight).sum() / frame_weight.sum().clamp(min=1.0)
    total = (
        weights.coefficients * coef
        + weights.lips * lip_loss
        + weights.velocity * velocity
        + weights.silence * silence
        + weights.opening * opening
    )
    terms = {
        "loss": float(total.detach()),
        "coef": float(coef.detach()),
        "lips_px2": float(lip_loss.detach()),
        "lip_px": float(lip_px.detach()),
        "velocity": float(velocity.detach()),
        "silence_px2": float(silence.detach()),
        "opening_px": float(opening.detach()),
        "silence_frac": float(silent.sum()) / max(float(valid.sum()), 1.0),
    }
    return total, terms


def _longest_clip_by_subject(clips: MotionSequences) -> dict[str, int]:
    longest: dict[str, int] = {}
    for number, clip in enumerate(clips.clips):
        best = longest.get(clip.subject)
        if best is None or clip.frames > clips.clips[best].frames:
            longest[clip.subject] = number
    return longest


def evaluation_references(
    train: MotionSequences, evaluated: MotionSequences, frames: int
) -> list[tuple[np.ndarray, np.ndarray]]:
    """A fixed style reference for every evaluated clip: the first ``frames`` frames of the
    longest train clip of the same subject (the clip itself when the subject has none)."""
    longest = _longest_clip_by_subject(train)
    references = []
    for number, clip in enumerate(evaluated.clips):
        if clip.subject in longest:
            references.append(train.reference(longest[clip.subject], 0, frames))
        else:
            references.append(evaluated.reference(number, 0, frames))
    return references


@torch.no_grad()
def subject_styles(
    model: MotionModel, train: MotionSequences, frames: int
) -> dict[str, np.ndarray]:
    """A style code (style_dim,) per subject, from the first ``frames`` frames of the
    subject's longest train clip: a default style when no reference video is at hand."""
    longest = _longest_clip_by_subject(train)
    was_training = model.training
    model.eval()
    styles = {}
    for subject, number in sorted(longest.items()):
        reference, mask = train.reference(number, 0, frames)
        code = model.style(torch.from_numpy(reference)[None], torch.from_numpy(mask)[None])
        styles[subject] = code[0].numpy()
    model.train(was_training)
    return styles


@torch.no_grad()
def predict_clip(
    model: MotionModel, clips: MotionSequences, clip_number: int, reference: Tensor, mask: Tensor
) -> Tensor:
    """(T, K) predictions for every frame of a clip, style from ``reference`` (R, K)."""
    style = model.style(reference[None], mask[None])
    frames = clips.clips[clip_number].frames
    chunks = []
    for first in range(0, frames, EVAL_CHUNK_FRAMES):
        count = min(EVAL_CHUNK_FRAMES, frames - first)
        mel, _, _, _ = clips.sequence(clip_number, first, count)
        chunks.append(model.transformer.forward_sequence(torch.from_numpy(mel)[None], style)[0])
    return torch.cat(chunks)


@torch.no_grad()
def evaluate_motion(
    model: MotionModel,
    clips: MotionSequences,
    references: list[tuple[np.ndarray, np.ndarray]],
    lips: LipGeometry,
) -> dict[str, float]:
    """Metrics over the valid frames of all ``clips`` (model in eval mode):
    ``coef`` (normalised squared error, as in training), ``coef_l2`` (raw squared error),
    ``lip_px`` (mean 3D lip-point distance in pixels), ``silence_gap_px`` and
    ``silence_gap_target_px`` (mean inner-lip gap on silent frames, predicted and tracked)."""
    was_training = model.training
    model.eval()
    coefficient_std = model.transformer.coefficient_std
    sums = dict.fromkeys(("coef", "coef_l2", "lip_px"), 0.0)
    gap_sum = gap_target_sum = 0.0
    count = silent_count = 0
    for number, clip in enumerate(clips.clips):
        reference, mask = references[number]
        prediction = predict_clip(
            model, clips, number, torch.from_numpy(reference), torch.from_numpy(mask)
        )
        valid = torch.from_numpy(clip.valid)
        target = torch.from_numpy(clip.coefficients)[valid]
        predicted = prediction[valid]
        sums["coef"] += float((((predicted - target) / coefficient_std) ** 2).mean(dim=-1).sum())
        sums["coef_l2"] += float(((predicted - target) ** 2).mean(dim=-1).sum())
        difference = lips.displacement_px(predicted - target)
        sums["lip_px"] += float(torch.linalg.vector_norm(difference, dim=-1).mean(dim=-1).sum())
        count += int(valid.sum())
        silent = torch.from_numpy(clip.silence)[valid]
        if bool(silent.any()):
            gap_sum += float(lips.opening_px(predicted[silent], clip.subject).sum())
            gap_target_sum += float(lips.opening_px(target[silent], clip.subject).sum())
            silent_count += int(silent.sum())
    model.train(was_training)
    if count == 0:
        raise EngineError(f"the {clips.split} split has no valid frames to evaluate on")
    metrics = {name: value / count for name, value in sums.items()}
    if silent_count:
        metrics["silence_gap_px"] = gap_sum / silent_count
        metrics["silence_gap_target_px"] = gap_target_sum / silent_count
    return metrics


def _data_description(
    config: MotionTrainConfig, train: MotionSequences, heldout: MotionSequences
) -> dict[str, Any]:
    return {
        "dataset": str(Path(config.data_dir).resolve()),
        "clips": {"train": len(train), "heldout": len(heldout)},
        "frames": {"train": train.total_frames, "heldout": heldout.total_frames},
        "minutes_by_source": {
            "train": train.minutes_by_source(),
            "heldout": heldout.minutes_by_source(),
        },
        "subjects": sorted({clip.subject for clip in train.clips + heldout.clips}),
        "dynamics": train.header.dynamics,
    }


def _save_state(
    path: Path,
    model: MotionModel,
    optimizer: torch.optim.Optimizer,
    step: int,
    config: MotionTrainConfig,
) -> None:
    tensors = {f"model.{name}": value for name, value in model.state_dict().items()}
    optimizer_tensors, optimizer_scalars = flatten_state(optimizer.state_dict(), "optimizer.")
    tensors.update(optimizer_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    header = {
        "kind": STATE_KIND,
        "step": step,
        "optimizer": optimizer_scalars,
        "motion_config": model.config.to_dict(),
        "train_config": config.to_dict(),
    }
    save_checkpoint(path, tensors, header)


def _load_state(
    path: Path, model: MotionModel, optimizer: torch.optim.Optimizer, config: MotionTrainConfig
) -> int:
    tensors, header = load_checkpoint(path)
    if header.get("kind") != STATE_KIND:
        raise EngineError(f"{path} is not a motion training state")
    if header.get("motion_config") != model.config.to_dict():
        raise EngineError(
            f"{path} was trained with another model config ({header.get('motion_config')}); "
            "use another out_dir or the same model config to resume"
        )
    previous = header.get("train_config", {})
    changed = sorted(
        name
        for name, value in config.to_dict().items()
        if name not in ("steps", "progress", "out_dir") and previous.get(name) != value
    )
    if changed:
        log.warning("resuming %s with changed training settings: %s", path, ", ".join(changed))
    model_state = {
        name.removeprefix("model."): value
        for name, value in tensors.items()
        if name.startswith("model.")
    }
    model.load_state_dict(model_state, strict=True)
    optimizer.load_state_dict(unflatten_state(tensors, header["optimizer"], "optimizer."))
    torch.set_rng_state(tensors["rng.torch"])
    return int(header["step"])


def train_motion(config: MotionTrainConfig) -> Path:
    """Train (or resume training) and return the path of the final checkpoint.

    Threads are left to the caller (``torch.set_num_threads``). Seeds are fixed from
    ``config.seed``; the global torch RNG is reseeded.
    """
    out_dir = Path(config.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    basis, template, identities = read_basis(config.data_dir)
    model_config = config.model or MotionConfig(num_coefficients=basis.num_components)
    if model_config.num_coefficients != basis.num_components:
        raise EngineError(
            f"the model predicts {model_config.num_coefficients} coefficients, the dataset's "
            f"dynamics basis has {basis.num_components}"
        )
    train = MotionSequences(config.data_dir, "train", model_config, augment=config.augment)
    heldout = MotionSequences(config.data_dir, "heldout", model_config)
    if not train.clips:
        raise EngineError(f"{config.data_dir} has no train clips")
    header = train.header
    px_per_unit = pixels_per_unit(template, header.crop.face_fraction, config.metric_crop_px)
    lips = LipGeometry(basis, identities, px_per_unit)

    torch.manual_seed(config.seed)
    model = MotionModel(model_config)
    coefficient_mean, coefficient_std = train.coefficient_statistics()
    model.set_statistics(
        mel_mean=np.asarray(header.mel_mean),
        mel_std=np.asarray(header.mel_std),
        coefficient_mean=coefficient_mean,
        coefficient_std=coefficient_std,
    )
    # Weight decay on weight matrices only; biases (among them the scale-1 biases of the
    # adaptive norms), the query token and the learned positions are not decayed.
    no_decay = {"transformer.positions"}
    named = list(model.named_parameters())
    decayed = [p for name, p in named if p.ndim >= 2 and name not in no_decay]
    kept = [p for name, p in named if p.ndim < 2 or name in no_decay]
    optimizer = torch.optim.AdamW(
        [
            {"params": decayed, "weight_decay": config.weight_decay},
            {"params": kept, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )
    state_path = out_dir / STATE_NAME
    loss_log = LossLog(out_dir / LOG_NAME)
    step = 0
    if state_path.is_file():
        step = _load_state(state_path, model, optimizer, config)
        log.info("resuming motion training from step %d (%s)", step, state_path)
    loss_log.truncate_after(step)
    log.info(
        "motion model: %d parameters; %d train clips (%d frames), %d held-out clips; "
        "%.1f px per inter-ocular unit at %d px",
        count_parameters(model),
        len(train),
        train.total_frames,
        len(heldout),
        px_per_unit,
        config.metric_crop_px,
    )
    references = evaluation_references(train, heldout, config.style_max_frames)
    std_tensor = model.transformer.coefficient_std.clone()
    model.train()
    metrics: dict[str, float] = {}
    interval: dict[str, list[float]] = {}
    progress = tqdm(
        total=config.steps,
        initial=step,
        desc="motion",
        unit="step",
        disable=not config.progress,
        dynamic_ncols=True,
    )
    try:
        while step < config.steps:
            rng = np.random.default_rng([config.seed, step])
            batch = train.sample(
                rng,
                batch_size=config.batch_size,
                frames=config.sequence_frames,
                edge_frames=config.edge_frames,
                style_frames=(config.style_min_frames, config.style_max_frames),
            )
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(config, step)
            prediction = model.forward_sequence(batch.mel, batch.reference, batch.reference_mask)
            loss, terms = motion_losses(
                prediction, batch, coefficient_std=std_tensor, lips=lips, weights=config.weights
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
            optimizer.step()
            step += 1
            progress.update(1)
            for name, value in terms.items():
                interval.setdefault(name, []).append(value)
            if step % config.log_every == 0 or step == config.steps:
                averages = {name: float(np.mean(values)) for name, values in interval.items()}
                loss_log.write(step, averages, lr=learning_rate(config, step - 1))
                progress.set_postfix(
                    loss=f"{averages['loss']:.3f}", lip_px=f"{averages['lip_px']:.2f}"
                )
                interval.clear()
            if heldout.clips and (step % config.eval_every == 0 or step == config.steps):
                metrics = evaluate_motion(model, heldout, references, lips)
                loss_log.write(step, {f"heldout_{name}": value for name, value in metrics.items()})
                log.info(
                    "step %d: held-out coef %.4f, lip error %.2f px",
                    step,
                    metrics["coef"],
                    metrics["lip_px"],
                )
            if step % config.checkpoint_every == 0 or step == config.steps:
                _save_state(state_path, model, optimizer, step, config)
                loss_log.plot(out_dir / PLOT_NAME, title=f"motion model, {out_dir.name}")
    finally:
        progress.close()

    if heldout.clips and not metrics:
        metrics = evaluate_motion(model, heldout, references, lips)
    if not (out_dir / PLOT_NAME).is_file():
        loss_log.plot(out_dir / PLOT_NAME, title=f"motion model, {out_dir.name}")
    final = out_dir / FINAL_NAME
    model.eval()
    save_motion_checkpoint(
        final,
        model,
        basis=basis,
        template=template,
        identities=identities,
        styles=subject_styles(model, train, config.style_max_frames),
        header={
            "mel": header.mel.to_dict(),
            "mel_mean": [float(value) for value in header.mel_mean],
            "mel_std": [float(value) for value in header.mel_std],
            "coefficient_mean": model.transformer.coefficient_mean.tolist(),
            "coefficient_std": model.transformer.coefficient_std.tolist(),
            "crop": asdict(header.crop),
            "px_per_unit": px_per_unit,
            "metric_crop_px": config.metric_crop_px,
            "parameters": count_parameters(model),
            "training": {
                "step": step,
                "config": config.to_dict(),
                "heldout_metrics": metrics,
            },
            "data": _data_description(config, train, heldout),
        },
    )
    log.info("motion model written to %s", final)
    return final
