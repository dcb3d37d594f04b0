"""How many live presenters one machine sustains at 25 fps.

``python -m benchmarks.sessions [--max N] [--seconds S] [--gpu]`` starts 1, then 2, ... up to
N (default 4) presenters at once, each its own ``python -m presenter serve --source
file:SPEECH.wav --stamp`` process (the same espeak-ng speech file, written with
``presenter.testing.live_harness.write_speech``) with one headless Chromium viewer of its
own (a page each, in one Chromium, on 127.0.0.1). With every viewer connected and speech playing, it
counts over S seconds (from 3 s after the last viewer saw speech start) the stamped frames each
page presented, and stops at the first count at which any viewer presents fewer than 24
frames a second. Everything runs on one machine: the browsers share its cores with the
presenters, as in ``benchmarks.latency``.

``--gpu`` passes ``--device cuda`` to each ``serve``: for CUDA machines (the engines then
render on the GPU, the encoders and browsers still on the CPU). Without a CUDA device it
stops at once and says so.

Results: ``sessions.json`` in ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from benchmarks.latency import SETTLE_S, SPEECH_MARGIN_S, ServeFailed, machine_facts, versions
from benchmarks.provenance import RESULTS, write_result
from presenter.testing.latency import viewer_figures
from presenter.testing.live_harness import (
    SPEECH,
    LiveServer,
    chromium,
    click_start,
    live_server,
    machine_cpu_jiffies,
    open_viewer,
    process_cpu_seconds,
    wait_connected,
    write_speech,
)

FPS_FLOOR = 24.0  # presented frames per second a viewer must see (25 fps, one frame of slack)


class GpuUnavailable(RuntimeError):
    """``--gpu`` on a machine without a CUDA device."""


def cuda_device_name() -> str:
    """The first CUDA device's name; GpuUnavailable when torch sees none."""
    try:
        import torch
    except ImportError as exc:
        raise GpuUnavailable("--gpu needs torch with CUDA; torch is not installed") from exc
    if not torch.cuda.is_available():
        raise GpuUnavailable(
            "--gpu runs each presenter with `serve --device cuda` and needs a CUDA GPU, but "
            f"torch {torch.__version__} sees none on this machine "
            "(torch.cuda.is_available() is False). Run it on a CUDA machine, or leave --gpu "
            "out to measure the CPU."
        )
    return str(torch.cuda.get_device_name(0))


def _serve_args(wav: Path, gpu: bool) -> list[str]:
    return ["--source", f"file:{wav}", "--stamp", *(["--device", "cuda"] if gpu else [])]


def measure(
    count: int, seconds: float, wav: Path, gpu: bool, folder: Path
) -> tuple[dict[str, Any], str]:
    """``count`` presenters at once, one viewer each: (the figures, Chromium's version)."""
    with ExitStack() as stack:
        servers: list[LiveServer] = []
        for number in range(count):
            log = folder / f"serve-{count}-{number + 1}.log"
            try:
                servers.append(stack.enter_context(live_server(_serve_args(wav, gpu), log)))
            except AssertionError as exc:
                raise ServeFailed(
                    f"presenter {number + 1} of {count} did not start: {exc}"
                ) from exc
        browser = stack.enter_context(chromium())
        pages = [open_viewer(browser, server.url) for server in servers]
        for page in pages:
            click_start(page)
        for page in pages:
            wait_connected(page, timeout_s=60)
        for page in pages:
            page.wait_for_function("window.viewer.stats().activity === 'speaking'", timeout=60_000)
        time.sleep(SETTLE_S)
        pids = [server.process.pid for server in servers]
        status0 = [server.status() for server in servers]
        cpu0 = [process_cpu_seconds(pid) for pid in pids]
        machine0, wall0, lo = machine_cpu_jiffies(), time.monotonic(), time.time() * 1000
        time.sleep(seconds)
        cpu1 = [process_cpu_seconds(pid) for pid in pids]
        machine1, wall1, hi = machine_cpu_jiffies(), time.monotonic(), time.time() * 1000
        status1 = [server.status() for server in servers]
        time.sleep(0.6)  # the last clicks get matched
        viewers = [viewer_figures(page, lo, hi) for page in pages]
        chromium_version = str(browser.version)

    wall = wall1 - wall0
    presenters = []
    for number, (pid, before, after, s0, s1, viewer) in enumerate(
        zip(pids, cpu0, cpu1, status0, status1, viewers, strict=True), 1
    ):
        viewer.pop("_series")
        engine = sum(after[m] - before.get(m, 0.0) for m in after if m != pid)
        presenters.append(
            {
                "presenter": number,
                "fps_presented": viewer["fps_stamped"],  # distinct stamped frames shown
                "fps_presented_getstats": viewer["fps_presented"],
                "fps_decoded": viewer["fps_decoded"],
                "freezes": viewer["freezes"],
                "concealed_fraction": viewer["concealed_fraction"],
                "glass_to_glass_p50_ms": viewer["glass_to_glass_ms"]["p50"],
                "av_offset_median_ms": viewer["av_offset"]["median_ms"],
                "delay_ms": s1["delayMs"],
                "frames_dropped_at_server": s1["framesDropped"] - s0["framesDropped"],
                "frames_emitted": s1["framesEmitted"] - s0["framesEmitted"],
                "cpu_percent": {  # of one core
                    "server": round(100 * (after[pid] - before.get(pid, 0.0)) / wall, 1),
                    "engine": round(100 * engine / wall, 1),
                },
                "errors": viewer["errors"],
            }
        )
    fps = [item["fps_presented"] for item in presenters]
    busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1.0)
    step = {
        "presenters": count,
        "sustained": min(fps) >= FPS_FLOOR,
        "min_fps": min(fps),
        "window_s": round(wall, 2),
        "machine_cpu_percent": round(100 * busy, 1),  # all cores, browsers included
        "per_presenter": presenters,
    }
    return step, chromium_version


