"""A dynamics basis taken from elsewhere (a model or a prepared dataset) for ``data prep
--basis``: a dataset prepared on its own lands in that model's coordinates."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.prep.dataset import BASIS_NAME, read_basis
from engine.errors import EngineError
from engine.face3d import DynamicsBasis


@dataclass(frozen=True)
class FixedBasis:
    """A dynamics basis, its template and identity shapes taken from elsewhere."""

    basis: DynamicsBasis
    template: np.ndarray
    identities: dict[str, np.ndarray]
    source: str


def load_fixed_basis(path: str | Path) -> FixedBasis:
    """The basis of a motion checkpoint file (``motion.safetensors``, or a folder holding
    one) or of a prepared dataset (its folder or its basis file)."""
    path = Path(path)
    if path.is_dir() and (path / BASIS_NAME).is_file():
        basis, template, identities = read_basis(path)
        return FixedBasis(basis, template, identities, str(path / BASIS_NAME))
    if path.is_file() and path.name == BASIS_NAME:
        basis, template, identities = read_basis(path.parent)
        return FixedBasis(basis, template, identities, str(path))
    checkpoint = path / "motion.safetensors" if path.is_dir() else path
    if not checkpoint.is_file():
        raise EngineError(f"{path}: neither a motion checkpoint nor a prepared dataset")
    from engine.motion import load_motion_checkpoint

    motion = load_motion_checkpoint(checkpoint)
    return FixedBasis(motion.basis, motion.template, dict(motion.identities), str(checkpoint))
