"""Training the avatar generator by self-reconstruction on a prepared dataset.

Each sample is a frame of a clip: its crop with the lower face masked, another frame of the
same clip as the reference, the geometry map and the coefficients of the frame's dynamics
(tracked, or from a ``dynamics_source`` in a joint stage). The generator reconstructs the
frame; the loss is

    l1_weight * L1 + ssim_weight * (1 - MS-SSIM) [+ adversarial_weight * hinge GAN]

on the composite (:func:`engine.generator.composite`: the crop blended over the frame with
the generator's mask, as at inference), where the L1 weight is the blend support with the
lip area (from the frame's landmarks) counted ``1 + mouth_weight`` times, and MS-SSIM is
averaged over the blend support. A small patch discriminator on the lower-face box (hinge
loss) joins in from step ``adversarial_start``, once the reconstruction stage has settled.
Held-out PSNR/SSIM always use the tracked dynamics.

Batches are grouped by clip: a sliding window of ``active_clips`` clips (in a seeded
permutation, one clip swapped every ``clip_swap_every`` steps) stays decoded in the
dataset's cache, and every batch takes ``frames_per_clip`` frames from each of
``clips_per_batch`` of them. Every random choice is a function of (seed, step), so a resumed
run draws exactly the batches an uninterrupted one would.

Files in ``output``: ``state.safetensors`` (resumable: weights, optimisers, step, RNG),
``losses.jsonl`` + ``losses.png`` (train losses, held-out PSNR/SSIM of the face region),
``generator.safetensors`` (the final model: weights and header, see
:func:`engine.generator.save_generator`).
"""

from __future__ import annotations

import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from engine.data.prep.dataset import TalkingHeadDataset, read_basis, read_header
from engine.errors import EngineError
from engine.generator import (
    AvatarGenerator,
    GeneratorConfig,
    composite,
    load_generator,
    lower_face_region,
    mask_lower_face,
    save_generator,
)
from engine.geometry_map import GeometryMapper
from engine.train.crop_projections import fit_subject_projections
from engine.train.logbook import LossLog
from engine.train.losses import (
    PatchDiscriminator,
    hinge_discriminator_loss,
    hinge_generator_loss,
    mouth_weight_map,
    ms_ssim,
    psnr,
    region_box,
    ssim,
    weighted_l1,
)
from engine.weights import flatten_state, load_checkpoint, save_checkpoint, unflatten_state

log = logging.getLogger(__name__)

STATE_NAME = "state.safetensors"
FINAL_NAME = "generator.safetensors"
LOG_NAME = "losses.jsonl"
PLOT_NAME = "losses.png"

Batch = dict[str, Any]
DynamicsSource = Callable[[Mapping[str, Any], int], torch.Tensor]
"""Given a collated batch (``mel``, ``dynamics``, ``clip_id``, ``frame``, ...) and the
training step, returns the (B, K) coefficients the generator should render instead of the
tracked ones (any randomness must be a function of the step, so that a resumed run draws
what an uninterrupted one would). Gradients flow from the generator's style path into the
returned tensor; the geometry map is drawn from its values without gradient."""


@dataclass(frozen=True, kw_only=True)
class GeneratorTrainConfig:
    dataset: Path
    output: Path
    model: GeneratorConfig = field(default_factory=GeneratorConfig)
    steps: int = 4000
    clips_per_batch: int = 2
    frames_per_clip: int = 4
    active_clips: int = 6
    clip_swap_every: int = 20
    learning_rate: float = 1e-3
    discriminator_learning_rate: float = 4e-4
    betas: tuple[float, float] = (0.5, 0.99)
    l1_weight: float = 1.0
    ssim_weight: float = 1.0
    mouth_weight: float = 4.0
    adversarial_weight: float = 0.05
    adversarial_start: int = 5000
    discriminator_width: int = 32
    log_every: int = 25
    eval_every: int = 500
    eval_frames: int = 48
    checkpoint_every: int = 500
    seed: int = 0
    threads: int = 0  # torch intra-op threads while training; 0 keeps the current setting
    initial_weights: Path | None = None  # a generator checkpoint to start from (fine-tuning)
    description: str = ""

    def __post_init__(self) -> None:
        positive = (
            "steps", "clips_per_batch", "frames_per_clip", "active_clips", "clip_swap_every",
            "log_every", "eval_every", "eval_frames", "checkpoint_every", "discriminator_width",
        )  # fmt: skip
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.active_clips < self.clips_per_batch:
            raise ValueError("active_clips must be at least clips_per_batch")
        if self.learning_rate <= 0 or self.discriminator_learning_rate <= 0:
            raise ValueError("learning rates must be positive")
        for name in ("l1_weight", "ssim_weight", "mouth_weight", "adversarial_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be non-negative")
        if self.adversarial_start < 0:
            raise ValueError("adversarial_start must be non-negative")
        if self.threads < 0:
            raise ValueError("threads must be non-negative")

    @property
    def batch_size(self) -> int:
        return self.clips_per_batch * self.frames_per_clip

    def to_dict(self) -> dict[str, Any]:
        values = asdict(self)
        values["dataset"] = str(self.dataset)
        values["output"] = str(self.output)
        values["initial_weights"] = (
            None if self.initial_weights is None else str(self.initial_weights)
        )
        values["model"] = self.model.to_dict()
        values["betas"] = list(self.betas)
        return values

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> GeneratorTrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"unknown generator training keys {sorted(unknown)}")
        items = dict(values)
        items["dataset"] = Path(items["dataset"])
        items["output"] = Path(items["output"])
        if items.get("initial_weights") is not None:
            items["initial_weights"] = Path(items["initial_weights"])
        if "model" in items:
            items["model"] = GeneratorConfig.from_dict(items["model"])
        if "betas" in items:
            betas = items["betas"]
            items["betas"] = (float(betas[0]), float(betas[1]))
        return cls(**items)


