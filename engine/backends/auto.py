"""``create_backend``: one named backend, or ``auto``: the fastest that works here.

``auto`` tries candidates in order (:func:`engine.backend_registry.auto_candidates` of the
device's type, or the ``candidates`` given). Every candidate that builds is checked against
eager fp32 on random inputs of the planned shapes and timed by a short warm-up (the median
of a few runs); one that fails is logged as one line, ``<name> unavailable: <reason>;
trying <next>``. The fastest is returned with its ``measured_ms``; the others are closed.
Mind that ``compiled`` compiles while it is tried (seconds to minutes on a cold Inductor
cache).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import overload

import numpy as np
from torch import nn

from engine.backend_registry import AUTO, BACKEND_NAMES, auto_candidates, runtime_entry
from engine.backends.artifact_cache import ArtifactCache
from engine.backends.backend import (
    Backend,
    EncoderBackend,
    GeneratorBackend,
    MotionBackend,
    SynthesisBackend,
)
from engine.backends.graphs import GraphSpec, graph_spec
from engine.backends.runtime import (
    BackendError,
    Runtime,
    RuntimeOptions,
    build_runtime,
    check_precision,
    one_line,
)
from engine.backends.runtime_eager import EagerRuntime
from engine.backends.timing import measure_ms
from engine.backends.torch_module import resolve_device
from engine.generator import AvatarGenerator
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer

log = logging.getLogger(__name__)

_FP32_TOLERANCE = 1e-3
_REDUCED_TOLERANCE = 3e-2  # fp16, and TF32 convolutions on CUDA


_BACKEND_OF: dict[str, type[Backend]] = {
    "motion": MotionBackend,
    "generator": GeneratorBackend,
    "encoder": EncoderBackend,
    "synthesis": SynthesisBackend,
}


def _wrap(name: str, runtime: Runtime, spec: GraphSpec) -> Backend:
    return _BACKEND_OF[spec.kind](name, runtime, spec)


@overload
def create_backend(
    kind: str,
    model: MotionTransformer,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str = ...,
    threads: int | None = ...,
    precision: str = ...,
    cache: ArtifactCache | None = ...,
    candidates: Sequence[str] | None = ...,
) -> MotionBackend: ...


@overload
def create_backend(
    kind: str,
    model: AvatarGenerator,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str = ...,
    threads: int | None = ...,
    precision: str = ...,
    cache: ArtifactCache | None = ...,
    candidates: Sequence[str] | None = ...,
) -> GeneratorBackend: ...


@overload
def create_backend(
    kind: str,
    model: GeneratorEncoder,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str = ...,
    threads: int | None = ...,
    precision: str = ...,
    cache: ArtifactCache | None = ...,
    candidates: Sequence[str] | None = ...,
) -> EncoderBackend: ...


@overload
def create_backend(
    kind: str,
    model: GeneratorSynthesis,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str = ...,
    threads: int | None = ...,
    precision: str = ...,
    cache: ArtifactCache | None = ...,
    candidates: Sequence[str] | None = ...,
) -> SynthesisBackend: ...


def create_backend(
    kind: str,
    model: MotionTransformer | AvatarGenerator | GeneratorEncoder | GeneratorSynthesis,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str = "cpu",
    threads: int | None = None,
    precision: str = "fp32",
    cache: ArtifactCache | None = None,
    candidates: Sequence[str] | None = None,
) -> MotionBackend | GeneratorBackend | EncoderBackend | SynthesisBackend:
    """A backend of ``kind`` for ``model``'s per-frame graph, built for the planned
    ``shapes`` (see :func:`engine.backends.graphs.input_shapes`).

    ``device``: "cpu", "cuda" or "cuda:N". ``threads``: intra-op threads of onnxrt and
    openvino (the torch backends use torch's process-wide setting). ``precision``: "fp32",
    or "fp16" on CUDA (eager, compiled, tensorrt); inputs and outputs are float32 either
    way. ``cache``: where compiled artefacts go (default ``presenter_home() / "cache"``).
    ``candidates``: the kinds ``auto`` tries, in order. The caller's model is not changed.
    Raises BackendError (one line) when the backend cannot be built here.
    """
    entry = runtime_entry(kind)
    if entry is None and kind != AUTO:
        raise BackendError(f"unknown backend {kind!r}: choose one of {', '.join(BACKEND_NAMES)}")
    checked = check_precision(precision)
    spec = graph_spec(model)
    planned, _ = spec.check_shapes(shapes)
    options = RuntimeOptions(
        shapes=planned,
        device=resolve_device(device),
        threads=threads,
        precision=checked,
        cache=cache if cache is not None else ArtifactCache(),
    )
    if entry is not None:
        backend = _wrap(entry.name, build_runtime(entry, model, options), spec)
    else:
        backend = _auto(model, spec, options, candidates)
    assert isinstance(backend, MotionBackend | GeneratorBackend | EncoderBackend | SynthesisBackend)
    return backend


def _auto(
    model: nn.Module, spec: GraphSpec, options: RuntimeOptions, candidates: Sequence[str] | None
) -> Backend:
    device = options.device
    if candidates is None:
        candidates = auto_candidates(device.type)
    entries = [entry for entry in map(runtime_entry, candidates) if entry is not None]
    if len(entries) != len(candidates) or not entries:
        raise BackendError(
            f"auto candidates must be runtime names (not auto), got {list(candidates)}"
        )
    inputs = spec.example_inputs(options.shapes)
    reference_runtime = EagerRuntime(model, replace(options, precision="fp32"))
    reference = reference_runtime.run(inputs)
    reference_runtime.close()
    exact = options.precision == "fp32" and device.type == "cpu"
    tolerance = _FP32_TOLERANCE if exact else _REDUCED_TOLERANCE

    measured: list[Backend] = []
    for index, entry in enumerate(entries):
        kind = entry.name
        following = "no candidates left"
        if index + 1 < len(candidates):
            following = f"trying {candidates[index + 1]}"
        backend: Backend | None = None
        try:
            backend = _wrap(kind, build_runtime(entry, model, options), spec)
            _check_agreement(backend.run_arrays(inputs), reference, tolerance)
            backend.measured_ms = measure_ms(backend, inputs)
        except Exception as exc:  # any failure of one candidate is a fallback, not an error
            if backend is not None:
                backend.close()
            log.info("%s unavailable: %s; %s", kind, one_line(exc), following)
            continue
        log.debug("%s runs the %s graph in %.3f ms", kind, spec.kind, backend.measured_ms)
        measured.append(backend)
    if not measured:
        raise BackendError(
            f"no backend among {', '.join(candidates)} can run the {spec.kind} graph on {device}"
        )
    best = min(measured, key=lambda b: b.measured_ms if b.measured_ms is not None else np.inf)
    for backend in measured:
        if backend is not best:
            backend.close()
    timings = ", ".join(f"{b.name} {b.measured_ms:.3f} ms" for b in measured)
    log.info("auto: %s for the %s graph on %s (%s)", best.name, spec.kind, best.device, timings)
    return best


def _check_agreement(
    outputs: Sequence[np.ndarray], reference: Sequence[np.ndarray], tolerance: float
) -> None:
    for output, expected in zip(outputs, reference, strict=True):
        if output.shape != expected.shape:
            raise BackendError(f"output shape {output.shape} differs from eager's {expected.shape}")
        scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
        difference = float(np.abs(output - expected).max(initial=0.0))
        if not np.isfinite(difference) or difference > tolerance * scale:
            raise BackendError(f"disagrees with eager by {difference:.3g} (max abs)")
