"""Driving the live presenter as its users do, for the browser tests and the live benchmarks:
``python -m presenter serve`` in its own process, Debian's Chromium as the viewer.

Shipped with the package so that the tests and ``benchmarks/`` share one harness (neither
imports the other). Playwright is a dev extra: it is imported only when a browser starts,
and its absence is one ImportError that says how to install it.

Playwright's own browser download does not work on these machines: ``/usr/bin/chromium``
(installed by ``scripts/setup``) is launched with autoplay allowed and sound on (Playwright
mutes by default), headless, with the background networking that a closed network refuses
switched off. WebRTC host candidates are real addresses, not mDNS names (the server's ICE
agent does not resolve ``.local`` names).

Figures come from the page (``web/measure.js``, ``window.viewer``): with ``serve --stamp``
every presented frame's number is read back and the audio's clicks are heard, so fps, A/V
offset and glass-to-glass latency are what the browser presented and played. The stamps only
measure: the page's lip-sync correction is its ``sync=`` query parameter (``open_viewer``'s
``sync``; ``web/sync-trim.js``), reported back as the figures' ``sync``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request
import wave
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from engine.audio import float_to_pcm16

# where ``python -m presenter`` is run from: the folder that holds the presenter package (the
# checkout, or site-packages where it is installed)
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
PLAYWRIGHT_HINT = (
    "the live harness drives Chromium with Playwright, a dev extra: "
    "pip install -e '.[dev]' (or pip install playwright)"
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = (
    "--autoplay-policy=no-user-gesture-required",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
)


def chromium_path() -> str | None:
    return CHROMIUM if shutil.which(CHROMIUM) else None


def fake_microphone_args(wav: str) -> list[str]:
    """Chromium flags: a microphone that plays ``wav`` (looped), granted without asking."""
    return [
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}",
    ]


@contextmanager
def chromium(extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """A fresh headless Chromium (``browser.new_page()`` for each viewer)."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        raise ImportError(PLAYWRIGHT_HINT) from exc

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, *extra_args],
            ignore_default_args=["--mute-audio"],
        )
        try:
            yield browser
        finally:
            browser.close()


@contextmanager
def chromium_page(extra_args: Sequence[str] = ()) -> Iterator[Any]:
    """A new page in a fresh headless Chromium."""
    with chromium(extra_args) as browser:
        yield browser.new_page()


SPEECH = (
    "Good morning, and welcome to the show. Today we look at the weather across the country. "
    "Expect bright sunshine in the south, with a light breeze along the coast. "
    "In the north, clouds gather by the afternoon, and some rain may follow tonight."
)


def write_speech(path: Path, seconds: float = 11.0, text: str = SPEECH) -> Path:
    """espeak-ng speech of ``text`` (repeated up to ``seconds``), as a 16-bit mono wav."""
    from engine.speech.espeak import EspeakVoice

    utterance = EspeakVoice(voice="en-us", rate_wpm=165).synthesize(text)
    audio = np.asarray(utterance.audio, np.float32)
    rate = utterance.sample_rate
    repeats = int(np.ceil(seconds * rate / len(audio)))
    return write_wav(path, np.tile(audio, repeats)[: int(seconds * rate)], rate)


