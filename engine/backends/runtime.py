"""What every runtime is: one compiled or loaded graph that runs float32 arrays, and the
one-line errors a runtime or a backend raises.

A *runtime* (:class:`Runtime`) runs a graph's inputs, numpy float32 arrays in the graph's
input order, and returns its outputs in the graph's output order; a backend
(:mod:`engine.backends.backend`) wraps one with the graph's typed call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

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


class Runtime(ABC):
    """One compiled or loaded graph that runs float32 arrays.

    Subclasses set ``name``, ``device``, ``precision`` and, where they have a compiled
    artefact on disk, ``artifact`` and ``cache_hit``; ``max_batch`` where the runtime was
    built for a batch range (TensorRT).
    """

    name: str
    device: str
    precision: Precision
    artifact: Path | None = None
    cache_hit: bool | None = None
    max_batch: int | None = None

    @abstractmethod
    def run(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """Inputs in the graph's order (float32, C-contiguous) -> outputs in its order."""

    def close(self) -> None:  # noqa: B027 -- most runtimes hold nothing to release
        """Release what the runtime holds (sessions, device memory)."""
