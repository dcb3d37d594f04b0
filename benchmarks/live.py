"""The live presenter as viewers see it: fps, A/V offset, glass-to-glass latency, server CPU.

``python -m benchmarks.live --viewers N [--seconds S] [--idle]`` starts
``python -m presenter serve --stamp`` (the default avatar, espeak-ng speaking a text long
enough for the run; ``--idle``: nothing said), opens N headless Chromium viewers on this
machine, clicks Start in each and measures, over S seconds from 1 s after the speech began:

- per viewer, from what the page presented and played (web/measure.js): frames presented per
  second, freezes, concealed audio, the A/V offset of each 1 s click against the stamped
  frame it belongs to, and glass-to-glass latency (the audio sample entering the server's
  pipeline -> the frame showing it displayed);
- the server's CPU (its own process and the engine process, % of one core) from /proc.

Everything runs on one machine: the browsers' decoding and rendering share its cores with
the server. Results are merged into ``benchmarks/results/live.json`` under ``viewers_N``
(``_idle``).
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

from benchmarks.provenance import provenance
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

RESULTS = Path(__file__).resolve().parent / "results"
SPEECH_SECONDS = 15.0  # about what espeak-ng takes for SPEECH at its default rate


def run(viewers: int, seconds: float, idle: bool) -> dict[str, Any]:
    repeats = max(1, math.ceil((seconds + 8.0) / SPEECH_SECONDS))
    args = ["--stamp", "--source", "none"] if idle else ["--stamp", "--text", SPEECH * repeats]
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "serve.log"
        with live_server(args, log) as server, chromium() as browser:
            pages = [open_viewer(browser, server.url) for _ in range(viewers)]
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
    for item in figures:
        item.pop("stats", None)
    offsets = [offset for item in figures for offset in item["av_offsets_ms"]]
    return {
        "viewers": viewers,
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
        "viewer  fps shown/decoded  freezes  concealed  A/V median ms (clicks)  "
        "glass-to-glass p50/p95 ms",
    ]
    for number, item in enumerate(result["per_viewer"], 1):
        g2g = item["glass_to_glass_ms"]
        median = item["av_offset_median_ms"]
        lines.append(
            f"{number:>6} {item['fps']:7.1f} / {item['fps_decoded']:4.1f} {item['freezes']:8d}"
            f" {item['concealed_fraction']:10.4f}"
            f"  {'-' if median is None else f'{median:+.1f}':>13} ({len(item['av_offsets_ms'])})"
            f"  {g2g['p50'] or 0:.0f} / {g2g['p95'] or 0:.0f}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.live", description=__doc__)
    parser.add_argument("--viewers", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--idle", action="store_true", help="nothing said: the idle stream")
    parser.add_argument("--out", type=Path, default=RESULTS / "live.json")
    args = parser.parse_args()
    result = run(args.viewers, args.seconds, args.idle)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    saved = json.loads(args.out.read_text()) if args.out.exists() else {}
    saved[f"viewers_{args.viewers}{'_idle' if args.idle else ''}"] = {
        "provenance": provenance("benchmarks.live"),
        **result,
    }
    args.out.write_text(json.dumps(saved, indent=2) + "\n")
    print(_table(result))  # noqa: T201 - the command's output


if __name__ == "__main__":
    main()
