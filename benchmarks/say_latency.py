"""From ``say`` to the first lip-synced frame on a viewer's screen.

``python -m benchmarks.say_latency [--says N] [--voice V]`` starts
``python -m presenter serve --source none --stamp`` (the default avatar, idle), opens one
headless Chromium viewer on this machine, then N times: sends ``say`` with a one-sentence
text over the control websocket, takes the ``speech started`` event's stream sample (the
first sample of the speech), and finds in the page's presented frames (stamped frame
indices read back in ``requestVideoFrameCallback``) when the frame holding that sample was
displayed. Reported per say and as p50 / p95, with the split below; then the same again
with ``serve --no-early-start`` (the sentence starts at the input position, D after the
call), back to back in the same run:

- ``server_ms``: say sent -> the first speech sample leaves the server's stream (its
  ``speech started`` event is sent at that moment): synthesis, the wait for the next 20 ms
  tick and the stream delay D;
- ``viewer_ms``: the rest: network, jitter buffer, decoding, display.

Both clocks are this machine's wall clock (the page's ``performance.timeOrigin + now``).
Results: ``say_latency.json`` in ``--out`` (default ``benchmarks/results``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from websockets.sync.client import connect

from benchmarks.provenance import RESULTS, write_result
from presenter.testing.live_harness import (
    chromium,
    click_start,
    live_server,
    open_viewer,
    wait_connected,
)

SENTENCES = (
    "Hello there.",
    "Good morning, everyone.",
    "Welcome back to the show.",
    "Let me tell you something.",
    "Here is the news.",
    "Thanks for joining us today.",
    "Mind the gap.",
    "That was quick.",
)
FRAME_SAMPLES = 1920  # 48 kHz samples per 25 fps frame


def _receive(ws: Any, kind: str, timeout: float = 20.0) -> dict[str, Any]:
    """The next message of type (or event) ``kind``."""
    deadline = time.monotonic() + timeout
    while True:
        message = json.loads(ws.recv(timeout=max(0.01, deadline - time.monotonic())))
        if kind in (message.get("type"), message.get("event")):
            return dict(message)


def _display_epoch_ms(page: Any, index: int, timeout: float = 10.0) -> float:
    """Wall-clock ms at which the page displayed the first frame >= ``index``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        data = page.evaluate(
            "({origin: performance.timeOrigin, frames: window.viewer.measurements().frames})"
        )
        shown = [t for i, t in data["frames"] if i >= index]
        if shown:
            return float(data["origin"] + min(shown))
        time.sleep(0.1)
    raise AssertionError(f"frame {index} was never displayed")


def measure(says: int, voice: str | None, log: Path, early_start: bool = True) -> dict[str, Any]:
    rows: list[dict[str, float]] = []  # one per say
    flags = ["--source", "none", "--stamp"] + ([] if early_start else ["--no-early-start"])
    with (
        live_server(flags, log) as server,
        chromium() as browser,
    ):
        page = open_viewer(browser, server.url)
        click_start(page)
        wait_connected(page)
        time.sleep(3.0)  # the page's stamps and jitter buffer settle
        ws_url = server.url.replace("http", "ws", 1) + "ws"
        with connect(ws_url, additional_headers={"Authorization": f"Bearer {server.token}"}) as ws:
            for number in range(says):
                text = SENTENCES[number % len(SENTENCES)]
                message: dict[str, Any] = {"type": "say", "text": text}
                if voice:
                    message["voice"] = voice
                dropped = server.status()["framesDropped"]
                sent = time.time() * 1000
                ws.send(json.dumps(message))
                started = _receive(ws, "speech started")
                left = time.time() * 1000
                _receive(ws, "speech ended")
                shown = _display_epoch_ms(page, started["pts"] // FRAME_SAMPLES)
                rows.append(
                    {
                        "say_to_frame_ms": shown - sent,
                        "server_ms": left - sent,
                        "viewer_ms": shown - left,
                        # frames the server's stream dropped meanwhile (late renders)
                        "frames_dropped": server.status()["framesDropped"] - dropped,
                    }
                )
                time.sleep(1.0)  # idle in between: every say starts from rest
        status = server.status()

    def summary(key: str) -> dict[str, float]:
        values = sorted(row[key] for row in rows)
        return {
            "p50": round(statistics.median(values), 1),
            "p95": round(values[min(len(values) - 1, int(0.95 * len(values)))], 1),
            "min": round(values[0], 1),
            "max": round(values[-1], 1),
        }

    return {
        "says": says,
        "voice": voice or "en-us (espeak-ng)",
        "delay_ms": status.get("delayMs"),
        "say_to_frame_ms": summary("say_to_frame_ms"),
        "server_ms": summary("server_ms"),
        "viewer_ms": summary("viewer_ms"),
        "rows": [{key: round(value, 1) for key, value in row.items()} for row in rows],
    }


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.say_latency", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--says", type=int, default=10, help="one-sentence says (default 10)")
    parser.add_argument("--voice", default=None, help="the voice (default: the server's)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for say_latency.json")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    result: dict[str, Any] = {"goal_ms": 300}
    # the same run, back to back: with the stream's early start, and without it
    for key, early in (("early_start", True), ("no_early_start", False)):
        with tempfile.TemporaryDirectory() as folder:
            result[key] = measure(args.says, args.voice, Path(folder) / "serve.log", early)
        brief = {k: v for k, v in result[key].items() if k != "rows"}
        print(key, json.dumps(brief), flush=True)  # noqa: T201
    write_result(args.out / "say_latency.json", result, "benchmarks.say_latency", argv)


if __name__ == "__main__":
    main()
