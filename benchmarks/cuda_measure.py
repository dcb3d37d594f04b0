"""What the CUDA check measures: speech-like input, timings of a backend call and of the
graph alone on the device, output and frame differences, the engine's offline timing.

Helpers of :mod:`benchmarks.cuda_check`; nothing here builds a backend or an engine.
"""

from __future__ import annotations

import contextlib
import logging
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from benchmarks.engine import FRAME_MS, RATE, speech
from engine.backends import Backend
from engine.backends.runtime import one_line
from engine.facade import AvatarEngine
from engine.frames import RenderedFrame

log = logging.getLogger(__name__)

AUDIO_SEED = 1
Outputs = tuple[np.ndarray, ...]


# -- inputs ---------------------------------------------------------------------------------
def speech_like(seconds: float, rate: int = RATE, seed: int = AUDIO_SEED) -> np.ndarray:
    """A deterministic speech-like float32 signal: words of 2-5 voiced syllables (harmonics
    of a wavering pitch shaped by two formants, a little breath noise) between pauses of
    digital silence, starting and ending silent."""
    rng = np.random.default_rng(seed)
    total = int(seconds * rate)
    audio = np.zeros(total, np.float64)
    harmonics = np.arange(1, 41, dtype=np.float64)
    position = int(0.3 * rate)
    while position < total:
        for _ in range(int(rng.integers(2, 6))):
            length = int(rng.uniform(0.12, 0.3) * rate)
            t = np.arange(length) / rate
            pitch = rng.uniform(95.0, 190.0) * (1.0 + 0.08 * np.sin(2 * np.pi * 3.0 * t))
            phase = 2 * np.pi * np.cumsum(pitch) / rate
            centre = float(pitch.mean())
            formants = (rng.uniform(300.0, 900.0), rng.uniform(900.0, 2500.0))
            gains = 0.3 / harmonics + sum(
                np.exp(-0.5 * ((harmonics * centre - f) / 150.0) ** 2) for f in formants
            )
            gains[harmonics * centre > 0.45 * rate] = 0.0
            voiced = (gains[:, None] * np.sin(harmonics[:, None] * phase[None, :])).sum(axis=0)
            voiced /= max(float(np.abs(voiced).max()), 1e-9)
            envelope = np.sin(np.pi * np.arange(length) / length) ** 0.6
            syllable = (voiced + 0.05 * rng.standard_normal(length)) * envelope
            stop = min(total, position + length)
            if stop > position:
                audio[position:stop] += rng.uniform(0.15, 0.4) * syllable[: stop - position]
            position += length + int(rng.uniform(0.0, 0.06) * rate)
        position += int(rng.uniform(0.25, 0.6) * rate)
    audio[-int(0.2 * rate) :] = 0.0
    return np.clip(audio, -1.0, 1.0).astype(np.float32)


def timing_audio(seconds: float) -> tuple[np.ndarray, str]:
    """``seconds`` of 48 kHz speech for the timings: espeak-ng's (as benchmarks.engine), or
    the synthetic signal where espeak-ng cannot run; and which it is."""
    try:
        return speech(seconds), "espeak-ng (benchmarks.engine.speech)"
    except Exception as exc:  # no libespeak-ng here: any error means "use the fallback"
        log.info("espeak-ng unavailable (%s): timing on the synthetic signal", one_line(exc))
        return speech_like(seconds), f"synthetic speech-like signal ({one_line(exc, 120)})"


# -- measurements ---------------------------------------------------------------------------
def figure(value: float) -> float:
    """A float for the report: four significant digits."""
    return float(f"{value:.4g}")


def spread(samples_ms: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples_ms, np.float64)
    return {
        "median": figure(statistics.median(samples_ms)),
        "p10": figure(float(np.percentile(values, 10))),
        "p90": figure(float(np.percentile(values, 90))),
        "min": figure(float(values.min())),
        "runs": len(samples_ms),
    }


def difference(outputs: Outputs, reference: Outputs, names: Sequence[str]) -> dict[str, Any]:
    """Max and mean abs difference of every output to the reference, and the largest."""
    per_output: dict[str, dict[str, Any]] = {}
    for name, output, expected in zip(names, outputs, reference, strict=True):
        if output.shape != expected.shape:
            per_output[name] = {"error": f"shape {output.shape} != {expected.shape}"}
            continue
        delta = np.abs(output.astype(np.float64) - expected.astype(np.float64))
        per_output[name] = {
            "max_abs": figure(float(delta.max(initial=0.0))),
            "mean_abs": figure(float(delta.mean())),
            "reference_max_abs": figure(float(np.abs(expected).max(initial=0.0))),
        }
    worst = [entry.get("max_abs", float("nan")) for entry in per_output.values()]
    return {"max_abs": figure(max(worst)), "outputs": per_output}


