"""``python -m benchmarks.mic_parity`` in short (a subprocess: no test imports ``benchmarks``).

A one-sentence clip (3.5 s) of the held-out voice, rendered offline and played live into
``serve --source browser-mic`` through a headless Chromium's fake microphone: the JSON has
every section, both renderings were tracked on most of their frames, the offline mouth
follows the truth, the page asked for its microphone as it always does, and the plot is
written. The live figures depend on the machine's load (frames the server drops, the
microphone's audio arriving late) and on the browser's processing of the microphone: they
are the benchmark's to report, not this test's to check.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import pytest

from presenter.testing.live_harness import chromium_path
from tests.conftest import run_module

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium"),
]

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_a_short_run_measures_both_paths(tmp_path: Path) -> None:
    began = time.monotonic()
    args = ("--seconds", "2", "--backend", "onnxrt", "--out", str(tmp_path))
    done = run_module("benchmarks.mic_parity", *args, timeout=600)
    seconds = time.monotonic() - began
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "mic_parity.json").read_text())
    assert (tmp_path / "mic_parity.png").read_bytes().startswith(PNG_MAGIC)

    assert report["provenance"]["module"] == "benchmarks.mic_parity"
    clip = report["clip"]
    assert clip["voice"] == "en-us+f3" and clip["sentences"] >= 1, clip
    assert clip["seconds"] >= 2 and clip["wav_seconds"] > clip["seconds"], clip

    results = report["results"]
    frames = results["frames"]
    for name in ("offline", "live"):
        figures = results[name]
        for key in ("pooled", "speech", "best_lag_ms", "at_best_lag"):
            assert _finite(figures[key]), (name, key, figures)
        assert figures["frames"] == frames["compared"], figures
    for key in ("pooled", "speech"):
        difference = results["live"][key] - results["offline"][key]
        assert results["difference"][key] == pytest.approx(difference, abs=2e-4)
    # both renderings show a face MediaPipe finds on most frames: offline every frame of the
    # clip, live every frame the page presented
    assert frames["offline_tracked"] >= 0.95 * frames["clip"], frames
    assert frames["live_presented"] >= 25, frames
    assert frames["live_tracked"] >= 0.9 * frames["live_presented"], frames
    assert frames["compared"] <= frames["live_tracked"], frames
    # the offline mouth follows the truth (0.86-0.93 measured); the live one is reported
    assert results["offline"]["pooled"] > 0.5, results["offline"]
    assert len(results["by_window"]) == 1, results["by_window"]

    alignment = results["alignment"]
    low, high = alignment["searched_lags"]
    assert low <= alignment["lag_frames"] <= high, alignment
    for key in ("mic_to_screen_ms_approx", "live_vs_offline_correlation"):
        assert _finite(alignment[key]), alignment

    live = report["live_path"]
    assert live["microphone_request"] == {
        "audio": {"echoCancellation": True, "noiseSuppression": True, "autoGainControl": True},
        "video": False,
    }, live
    assert live["microphone"]["echoCancellation"] is True, live
    assert live["server"]["source"] == "browser-mic", live
    assert live["frames_presented_in_page"] >= frames["live_presented"], live
    assert not live["page_errors"], live
    print(f"mic parity, one sentence: {seconds:.0f} s")  # noqa: T201
