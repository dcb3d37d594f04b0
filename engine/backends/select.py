"""``create_backend``: one named backend, or ``auto``: the fastest that works here.

``auto`` tries candidates in order (on CUDA: tensorrt, compiled, eager; on the CPU:
tensorrt, openvino, onnxrt, compiled, eager -- or the ``candidates`` given). Every candidate
that builds is checked against eager fp32 on random inputs of the planned shapes and timed
by a short warm-up (the median of a few runs); one that fails is logged as one line,
``<name> unavailable: <reason>; trying <next>``. The fastest is returned with its
``measured_ms``; the others are closed. Mind that ``compiled`` compiles while it is tried
(seconds to minutes on a cold Inductor cache).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Literal, overload

import numpy as np
from torch import nn

from engine.backends.artifact_cache import ArtifactCache
from engine.backends.backend import (
    Backend,
    EncoderBackend,
    GeneratorBackend,
    MotionBackend,
    SynthesisBackend,
)
from engine.backends.graphs import GraphSpec, graph_spec
from engine.backends.runtime import BackendError, Precision, Runtime, check_precision, one_line
from engine.backends.runtime_compiled import CompiledRuntime
from engine.backends.runtime_eager import EagerRuntime
from engine.backends.runtime_onnxrt import OnnxRtRuntime
from engine.backends.runtime_openvino import OpenVinoRuntime
from engine.backends.runtime_tensorrt import TensorRtRuntime
from engine.backends.timing import measure_ms
from engine.backends.torch_module import resolve_device
from engine.generator import AvatarGenerator
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer

log = logging.getLogger(__name__)

BackendKind = Literal["auto", "eager", "onnxrt", "openvino", "compiled", "tensorrt"]
BACKEND_KINDS: tuple[str, ...] = ("auto", "eager", "onnxrt", "openvino", "compiled", "tensorrt")
CUDA_CANDIDATES: tuple[str, ...] = ("tensorrt", "compiled", "eager")
# compiled is left out on the CPU: its first build takes minutes (the kernel cache is cold)
# and it is slower than the two graph runtimes here. Ask for it by name.
CPU_CANDIDATES: tuple[str, ...] = ("tensorrt", "openvino", "onnxrt", "eager")
_FP32_TOLERANCE = 1e-3
_REDUCED_TOLERANCE = 3e-2  # fp16, and TF32 convolutions on CUDA


def build_runtime(
    kind: str,
    model: nn.Module,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str,
    threads: int | None,
    precision: Precision,
    cache: ArtifactCache,
) -> Runtime:
    """The runtime ``kind`` (not ``auto``) for ``model``'s graph."""
    if kind == "eager":
        return EagerRuntime(model, device=device, precision=precision)
    if kind == "onnxrt":
        return OnnxRtRuntime(
            model, shapes=shapes, cache=cache, device=device, threads=threads, precision=precision
        )
    if kind == "openvino":
        return OpenVinoRuntime(
            model, shapes=shapes, cache=cache, device=device, threads=threads, precision=precision
        )
    if kind == "compiled":
        return CompiledRuntime(model, shapes=shapes, device=device, precision=precision)
    if kind == "tensorrt":
        return TensorRtRuntime(
            model, shapes=shapes, cache=cache, device=device, precision=precision
        )
    raise BackendError(f"unknown backend {kind!r}: choose one of {', '.join(BACKEND_KINDS)}")


_BACKEND_OF: dict[str, type[Backend]] = {
    "motion": MotionBackend,
    "generator": GeneratorBackend,
    "encoder": EncoderBackend,
    "synthesis": SynthesisBackend,
}


def _wrap(runtime: Runtime, spec: GraphSpec) -> Backend:
    return _BACKEND_OF[spec.kind](runtime, spec)


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
    if kind not in BACKEND_KINDS:
        raise BackendError(f"unknown backend {kind!r}: choose one of {', '.join(BACKEND_KINDS)}")
    checked = check_precision(precision)
    spec = graph_spec(model)
    planned, _ = spec.check_shapes(shapes)
    store = cache if cache is not None else ArtifactCache()
    if kind != "auto":
        runtime = build_runtime(
            kind,
            model,
            shapes=planned,
            device=device,
            threads=threads,
            precision=checked,
            cache=store,
        )
        backend = _wrap(runtime, spec)
    else:
        backend = _auto(
            model,
            spec,
            shapes=planned,
            device=device,
            threads=threads,
            precision=checked,
            cache=store,
            candidates=candidates,
        )
    assert isinstance(backend, MotionBackend | GeneratorBackend | EncoderBackend | SynthesisBackend)
    return backend


def _auto(
    model: nn.Module,
    spec: GraphSpec,
    *,
    shapes: Mapping[str, Sequence[int]],
    device: str,
    threads: int | None,
    precision: Precision,
    cache: ArtifactCache,
    candidates: Sequence[str] | None,
) -> Backend:
    resolved = resolve_device(device)
    if candidates is None:
        candidates = CUDA_CANDIDATES if resolved.type == "cuda" else CPU_CANDIDATES
    unknown = [kind for kind in candidates if kind not in BACKEND_KINDS or kind == "auto"]
    if unknown or not candidates:
        raise BackendError(
            f"auto candidates must be backend kinds other than auto, got {list(candidates)}"
        )
    inputs = spec.example_inputs(shapes)
    reference_runtime = EagerRuntime(model, device=device, precision="fp32")
    reference = reference_runtime.run(inputs)
    reference_runtime.close()
    exact = precision == "fp32" and resolved.type == "cpu"
    tolerance = _FP32_TOLERANCE if exact else _REDUCED_TOLERANCE

    measured: list[Backend] = []
    for index, kind in enumerate(candidates):
        following = "no candidates left"
        if index + 1 < len(candidates):
            following = f"trying {candidates[index + 1]}"
        backend: Backend | None = None
        try:
            backend = _wrap(
                build_runtime(
                    kind,
                    model,
                    shapes=shapes,
                    device=device,
                    threads=threads,
                    precision=precision,
                    cache=cache,
                ),
                spec,
            )
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
