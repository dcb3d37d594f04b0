"""What every inference backend is: a runtime behind one of the per-frame graphs.

A *backend* wraps a runtime (:class:`engine.backends.runtime.Runtime`) with the graph's
typed call: :class:`MotionBackend` (``run(mel, style) -> coefficients``),
:class:`GeneratorBackend` (``run(masked_target, reference, geometry_map, coefficients) ->
(crop, mask)``), or one of the generator's two parts: :class:`EncoderBackend`
(``run(masked_target, reference) -> feature maps``) and :class:`SynthesisBackend`
(``run(features, geometry_map, coefficients) -> (crop, mask)``). Backends check the inputs'
shapes against the graph, hand float32 C-contiguous arrays to the runtime and always return
float32 arrays, whatever precision the runtime computes in. All are callable.

``Backend`` is generic in the model whose graph it runs, and :meth:`Backend.create` is the
one way to build one: on a typed class it returns that class (``MotionBackend.create("auto",
transformer, ...)`` is a :class:`MotionBackend`, and a model of another graph is a type
error); on ``Backend`` itself (also spelt :func:`create_backend`) it returns the typed class
of the model's graph.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar, Generic, Self, TypeVar, cast

import numpy as np

from engine.backend_registry import AUTO, BACKEND_NAMES, runtime_entry
from engine.backends.artifact_cache import ArtifactCache
from engine.backends.auto import fastest_backend
from engine.backends.graphs import GraphKind, GraphSpec, graph_spec
from engine.backends.runtime import (
    BackendError,
    Precision,
    Runtime,
    RuntimeOptions,
    build_runtime,
    check_precision,
    one_line,
)
from engine.backends.torch_module import resolve_device
from engine.generator import AvatarGenerator
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer

Graph = MotionTransformer | AvatarGenerator | GeneratorEncoder | GeneratorSynthesis
G = TypeVar("G", bound=Graph)  # the model whose graph a backend runs


class Backend(Generic[G]):
    """A runtime behind one graph: input checks, float32 in and out (see the subclasses
    for the typed ``run`` of each graph)."""

    graph: ClassVar[GraphKind | None] = None  # the graph a typed subclass runs

    def __init__(self, name: str, runtime: Runtime, spec: GraphSpec) -> None:
        self.name = name  # the runtime's name in engine.backend_registry
        self._runtime = runtime
        self.spec = spec
        self.measured_ms: float | None = None  # set by ``auto``

    @classmethod
    def create(
        cls,
        name: str,
        model: G,
        *,
        shapes: Mapping[str, Sequence[int]],
        device: str = "cpu",
        threads: int | None = None,
        precision: str = "fp32",
        cache: ArtifactCache | None = None,
        candidates: Sequence[str] | None = None,
    ) -> Self:
        """The backend ``name`` (one of :data:`engine.backend_registry.BACKEND_NAMES`) for
        ``model``'s per-frame graph, built for the planned ``shapes`` (see
        :func:`engine.backends.graphs.input_shapes`).

        ``device``: "cpu", "cuda" or "cuda:N". ``threads``: intra-op threads of the graph
        runtimes (the torch backends use torch's process-wide setting). ``precision``:
        "fp32", or "fp16" on CUDA with the runtimes whose registry entry has it; inputs and
        outputs are float32 either way. ``cache``: where compiled artefacts go (default
        ``presenter_home() / "cache"``). ``candidates``: the runtimes ``auto`` tries, in
        order. The caller's model is not changed. Raises BackendError (one line) when the
        backend cannot be built here, TypeError when ``model`` is not this class's graph.
        """
        entry = runtime_entry(name)
        if entry is None and name != AUTO:
            raise BackendError(
                f"unknown backend {name!r}: choose one of {', '.join(BACKEND_NAMES)}"
            )
        checked = check_precision(precision)
        spec = graph_spec(model)
        typed = cls._of_graph(spec)
        planned, _ = spec.check_shapes(shapes)
        options = RuntimeOptions(
            shapes=planned,
            device=resolve_device(device),
            threads=threads,
            precision=checked,
            cache=cache if cache is not None else ArtifactCache(),
        )
        if entry is None:
            return fastest_backend(model, spec, options, candidates, typed)
        return typed(entry.name, build_runtime(entry, model, options), spec)

    @classmethod
    def _of_graph(cls, spec: GraphSpec) -> type[Self]:
        """This class, or on ``Backend`` itself the typed class of ``spec``'s graph."""
        if cls.graph is None:
            typed = next(typed for typed in TYPED_BACKENDS if typed.graph == spec.kind)
            return cast(type[Self], typed)
        if cls.graph != spec.kind:
            raise TypeError(f"{cls.__name__} runs the {cls.graph} graph, not the {spec.kind}")
        return cls

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


class MotionBackend(Backend[MotionTransformer]):
    """The motion Transformer: (B, W, num_mels) raw log-mel, (B, style_dim) -> (B, K)."""

    graph = "motion"

    def run(self, mel: np.ndarray, style: np.ndarray) -> np.ndarray:
        (coefficients,) = self.run_arrays((mel, style))
        return coefficients

    __call__ = run


class GeneratorBackend(Backend[AvatarGenerator]):
    """The generator: (B, 3, S, S) x2, (B, G, S, S), (B, K) -> crop (B, 3, S, S), mask
    (B, 1, S, S)."""

    graph = "generator"

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


class EncoderBackend(Backend[GeneratorEncoder]):
    """The generator's encoder: (B, 3, S, S) x2 -> its feature maps, lowest resolution
    first (see :mod:`engine.generator_parts`)."""

    graph = "encoder"

    def run(self, masked_target: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, ...]:
        return self.run_arrays((masked_target, reference))

    __call__ = run


class SynthesisBackend(Backend[GeneratorSynthesis]):
    """The generator's synthesis path: the encoder's feature maps, (B, G, S, S), (B, K) ->
    crop (B, 3, S, S), mask (B, 1, S, S)."""

    graph = "synthesis"

    def run(
        self, features: Sequence[np.ndarray], geometry_map: np.ndarray, coefficients: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        crop, mask = self.run_arrays((*features, geometry_map, coefficients))
        return crop, mask

    __call__ = run


TYPED_BACKENDS: tuple[type[Backend[Any]], ...] = (
    MotionBackend,
    GeneratorBackend,
    EncoderBackend,
    SynthesisBackend,
)
create_backend = Backend.create  # a backend of the model's own graph: Backend[model's type]
