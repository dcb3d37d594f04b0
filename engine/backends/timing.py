"""A short measured warm-up of a backend: the median time of a few runs."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # backend.py imports this module (through auto.py)
    from engine.backends.backend import Backend


def measure_ms(
    backend: Backend[Any], inputs: Sequence[np.ndarray], *, warmup: int = 2, runs: int = 5
) -> float:
    """Median wall time in ms of ``runs`` calls after ``warmup`` untimed ones (outputs are
    host arrays, so device work is included)."""
    if runs < 1 or warmup < 0:
        raise ValueError("need runs >= 1 and warmup >= 0")
    for _ in range(warmup):
        backend.run_arrays(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        backend.run_arrays(inputs)
        times.append((time.perf_counter() - start) * 1000.0)
    return statistics.median(times)
