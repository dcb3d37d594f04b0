"""``auto``: the fastest backend that works here.

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
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from torch import nn

from engine.backend_registry import auto_candidates, runtime_entry
from engine.backends.graphs import GraphSpec
from engine.backends.runtime import (
    BackendError,
    Runtime,
    RuntimeOptions,
    build_runtime,
    one_line,
)
from engine.backends.runtime_eager import EagerRuntime
from engine.backends.timing import measure_ms

if TYPE_CHECKING:  # backend.py imports this module
    from engine.backends.backend import Backend

log = logging.getLogger(__name__)

B = TypeVar("B", bound="Backend[Any]")
_FP32_TOLERANCE = 1e-3
_REDUCED_TOLERANCE = 3e-2  # fp16, and TF32 convolutions on CUDA


def fastest_backend(
    model: nn.Module,
    spec: GraphSpec,
    options: RuntimeOptions,
    candidates: Sequence[str] | None,
    typed: Callable[[str, Runtime, GraphSpec], B],
) -> B:
    """The fastest of ``candidates`` (None: auto's own for the device) that agrees with
    eager, as ``typed(name, runtime, spec)``; a BackendError when none does."""
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

    measured: list[B] = []
    for index, entry in enumerate(entries):
        name = entry.name
        following = "no candidates left"
        if index + 1 < len(candidates):
            following = f"trying {candidates[index + 1]}"
        backend: B | None = None
        try:
            backend = typed(name, build_runtime(entry, model, options), spec)
            _check_agreement(backend.run_arrays(inputs), reference, tolerance)
            backend.measured_ms = measure_ms(backend, inputs)
        except Exception as exc:  # any failure of one candidate is a fallback, not an error
            if backend is not None:
                backend.close()
            log.info("%s unavailable: %s; %s", name, one_line(exc), following)
            continue
        log.debug("%s runs the %s graph in %.3f ms", name, spec.kind, backend.measured_ms)
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
