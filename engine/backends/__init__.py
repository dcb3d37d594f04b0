"""Inference backends for the per-frame graphs (motion Transformer, generator or its encoder
and synthesis parts).

    from engine.backends import MotionBackend, input_shapes

    motion = MotionBackend.create("auto", transformer, shapes=input_shapes(transformer))
    coefficients = motion.run(mel, style)  # numpy float32 in and out

``create_backend(name, model, ...)`` (``Backend.create``) builds the typed backend of any
model's graph.

The names a backend can be asked for are :data:`BACKEND_NAMES`: ``auto`` (the fastest that
works here) and every runtime in :mod:`engine.backend_registry` (what each needs: devices,
precisions, the extra that installs it). Compiled artefacts are cached under
``presenter_home() / "cache"`` (:mod:`engine.backends.artifact_cache`).
"""

from engine.backend_registry import BACKEND_NAMES, RUNTIMES, RuntimeEntry
from engine.backends.artifact_cache import ArtifactCache, CacheKey, weights_digest
from engine.backends.backend import (
    Backend,
    EncoderBackend,
    GeneratorBackend,
    MotionBackend,
    SynthesisBackend,
    create_backend,
)
from engine.backends.graphs import GraphSpec, graph_spec, input_shapes
from engine.backends.runtime import BackendError, Precision, Runtime, RuntimeOptions
from engine.backends.timing import measure_ms

__all__ = [
    "BACKEND_NAMES",
    "RUNTIMES",
    "ArtifactCache",
    "Backend",
    "BackendError",
    "CacheKey",
    "EncoderBackend",
    "GeneratorBackend",
    "GraphSpec",
    "MotionBackend",
    "Precision",
    "Runtime",
    "RuntimeEntry",
    "RuntimeOptions",
    "SynthesisBackend",
    "create_backend",
    "graph_spec",
    "input_shapes",
    "measure_ms",
    "weights_digest",
]