def run(
    max_count: int = 4,
    seconds: float = 10.0,
    gpu: bool = False,
    out: Path = RESULTS,
    argv: list[str] | None = None,
) -> dict[str, Any]:
    """1, 2, ... ``max_count`` presenters until one falls below 24 fps; writes
    ``out/sessions.json`` (``argv``: the command's arguments, for its provenance)."""
    gpu_name = cuda_device_name() if gpu else None  # fails before starting anything
    steps: list[dict[str, Any]] = []
    chromium_version = None
    speech_s = seconds + SPEECH_MARGIN_S
    with tempfile.TemporaryDirectory() as folder:
        wav = write_speech(Path(folder) / "speech.wav", speech_s)
        for count in range(1, max_count + 1):
            step, chromium_version = measure(count, seconds, wav, gpu, Path(folder))
            steps.append(step)
            print(  # noqa: T201 - the command's progress
                f"{count} presenter(s): fps {[p['fps_presented'] for p in step['per_presenter']]}"
                f", machine CPU {step['machine_cpu_percent']} %",
                file=sys.stderr,
                flush=True,
            )
            if not step["sustained"]:
                break
    sustained = [step["presenters"] for step in steps if step["sustained"]]
    result = {
        "machine": {**machine_facts(), "gpu": gpu_name},
        "versions": versions(chromium_version),
        "config": {
            "max": max_count,
            "seconds": seconds,
            "device": "cuda" if gpu else "cpu",
            "serve_args": [
                "file:SPEECH.wav" if a.startswith("file:") else a for a in _serve_args(Path(), gpu)
            ],
            "viewers_per_presenter": 1,
            "fps_floor": FPS_FLOOR,
            "host": "127.0.0.1 (presenters and browsers on this machine)",
            "speech": {
                "source": "espeak-ng en-us, 165 wpm (presenter.testing.live_harness.write_speech)",
                "seconds": speech_s,
                "text": SPEECH,
            },
        },
        # the most presenters that all held >= 24 fps (0: not even one)
        "sustained_presenters": max(sustained, default=0),
        "stopped_below_floor_at": None if steps[-1]["sustained"] else steps[-1]["presenters"],
        "steps": steps,
    }
    if argv is None:
        argv = [f"--max={max_count}", f"--seconds={seconds:g}", *(["--gpu"] if gpu else [])]
    write_result(out / "sessions.json", result, "benchmarks.sessions", argv)
    return result


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.sessions", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--max", type=int, default=4, help="presenters at most (default 4)")
    parser.add_argument(
        "--seconds", type=float, default=10.0, help="measured window per step (default 10)"
    )
    parser.add_argument(
        "--gpu", action="store_true", help="serve --device cuda (CUDA machines only)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for sessions.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.max < 1 or args.seconds < 3:
        parser.error("needs --max >= 1 and --seconds >= 3")
    arguments = sys.argv[1:] if argv is None else argv
    try:
        result = run(args.max, args.seconds, args.gpu, args.out, arguments)
    except (GpuUnavailable, ServeFailed) as exc:
        raise SystemExit(f"benchmarks.sessions: {exc}") from None
    print(  # noqa: T201 - the command's output
        f"sustained at >= {FPS_FLOOR:g} fps: {result['sustained_presenters']} presenter(s)"
        + (
            f"; below it with {result['stopped_below_floor_at']}"
            if result["stopped_below_floor_at"]
            else f" (every step up to {args.max})"
        )
    )


if __name__ == "__main__":
    main()