def write_wav(path: Path, audio: np.ndarray, rate: int) -> Path:
    """Mono float audio in [-1, 1] as a 16-bit WAV file (what Chromium's fake microphone
    plays)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(float_to_pcm16(audio).astype("<i2").tobytes())
    return path


class LiveServer:
    def __init__(
        self, url: str, process: subprocess.Popen[str], log: Path, token: str | None = None
    ) -> None:
        self.url = url
        self.token = token  # the control token the server printed
        self.process = process
        self.log = log

    def status(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url + "status", timeout=10) as response:
            return dict(json.load(response))


@contextmanager
def live_server(args: Sequence[str], log: Path, timeout: float = 180.0) -> Iterator[LiveServer]:
    """``presenter serve --port 0 ARGS`` until the block ends (then Ctrl-C, as a user would)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "presenter", "serve", "--port", "0", *args]
    with open(log, "w") as errors:
        process = subprocess.Popen(
            command, cwd=PACKAGE_ROOT, env=env, stdout=subprocess.PIPE, stderr=errors, text=True
        )
        lines: list[str] = []
        reader = threading.Thread(
            target=lambda: lines.extend(process.stdout or []), daemon=True
        )  # the URL line; the command prints nothing else
        reader.start()
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise AssertionError(
                    f"serve did not start (exit {process.poll()}):\n{log.read_text()[-3000:]}"
                )
            url = next(
                (line.split()[3] for line in lines if line.startswith("Presenter live")), None
            )
            time.sleep(0.1)
        time.sleep(0.2)  # the token line follows the URL line
        token = next((line.split()[2] for line in lines if line.startswith("Control token:")), None)
        try:
            yield LiveServer(url, process, log, token)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def process_cpu_seconds(pid: int) -> dict[int, float]:
    """CPU seconds (user + system) of ``pid`` and of each of its descendants, from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry.name)] = int(fields[1])
        times[int(entry.name)] = (int(fields[11]) + int(fields[12])) / ticks
    tree, frontier = {pid}, [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    return {member: times[member] for member in tree if member in times}


def viewer_url(url: str, sync: str | None = None) -> str:
    """The viewer page at ``url`` with its lip-sync correction ``sync`` (None: the page's
    default)."""
    return url if sync is None else f"{url}?{urllib.parse.urlencode({'sync': sync})}"


def open_viewer(browser: Any, url: str, sync: str | None = None) -> Any:
    """A new page on the viewer, loaded (not started), with the lip-sync correction ``sync``
    (``?sync=``; None: the page's default); ``page.errors`` collects JS errors."""
    page = browser.new_page(viewport={"width": 560, "height": 640})
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.errors = errors
    page.goto(viewer_url(url, sync))
    page.wait_for_function("window.viewer && window.viewer.ready", timeout=30_000)
    return page


def click_start(page: Any) -> None:
    page.click("#start")


def wait_connected(page: Any, timeout_s: float = 30) -> None:
    page.wait_for_function("window.viewer.stats().state === 'connected'", timeout=timeout_s * 1000)


def stats_window(samples: list[Any], lo: float, hi: float) -> dict[str, Any]:
    """From the page's getStats samples ([perf ms, values], every 500 ms) nearest ``lo`` and
    ``hi``: what the browser decoded, presented, froze and concealed in between."""
    t0, a = min(samples, key=lambda item: abs(item[0] - lo))
    t1, b = min(samples, key=lambda item: abs(item[0] - hi))
    seconds = (t1 - t0) / 1000
    received = b["audioTotalSamplesReceived"] - a["audioTotalSamplesReceived"]
    concealed = b["audioConcealedSamples"] - a["audioConcealedSamples"]
    return {
        "seconds": seconds,
        "fps_presented": (b["framesPresented"] - a["framesPresented"]) / seconds,
        "fps_decoded": (b["framesDecoded"] - a["framesDecoded"]) / seconds,
        "freezes": b["freezeCount"] - a["freezeCount"],
        "audio_samples": received,
        "concealed_fraction": concealed / received if received else 1.0,
    }


def stamped_figures(page: Any, window_s: float = 10.0) -> dict[str, Any]:
    """What one page presented, over ``window_s`` from 1 s after its first stamped frame; its
    A/V offsets from its first click on (``av_offsets_ms``, and ``av_offset_clicks``: the
    ``[stream sample, ms]`` rows), and the lip-sync correction it ran with (``sync``)."""
    data = page.evaluate("window.viewer.measurements()")
    frames = data["frames"]
    assert frames, "no stamped frame was presented"
    first = frames[0][1]
    lo, hi = first + 1000.0, first + 1000.0 + window_s * 1000.0
    shown = {index for index, t in frames if lo <= t < hi}
    window = stats_window(data["getStatsSamples"], lo, hi)
    offsets = [offset for sample, offset in data["avOffsets"]]
    g2g = sorted(ms for _, ms in data["glassToGlass"])
    return {
        "sync": data.get("syncMode"),
        "sync_warning": data.get("syncWarning"),
        # distinct stamped frames the page presented (requestVideoFrameCallback)
        "fps": len(shown) / window_s,
        # frames the browser decoded (getStats), over the stats samples nearest the window
        "fps_decoded": window["fps_decoded"],
        "freezes": window["freezes"],
        "audio_samples": window["audio_samples"],
        "concealed_fraction": window["concealed_fraction"],
        "av_offsets_ms": offsets,
        "av_offset_clicks": [[int(sample), float(ms)] for sample, ms in data["avOffsets"]],
        "av_offset_median_ms": statistics.median(offsets) if offsets else None,
        "glass_to_glass_ms": {
            "p50": g2g[len(g2g) // 2] if g2g else None,
            "p95": g2g[int(len(g2g) * 0.95)] if g2g else None,
            "frames": len(g2g),
        },
        "stats": page.evaluate("window.viewer.stats()"),
        "errors": list(page.errors),
    }


def presented_figures(page: Any, skip_s: float, window_s: float) -> dict[str, Any]:
    """Frames presented and decoded per second (no stamps), ``skip_s`` after the first
    stats sample, over ``window_s``; freezes and concealed audio over the same window (all
    of it concealed when no audio came)."""
    samples = page.evaluate("window.viewer.measurements()")["getStatsSamples"]
    assert samples, "no stats were sampled"
    lo = samples[0][0] + skip_s * 1000
    return {**stats_window(samples, lo, lo + window_s * 1000), "errors": list(page.errors)}


# -- helpers of the latency and sessions benchmarks ------------------------------------------


def machine_cpu_jiffies() -> tuple[float, float]:
    """(busy, total) jiffies of the whole machine, all cores, from /proc/stat."""
    fields = [float(x) for x in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def rss_bytes(pids: Sequence[int]) -> dict[int, int]:
    """Resident set size of each of ``pids`` still running, from /proc/PID/status (VmRSS)."""
    sizes: dict[int, int] = {}
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("VmRSS:"):
                sizes[pid] = int(line.split()[1]) * 1024
                break
    return sizes