class ClipBatchSampler:
    """Dataset item indices of the batch of each step, grouped by clip (see module doc)."""

    def __init__(
        self,
        clip_items: list[np.ndarray],
        *,
        clips_per_batch: int,
        frames_per_clip: int,
        active_clips: int,
        swap_every: int,
        seed: int,
    ) -> None:
        self.clip_items = [items for items in clip_items if items.size > 0]
        if not self.clip_items:
            raise EngineError("the training split has no valid frames; prepare more data")
        self.clips_per_batch = clips_per_batch
        self.batch_size = clips_per_batch * frames_per_clip
        self.active_clips = active_clips
        self.swap_every = swap_every
        self.seed = seed

    def _clip_at(self, position: int) -> int:
        count = len(self.clip_items)
        order = np.random.default_rng([self.seed, 0, position // count]).permutation(count)
        return int(order[position % count])

    def active(self, step: int) -> list[int]:
        """The clips kept decoded at ``step`` (distinct, in stream order)."""
        first = step // self.swap_every
        pool: list[int] = []
        position = first
        wanted = min(self.active_clips, len(self.clip_items))
        while len(pool) < wanted:
            clip = self._clip_at(position)
            if clip not in pool:
                pool.append(clip)
            position += 1
        return pool

    def batch(self, step: int) -> list[int]:
        pool = self.active(step)
        rng = np.random.default_rng([self.seed, 1, step])
        chosen = rng.choice(len(pool), size=min(self.clips_per_batch, len(pool)), replace=False)
        shares = np.full(len(chosen), self.batch_size // len(chosen))
        shares[: self.batch_size - int(shares.sum())] += 1
        indices: list[int] = []
        for slot, share in zip(chosen, shares, strict=True):
            items = self.clip_items[pool[int(slot)]]
            picked = rng.choice(items.size, size=int(share), replace=items.size < share)
            indices.extend(int(items[i]) for i in picked)
        return indices


def _collate(samples: list[dict[str, Any]]) -> Batch:
    batch: Batch = {}
    for key, value in samples[0].items():
        if isinstance(value, torch.Tensor):
            batch[key] = torch.stack([sample[key] for sample in samples])
        else:
            batch[key] = [sample[key] for sample in samples]
    return batch


def geometry_maps(
    mappers: Mapping[str, GeometryMapper], subjects: list[str], coefficients: torch.Tensor
) -> torch.Tensor:
    """(B, G, S, S) geometry maps of (B, K) coefficients, sample ``i`` drawn with the
    mapper of ``subjects[i]`` (no gradient: the map is a rasterisation)."""
    values = coefficients.detach().cpu().numpy()
    maps = [mappers[subject](row) for row, subject in zip(values, subjects, strict=True)]
    return torch.from_numpy(np.stack(maps))


def _clip_items(dataset: TalkingHeadDataset) -> list[np.ndarray]:
    """Dataset item indices of each clip's valid frames."""
    clip_numbers = dataset.sample_clips
    return [np.flatnonzero(clip_numbers == number) for number in range(len(dataset.clips))]


@dataclass(kw_only=True)
class _Trainer:
    config: GeneratorTrainConfig
    model_config: GeneratorConfig
    generator: AvatarGenerator
    discriminator: PatchDiscriminator
    generator_optimiser: torch.optim.Optimizer
    discriminator_optimiser: torch.optim.Optimizer
    mappers: dict[str, GeometryMapper]
    subject_of_clip: dict[str, str]
    support: torch.Tensor  # (1, 1, S, S) blend support
    box: tuple[int, int, int, int]  # discriminator's window (top, bottom, left, right)

    def render(
        self, batch: Batch, coefficients: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(composite, crop, mask) of a batch."""
        masked = mask_lower_face(batch["crop"], self.model_config)
        geometry = geometry_maps(
            self.mappers, [self.subject_of_clip[c] for c in batch["clip_id"]], coefficients
        )
        crop, mask = self.generator(masked, batch["reference"], geometry, coefficients)
        return composite(crop, mask, batch["crop"]), crop, mask

    def window(self, images: torch.Tensor) -> torch.Tensor:
        top, bottom, left, right = self.box
        return images[:, :, top:bottom, left:right]

    def step(
        self, batch: Batch, coefficients: torch.Tensor, *, adversarial: bool
    ) -> dict[str, float]:
        config = self.config
        target = batch["crop"]
        self.generator.train()
        output, _, _ = self.render(batch, coefficients)
        mouth = mouth_weight_map(batch["landmarks"], self.model_config.image_size)
        support = self.support.expand(target.shape[0], -1, -1, -1)
        l1 = weighted_l1(output, target, support * (1.0 + config.mouth_weight * mouth))
        structural = 1.0 - ms_ssim(output, target, weight=support).mean()
        loss = config.l1_weight * l1 + config.ssim_weight * structural
        values = {"l1": float(l1.detach()), "ms_ssim_loss": float(structural.detach())}
        if adversarial:
            self.discriminator.requires_grad_(False)
            generator_adversarial = hinge_generator_loss(self.discriminator(self.window(output)))
            self.discriminator.requires_grad_(True)
            loss = loss + config.adversarial_weight * generator_adversarial
            values["g_adv"] = float(generator_adversarial.detach())
        self.generator_optimiser.zero_grad(set_to_none=True)
        loss.backward()
        self.generator_optimiser.step()
        values["loss"] = float(loss.detach())
        if adversarial:
            real = self.discriminator(self.window(target))
            fake = self.discriminator(self.window(output.detach()))
            discriminator_loss = hinge_discriminator_loss(real, fake)
            self.discriminator_optimiser.zero_grad(set_to_none=True)
            discriminator_loss.backward()
            self.discriminator_optimiser.step()
            values["d_loss"] = float(discriminator_loss.detach())
        return values


@torch.no_grad()
def evaluate_reconstruction(
    generator: AvatarGenerator,
    mappers: Mapping[str, GeometryMapper],
    dataset: TalkingHeadDataset,
    items: list[int],
    *,
    batch_size: int = 8,
) -> dict[str, float]:
    """Self-reconstruction of dataset items (tracked dynamics, the dataset's reference
    frames): mean PSNR and SSIM over the blend support (the generated face region)."""
    config = generator.config
    generator.eval()
    support = lower_face_region(config, config.image_size, margin=config.blend_margin)
    subject_of_clip = {clip.id: clip.subject for clip in dataset.clips}
    psnrs: list[torch.Tensor] = []
    ssims: list[torch.Tensor] = []
    for start in range(0, len(items), batch_size):
        batch = _collate([dataset[i] for i in items[start : start + batch_size]])
        subjects = [subject_of_clip[clip_id] for clip_id in batch["clip_id"]]
        geometry = geometry_maps(mappers, subjects, batch["dynamics"])
        masked = mask_lower_face(batch["crop"], config)
        crop, mask = generator(masked, batch["reference"], geometry, batch["dynamics"])
        output = composite(crop, mask, batch["crop"]).clamp(0.0, 1.0)
        weight = support.expand(output.shape[0], -1, -1, -1)
        psnrs.append(psnr(output, batch["crop"], weight=weight))
        ssims.append(ssim(output, batch["crop"], weight=weight))
    return {
        "heldout_psnr": float(torch.cat(psnrs).mean()),
        "heldout_ssim": float(torch.cat(ssims).mean()),
    }


def _optimiser_tensors(
    optimiser: torch.optim.Optimizer, prefix: str
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    return flatten_state(optimiser.state_dict(), prefix)


def _save_state(path: Path, trainer: _Trainer, step: int) -> None:
    tensors: dict[str, torch.Tensor] = {}
    for name, value in trainer.generator.state_dict().items():
        tensors[f"generator.{name}"] = value
    for name, value in trainer.discriminator.state_dict().items():
        tensors[f"discriminator.{name}"] = value
    generator_tensors, generator_scalars = _optimiser_tensors(
        trainer.generator_optimiser, "optim_g."
    )
    discriminator_tensors, discriminator_scalars = _optimiser_tensors(
        trainer.discriminator_optimiser, "optim_d."
    )
    tensors.update(generator_tensors)
    tensors.update(discriminator_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    header = {
        "kind": "avatar_generator_training_state",
        "step": step,
        "model": trainer.model_config.to_dict(),
        "optim_g": generator_scalars,
        "optim_d": discriminator_scalars,
    }
    save_checkpoint(path, tensors, header)


def _load_state(path: Path, trainer: _Trainer) -> int:
    tensors, header = load_checkpoint(path)
    if header.get("kind") != "avatar_generator_training_state":
        raise EngineError(f"{path} is not a generator training state; move it away")
    if GeneratorConfig.from_dict(header["model"]) != trainer.model_config:
        raise EngineError(
            f"{path} was written for another generator config; use a new output folder"
        )

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    trainer.generator.load_state_dict(part("generator."))
    trainer.discriminator.load_state_dict(part("discriminator."))
    trainer.generator_optimiser.load_state_dict(
        unflatten_state(tensors, header["optim_g"], "optim_g.")
    )
    trainer.discriminator_optimiser.load_state_dict(
        unflatten_state(tensors, header["optim_d"], "optim_d.")
    )
    torch.set_rng_state(tensors["rng.torch"])
    return int(header["step"])


def _load_initial_weights(path: Path, generator: AvatarGenerator) -> None:
    loaded = load_generator(path)
    if loaded.config != generator.config:
        raise EngineError(
            f"{path} holds a generator with another config ({loaded.config}); "
            f"this run's config is {generator.config}"
        )
    generator.load_state_dict(loaded.generator.state_dict())
    log.info("starting from the weights of %s", path)


def _eval_items(dataset: TalkingHeadDataset | None, count: int) -> list[int]:
    if dataset is None or len(dataset) == 0:
        return []
    return sorted({int(i) for i in np.linspace(0, len(dataset) - 1, min(count, len(dataset)))})


def _training_description(
    config: GeneratorTrainConfig, train: TalkingHeadDataset, heldout: TalkingHeadDataset | None
) -> dict[str, Any]:
    header = train.header
    return {
        "description": config.description,
        "dataset": str(config.dataset),
        "train_clips": len(train.clips),
        "train_frames": len(train),
        "heldout_clips": 0 if heldout is None else len(heldout.clips),
        "heldout_frames": 0 if heldout is None else len(heldout),
        "subjects": sorted({clip.subject for clip in header.clips}),
        "sources": sorted({str(clip.meta.get("source", "unknown")) for clip in header.clips}),
        "crop_size": header.crop.size,
        "crop": asdict(header.crop),
        "dynamics": header.dynamics,
    }


def train_generator(
    config: GeneratorTrainConfig, *, dynamics_source: DynamicsSource | None = None
) -> Path:
    """Train (or resume training) the generator; returns the final checkpoint's path.

    Rerunning with the same ``output`` resumes from ``state.safetensors`` (a finished run
    returns at once); a larger ``steps`` continues a finished run.
    """
    previous_threads = torch.get_num_threads()
    if config.threads:
        torch.set_num_threads(config.threads)
    try:
        return _train(config, dynamics_source)
    finally:
        torch.set_num_threads(previous_threads)


def _train(config: GeneratorTrainConfig, dynamics_source: DynamicsSource | None) -> Path:
    output = Path(config.output)
    output.mkdir(parents=True, exist_ok=True)
    state_path = output / STATE_NAME
    final_path = output / FINAL_NAME
    torch.manual_seed(config.seed)  # weight initialisation; batches are seeded per step

    header = read_header(config.dataset)
    basis, _, identities = read_basis(config.dataset)
    model_config = config.model
    if model_config.num_coefficients != basis.num_components:
        log.info(
            "the dataset has %d dynamics coefficients; the generator takes that many",
            basis.num_components,
        )
        model_config = replace(model_config, num_coefficients=basis.num_components)
    size = model_config.image_size
    train_set = TalkingHeadDataset(
        config.dataset, "train", image_size=size, cache_clips=config.active_clips + 1,
        seed=config.seed,
    )  # fmt: skip
    heldout_set = (
        TalkingHeadDataset(config.dataset, "heldout", image_size=size, cache_clips=2)
        if header.clips_in("heldout")
        else None
    )
    if heldout_set is None:
        log.warning("the dataset has no held-out clips; no held-out PSNR/SSIM will be logged")
    projections = fit_subject_projections(config.dataset)
    mappers = {
        subject: GeometryMapper(
            basis=basis, identity=identities[subject], projection=projection, size=size
        )
        for subject, projection in projections.items()
    }
    coefficient_std = header.dynamics.get("coefficient_std")

    generator = AvatarGenerator(model_config)
    if coefficient_std is not None and len(coefficient_std) == basis.num_components:
        generator.set_coefficient_std([max(float(v), 1e-6) for v in coefficient_std])
    discriminator = PatchDiscriminator(width=config.discriminator_width)
    support = lower_face_region(model_config, size, margin=model_config.blend_margin)
    trainer = _Trainer(
        config=config,
        model_config=model_config,
        generator=generator,
        discriminator=discriminator,
        generator_optimiser=torch.optim.Adam(
            generator.parameters(), lr=config.learning_rate, betas=config.betas
        ),
        discriminator_optimiser=torch.optim.Adam(
            discriminator.parameters(), lr=config.discriminator_learning_rate, betas=config.betas
        ),
        mappers=mappers,
        subject_of_clip={clip.id: clip.subject for clip in header.clips},
        support=support,
        box=region_box(support),
    )
    loss_log = LossLog(output / LOG_NAME)
    start = 0
    if state_path.is_file():
        start = _load_state(state_path, trainer)
        loss_log.truncate_after(start)
        log.info("resuming generator training from step %d (%s)", start, state_path)
    else:
        if loss_log.path.exists():
            loss_log.path.unlink()
        if config.initial_weights is not None:
            _load_initial_weights(config.initial_weights, generator)

    sampler = ClipBatchSampler(
        _clip_items(train_set),
        clips_per_batch=config.clips_per_batch,
        frames_per_clip=config.frames_per_clip,
        active_clips=config.active_clips,
        swap_every=config.clip_swap_every,
        seed=config.seed,
    )
    eval_items = _eval_items(heldout_set, config.eval_frames)
    sums: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    began = time.perf_counter()
    with tqdm(
        total=config.steps, initial=start, desc="generator", unit="step", dynamic_ncols=True
    ) as progress:
        for step in range(start, config.steps):
            train_set.set_epoch(step)
            batch = _collate([train_set[i] for i in sampler.batch(step)])
            coefficients = (
                batch["dynamics"] if dynamics_source is None else dynamics_source(batch, step)
            )
            values = trainer.step(batch, coefficients, adversarial=step >= config.adversarial_start)
            if not all(math.isfinite(value) for value in values.values()):
                raise EngineError(
                    f"generator training diverged at step {step + 1} ({values}); lower the "
                    "learning rate or resume from the last checkpoint"
                )
            for key, value in values.items():
                sums[key] += value
                counts[key] += 1
            done = step + 1
            progress.update(1)
            if done % config.log_every == 0 or done == config.steps:
                means = {key: sums[key] / counts[key] for key in sums}
                progress.set_postfix(
                    l1=f"{means['l1']:.4f}", ms_ssim=f"{means['ms_ssim_loss']:.3f}"
                )
                record: dict[str, float] = dict(means)
                if eval_items and (done % config.eval_every == 0 or done == config.steps):
                    assert heldout_set is not None
                    record.update(
                        evaluate_reconstruction(generator, mappers, heldout_set, eval_items)
                    )
                seconds = time.perf_counter() - began
                loss_log.write(done, record, steps_per_second=round((done - start) / seconds, 3))
                sums.clear()
                counts.clear()
            if done % config.checkpoint_every == 0 and done < config.steps:
                _save_state(state_path, trainer, done)
                loss_log.plot(output / PLOT_NAME, title="generator")
    if start < config.steps or not final_path.is_file():
        _save_state(state_path, trainer, config.steps)
        loss_log.plot(output / PLOT_NAME, title="generator")
        last = loss_log.read()
        training = _training_description(config, train_set, heldout_set)
        training.update(
            {
                "steps": config.steps,
                "batch_size": config.batch_size,
                "train_config": config.to_dict(),
                "final_log": last[-1] if last else {},
                "dynamics_source": "tracked" if dynamics_source is None else "predicted",
            }
        )
        save_generator(
            final_path,
            trainer.generator,
            basis=basis,
            identities={subject: identities[subject] for subject in projections},
            projections=projections,
            training=training,
        )
        log.info("generator written to %s", final_path)
    return final_path
