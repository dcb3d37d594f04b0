"""presenter/server.py + presenter/live.py: the real server on a free port, spoken to over its
websocket and HTTP, watched by an aiortc viewer (the browser tests are in
test_presenter_browser.py). The shipped model runs on ONNX Runtime; speech is espeak-ng."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from typing import Any

import aiohttp
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from presenter.errors import PresenterError
from presenter.live import IceServer, Presenter, PresenterConfig, SourceSpec
from presenter.server import PresenterServer
from presenter.stamp import read_stamp
from presenter.stream import StreamConfig
from tests.conftest import ShippedBackends


def test_source_and_ice_options_are_checked(tmp_path) -> None:
    assert SourceSpec.parse("tts") == SourceSpec("tts")
    assert SourceSpec.parse("mic:USB") == SourceSpec("mic", "USB")
    assert SourceSpec.parse("browser-mic").kind == "browser-mic"
    speech = tmp_path / "a.wav"
    speech.write_bytes(b"")
    assert SourceSpec.parse(f"file:{speech}") == SourceSpec("file", str(speech))
    for bad, words in (
        ("radio", "unknown source"),
        ("file:", "needs a path"),
        (f"file:{tmp_path / 'missing.wav'}", "does not exist"),
        ("tts:x", "takes no argument"),
    ):
        with pytest.raises(PresenterError, match=words):
            SourceSpec.parse(bad)
    assert IceServer(("stun:stun.example.org:3478",)).for_page() == {
        "urls": ["stun:stun.example.org:3478"]
    }
    with pytest.raises(PresenterError, match="username"):
        IceServer(("turn:turn.example.org",))
    with pytest.raises(PresenterError, match="must start with"):
        IceServer(("http://example.org",))


class _Viewer:
    """An aiortc viewer: reads the stamped frame numbers and counts audio."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration())
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.stamps: list[int | None] = []
        self.audio_samples = 0
        self.tasks: list[asyncio.Task[None]] = []
        self.enough = asyncio.Event()
        self.pc.on("track", self._on_track)

    def _on_track(self, track: Any) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(self._read(track)))

    async def _read(self, track: Any) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.stamps.append(read_stamp(frame.to_ndarray(format="rgb24")))
                else:
                    self.audio_samples += frame.samples
                if len(self.stamps) >= 30 and self.audio_samples >= 48000:
                    self.enough.set()

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return self.pc.localDescription.sdp

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


async def _next(ws: aiohttp.ClientWebSocketResponse, kind: str) -> dict[str, Any]:
    while True:
        message = json.loads(await asyncio.wait_for(ws.receive_str(), timeout=30))
        if message["type"] == kind:
            return message


@pytest.mark.slow
def test_signaling_bad_messages_and_a_stamped_stream(shipped_backends: ShippedBackends) -> None:
    parts = shipped_backends.parts(avatar_seconds=0.4)
    config = PresenterConfig(
        source=SourceSpec("tts"), text="Hello there.", stream=StreamConfig(stamp=True)
    )

    async def main() -> None:
        async with Presenter(parts.engine(output="yuv420p"), config) as presenter:
            server = PresenterServer(presenter, port=0)
            url = await server.start()
            try:
                async with aiohttp.ClientSession() as http:
                    async with http.get(url) as page:
                        assert page.status == 200
                        assert "<video" in await page.text()
                    async with http.get(url + "status") as status:
                        assert (await status.json())["viewers"] == 0
                    async with http.ws_connect(url + "ws") as ws:
                        hello = await _next(ws, "hello")
                        assert hello["stamp"] is True and hello["source"] == "tts"
                        assert hello["frameSamples"] == 1920 and hello["delayMs"] == 180.0
                        clock = await _next(ws, "clock")
                        assert clock["anchorSample"] % 960 == 0
                        # bad input: one error line each, the session goes on
                        for bad in ("not json", "[1]", '{"type": "dance"}', '{"type": "offer"}'):
                            await ws.send_str(bad)
                            error = await _next(ws, "error")
                            assert "\n" not in error["message"] and error["message"]
                        await ws.send_str(json.dumps({"type": "offer", "sdp": "v=0\r\n"}))
                        assert "video" in (await _next(ws, "error"))["message"]

                        viewer = _Viewer()
                        await ws.send_str(
                            json.dumps({"type": "offer", "sdp": await viewer.offer()})
                        )
                        answer = await _next(ws, "answer")
                        assert "H264" in answer["sdp"] and "opus" in answer["sdp"]
                        await viewer.pc.setRemoteDescription(
                            RTCSessionDescription(sdp=answer["sdp"], type="answer")
                        )
                        start = await _next(ws, "segment")  # the greeting, when it is heard
                        assert start["event"] == "start" and start["name"].startswith("tts:")
                        await asyncio.wait_for(viewer.enough.wait(), timeout=30)
                        assert presenter.status()["viewers"] == 1
                        await viewer.close()
            finally:
                await server.close()
            stamps = [s for s in viewer.stamps if s is not None]
            assert len(stamps) >= 0.9 * len(viewer.stamps), viewer.stamps
            steps = [b - a for a, b in itertools.pairwise(stamps)]
            # in order, none twice (a frame late for its release is dropped, not shown late)
            assert all(step >= 1 for step in steps), steps

    asyncio.run(main())
