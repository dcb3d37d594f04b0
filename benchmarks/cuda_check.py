"""CUDA check of the shipped model: parity with the CPU and per-frame timings on a GPU.

``python -m benchmarks.cuda_check --out DIR [--device cuda] [--quick] [--deadline 270]
[--compile-budget 200] [--table]``

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
it again from the JSON, e.g. of a run that was cut short). The measuring helpers are in
:mod:`benchmarks.cuda_measure`, the machine facts and the table in
:mod:`benchmarks.cuda_report`.

The avatar is the project's own default avatar
(:func:`engine.data.synth.default_avatar.make_default_avatar`, cut for the model's crop
layout); where it cannot be built here, the report says why and the
engine parts (3 and 4) are skipped, the graphs still checked.

``--device cpu --quick`` runs a small version of all of it on the CPU (a smoke test).
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.cuda_measure import (
    Outputs,
    clear_compile_counters,
    compile_counters,
    device_ms,
    difference,
    frame_difference,
    offline_timing,
    render_all,
    speech_like,
    tf32_off,
    time_calls,
    timing_audio,
)
from benchmarks.cuda_report import JSON_NAME, TABLE_NAME, Report, machine_info, table
from benchmarks.engine import RATE, measure
from benchmarks.provenance import provenance
from engine.avatar import Avatar
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
from engine.data.synth.default_avatar import make_default_avatar
from engine.facade import AvatarEngine, EngineConfig
from engine.frames import RenderedFrame
from engine.generator_parts import GeneratorEncoder, GeneratorSynthesis
from engine.motion import MotionTransformer

log = logging.getLogger(__name__)

GRAPHS = ("motion", "encoder", "synthesis")  # the engine's three graphs
INPUT_SEED = 100
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


# -- the avatar -----------------------------------------------------------------------------
def build_avatar(model: AvatarModel, settings: Settings) -> tuple[Avatar | None, str]:
    """The engine's default avatar cut for ``model`` (one call of the engine's API), or None
    and why it could not be built here."""
    try:
        return (
            make_default_avatar(crop=model.crop, seconds=settings.avatar_seconds),
            "engine.data.synth.default_avatar.make_default_avatar",
        )
    except Exception as exc:  # e.g. no MediaPipe here: the engine rows say "no avatar"
        log.warning("no avatar: %s", one_line(exc))
        return None, f"make_default_avatar failed: {one_line(exc)}"


# -- the configurations ---------------------------------------------------------------------
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
            "provenance": provenance("benchmarks.cuda_check"),
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.cuda_check", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/cuda_check"))
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="a smoke test: batch 1, few runs")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if args.table:  # e.g. of a run that was cut short
        text = table(json.loads((args.out / JSON_NAME).read_text()))
        (args.out / TABLE_NAME).write_text(text + "\n")
        print(text)  # noqa: T201
        return 0
    changes: dict[str, Any] = {"device": args.device}
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
