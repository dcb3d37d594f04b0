"""The live presenter as viewers see it: fps, A/V offset, glass-to-glass latency, server CPU.

``python -m benchmarks.live --viewers N [--sync MODES] [--seconds S] [--idle]`` starts
``python -m presenter serve --stamp`` (the default avatar, espeak-ng speaking a text long
enough for the run; ``--idle``: nothing said), opens N headless Chromium viewers per lip-sync
correction on this machine (the page's ``?sync=``, web/sync-trim.js; MODES: comma-separated,
default ``browser,off``: the production correction and none, side by side on the same server),
clicks Start in each and measures, over S seconds from 1 s after the speech began:

- per viewer, from what the page presented and played (web/measure.js): frames presented per
  second, freezes, concealed audio, the A/V offset of each 1 s click against the stamped
  frame it belongs to (from the page's first click on), and glass-to-glass latency (the
  audio sample entering the server's pipeline -> the frame showing it displayed);
- per lip-sync correction (``av_offset`` by mode,
  :func:`presenter.testing.latency.sync_mode_figures`): each viewer's offsets as a series
  ``[seconds from its first click, ms]``, median, p95 of ``|offset|``, the time to settle
  within 20 ms, the same from the third second on (``from_2s``) and the drift;
- the server's CPU (its own process and the engine process, % of one core) from /proc.

Everything runs on one machine: the browsers' decoding and rendering share its cores with
the server. Results are merged into ``live.json`` in ``--out`` (default
``benchmarks/results``) under ``viewers_N`` (N per correction; ``_idle``).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.provenance import RESULTS, provenance
from presenter.testing.latency import (
    SYNC_MODES,
    av_summary,
    click_series,
    offset_figures,
    parse_sync_modes,
    sync_mode_figures,
)
from presenter.testing.live_harness import (
    SPEECH,
    chromium,
    click_start,
    live_server,
    machine_cpu_jiffies,
    open_viewer,
    process_cpu_seconds,
    stamped_figures,
    wait_connected,
)

SPEECH_SECONDS = 15.0  # about what espeak-ng takes for SPEECH at its default rate


def run(
    viewers: int, seconds: float, idle: bool, modes: tuple[str, ...] = SYNC_MODES
) -> dict[str, Any]:
    """``viewers`` pages per lip-sync correction in ``modes`` on one server."""
    repeats = max(1, math.ceil((seconds + 8.0) / SPEECH_SECONDS))
    args = ["--stamp", "--source", "none"] if idle else ["--stamp", "--text", SPEECH * repeats]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with live_server(args, log) as server, chromium() as browser:
            wanted = [mode for mode in modes for _ in range(viewers)]
            pages = [open_viewer(browser, server.url, sync=mode) for mode in wanted]
            for page in pages:
                click_start(page)
            for page in pages:
                wait_connected(page)
            if not idle:
                pages[0].wait_for_function(
                    "window.viewer.stats().activity === 'speaking'", timeout=30_000
                )
            time.sleep(1.0)
            pid = server.process.pid
            cpu0, machine0, wall0 = (
                process_cpu_seconds(pid),
                machine_cpu_jiffies(),
                time.monotonic(),
            )
            status0 = server.status()
            time.sleep(seconds)
            cpu1, machine1, wall1 = (
                process_cpu_seconds(pid),
                machine_cpu_jiffies(),
                time.monotonic(),
            )
            status1 = server.status()
            time.sleep(0.6)  # the last clicks get matched
            figures = [stamped_figures(page, window_s=seconds) for page in pages]
    wall = wall1 - wall0
    engine = [member for member in cpu1 if member != pid]
    main_cpu = 100 * (cpu1[pid] - cpu0.get(pid, 0.0)) / wall
    engine_cpu = 100 * sum(cpu1[m] - cpu0.get(m, 0.0) for m in engine) / wall
    busy = (machine1[0] - machine0[0]) / max(machine1[1] - machine0[1], 1.0)
    series = []
    for mode, item in zip(wanted, figures, strict=True):
        item.pop("stats", None)
        if item["sync"] != mode:  # the page and SYNC_MODES disagree: no figures to trust
            raise RuntimeError(f"a page opened with sync={mode} ran with {item['sync']!r}")
        series.append((mode, click_series(item.pop("av_offset_clicks"))))
        item["av_offset"] = offset_figures(series[-1][1])
    offsets = [offset for item in figures for offset in item["av_offsets_ms"]]
    return {
        "viewers": viewers,  # per lip-sync correction
        "sync_modes": list(modes),
        "seconds": seconds,
        "speech": not idle,
        "delay_ms": status1["delayMs"],
        "frames_emitted": status1["framesEmitted"] - status0["framesEmitted"],
        "frames_dropped": status1["framesDropped"] - status0["framesDropped"],
        "server_cpu_percent": round(main_cpu, 1),  # of one core
        "engine_cpu_percent": round(engine_cpu, 1),
        "machine_cpu_percent": round(100 * busy, 1),  # of all cores, browsers included
        "cores": len(
            [
                line
                for line in Path("/proc/stat").read_text().split("\n")
                if line[:3] == "cpu" and line[3:4].isdigit()
            ]
        ),
        "av_offset_median_ms": statistics.median(offsets) if offsets else None,
        "av_offset": sync_mode_figures(series),
        "per_viewer": figures,
    }


def _table(result: dict[str, Any]) -> str:
    lines = [
        f"{result['viewers']} viewer(s), {'speech' if result['speech'] else 'idle'}, "
        f"{result['seconds']:.0f} s; stream delay {result['delay_ms']:.0f} ms; "
        f"frames dropped at the server {result['frames_dropped']} of "
        f"{result['frames_emitted'] + result['frames_dropped']}",
        f"CPU (% of one core): server {result['server_cpu_percent']}, engine "
        f"{result['engine_cpu_percent']}; machine {result['machine_cpu_percent']} % of "
        f"{result['cores']} cores (browsers included)",
        "viewer  sync     fps shown/decoded  freezes  concealed  A/V median ms (clicks)  "
        "glass-to-glass p50/p95 ms",
    ]
    for number, item in enumerate(result["per_viewer"], 1):
        g2g = item["glass_to_glass_ms"]
        median = item["av_offset_median_ms"]
        lines.append(
            f"{number:>6}  {item['sync']:<8}{item['fps']:7.1f} / {item['fps_decoded']:4.1f}"
            f" {item['freezes']:8d}"
            f" {item['concealed_fraction']:10.4f}"
            f"  {'-' if median is None else f'{median:+.1f}':>13} ({len(item['av_offsets_ms'])})"
            f"  {g2g['p50'] or 0:.0f} / {g2g['p95'] or 0:.0f}"
        )
    lines += [av_summary(mode, av) for mode, av in result["av_offset"].items()]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__)
    parser.add_argument("--viewers", type=int, default=1, help="pages per lip-sync correction")
    parser.add_argument(
        "--sync",
        default=",".join(SYNC_MODES),
        help="the pages' lip-sync corrections, comma-separated (default and known: "
        f"{','.join(SYNC_MODES)})",
    )
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", action="store_true", help="nothing said: the idle stream")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for live.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        modes = parse_sync_modes(args.sync)
    except ValueError as exc:
        parser.error(f"--sync: {exc}")
    result = run(args.viewers, args.seconds, args.idle, modes)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "live.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[f"viewers_{args.viewers}{'_idle' if args.idle else ''}"] = {
        "provenance": provenance("benchmarks.live", argv),
        **result,
    }
    path.write_text(json.dumps(saved, indent=2) + "\n")
    print(_table(result))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
