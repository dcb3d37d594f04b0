"""Checkpoints: safetensors with a self-describing JSON header. Never pickle, never download.

A checkpoint is one ``.safetensors`` file whose metadata holds ``"presenter"``: a JSON
object with the model configs, the dynamics basis description, mel statistics and a
description of the training data. Optimiser state for resuming lives in a second file of
the same kind (tensors flattened by name, the scalars in the JSON header).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from engine.errors import EngineError

HEADER_KEY = "presenter"
FORMAT_VERSION = 1


def presenter_home() -> Path:
    """Where user models and caches live: ``$PRESENTER_HOME`` or ``~/.cache/presenter``."""
    return Path(os.environ.get("PRESENTER_HOME", Path.home() / ".cache" / "presenter"))


def save_checkpoint(
    path: Path, tensors: Mapping[str, torch.Tensor], header: Mapping[str, Any]
) -> None:
    """Write tensors and a JSON header atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    record = {"format_version": FORMAT_VERSION, **header}
    contiguous = {name: t.detach().contiguous().cpu() for name, t in tensors.items()}
    save_file(contiguous, str(partial), metadata={HEADER_KEY: json.dumps(record)})
    partial.replace(path)


def load_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and header of a checkpoint; a clear error for a missing or foreign file."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}  # noqa: SIM118
    except Exception as exc:  # safetensors raises several types for a damaged file
        raise EngineError(f"{path} is not a readable safetensors checkpoint: {exc}") from exc
    if HEADER_KEY not in metadata:
        raise EngineError(f"{path} is a safetensors file but not a presenter checkpoint")
    return tensors, json.loads(metadata[HEADER_KEY])


def flatten_state(
    state: Mapping[str, Any], prefix: str = ""
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split a nested state dict (e.g. an optimiser's) into tensors and JSON scalars."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for key, value in state.items():
        name = f"{prefix}{key}"
        if isinstance(value, torch.Tensor):
            tensors[name] = value
        elif isinstance(value, Mapping):
            sub_tensors, sub_scalars = flatten_state(value, f"{name}.")
            tensors.update(sub_tensors)
            scalars[str(key)] = sub_scalars
        else:
            scalars[str(key)] = value
    return tensors, scalars


def unflatten_state(
    tensors: Mapping[str, torch.Tensor], scalars: Mapping[str, Any], prefix: str = ""
) -> dict[str, Any]:
    """The inverse of :func:`flatten_state` (integer-like keys become ints again)."""
    state: dict[Any, Any] = {}
    for key, value in scalars.items():
        target: Any = int(key) if key.isdigit() else key
        if isinstance(value, dict):
            state[target] = unflatten_state(tensors, value, f"{prefix}{key}.")
        else:
            state[target] = value
    for name, tensor in tensors.items():
        if not name.startswith(prefix):
            continue
        rest = name[len(prefix) :]
        if "." not in rest:
            state[int(rest) if rest.isdigit() else rest] = tensor
    return state
