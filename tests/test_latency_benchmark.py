"""The latency benchmark's plumbing (``python -m benchmarks.latency``), not the speed.

The browser test runs the command itself, short (a subprocess: no test imports
``benchmarks``): one headless Chromium viewer per lip-sync correction (``browser`` and
``off``), an 8 s window, both configurations (the model and the pre-rendered transport-only
floor), and checks that the JSON has every section with
finite, plausible figures, that the table it prints reports them and that the plots are
written. The others check the figures' arithmetic (``presenter.testing.latency``) and the
message of a server without the trace API, without a browser.
"""

from __future__ import annotations

import http.server
import itertools
import json
import math
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from presenter.testing import latency
from presenter.testing.live_harness import LiveServer, chromium_path, viewer_url
from tests.conftest import REPO

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


@pytest.mark.slow
@pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium")
def test_short_run_writes_every_section_and_both_plots(tmp_path: Path) -> None:
    command = ["-m", "benchmarks.latency", "--viewers", "1", "--seconds", "8", "--out"]
    done = subprocess.run(
        [sys.executable, *command, str(tmp_path)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]

    saved = json.loads((tmp_path / "latency.json").read_text())
    for name, item in saved["configurations"].items():  # the table reports what was saved
        assert f"{name}: delay {item['delay_ms']:.0f} ms" in done.stdout, name
    for name in saved["goals"]:
        assert f"goal {name}: " in done.stdout, name
    for section in ("provenance", "machine", "versions", "config", "configurations"):
        assert saved[section], section
    provenance = saved["provenance"]
    assert provenance["module"] == "benchmarks.latency"
    assert provenance["arguments"] == [*command[2:], str(tmp_path)]
    assert provenance["commit"] and provenance["date"]
    assert saved["machine"]["cores"] >= 1 and saved["machine"]["ram_gb"] > 0
    assert saved["machine"]["cpu_model"]
    for package in ("python", "torch", "aiortc", "av", "chromium"):
        assert saved["versions"][package], package
    assert saved["config"]["viewers"] == 1 and saved["config"]["seconds"] == 8.0
    assert saved["config"]["sync_modes"] == list(latency.SYNC_MODES)

    configurations = saved["configurations"]
    assert set(configurations) == {"model", "prerendered"}
    for name, item in configurations.items():
        assert item["engine"] == name
        trace = item["trace"]
        assert trace["frames"] > 100, name  # 25 fps over 8 s
        # every stage has samples, and the points come in order
        for stage, _, _ in latency.STAGES:
            figures = trace["stages_ms"][stage]
            assert figures["n"] > 0, (name, stage)
            assert all(_finite(figures[key]) for key in ("p50", "p95", "p99")), (name, stage)
            assert figures["p50"] <= figures["p95"] <= figures["p99"], (name, stage)
            assert figures["min"] >= -1.0, (name, stage)  # clocks of one machine
        since = [trace["since_audio_in_ms"][point]["p50"] for point in latency.CHAIN[1:]]
        assert all(a <= b + 0.5 for a, b in itertools.pairwise(since)), (name, since)
        pipeline = trace["pipeline_ms"]["p50"]
        assert 0 < pipeline < 1000, name
        assert pipeline >= item["delay_ms"] - 40, name  # held for about the stream delay
        assert trace["lookahead"]["ms"] >= 0, name

        g2g = item["glass_to_glass_ms"]
        assert g2g["n"] > 0 and 0 < g2g["p50"] <= g2g["p95"] <= g2g["p99"] < 5000, name
        assert g2g["p50"] > pipeline - 40, name  # the page shows a frame after it was sent

        # one page per correction, each one running the correction it was opened with
        assert [viewer["sync"] for viewer in item["viewers"]] == list(latency.SYNC_MODES), name
        for viewer in item["viewers"]:
            assert viewer["fps_stamped"] > 0 and viewer["fps_decoded"] > 0, name
            assert viewer["fps_presented"] > 0, name
            assert viewer["freezes"] >= 0 and 0 <= viewer["concealed_fraction"] <= 1, name
            assert viewer["errors"] == [] and viewer["sync_warning"] is None, name
        assert list(item["av_offset"]) == list(latency.SYNC_MODES), name
        for mode, av in item["av_offset"].items():
            assert av["clicks"] >= 1 and _finite(av["median_ms"]), (name, mode)
            assert abs(av["median_ms"]) < 500, (name, mode)  # a click matched to its second
            (series,) = av["series"]
            assert len(series) == av["clicks"] and series[0][0] == 0.0, (name, mode)
            assert all(a[0] < b[0] for a, b in itertools.pairwise(series)), (name, mode)
            assert av["from_2s"]["clicks"] == len([t for t, _ in series if t >= 2]), (name, mode)

        server = item["server"]
        assert server["cpu_percent"]["total"] > 0, name
        assert server["rss_mb"]["server"]["max"] > 50, name

    # the model renders; the pre-rendered sequence costs nothing and looks ahead less
    model, floor = configurations["model"], configurations["prerendered"]
    assert model["trace"]["engine_stages_ms"]["generator"]["p50"] > 0
    assert model["trace"]["lookahead"]["ms"] > floor["trace"]["lookahead"]["ms"]
    assert model["delay_ms"] > floor["delay_ms"]

    for key in ("glass_to_glass_p50", "pipeline_p50"):
        assert _finite(saved["ratios"][key]) and saved["ratios"][key] > 0, key
    goals = saved["goals"]
    assert set(goals) == {
        "glass_to_glass_p50",
        "glass_to_glass_p95",
        "pipeline_vs_transport_only",
        "av_offset",
        "av_drift",
        "fps_one_viewer",
    }
    for name, goal in goals.items():
        assert goal["pass"] in (True, False), name  # every goal evaluated with one viewer
    assert "extrapolated" in goals["av_drift"]["note"]
    assert "sync=browser" in goals["av_offset"]["goal"]
    for mode in latency.SYNC_MODES:
        assert f"A/V sync={mode}" in done.stdout, mode

    for plot in saved["plots"]:
        data = (tmp_path / plot).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000, plot


def test_offset_figures_fit_the_drift() -> None:
    # 2 ms more per second: 120 ms/min, 1200 ms over 10 min
    series = [(float(t), 5.0 + 2.0 * t) for t in range(10)]
    figures = latency.offset_figures(series)
    assert figures["clicks"] == 10
    assert figures["slope_ms_per_min"] == pytest.approx(120.0)
    assert figures["slope_stderr_ms_per_min"] == pytest.approx(0.0, abs=1e-6)
    assert figures["slope_robust_ms_per_min"] == pytest.approx(120.0)
    assert figures["first_to_last_ms"] == pytest.approx(18.0)
    assert figures["drift_10min_ms_extrapolated"] == pytest.approx(1200.0)
    assert figures["median_ms"] == pytest.approx(14.0)
    assert latency.offset_figures([])["median_ms"] is None
    assert latency.offset_figures([])["settle_20ms_s"] is None


def test_offset_figures_settle_and_the_third_second_on() -> None:
    # 120 ms late at first, taken out over the first seconds, then inside 20 ms but once
    series = [(0.0, 120.0), (1.0, 60.0), (2.0, 25.0), (3.0, 10.0), (4.0, -21.0), (5.0, 5.0)]
    series += [(float(t), 8.0) for t in range(6, 12)]
    figures = latency.offset_figures(series)
    assert figures["clicks"] == 12
    assert figures["settle_20ms_s"] == 5.0  # 4 s was outside again
    assert figures["max_abs_ms"] == 120.0
    late = figures["from_2s"]
    assert late["clicks"] == 10 and late["max_abs_ms"] == 25.0
    assert late["median_ms"] == 8.0
    assert late["within_20ms_fraction"] == pytest.approx(0.8)
    assert latency.offset_figures([(0.0, 5.0), (1.0, -3.0)])["settle_20ms_s"] == 0.0
    assert latency.offset_figures([(0.0, 5.0), (1.0, 30.0)])["settle_20ms_s"] is None
    assert latency.offset_figures([(0.0, 5.0)])["from_2s"]["clicks"] == 0


def test_click_series_counts_from_the_first_click() -> None:
    rows = [[96000, 12.34], [144000, -3.0], [240000, 7.0]]
    assert latency.click_series(rows) == [(0.0, 12.3), (1.0, -3.0), (3.0, 7.0)]
    assert latency.click_series(rows, last_sample=200000) == [(0.0, 12.3), (1.0, -3.0)]
    assert latency.click_series([]) == []


def test_sync_mode_figures_keep_the_modes_apart() -> None:
    flat = [(float(t), 4.0) for t in range(8)]
    steep = [(float(t), 10.0 + 3.0 * t) for t in range(8)]  # 180 ms/min
    late = [(float(t), 60.0 - 0.5 * t) for t in range(8)]
    modes = latency.sync_mode_figures([("browser", flat), ("off", late), ("browser", steep)])
    assert list(modes) == ["browser", "off"]
    browser, off = modes["browser"], modes["off"]
    assert browser["viewers"] == [0, 2] and off["viewers"] == [1]
    assert browser["clicks"] == 16 and off["clicks"] == 8
    assert browser["series"] == [[list(c) for c in flat], [list(c) for c in steep]]
    # drift: the steepest viewer's, overall and from the third second on
    assert browser["slope_ms_per_min"] == pytest.approx(180.0)
    assert browser["from_2s"]["slope_ms_per_min"] == pytest.approx(180.0)
    assert browser["first_to_last_ms"] == pytest.approx(21.0)
    assert off["median_ms"] == pytest.approx(58.2, abs=0.1) and off["settle_20ms_s"] is None
    assert off["slope_ms_per_min"] == pytest.approx(-30.0)
    # the merged clicks: the time to settle is that of the slowest viewer
    assert browser["settle_20ms_s"] is None  # the steep one ends at 31 ms
    assert latency.sync_mode_figures([]) == {}


def test_sync_modes_parse_and_name_the_known_ones() -> None:
    assert latency.parse_sync_modes("browser,off") == latency.SYNC_MODES
    assert latency.parse_sync_modes(" off , off ") == ("off",)
    for bad in ("", "browser,clicks", ","):
        with pytest.raises(ValueError, match="browser,off"):
            latency.parse_sync_modes(bad)
    assert viewer_url("http://h:1/", "off") == "http://h:1/?sync=off"
    assert viewer_url("http://h:1/") == "http://h:1/"


def test_trace_figures_split_each_frame_into_stages() -> None:
    def frame(index: int, start: float, dropped: bool = False) -> dict[str, Any]:
        t = {
            "input": start + 120,
            "submitted": None if dropped else start + 125,
            "rendered": None if dropped else start + 175,
            "released": start + 220,
            "encoded": start + 230,
            "sent_first": start + 231,
            "sent_last": start + 232,
        }
        stages = dict.fromkeys(latency.ENGINE_STAGES, None if dropped else 10.0)
        return {"index": index, "t": t, "stages_ms": stages, "speaking": 1, "dropped": dropped}

    frames = [frame(k, 1000.0 + 40 * k, dropped=k == 3) for k in range(10)]
    figures, samples = latency.trace_figures(frames, 120.0, 1000.0, 1000.0 + 40 * 8)
    assert figures["frames"] == 8 and figures["dropped"] == 1
    stages = figures["stages_ms"]
    assert [stages[name]["p50"] for name, _, _ in latency.STAGES] == [
        120.0,
        5.0,
        50.0,
        45.0,
        10.0,
        1.0,
        1.0,
    ]
    assert figures["pipeline_ms"]["p50"] == 231.0 and len(samples["pipeline"]) == 7
    assert figures["engine_stages_ms"]["total"]["p50"] == 50.0
    assert figures["speaking_fraction"] == 1.0


@pytest.fixture
def no_trace_server() -> Iterator[str]:
    """An HTTP server that answers 404 to everything (a presenter without /api/trace)."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


def test_a_server_without_the_trace_api_is_named(no_trace_server: str, tmp_path: Path) -> None:
    server = LiveServer(no_trace_server, process=None, log=tmp_path / "log", token="x")  # type: ignore[arg-type]
    with pytest.raises(latency.TraceUnavailable, match="no trace API"):
        latency.fetch_trace(server, 0)
