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
from pathlib import Path

import numpy as np

from engine.errors import EngineError
from engine.generator import LoadedGenerator, load_generator
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
