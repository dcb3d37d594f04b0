"""A complete avatar model: the motion model and the generator that renders its dynamics.

A model is a folder with ``motion.safetensors`` (:func:`engine.motion.save_motion_checkpoint`)
and ``generator.safetensors`` (:func:`engine.generator.save_generator`), trained on the same
prepared dataset (one dynamics basis). The project ships one, ``default``, inside the
package (``engine/assets/models/default``), so ``load_avatar_model()`` works on a fresh
install with nothing downloaded. A name other than a shipped one is a path to a folder, or
a folder under ``$PRESENTER_HOME/models``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from engine.errors import EngineError
from engine.face_crop import CropConfig
from engine.frames import Timeline
from engine.generator import LoadedGenerator, blend_support_box, load_generator, mask_lower_face
from engine.generator_parts import feature_bytes
from engine.motion import MotionCheckpoint, load_motion_checkpoint
from engine.weights import presenter_home

DEFAULT_MODEL = "default"
MOTION_FILE = "motion.safetensors"
GENERATOR_FILE = "generator.safetensors"


def shipped_models_dir() -> Path:
    return Path(__file__).parent / "assets" / "models"


def shipped_model_names() -> list[str]:
    root = shipped_models_dir()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MOTION_FILE).is_file())


def model_folder(name: str | Path = DEFAULT_MODEL) -> Path:
    """The folder of a shipped model name, a folder path, or a name under
    ``$PRESENTER_HOME/models``."""
    candidates = [Path(name)]
    if len(Path(name).parts) == 1:
        candidates = [shipped_models_dir() / str(name), presenter_home() / "models" / str(name)]
        candidates.append(Path(name))
    for folder in candidates:
        if (folder / MOTION_FILE).is_file() and (folder / GENERATOR_FILE).is_file():
            return folder
    raise EngineError(
        f"no avatar model {str(name)!r}: a model is a folder with {MOTION_FILE} and "
        f"{GENERATOR_FILE}; shipped: {', '.join(shipped_model_names()) or 'none'}"
    )


@dataclass(frozen=True, kw_only=True)
class AvatarModel:
    """A loaded model: its two parts, and what an engine needs to know of them (the clock it
    renders on, the crop layout an avatar must be cut in, the generator's masking and blend
    support, the size of its encoder's features), each worked out once, from the model
    itself."""

    name: str
    folder: Path
    motion: MotionCheckpoint
    generator: LoadedGenerator

    @property
    def subjects(self) -> list[str]:
        """Subjects both parts know (the generator renders them, the motion model has a
        default style for them)."""
        return sorted(set(self.generator.projections) & set(self.motion.styles))

    def style(self, subject: str) -> np.ndarray:
        if subject not in self.motion.styles:
            raise EngineError(
                f"model {self.name!r} has no style for {subject!r}; it knows {self.subjects}"
            )
        return self.motion.styles[subject]

    @cached_property
    def timeline(self) -> Timeline:
        """The clock the model renders on: its mel front end's sample rate, cut into video
        frames at its motion model's fps."""
        return self.motion.config.timeline(self.motion.mel.sample_rate)

    @cached_property
    def crop(self) -> CropConfig:
        """The crop layout of the model's training data (the generator's header, else the
        defaults): an avatar's frames must be cut the same way."""
        training = self.generator.header.get("training", {})
        values = training.get("crop")
        if isinstance(values, dict):
            return CropConfig(**values)
        size = training.get("crop_size")
        return CropConfig(size=int(size)) if size else CropConfig()

    @cached_property
    def support_box(self) -> tuple[int, int, int, int]:
        """(top, bottom, left, right) generator pixels where the blend mask can be non-zero
        (:func:`engine.generator.blend_support_box`)."""
        return blend_support_box(self.generator.config)

    @cached_property
    def feature_bytes(self) -> int:
        """Bytes of one crop's encoder feature maps in float32
        (:func:`engine.generator_parts.feature_bytes`)."""
        return feature_bytes(self.generator.config)

    def mask_lower_face(self, crops: np.ndarray) -> np.ndarray:
        """(B, 3, S, S) float32 crops at the generator's size, in [0, 1] -> the same with the
        lower-face hole blacked out: the encoder's view of a target crop."""
        return mask_lower_face(torch.from_numpy(crops), self.generator.config).numpy()


def load_avatar_model(name: str | Path = DEFAULT_MODEL) -> AvatarModel:
    """Load a model (both networks in eval mode); checks that the two parts belong together."""
    folder = model_folder(name)
    motion = load_motion_checkpoint(folder / MOTION_FILE)
    generator = load_generator(folder / GENERATOR_FILE)
    if not motion.basis.same_as(generator.basis):
        raise EngineError(
            f"{folder}: the motion model and the generator use different dynamics bases "
            "(train both on the same prepared dataset)"
        )
    return AvatarModel(name=str(name), folder=folder, motion=motion, generator=generator)
