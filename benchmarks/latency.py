"""Where the live presenter's latency goes: the server's stages, glass to glass, A/V sync.

``python -m benchmarks.latency [--viewers N] [--sync MODES] [--seconds S] [--backend B]
[--out DIR]`` runs
two configurations back to back, in the same run, on the same speech file (espeak-ng, written
with ``presenter.testing.live_harness.write_speech``, long enough for S):

- ``model``: ``presenter serve --source file:SPEECH.wav --stamp [--backend B]``, the
  presenter as shipped;
- ``prerendered``: ``presenter serve --engine prerendered --source file:SPEECH.wav --stamp``,
  the same presenter with the engine replaced by a pre-rendered frame sequence at no cost:
  the transport-only floor.

For each, N headless Chromium viewers per lip-sync correction on 127.0.0.1 click Start (the
page's ``?sync=``, web/sync-trim.js; MODES: comma-separated, default ``browser,off``: the
production correction and none, side by side on the same server, N pages each); from 3 s
after the speech began and over S seconds it measures:

- the server's pipeline, per frame, from its trace (``GET /api/trace?since=K``, the control
  token as bearer): audio in -> ready (the frame's audio and the model's look-ahead are in)
  -> submitted to the engine -> rendered -> released (held until its place in the stream
  delay) -> encoded -> sent (first and last viewer), and the engine's own stages (features,
  motion, generator, composite, colour), each as p50 / p95 / p99;
- per viewer, from what the page presented and played (web/measure.js, ``--stamp``):
  glass-to-glass latency (the frame's first audio sample entering the server -> the frame
  displayed), fps presented and decoded, freezes, concealed audio, and the A/V offset of
  each 1 s click from the page's first click to the window's end;
- per lip-sync correction (``av_offset`` by mode: the figures of
  :func:`presenter.testing.latency.offset_figures`): each viewer's offsets as a series
  ``[seconds from its first click, ms]``, median, p95 of ``|offset|``, the time to settle
  within 20 ms, the same from the third second on (``from_2s``) and the drift (slope of a
  fitted line, and last minus first; the mode's steepest viewer);
- the server's CPU (its process and the engine's, % of one core) and resident memory, from
  /proc.

Then the ratios model / prerendered (glass-to-glass p50, server pipeline p50) and the goals
with pass or fail. Everything runs on one machine: the browsers share its cores with the
server. Output: ``DIR/latency.json``, ``DIR/latency_stages.png`` (a latency histogram per
stage, both configurations) and ``DIR/latency_av_offset.png`` (A/V offset over the run).
Default DIR: ``benchmarks/results``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from contextlib import ExitStack
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.latency_plots import plot_av_offset, plot_stages
from benchmarks.provenance import RESULTS, write_result
from presenter.testing.latency import (
    PRODUCTION_SYNC,
    STAGES,
    SYNC_MODES,
    SYNC_TOLERANCE_MS,
    TraceReader,
    TraceUnavailable,
    av_summary,
    lookahead_ms,
    parse_sync_modes,
    summary,
    sync_mode_figures,
    trace_figures,
    viewer_figures,
)
from presenter.testing.live_harness import (
    SPEECH,
    LiveServer,
    chromium,
    click_start,
    live_server,
    machine_cpu_jiffies,
    open_viewer,
    process_cpu_seconds,
    rss_bytes,
    wait_connected,
    write_speech,
)

SPEECH_MARGIN_S = 12.0  # speech before and after the window: connect, settle, the last frames
SETTLE_S = 3.0  # from the first speech to the window's start

CONFIGURATIONS = ("model", "prerendered")
GOALS = {
    "glass_to_glass_p50_ms": 200.0,
    "glass_to_glass_p95_ms": 250.0,
    "pipeline_vs_transport_only": 4.0,
    "av_offset_abs_ms": SYNC_TOLERANCE_MS,
    "av_drift_10min_ms": 10.0,
    "fps_one_viewer": 24.0,  # 25 fps, as counted over a window (one frame of slack)
}


class ServeFailed(RuntimeError):
    """``presenter serve`` did not start with the arguments a configuration needs."""


# -- one configuration (the figures: presenter.testing.latency) ------------------------------


def _serve_args(config: str, wav: Path, backend: str | None) -> list[str]:
    args = ["--source", f"file:{wav}", "--stamp"]
    if config == "prerendered":
        return ["--engine", "prerendered", *args]
    return [*args, *(["--backend", backend] if backend else [])]


def _start(stack: ExitStack, config: str, args: list[str], log: Path) -> LiveServer:
    try:
        return stack.enter_context(live_server(args, log))
    except AssertionError as exc:
        text = log.read_text() if log.exists() else ""
        if "--engine" in text and "unrecognized arguments" in text:
            raise ServeFailed(
                "this presenter has no `serve --engine prerendered` (the transport-only "
                "configuration the benchmark compares the model with)"
            ) from exc
        raise ServeFailed(f"serve did not start for the {config} configuration: {exc}") from exc


def measure(
    config: str,
    args: list[str],
    viewers: int,
    seconds: float,
    log: Path,
    *,
    modes: tuple[str, ...] = SYNC_MODES,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """One configuration, ``viewers`` pages per lip-sync correction in ``modes``: (its
    figures, the samples for the plots)."""
    with ExitStack() as stack:
        server = _start(stack, config, args, log)
        trace = TraceReader(server)
        trace.poll()  # fails now, before the browser, when the server has no trace
        browser = stack.enter_context(chromium())
        wanted = [mode for mode in modes for _ in range(viewers)]
        pages = [open_viewer(browser, server.url, sync=mode) for mode in wanted]
        for page in pages:
            click_start(page)
        for page in pages:
            wait_connected(page)
        pages[0].wait_for_function("window.viewer.stats().activity === 'speaking'", timeout=30_000)
        time.sleep(SETTLE_S)
        trace.poll()
        pid = server.process.pid
        status0 = server.status()
        cpu0, machine0 = process_cpu_seconds(pid), machine_cpu_jiffies()
        wall0, lo = time.monotonic(), time.time() * 1000
        load = [round(value, 2) for value in os.getloadavg()]
        rss: list[tuple[int, dict[int, int]]] = []
        while (left := wall0 + seconds - time.monotonic()) > 0:
            time.sleep(min(1.0, left))
            trace.poll()
            tree = process_cpu_seconds(pid)
            rss.append((pid, rss_bytes(list(tree))))
        cpu1, machine1 = process_cpu_seconds(pid), machine_cpu_jiffies()
        wall1, hi = time.monotonic(), time.time() * 1000
        status1 = server.status()
        time.sleep(1.0)  # the window's last frames are sent, its last clicks matched
        trace.poll()
        per_viewer = [viewer_figures(page, lo, hi) for page in pages]
        chromium_version = str(browser.version)
    for mode, item in zip(wanted, per_viewer, strict=True):
        if item["sync"] != mode:  # the page and SYNC_MODES disagree: no figures to trust
            raise RuntimeError(f"a page opened with sync={mode} ran with {item['sync']!r}")

    wall = wall1 - wall0
    engine_pids = [member for member in cpu1 if member != pid]
    server_cpu = 100 * (cpu1[pid] - cpu0.get(pid, 0.0)) / wall
    engine_cpu = 100 * sum(cpu1[m] - cpu0.get(m, 0.0) for m in engine_pids) / wall
    busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1.0)
    server_rss = [sizes.get(main, 0) / 2**20 for main, sizes in rss]
    engine_rss = [sum(v for k, v in sizes.items() if k != main) / 2**20 for main, sizes in rss]
    delay_ms = float(trace.last.get("delayMs") or status1["delayMs"])
    budget_ms = float(trace.last.get("renderBudgetMs") or 0.0)
    series = [item.pop("_series") for item in per_viewer]
    lookahead = lookahead_ms(trace.frames, series[0]["audio_in"], delay_ms, budget_ms)
    figures, stage_samples = trace_figures(list(trace.frames.values()), lookahead["ms"], lo, hi)
    figures["lookahead"] = lookahead
    g2g_all = [ms for item in series for ms in item["glass_to_glass"]]
    av = sync_mode_figures(
        [(mode, item["av_offset"]) for mode, item in zip(wanted, series, strict=True)]
    )
    result = {
        "serve_args": list(args),
        "engine": trace.last.get("engine"),
        "chromium": chromium_version,
        "delay_ms": delay_ms,
        "render_budget_ms": budget_ms,
        "window_s": round(wall, 2),
        "load_average_at_start": load,  # 1, 5, 15 min: the machine is shared
        "server_status": {
            "frames_emitted": status1["framesEmitted"] - status0["framesEmitted"],
            "frames_dropped": status1["framesDropped"] - status0["framesDropped"],
        },
        "trace": figures,
        "glass_to_glass_ms": summary(g2g_all),
        "av_offset": av,
        "viewers": per_viewer,
        "server": {
            "cpu_percent": {  # of one core
                "server": round(server_cpu, 1),
                "engine": round(engine_cpu, 1),
                "total": round(server_cpu + engine_cpu, 1),
            },
            "rss_mb": {
                "server": _mean_max(server_rss),
                "engine": _mean_max(engine_rss),
                "total": _mean_max([a + b for a, b in zip(server_rss, engine_rss, strict=True)]),
            },
            "processes": len(cpu1),
            "machine_cpu_percent": round(100 * busy, 1),  # all cores, browsers included
        },
    }
    plot = {
        "stages": stage_samples,
        "glass_to_glass": g2g_all,
        "av_offset": [(mode, item["av_offset"]) for mode, item in zip(wanted, series, strict=True)],
    }
    return result, plot


def _mean_max(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"mean": None, "max": None}
    return {"mean": round(float(np.mean(values)), 1), "max": round(float(np.max(values)), 1)}


# -- the run ---------------------------------------------------------------------------------


def machine_facts() -> dict[str, Any]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in cpuinfo.splitlines()
            if line.startswith("model name")
        ),
        platform.processor() or None,
    )
    meminfo = Path("/proc/meminfo").read_text() if Path("/proc/meminfo").exists() else ""
    total_kb = next(
        (int(line.split()[1]) for line in meminfo.splitlines() if line.startswith("MemTotal:")),
        None,
    )
    return {
        "cpu_model": model,
        "cores": os.cpu_count(),
        "ram_gb": None if total_kb is None else round(total_kb / 2**20, 1),
        "os": platform.platform(),
    }


def versions(chromium_version: str | None) -> dict[str, str | None]:
    found: dict[str, str | None] = {"python": platform.python_version()}
    for package in ("torch", "aiortc", "av", "numpy", "playwright"):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            found[package] = None
    found["chromium"] = chromium_version
    return found


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else round(a / b, 2)


def goals(result: dict[str, Any], viewers: int) -> dict[str, dict[str, Any]]:
    model = result["configurations"]["model"]
    g2g = model["glass_to_glass_ms"]
    # the correction every viewer gets; without it (a run with --sync off only) nothing
    av = model["av_offset"].get(PRODUCTION_SYNC)
    settled = None if av is None else av["from_2s"]
    ratio = result["ratios"]["pipeline_p50"]
    drift = None if settled is None else settled["drift_10min_ms_extrapolated"]
    fps = [item["fps_stamped"] for item in model["viewers"]]
    pages = len(model["viewers"])

    def check(value: float | None, limit: float, at_most: bool = True) -> bool | None:
        if value is None:
            return None
        return abs(value) <= limit if at_most else value >= limit

    return {
        "glass_to_glass_p50": {
            "goal": "<= 200 ms (model, all viewers' frames)",
            "value_ms": g2g["p50"],
            "pass": check(g2g["p50"], GOALS["glass_to_glass_p50_ms"]),
        },
        "glass_to_glass_p95": {
            "goal": "<= 250 ms (model, all viewers' frames)",
            "value_ms": g2g["p95"],
            "pass": check(g2g["p95"], GOALS["glass_to_glass_p95_ms"]),
        },
        "pipeline_vs_transport_only": {
            "goal": "server pipeline p50 (audio in -> sent) <= 4x the prerendered engine's",
            "value": ratio,
            "pass": check(ratio, GOALS["pipeline_vs_transport_only"]),
        },
        "av_offset": {
            "goal": f"|A/V offset| <= 20 ms from the third second on (model, sync="
            f"{PRODUCTION_SYNC}: p95 of |offset| of its viewers' clicks from 2 s after each "
            "one's first)",
            "value_ms": None if settled is None else settled["p95_abs_ms"],
            "max_abs_ms": None if settled is None else settled["max_abs_ms"],
            "within_20ms_fraction": None if settled is None else settled["within_20ms_fraction"],
            "settle_20ms_s": None if av is None else av["settle_20ms_s"],
            "pass": None
            if settled is None
            else check(settled["p95_abs_ms"], GOALS["av_offset_abs_ms"]),
        },
        "av_drift": {
            "goal": f"drift <= 10 ms over 10 min (model, sync={PRODUCTION_SYNC})",
            "value_ms": drift,
            "slope_ms_per_min": None if settled is None else settled["slope_ms_per_min"],
            "slope_stderr_ms_per_min": None
            if settled is None
            else settled["slope_stderr_ms_per_min"],
            "note": f"extrapolated to 10 min from the slope of a line fitted over this "
            f"{result['config']['seconds']:.0f} s run (from the third second on, the steepest "
            f"viewer's), not measured over 10 min; the page's sync={PRODUCTION_SYNC} "
            "correction steers the offset meanwhile",
            "pass": check(drift, GOALS["av_drift_10min_ms"]),
        },
        "fps_one_viewer": {
            "goal": "25 fps presented with 1 viewer (>= 24 counted over the window; the first "
            "page's)",
            "value": fps[0] if viewers == 1 and fps else None,
            "pass": check(fps[0], GOALS["fps_one_viewer"], at_most=False)
            if viewers == 1 and fps
            else None,
            "note": f"{pages} page(s) watched ({viewers} per lip-sync correction)",
        },
    }


def run(
    viewers: int = 1,
    seconds: float = 30.0,
    backend: str | None = None,
    out: Path = RESULTS,
    argv: list[str] | None = None,
    *,
    modes: tuple[str, ...] = SYNC_MODES,
) -> dict[str, Any]:
    """Both configurations back to back; writes ``out/latency.json`` and the two plots and
    returns what it wrote (``argv``: the command's arguments, for its provenance)."""
    out.mkdir(parents=True, exist_ok=True)
    configurations: dict[str, Any] = {}
    plots: dict[str, Any] = {}
    speech_s = seconds + SPEECH_MARGIN_S
    with tempfile.TemporaryDirectory() as folder:
        wav = write_speech(Path(folder) / "speech.wav", speech_s)
        for config in CONFIGURATIONS:
            args = _serve_args(config, wav, backend)
            log = Path(folder) / f"serve-{config}.log"
            configurations[config], plots[config] = measure(
                config, args, viewers, seconds, log, modes=modes
            )
            _progress(config, configurations[config])
    for item in configurations.values():  # the temporary file's path means nothing later
        item["serve_args"] = [
            "file:SPEECH.wav" if a.startswith("file:") else a for a in item["serve_args"]
        ]
    model, floor = configurations["model"], configurations["prerendered"]
    if argv is None:
        argv = [f"--viewers={viewers}", f"--sync={','.join(modes)}", f"--seconds={seconds:g}"]
        argv += [f"--backend={backend}"] if backend else []
    result: dict[str, Any] = {
        "machine": machine_facts(),
        "versions": versions(model.get("chromium")),
        "config": {
            "viewers": viewers,  # per lip-sync correction
            "sync_modes": list(modes),
            "seconds": seconds,
            "backend": backend or "auto",
            "host": "127.0.0.1 (server and browsers on this machine)",
            "speech": {
                "source": "espeak-ng en-us, 165 wpm, 16-bit mono wav "
                "(presenter.testing.live_harness.write_speech, its text repeated)",
                "seconds": speech_s,
                "text": SPEECH,
            },
            "settle_s": SETTLE_S,
            "window": f"{seconds:g} s from {SETTLE_S:g} s after the first viewer saw speech start",
        },
        "configurations": configurations,
        "ratios": {  # model / prerendered
            "glass_to_glass_p50": _ratio(
                model["glass_to_glass_ms"]["p50"], floor["glass_to_glass_ms"]["p50"]
            ),
            "pipeline_p50": _ratio(
                model["trace"]["pipeline_ms"]["p50"], floor["trace"]["pipeline_ms"]["p50"]
            ),
        },
        "plots": ["latency_stages.png", "latency_av_offset.png"],
    }
    result["goals"] = goals(result, viewers)
    write_result(out / "latency.json", result, "benchmarks.latency", argv)
    plot_stages(plots, out / "latency_stages.png", result)
    plot_av_offset(plots, out / "latency_av_offset.png", result)
    return result


def _progress(config: str, item: dict[str, Any]) -> None:
    trace, g2g = item["trace"], item["glass_to_glass_ms"]
    av = ", ".join(
        f"{mode} {figures['median_ms']} (p95 |.| from 2 s {figures['from_2s']['p95_abs_ms']})"
        for mode, figures in item["av_offset"].items()
    )
    print(  # noqa: T201 - the command's progress
        f"{config}: pipeline p50 {trace['pipeline_ms']['p50']} ms, glass-to-glass p50 "
        f"{g2g['p50']} ms, A/V median ms: {av}; fps "
        f"{[v['fps_stamped'] for v in item['viewers']]}",
        file=sys.stderr,
        flush=True,
    )


# -- plots -----------------------------------------------------------------------------------


# -- command ---------------------------------------------------------------------------------


def _table(result: dict[str, Any]) -> str:
    lines = []
    for config in CONFIGURATIONS:
        item = result["configurations"][config]
        trace = item["trace"]
        lines.append(
            f"{config}: delay {item['delay_ms']:.0f} ms (render budget "
            f"{item['render_budget_ms']:.0f}), {trace['frames']} frames traced, "
            f"{trace['dropped']} dropped; CPU server {item['server']['cpu_percent']['server']} % "
            f"+ engine {item['server']['cpu_percent']['engine']} %"
        )
        for name, _, _ in STAGES:
            s = trace["stages_ms"][name]
            lines.append(f"  {name:<10} p50 {s['p50']} / p95 {s['p95']} / p99 {s['p99']} ms")
        for label, s in (
            ("pipeline", trace["pipeline_ms"]),
            ("glass2glass", item["glass_to_glass_ms"]),
        ):
            lines.append(f"  {label:<10} p50 {s['p50']} / p95 {s['p95']} / p99 {s['p99']} ms")
        lines += [f"  {av_summary(mode, av)}" for mode, av in item["av_offset"].items()]
    lines.append(f"ratios model/prerendered: {json.dumps(result['ratios'])}")
    for name, goal in result["goals"].items():
        verdict = {True: "pass", False: "FAIL", None: "n/a"}[goal["pass"]]
        lines.append(f"goal {name}: {verdict} ({goal['goal']})")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--viewers", type=int, default=1, help="pages per lip-sync correction (default 1)"
    )
    parser.add_argument(
        "--sync",
        default=",".join(SYNC_MODES),
        help="the pages' lip-sync corrections, comma-separated (default and known: "
        f"{','.join(SYNC_MODES)})",
    )
    parser.add_argument(
        "--seconds", type=float, default=30.0, help="measured window per configuration"
    )
    parser.add_argument(
        "--backend", default=None, help="serve --backend for the model configuration"
    )
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for the results")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.viewers < 1 or args.seconds < 3:
        parser.error("needs at least 1 viewer and 3 seconds")
    try:
        modes = parse_sync_modes(args.sync)
    except ValueError as exc:
        parser.error(f"--sync: {exc}")
    arguments = sys.argv[1:] if argv is None else argv
    try:
        result = run(args.viewers, args.seconds, args.backend, args.out, arguments, modes=modes)
    except (TraceUnavailable, ServeFailed) as exc:
        raise SystemExit(f"benchmarks.latency: {exc}") from None
    print(_table(result))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
