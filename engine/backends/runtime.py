"""What every inference backend is: a runtime behind one of the two per-frame graphs.

A *runtime* (:class:`Runtime`) runs a graph's inputs, numpy float32 arrays in the graph's
input order, and returns its outputs in the graph's output order. A *backend* wraps a
runtime with the graph's typed call: :class:`MotionBackend` (``run(mel, style) ->
coefficients``), :class:`GeneratorBackend` (``run(masked_target, reference,
geometry_map, coefficients) -> (crop, mask)``), or one of the generator's two parts:
:class:`EncoderBackend` (``run(masked_target, reference) -> feature maps``) and
:class:`SynthesisBackend` (``run(features, geometry_map, coefficients) -> (crop, mask)``).
Backends check the inputs' shapes against the graph, hand float32 C-contiguous arrays to the
runtime and always return float32 arrays, whatever precision the runtime computes in. All
are callable.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np

from engine.backends.graphs import GraphSpec
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


class Backend:
    """A runtime behind one graph: input checks, float32 in and out (see the subclasses
    for the typed ``run`` of each graph)."""

    def __init__(self, runtime: Runtime, spec: GraphSpec) -> None:
        self._runtime = runtime
        self.spec = spec
        self.measured_ms: float | None = None  # set by ``create_backend("auto", ...)``

    @property
    def name(self) -> str:
        """The runtime: eager, onnxrt, openvino, compiled or tensorrt."""
        return self._runtime.name

    @property
    def device(self) -> str:
        return self._runtime.device

    @property
    def precision(self) -> Precision:
        return self._runtime.precision

    @property
    def artifact(self) -> Path | None:
        """The cached compiled artefact the runtime loaded (ONNX file, TensorRT program)."""
        return self._runtime.artifact

    @property
    def cache_hit(self) -> bool | None:
        """Whether ``artifact`` came from the cache (None: the runtime has no artefact)."""
        return self._runtime.cache_hit

    @property
    def max_batch(self) -> int | None:
        return self._runtime.max_batch

    def __repr__(self) -> str:
        timing = "" if self.measured_ms is None else f", {self.measured_ms:.3f} ms"
        return f"{type(self).__name__}({self.name}, {self.device}, {self.precision}{timing})"

    def run_arrays(self, inputs: Sequence[np.ndarray]) -> tuple[np.ndarray, ...]:
        """All inputs in the graph's order -> all outputs in its order (float32)."""
        arrays = self.spec.check_inputs(inputs)
        batch = arrays[0].shape[0]
        if self.max_batch is not None and batch > self.max_batch:
            raise ValueError(
                f"the {self.name} {self.spec.kind} backend was built for batches up to "
                f"{self.max_batch}, got {batch}"
            )
        try:
            outputs = self._runtime.run(arrays)
        except (BackendError, ValueError):
            raise
        except Exception as exc:  # runtimes raise their own types; report them as one line
            reason = one_line(exc)
            raise BackendError(f"{self.name} failed to run the {self.spec.kind}: {reason}") from exc
        return tuple(np.ascontiguousarray(out, dtype=np.float32) for out in outputs)

    def close(self) -> None:
        self._runtime.close()


class MotionBackend(Backend):
    """The motion Transformer: (B, W, num_mels) raw log-mel, (B, style_dim) -> (B, K)."""

    def run(self, mel: np.ndarray, style: np.ndarray) -> np.ndarray:
        (coefficients,) = self.run_arrays((mel, style))
        return coefficients

    __call__ = run


class GeneratorBackend(Backend):
    """The generator: (B, 3, S, S) x2, (B, G, S, S), (B, K) -> crop (B, 3, S, S), mask
    (B, 1, S, S)."""

    def run(
        self,
        masked_target: np.ndarray,
        reference: np.ndarray,
        geometry_map: np.ndarray,
        coefficients: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        crop, mask = self.run_arrays((masked_target, reference, geometry_map, coefficients))
        return crop, mask

    __call__ = run


class EncoderBackend(Backend):
    """The generator's encoder: (B, 3, S, S) x2 -> its feature maps, lowest resolution
    first (see :mod:`engine.generator_parts`)."""

    def run(self, masked_target: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.run_arrays((masked_target, reference))

    __call__ = run


class SynthesisBackend(Backend):
    """The generator's synthesis path: the encoder's feature maps, (B, G, S, S), (B, K) ->
    crop (B, 3, S, S), mask (B, 1, S, S)."""

    def run(
        self, features: Sequence[np.ndarray], geometry_map: np.ndarray, coefficients: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        crop, mask = self.run_arrays((*features, geometry_map, coefficients))
        return crop, mask

    __call__ = run
