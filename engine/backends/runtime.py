"""What every runtime is: one compiled or loaded graph that runs float32 arrays; how one is
built from its entry in :mod:`engine.backend_registry`; and the one-line errors a runtime or
a backend raises.

A *runtime* (:class:`Runtime`) runs a graph's inputs, numpy float32 arrays in the graph's
input order, and returns its outputs in the graph's output order; a backend
(:mod:`engine.backends.backend`) wraps one with the graph's typed call. Every runtime is
built as ``Runtime(model, options)`` (:class:`RuntimeOptions`), by :func:`build_runtime`.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Literal

import numpy as np
import torch
from torch import nn

from engine.backend_registry import RUNTIMES, RuntimeEntry
from engine.backends.artifact_cache import ArtifactCache
from engine.backends.graphs import Shapes
from engine.errors import EngineError

Precision = Literal["fp32", "fp16"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "fp16")
_REASON_CHARS = 300


class BackendError(EngineError):
    """A backend cannot be built or run here; the message is one line that says why."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


def one_line(message: object, limit: int = _REASON_CHARS) -> str:
    """``message`` (a string or an exception) as one line of at most ``limit`` characters;
    a foreign exception is named by its type and the first line of its message."""
    if isinstance(message, EngineError):  # already says what happened
        message = str(message)
    elif isinstance(message, BaseException):
        text = str(message).strip()
        first = text.splitlines()[0] if text else ""
        message = f"{type(message).__name__}: {first}" if first else type(message).__name__
    text = " ".join(str(message).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_precision(precision: str) -> Precision:
    if precision == "fp32":
        return "fp32"
    if precision == "fp16":
        return "fp16"
    raise BackendError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")


class MissingPackage(BackendError):
    """A runtime's package cannot be imported (:func:`build_runtime` adds how to install it)."""


def import_package(name: str, errors: tuple[type[Exception], ...] = (ImportError,)) -> ModuleType:
    """The package ``name``, or MissingPackage saying why it cannot be imported."""
    try:
        return importlib.import_module(name)
    except errors as exc:
        raise MissingPackage(f"{name} is not usable ({one_line(exc)})") from exc


@dataclass(frozen=True, kw_only=True)
class RuntimeOptions:
    """What a runtime is built for besides the model (checked before it is built)."""

    shapes: Shapes  # the planned input shapes, in the graph's input order
    device: torch.device  # the CPU or a CUDA device that is there
    threads: int | None = None  # intra-op threads of the graph runtimes (None: theirs)
    precision: Precision = "fp32"
    cache: ArtifactCache  # where compiled artefacts go


class Runtime(ABC):
    """One compiled or loaded graph that runs float32 arrays.

    Built as ``Runtime(model, options)``, which sets ``device`` and ``precision``; subclasses
    set, where they have a compiled artefact on disk, ``artifact`` and ``cache_hit``, and
    ``max_batch`` where the runtime was built for a batch range (TensorRT).
    """

    device: str
    precision: Precision
    artifact: Path | None = None
    cache_hit: bool | None = None
    max_batch: int | None = None

    def __init__(self, model: nn.Module, options: RuntimeOptions) -> None:
        self.device = str(options.device)
        self.precision = options.precision

    @abstractmethod
    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Inputs in the graph's order (float32, C-contiguous) -> outputs in its order."""

    def close(self) -> None:  # noqa: B027 -- most runtimes hold nothing to release
        """Release what the runtime holds (sessions, device memory)."""


def build_runtime(entry: RuntimeEntry, model: nn.Module, options: RuntimeOptions) -> Runtime:
    """The runtime ``entry`` for ``model``'s graph, or a BackendError (one line) when it does
    not run on the options' device or precision, or its package is not installed."""
    if options.device.type not in entry.devices:
        where = " or ".join("the CPU" if kind == "cpu" else "CUDA" for kind in entry.devices)
        raise BackendError(f"{entry.name} runs on {where} only, not on {str(options.device)!r}")
    if options.precision not in entry.precisions:
        others = ", ".join(e.name for e in RUNTIMES if options.precision in e.precisions)
        raise BackendError(
            f"{entry.name} runs {', '.join(entry.precisions)}; "
            f"{options.precision} needs a CUDA backend ({others})"
        )
    runtime_class = entry.load()
    if not (isinstance(runtime_class, type) and issubclass(runtime_class, Runtime)):
        raise TypeError(f"{entry.module}.{entry.class_name} is not a Runtime")
    try:
        return runtime_class(model, options)
    except MissingPackage as exc:
        hint = entry.install_hint
        raise BackendError(f"{exc}: install the extra with {hint}" if hint else str(exc)) from exc
