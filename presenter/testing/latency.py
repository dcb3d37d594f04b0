"""The figures of a latency run: the server's trace per stage, and what a page presented.

``benchmarks/latency.py`` runs the live presenter (``serve --stamp``) with headless Chromium
viewers; this is how it reads the server's per-frame trace (``GET /api/trace?since=K``, see
:mod:`presenter.trace`) and turns it and the page's measurements (``web/measure.js``) into
figures: each stage of a frame's way through the server, glass-to-glass latency, the A/V
offset per click and its drift. Shipped with the package, beside
:mod:`presenter.testing.live_harness`, so that the tests check the arithmetic without
importing the benchmark.

A/V offsets. The page only measures them (each 1 s click against the stamped frame it
belongs to); its lip-sync correction is chosen apart, by its ``sync=`` query parameter
(``web/sync-trim.js``): ``browser``, the production correction every viewer gets, or ``off``,
none. A run watches with both, and reports each mode apart. :func:`click_series` makes a
page's clicks a series of ``[t, ms]``: ``t`` seconds from the first click the page measured,
``ms`` the offset (positive: audio late). :func:`offset_figures` of a series:

- ``clicks``, ``median_ms``, ``mean_ms``, ``p95_abs_ms``, ``max_abs_ms``,
  ``within_20ms_fraction`` (of the clicks with ``|ms| <= 20``), ``span_s``: over every click;
- ``settle_20ms_s``: the first click time after which every ``|ms|`` stays <= 20 (0 when all
  do; null when the last one does not);
- drift: ``slope_ms_per_min`` (least squares) with ``slope_stderr_ms_per_min``,
  ``slope_robust_ms_per_min`` (Theil-Sen), ``first_to_last_ms`` and
  ``drift_10min_ms_extrapolated`` (``|slope|`` over 10 min);
- ``from_2s``: the same level, spread and drift figures over the clicks from the third
  second on (``t >= 2``), what the lip-sync goal is judged on.

:func:`sync_mode_figures` puts the viewers of each mode together: the figures of all their
clicks (merged by ``t``), the drift figures of the mode's steepest viewer, and the series of
each of its viewers.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.request
from typing import Any

import numpy as np

from engine.frames import FPS
from presenter.media import CHUNK_MS as STREAM_CHUNK_MS
from presenter.media import OUTPUT_RATE
from presenter.testing.live_harness import LiveServer, stats_window
from presenter.trace import EVENTS
from presenter.trace import STAGES as TRACE_STAGES

SAMPLE_RATE = OUTPUT_RATE  # the stream's audio rate
FRAME_SAMPLES = OUTPUT_RATE // FPS  # samples per 25 fps frame
FRAME_MS = 1000 * FRAME_SAMPLES / SAMPLE_RATE
TRACE_OVERLAP = 25  # frames re-read at each poll: entries still filling in (sent, ...)
SYNC_MODES = ("browser", "off")  # the page's sync= values (web/sync-trim.js SYNC_MODES)
PRODUCTION_SYNC = SYNC_MODES[0]  # the correction every viewer gets: what the goals judge
SYNC_TOLERANCE_MS = 20.0  # |A/V offset| that counts as in sync (the lip-sync goal)
SETTLED_FROM_S = 2.0  # from the third second after the first click on: ``from_2s``
DRIFT_KEYS = (
    "slope_ms_per_min",
    "slope_stderr_ms_per_min",
    "slope_robust_ms_per_min",
    "first_to_last_ms",
    "drift_10min_ms_extrapolated",
)

# The points of a frame's way through the server, in order. The trace's ``input`` is when the
# input that completes the frame (its own audio and the model's look-ahead) came in: the
# frame is ready to render. ``audio_in`` (its first audio sample came in, where the page's
# glass-to-glass starts) is ``input`` less a constant look-ahead (see ``lookahead_ms``).
CHAIN = ("audio_in", *EVENTS)
STAGES = (
    ("lookahead", "audio_in", "input"),  # the frame's audio and the model's look-ahead come in
    ("queue", "input", "submitted"),  # ready -> handed to the engine
    ("render", "submitted", "rendered"),  # the engine
    ("hold", "rendered", "released"),  # held until its place in the stream delay
    ("encode", "released", "encoded"),
    ("send", "encoded", "sent_first"),  # to the first viewer's transport
    ("fanout", "sent_first", "sent_last"),  # first -> last viewer
)
CHUNK_MS = float(STREAM_CHUNK_MS)  # the stream's input chunk
ENGINE_STAGES = TRACE_STAGES  # the engine's stages as the trace names them


class TraceUnavailable(RuntimeError):
    """The server has no trace API (``GET /api/trace``)."""


# -- figures ---------------------------------------------------------------------------------


def summary(values: list[float], digits: int = 1) -> dict[str, Any]:
    """n, p50 / p95 / p99 (linear interpolation), mean, min and max; None for no values."""
    if not values:
        return {
            "n": 0,
            "p50": None,
            "p95": None,
            "p99": None,
            "mean": None,
            "min": None,
            "max": None,
        }
    array = np.asarray(values, np.float64)
    p50, p95, p99 = np.percentile(array, [50, 95, 99])
    return {
        "n": len(values),
        "p50": round(float(p50), digits),
        "p95": round(float(p95), digits),
        "p99": round(float(p99), digits),
        "mean": round(float(array.mean()), digits),
        "min": round(float(array.min()), digits),
        "max": round(float(array.max()), digits),
    }


def parse_sync_modes(text: str) -> tuple[str, ...]:
    """``"browser,off"`` -> ``("browser", "off")`` (in order, once each); ValueError naming
    the known modes for an unknown one or none."""
    modes = tuple(dict.fromkeys(mode.strip() for mode in text.split(",") if mode.strip()))
    unknown = [mode for mode in modes if mode not in SYNC_MODES]
    if not modes or unknown:
        raise ValueError(
            f"sync modes are some of {','.join(SYNC_MODES)} (comma-separated), not {text!r}"
        )
    return modes


def click_series(
    av_offsets: list[Any], last_sample: int | None = None
) -> list[tuple[float, float]]:
    """A page's matched clicks (``[stream sample, offset ms]`` rows, ``avOffsets``) up to
    ``last_sample``: ``(seconds from the first click, ms)`` per click."""
    rows = [
        (int(sample), float(ms))
        for sample, ms in av_offsets
        if last_sample is None or int(sample) <= last_sample
    ]
    if not rows:
        return []
    first = rows[0][0]
    return [(round((sample - first) / SAMPLE_RATE, 3), round(ms, 1)) for sample, ms in rows]


def settle_time(
    series: list[tuple[float, float]], tolerance_ms: float = SYNC_TOLERANCE_MS
) -> float | None:
    """The first click time after which every ``|offset| <= tolerance_ms`` (None: the last
    click is outside it)."""
    settled: float | None = None
    for t, ms in series:
        if abs(ms) > tolerance_ms:
            settled = None
        elif settled is None:
            settled = t
    return settled


def _level_and_drift(series: list[tuple[float, float]]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "clicks": len(series),
        "median_ms": None,
        "mean_ms": None,
        "p95_abs_ms": None,
        "max_abs_ms": None,
        "within_20ms_fraction": None,
        "span_s": None,
        **dict.fromkeys(DRIFT_KEYS),
    }
    if not series:
        return figures
    t = np.asarray([s for s, _ in series], np.float64)
    y = np.asarray([ms for _, ms in series], np.float64)
    figures.update(
        median_ms=round(float(np.median(y)), 1),
        mean_ms=round(float(y.mean()), 1),
        p95_abs_ms=round(float(np.percentile(np.abs(y), 95)), 1),
        max_abs_ms=round(float(np.abs(y).max()), 1),
        within_20ms_fraction=round(float(np.mean(np.abs(y) <= SYNC_TOLERANCE_MS)), 3),
        span_s=round(float(t[-1] - t[0]), 1),
        first_to_last_ms=round(float(y[-1] - y[0]), 1),
    )
    if len(series) >= 3 and t[-1] > t[0]:
        slope, intercept = np.polyfit(t, y, 1)
        residuals = y - (slope * t + intercept)
        spread = float(np.sum((t - t.mean()) ** 2))
        stderr = math.sqrt(float(np.sum(residuals**2)) / (len(y) - 2) / spread)
        # Theil-Sen: the median of the pairwise slopes, for a run with a few outlying clicks
        pairwise = [
            (y[j] - y[i]) / (t[j] - t[i])
            for i in range(len(t))
            for j in range(i + 1, len(t))
            if t[j] > t[i]
        ]
        figures.update(
            slope_ms_per_min=round(float(slope) * 60, 2),
            slope_robust_ms_per_min=round(float(np.median(pairwise)) * 60, 2),
            slope_stderr_ms_per_min=round(stderr * 60, 2),
            drift_10min_ms_extrapolated=round(abs(float(slope)) * 600, 1),
        )
    return figures


def offset_figures(series: list[tuple[float, float]]) -> dict[str, Any]:
    """A/V offsets (``(seconds from the first click, ms)`` per click, positive: audio late):
    level, spread, the time to settle and drift, over all clicks and from the third second
    on (see the module's docstring)."""
    return {
        **_level_and_drift(series),
        "settle_20ms_s": settle_time(series),
        "from_2s": _level_and_drift([(t, ms) for t, ms in series if t >= SETTLED_FROM_S]),
    }


def av_summary(mode: str, figures: dict[str, Any]) -> str:
    """One line of a correction's A/V figures (as :func:`sync_mode_figures` gives them)."""
    late = figures["from_2s"]
    return (
        f"A/V sync={mode:<8} median {figures['median_ms']} ms, p95 |.| "
        f"{figures['p95_abs_ms']} ms over {figures['clicks']} clicks, settled within 20 ms at "
        f"{figures['settle_20ms_s']} s; from 2 s: p95 |.| {late['p95_abs_ms']} / max "
        f"{late['max_abs_ms']} ms, slope {late['slope_ms_per_min']} ms/min"
    )


def sync_mode_figures(viewers: list[tuple[str, list[tuple[float, float]]]]) -> dict[str, Any]:
    """``(sync mode, click series)`` per viewer -> per mode: :func:`offset_figures` of all
    its viewers' clicks merged by time, with the drift figures (overall and ``from_2s``) of
    its steepest viewer (a fit over several viewers' clicks would mix their levels), the
    numbers of its viewers (0-based, as given) and each one's series."""
    modes: dict[str, Any] = {}
    for mode in dict.fromkeys(mode for mode, _ in viewers):
        numbers = [n for n, (m, _) in enumerate(viewers) if m == mode]
        each = [viewers[n][1] for n in numbers]
        figures = offset_figures(sorted(click for series in each for click in series))
        alone = [offset_figures(series) for series in each]
        for part in (None, "from_2s"):
            fitted = [f if part is None else f[part] for f in alone]
            fitted = [f for f in fitted if f["slope_ms_per_min"] is not None]
            steepest = max(fitted, key=lambda f: abs(f["slope_ms_per_min"]), default=None)
            target = figures if part is None else figures[part]
            for key in DRIFT_KEYS:
                target[key] = None if steepest is None else steepest[key]
        modes[mode] = {
            **figures,
            "viewers": numbers,
            "series": [[list(click) for click in series] for series in each],
        }
    return modes


def trace_figures(
    frames: list[dict[str, Any]], lookahead_ms: float, lo_ms: float, hi_ms: float
) -> tuple[dict[str, Any], dict[str, list[float]]]:
    """The server trace's frames whose first audio sample came in within [lo_ms, hi_ms)
    (epoch ms): (figures, samples per stage for the plots). ``lookahead_ms``: the trace's
    ``input`` (the frame is ready) less the time its first audio sample came in."""
    inside = [
        frame
        for frame in frames
        if frame.get("t", {}).get("input") is not None
        and lo_ms <= frame["t"]["input"] - lookahead_ms < hi_ms
    ]
    kept = [frame for frame in inside if not frame.get("dropped")]
    points: list[dict[str, float | None]] = []
    for frame in kept:
        t = {key: frame["t"].get(key) for key in CHAIN}
        t["audio_in"] = frame["t"]["input"] - lookahead_ms
        points.append(t)

    def between(a: str, b: str) -> list[float]:
        return [
            float(t[b] - t[a])  # type: ignore[operator]
            for t in points
            if t[a] is not None and t[b] is not None
        ]

    samples: dict[str, list[float]] = {name: between(a, b) for name, a, b in STAGES}
    since_audio_in = {point: between("audio_in", point) for point in CHAIN[1:]}
    samples["pipeline"] = since_audio_in["sent_first"]
    for key in ENGINE_STAGES:
        samples[f"engine_{key}"] = [
            float(frame["stages_ms"][key])
            for frame in kept
            if isinstance(frame.get("stages_ms"), dict) and frame["stages_ms"].get(key) is not None
        ]
    totals = [
        float(sum(frame["stages_ms"][key] for key in ENGINE_STAGES))
        for frame in kept
        if isinstance(frame.get("stages_ms"), dict)
        and all(frame["stages_ms"].get(key) is not None for key in ENGINE_STAGES)
    ]
    samples["engine_total"] = totals
    speaking = [float(frame["speaking"]) for frame in kept if frame.get("speaking") is not None]
    figures = {
        "frames": len(inside),
        "dropped": len(inside) - len(kept),
        "speaking_fraction": round(float(np.mean(speaking)), 3) if speaking else None,
        "lookahead_ms": round(lookahead_ms, 1),
        "stages_ms": {name: summary(samples[name]) for name, _, _ in STAGES},
        # cumulative: from the frame's first audio sample coming in to each point
        "since_audio_in_ms": {point: summary(v) for point, v in since_audio_in.items()},
        "pipeline_ms": summary(samples["pipeline"]),  # audio in -> sent to the first viewer
        "engine_stages_ms": {
            **{key: summary(samples[f"engine_{key}"], 2) for key in ENGINE_STAGES},
            "total": summary(totals, 2),
        },
    }
    return figures, samples


def lookahead_ms(
    frames: dict[int, dict[str, Any]],
    audio_in: dict[int, float],
    delay_ms: float,
    budget_ms: float,
) -> dict[str, Any]:
    """The trace's ``input`` (frame ready) less the time the frame's first audio sample came
    in: a constant of the stream (one frame + the engine's look-ahead, less the 20 ms chunk
    that completes it). Measured as the median over the frames a page showed, from the stream
    clock the server sends each page (its glass-to-glass start); without those, from the
    server's figures: ``delayMs - renderBudgetMs - 20``."""
    differences = [
        float(frames[index]["t"]["input"]) - start
        for index, start in audio_in.items()
        if index in frames and frames[index].get("t", {}).get("input") is not None
    ]
    derived = delay_ms - budget_ms - CHUNK_MS
    if len(differences) < 10:
        return {"ms": derived, "source": "delayMs - renderBudgetMs - 20 ms", "frames": 0}
    low, middle, high = np.percentile(differences, [5, 50, 95])
    return {
        "ms": round(float(middle), 2),
        "source": "page stream clock (median over frames)",
        "frames": len(differences),
        "spread_p5_p95_ms": round(float(high - low), 2),
        "server_figures_ms": derived,  # delayMs - renderBudgetMs - 20, for comparison
    }


def viewer_figures(page: Any, lo_epoch_ms: float, hi_epoch_ms: float) -> dict[str, Any]:
    """What one page presented and played while the wall clock was in [lo, hi) (epoch ms),
    its A/V offsets from its first click to the window's end, and the lip-sync correction it
    ran with (``sync``); under ``_series``, the A/V offsets per click and the glass-to-glass
    latencies for the plots (the caller removes it)."""
    data = page.evaluate(
        "({origin: performance.timeOrigin, m: window.viewer.measurements(),"
        " stats: window.viewer.stats()})"
    )
    origin, measured = float(data["origin"]), data["m"]
    lo, hi = lo_epoch_ms - origin, hi_epoch_ms - origin
    seconds = (hi - lo) / 1000
    shown = {index for index, t in measured["frames"] if lo <= t < hi}
    samples = measured["getStatsSamples"]
    window = stats_window(samples, lo, hi) if samples else {}
    g2g = [float(ms) for index, ms in measured["glassToGlass"] if index in shown]
    display = dict(measured["frames"])
    # when each shown frame's first audio sample came in (the server's stream clock)
    audio_in = {
        int(index): origin + display[index] - float(ms)
        for index, ms in measured["glassToGlass"]
        if index in shown and index in display
    }
    # every click from the page's first to the window's end: how it settles counts too
    series = click_series(
        measured["avOffsets"], (max(shown) + 1) * FRAME_SAMPLES - 1 if shown else -1
    )
    return {
        "sync": measured.get("syncMode"),
        "sync_warning": measured.get("syncWarning"),
        # distinct stamped frames the page presented (requestVideoFrameCallback)
        "fps_stamped": round(len(shown) / seconds, 2),
        # getStats over the samples nearest the window
        "fps_presented": _round(window.get("fps_presented"), 2),
        "fps_decoded": _round(window.get("fps_decoded"), 2),
        "freezes": window.get("freezes"),
        "audio_samples": window.get("audio_samples"),
        "concealed_fraction": _round(window.get("concealed_fraction"), 5),
        "glass_to_glass_ms": summary(g2g),
        "av_offset": offset_figures(series),
        "clock_offset_ms": _round(data["stats"].get("clockOffsetMs"), 1),
        "errors": list(page.errors),
        "_series": {"av_offset": series, "glass_to_glass": g2g, "audio_in": audio_in},
    }


def _round(value: Any, digits: int) -> float | None:
    return None if value is None else round(float(value), digits)


# -- the server's trace ----------------------------------------------------------------------


def fetch_trace(server: LiveServer, since: int) -> dict[str, Any]:
    """``GET /api/trace?since=K`` with the control token."""
    request = urllib.request.Request(
        f"{server.url}api/trace?since={since}",
        headers={"Authorization": f"Bearer {server.token}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise TraceUnavailable(
                f"{server.url}api/trace answered 404: this server has no trace API. The "
                "latency benchmark reads each frame's way through the server from GET "
                "/api/trace?since=K ({frames: [{index, t: {input, submitted, rendered, "
                "released, encoded, sent_first, sent_last}, stages_ms, speaking}], delayMs, "
                "renderBudgetMs, engine}); it needs a presenter that serves it."
            ) from exc
        raise RuntimeError(f"{server.url}api/trace answered {exc.code}: {exc.reason}") from exc


class TraceReader:
    """Polls the trace, keeping the latest version of each frame's entry (times fill in as
    the frame moves on, so the last ``TRACE_OVERLAP`` frames are read again)."""

    def __init__(self, server: LiveServer) -> None:
        self.server = server
        self.frames: dict[int, dict[str, Any]] = {}
        self.last: dict[str, Any] = {}

    def poll(self) -> None:
        since = max(0, max(self.frames) - TRACE_OVERLAP) if self.frames else 0
        self.last = fetch_trace(self.server, since)
        for frame in self.last.get("frames", []):
            self.frames[int(frame["index"])] = frame
