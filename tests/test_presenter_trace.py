"""The per-frame trace (presenter/trace.py) and the pre-rendered engine (presenter/prerendered.py).

Timing the trace is held to (presenter/stream.py, "The delay, exactly"): frame ``k``'s input
is complete at the tick that takes the input to ``(k + 1) F + ceil_chunk(E)``, and the frame
is released at the tick ``k F + D``, ``D = F + ceil_chunk(E) + R``: so a frame released on
time has ``released - input = R`` (the render budget) plus the lateness of the release tick.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import time
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np
import pytest
from aiortc.mediastreams import MediaStreamError

from engine.frames import ENGINE_TIMELINE, StreamEngine
from presenter.clock import VirtualClock
from presenter.engine_setup import render_budget_ms
from presenter.live import Presenter, PresenterConfig, SourceSpec
from presenter.media import OUTPUT_RATE
from presenter.prerendered import PrerenderedEngine
from presenter.server import PresenterServer
from presenter.sources import TtsSource
from presenter.stream import AvatarStream, StreamConfig
from presenter.testing.live_harness import live_server
from presenter.trace import EVENTS, STAGES, FrameTrace
from presenter.webrtc import EncodedVideoTrack
from tests.conftest import ShippedBackends
from tests.stream_doubles import Recorder

TOKEN = "trace-token"
BUDGET_MS = 80.0  # R: generous, so that a loaded 2-core machine renders every frame in time


def test_trace_ring_keeps_the_newest_frames_and_settles() -> None:
    now = [1000.0]
    trace = FrameTrace(
        4, timeline=ENGINE_TIMELINE.at_rate(OUTPUT_RATE), settle_ms=100.0, now_ms=lambda: now[0]
    )
    for index in range(6):
        trace.input(index, 900.0 + index)
        trace.rendered(
            index,
            submitted_ms=950.0,
            stages_ms={"features": 1.0, "geometry": 0.5, "generator": 2.0, "compositing": 3.0},
            speaking=index % 2 == 1,
        )
        trace.released(index, dropped=index == 4)
        trace.encoded(index * 3600)
        trace.sent(index * 3600)
    trace.input(0, 1.0)  # left the ring: ignored
    assert len(trace) == 4
    assert trace.frames() == []  # not settled yet
    now[0] = 1100.0
    frames = trace.frames()
    assert [frame["index"] for frame in frames] == [2, 3, 4, 5]
    assert [frame["index"] for frame in trace.frames(since=3)] == [4, 5]
    third = frames[1]
    assert set(third["t"]) == set(EVENTS) and set(third["stages_ms"]) == set(STAGES)
    assert third["t"]["input"] == 903.0 and third["t"]["rendered"] == 1000.0
    assert third["t"]["sent_first"] == third["t"]["sent_last"] == 1000.0
    assert third["stages_ms"] == {
        "features": 1.0,
        "motion": 0.0,
        "generator": 2.5,  # the geometry map is the generator's
        "composite": 3.0,
        "colour": 0.0,
    }
    assert third["speaking"] == 1 and third["dropped"] is False
    dropped = frames[2]
    assert dropped["dropped"] is True and dropped["t"]["rendered"] is None
    assert dropped["stages_ms"]["features"] is None and dropped["t"]["released"] == 1000.0


async def _take_packets(track: EncodedVideoTrack) -> None:
    """What aiortc's sender does with a viewer's track, without the network: take each
    packet as it comes."""
    with contextlib.suppress(MediaStreamError):
        while True:
            await track.recv()


async def _get(http: aiohttp.ClientSession, url: str, token: str | None) -> tuple[int, Any]:
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    async with http.get(url, headers=headers) as response:
        return response.status, await response.json()


@pytest.mark.slow
def test_trace_of_a_served_stream(shipped_backends: ShippedBackends, test_output: Path) -> None:
    """The real engine, the shared encoder and a viewer's track: every stage of every frame,
    in order, with the stream's timing; /api/trace needs the token and ``since`` works.
    Writes what it read to test-output/trace.json."""
    parts = shipped_backends.parts(avatar_seconds=0.4)
    config = PresenterConfig(
        source=SourceSpec("none"), stream=StreamConfig(render_budget_ms=BUDGET_MS)
    )

    engine = parts.engine(output="yuv420p")
    engine.warm_idle()  # as the engine process does before it reports ready

    async def main() -> tuple[dict[str, Any], int]:
        async with Presenter(engine, config) as presenter:
            server = PresenterServer(presenter, port=0, token=TOKEN)
            url = await server.start()
            track = presenter.encoder.track()
            reader = asyncio.get_running_loop().create_task(_take_packets(track))
            try:
                await asyncio.sleep(1.0)  # the first frames of a cold start may be dropped
                stats = presenter.stream.stats
                steady = stats.frames_emitted + stats.frames_dropped
                playback = presenter.say(TtsSource("Hello there, how are you?"))
                await asyncio.wait_for(playback.wait(), timeout=30)
                await asyncio.sleep(0.5)  # the last frames leave, are encoded and settle
                assert track.packets_sent > 0
                trace_url = url + "api/trace"
                async with aiohttp.ClientSession() as http:
                    assert (await _get(http, trace_url, None))[0] == 401
                    assert (await _get(http, trace_url, "wrong"))[0] == 403
                    status, error = await _get(http, trace_url + "?since=x", TOKEN)
                    assert status == 400 and "since" in error["error"]
                    status, trace = await _get(http, trace_url, TOKEN)
                    assert status == 200 and len(trace["frames"]) > 50  # written in pieces
                    assert trace["frames"] == presenter.trace()["frames"][: len(trace["frames"])]
                    middle = trace["frames"][len(trace["frames"]) // 2]["index"]
                    _, later = await _get(http, f"{trace_url}?since={middle}", TOKEN)
                    assert later["frames"][0]["index"] == middle + 1
                    assert all(frame["index"] > middle for frame in later["frames"])
                    _, status_page = await _get(http, url + "status", None)
                    assert status_page["engine"] == "model"
            finally:
                track.stop()
                await reader
                await server.close()
        return trace, steady

    trace, steady = asyncio.run(main())
    (test_output / "trace.json").write_text(json.dumps(trace, indent=1))
    assert trace["delayMs"] == 40 + 100 + BUDGET_MS
    assert trace["renderBudgetMs"] == BUDGET_MS and trace["engine"] == "model"
    frames = trace["frames"]
    assert [frame["index"] for frame in frames] == list(range(len(frames)))
    frames = frames[steady:]
    assert len(frames) > 40
    # on a loaded machine some frames may be late: they are there, dropped, never rendered
    shown = [frame for frame in frames if not frame["dropped"]]
    for frame in frames:
        if frame["dropped"]:
            assert frame["t"]["rendered"] is None and frame["t"]["released"] is not None
    order = ("input", "submitted", "rendered", "released")
    for frame in shown:
        times = [frame["t"][name] for name in order]
        assert None not in times and times == sorted(times), frame
        encoded = frame["t"]["encoded"]
        assert encoded is None or encoded >= times[-1], frame
    # released - input = R plus the release tick's lateness
    waits = [frame["t"]["released"] - frame["t"]["input"] for frame in shown]
    assert min(waits) >= BUDGET_MS - 1.0, min(waits)
    assert statistics.median(waits) <= BUDGET_MS + 30.0, statistics.median(waits)
    assert sum(frame["t"]["encoded"] is not None for frame in shown) >= 0.9 * len(shown)
    sent = [frame for frame in shown if frame["t"]["sent_first"] is not None]
    assert len(sent) >= 0.9 * len(shown)
    for frame in sent:
        t = frame["t"]
        assert t["encoded"] <= t["sent_first"] <= t["sent_last"], frame
    speaking = [frame for frame in shown if frame["speaking"]]
    assert len(speaking) >= 10
    for frame in speaking:
        assert all(frame["stages_ms"][stage] > 0 for stage in STAGES), frame


def test_prerendered_engine_counts_frames_at_no_cost() -> None:
    images = [np.full((12, 8), value, np.uint8) for value in (10, 20, 30)]
    engine = PrerenderedEngine(images)
    assert engine.frame_size == (8, 8) and engine.delay_samples == 0
    assert isinstance(engine, StreamEngine) and engine.kind == "prerendered"
    assert render_budget_ms(engine.frame_ms) == 20.0
    engine.push_audio(np.zeros(1920 * 2 + 960, np.float32), OUTPUT_RATE)
    frames = engine.pull()
    assert [frame.index for frame in frames] == [0, 1]
    assert frames[1].image is images[1] and frames[1].format == "yuv420p"
    assert all(value == 0.0 for value in frames[0].stages_ms.values())
    engine.push_audio(np.zeros(960 + 1920 * 3, np.float32), OUTPUT_RATE)
    assert engine.drop_ready(keep=1) == 3
    (last,) = engine.pull()
    assert last.index == 5 and last.image is images[2]
    engine.push_audio(np.zeros(960, np.float32), OUTPUT_RATE)
    engine.reset()  # the half frame goes; the indices go on
    engine.push_audio(np.zeros(640, np.float32), 16000)
    assert [frame.index for frame in engine.pull()] == [6]
    engine.push_audio(np.zeros(320, np.float32), 16000)
    engine.flush()  # the end of speech completes the partial frame
    assert [frame.index for frame in engine.pull()] == [7]
    engine.push_audio(np.zeros(320, np.float32), 16000)  # after a flush: a new stream
    assert engine.pull() == []


def test_prerendered_stream_runs_one_frame_and_20_ms_behind() -> None:
    engine = PrerenderedEngine([np.full((12, 8), value, np.uint8) for value in range(5)])
    config = StreamConfig(render_budget_ms=render_budget_ms(engine.frame_ms))

    async def main() -> None:
        clock = VirtualClock(auto_advance=True)
        async with AvatarStream(engine, clock=clock, config=config) as stream:
            assert stream.delay_samples == 1920 + 960  # 60 ms: one frame + 20 ms
            recorder = Recorder(stream.subscribe(), clock).start()
            await recorder.until(lambda r: len(r.video) >= 50)
            await recorder.stop()
            assert stream.stats.frames_dropped == 0
        for received, frame in recorder.video[:50]:
            assert received == pytest.approx((frame.index * 1920 + 2880) / OUTPUT_RATE)
        assert [frame.index for _, frame in recorder.video[:50]] == list(range(50))

    asyncio.run(main())


@pytest.mark.slow
def test_serve_prerendered(tmp_path: Path, test_output: Path) -> None:
    """``serve --engine prerendered``: 25 fps, D = 60 ms, frames at no cost (its trace:
    test-output/trace-prerendered.json)."""
    args = ["--engine", "prerendered", "--source", "none", "--threads", "1", "--backend", "onnxrt"]
    with live_server(args, tmp_path / "serve.log") as server:
        first = server.status()
        began = time.monotonic()
        assert first["engine"] == "prerendered" and first["delayMs"] == 60.0
        time.sleep(2.0)
        second = server.status()
        fps = (second["framesEmitted"] - first["framesEmitted"]) / (time.monotonic() - began)
        assert 22 <= fps <= 28, fps
        # a frame costs nothing; on a loaded machine a hand-over may still miss 20 ms now and then
        dropped = second["framesDropped"] - first["framesDropped"]
        assert dropped <= 0.1 * (second["framesEmitted"] - first["framesEmitted"]), dropped
        request = urllib.request.Request(
            server.url + "api/trace?since=-1",
            headers={"Authorization": f"Bearer {server.token}"},
        )
        with urllib.request.urlopen(request, timeout=10) as response:
            trace = json.load(response)
    (test_output / "trace-prerendered.json").write_text(json.dumps(trace, indent=1))
    assert trace["engine"] == "prerendered" and trace["renderBudgetMs"] == 20.0
    frames = [frame for frame in trace["frames"] if not frame["dropped"]]
    assert len(frames) >= 0.9 * len(trace["frames"]) and len(frames) >= 25
    assert all(value == 0.0 for frame in frames for value in frame["stages_ms"].values())
    renders = [frame["t"]["rendered"] - frame["t"]["submitted"] for frame in frames]
    assert statistics.median(renders) < 10.0, renders  # a hand-over to the worker thread