def time_calls(call: Callable[[], object], *, warmup: int, runs: int) -> dict[str, float]:
    """Wall ms per call (the call returns host arrays, so device work is included)."""
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(runs):
        began = time.perf_counter()
        call()
        samples.append(1000.0 * (time.perf_counter() - began))
    return spread(samples)


def device_call(backend: Backend) -> Callable[..., object] | None:
    """The torch callable behind an eager or compiled backend (private to the runtimes;
    None where there is none to reach)."""
    runtime = getattr(backend, "_runtime", None)
    for attribute in ("_module", "_compiled"):
        call = getattr(runtime, attribute, None)
        if call is not None:
            return call
    return None


def device_ms(
    backend: Backend, inputs: Outputs, *, warmup: int, runs: int
) -> dict[str, float] | None:
    """ms of the graph alone on inputs already on the device: CUDA events around each call,
    synchronised after it (perf_counter on the CPU)."""
    call = device_call(backend)
    if call is None:
        return None
    device = torch.device(backend.device)
    dtype = torch.float16 if backend.precision == "fp16" else torch.float32
    tensors = [torch.from_numpy(array).to(device=device, dtype=dtype) for array in inputs]
    cuda = device.type == "cuda"
    graphs = cuda and backend.name == "compiled"

    def once() -> None:
        if graphs:  # a new CUDA-graph step, as CompiledRuntime.run does
            torch.compiler.cudagraph_mark_step_begin()
        call(*tensors)

    samples = []
    with torch.inference_mode():
        for _ in range(warmup):
            once()
        if cuda:
            torch.cuda.synchronize(device)
        for _ in range(runs):
            if cuda:
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                once()
                end.record()
                end.synchronize()
                samples.append(float(start.elapsed_time(end)))
            else:
                began = time.perf_counter()
                once()
                samples.append(1000.0 * (time.perf_counter() - began))
    return spread(samples)


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    """TF32 off for cuDNN convolutions and CUDA matmuls inside the block."""
    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def compile_counters() -> dict[str, Any]:
    """Dynamo's counters since the last reset: graph breaks, graphs compiled, CUDA-graph
    skips (private to torch: empty where they cannot be read)."""
    try:
        from torch._dynamo.utils import counters

        breaks = counters["graph_break"]
        return {
            "graph_breaks": int(sum(breaks.values())),
            "graph_break_reasons": [one_line(reason, 160) for reason in list(breaks)[:3]],
            "unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
            "cudagraph_skips": int(counters["inductor"].get("cudagraph_skips", 0)),
        }
    except Exception as exc:  # private API: report, never fail on it
        return {"error": one_line(exc)}


def clear_compile_counters() -> None:
    with contextlib.suppress(Exception):  # private API
        from torch._dynamo.utils import counters

        counters.clear()


def render_all(engine: AvatarEngine, audio: np.ndarray) -> list[RenderedFrame]:
    """Every frame of ``audio`` (48 kHz) pushed at once, then flushed."""
    engine.push_audio(audio, RATE)
    engine.flush()
    return engine.pull()


def frame_difference(
    frames: Sequence[RenderedFrame], reference: Sequence[RenderedFrame]
) -> dict[str, Any]:
    """Pixel differences (uint8 RGB values) of two renderings of the same audio."""
    count = min(len(frames), len(reference))
    worst, total, over_two, differing, values = 0, 0.0, 0, 0, 0
    for frame, expected in zip(frames[:count], reference[:count], strict=True):
        delta = np.abs(frame.image.astype(np.int16) - expected.image.astype(np.int16))
        largest = int(delta.max(initial=0))
        worst = max(worst, largest)
        total += float(delta.sum())
        over_two += int((delta > 2).sum())
        differing += int(largest > 0)
        values += delta.size
    speaking = [abs(a.speaking - b.speaking) for a, b in zip(frames, reference, strict=False)]
    return {
        "frames": len(frames),
        "reference_frames": len(reference),
        "max_abs": worst,
        "mean_abs": figure(total / max(values, 1)),
        "share_over_2": figure(over_two / max(values, 1)),
        "frames_differing": differing,
        "speaking_max_abs": figure(max(speaking, default=0.0)),
        "indices_equal": [f.index for f in frames] == [f.index for f in reference],
    }


def offline_timing(engine: AvatarEngine, audio: np.ndarray) -> dict[str, Any]:
    """The whole clip in one push, flushed, every frame pulled: ms per frame and stages."""
    engine.reset()
    engine.times.clear()
    began = time.perf_counter()
    frames = len(render_all(engine, audio))
    total = 1000.0 * (time.perf_counter() - began) / max(frames, 1)
    return {
        "frames": frames,
        "ms_per_frame": round(total, 3),
        "real_time_factor": round(total / FRAME_MS, 4),
        "stages_ms": {k: round(v, 3) for k, v in engine.times.ms_per_frame().items()},
    }
