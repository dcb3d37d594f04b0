"""Inference backends for the per-frame graphs (motion Transformer, generator or its encoder
and synthesis parts).

    from engine.backends import create_backend, input_shapes

    motion = create_backend("auto", transformer, shapes=input_shapes(transformer, batch=1))
    coefficients = motion.run(mel, style)  # numpy float32 in and out

Kinds: eager (torch), onnxrt (ONNX Runtime CPU), openvino (the ``openvino`` extra),
compiled (``torch.compile``), tensorrt (Torch-TensorRT, the ``gpu`` extra, CUDA only) and
auto (the fastest of those that work here). Compiled artefacts are cached under
``presenter_home() / "cache"`` (:mod:`engine.backends.artifact_cache`).
"""

from engine.backends.artifact_cache import ArtifactCache, CacheKey, weights_digest
from engine.backends.backend import (
    Backend,
    EncoderBackend,
    GeneratorBackend,
    MotionBackend,
    SynthesisBackend,
)
from engine.backends.graphs import GraphSpec, graph_spec, input_shapes
from engine.backends.runtime import BackendError, Precision, Runtime
from engine.backends.select import BACKEND_KINDS, BackendKind, create_backend
from engine.backends.timing import measure_ms

__all__ = [
    "BACKEND_KINDS",
    "ArtifactCache",
    "Backend",
    "BackendError",
    "BackendKind",
    "CacheKey",
    "EncoderBackend",
    "GeneratorBackend",
    "GraphSpec",
    "MotionBackend",
    "Precision",
    "Runtime",
    "SynthesisBackend",
    "create_backend",
    "graph_spec",
    "input_shapes",
    "measure_ms",
    "weights_digest",
]
