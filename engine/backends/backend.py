"""What every inference backend is: a runtime behind one of the per-frame graphs.

A *backend* wraps a runtime (:class:`engine.backends.runtime.Runtime`) with the graph's
typed call: :class:`MotionBackend` (``run(mel, style) -> coefficients``),
:class:`GeneratorBackend` (``run(masked_target, reference, geometry_map, coefficients) ->
(crop, mask)``), or one of the generator's two parts: :class:`EncoderBackend`
(``run(masked_target, reference) -> feature maps``) and :class:`SynthesisBackend`
(``run(features, geometry_map, coefficients) -> (crop, mask)``). Backends check the inputs'
shapes against the graph, hand float32 C-contiguous arrays to the runtime and always return
float32 arrays, whatever precision the runtime computes in. All are callable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from engine.backends.graphs import GraphSpec
from engine.backends.runtime import BackendError, Precision, Runtime, one_line


class Backend:
    """A runtime behind one graph: input checks, float32 in and out (see the subclasses
    for the typed ``run`` of each graph)."""

    def __init__(self, name: str, runtime: Runtime, spec: GraphSpec) -> None:
        self.name = name  # the runtime's name in engine.backend_registry
        self._runtime = runtime
        self.spec = spec
        self.measured_ms: float | None = None  # set by ``create_backend("auto", ...)``

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
