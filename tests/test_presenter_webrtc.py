"""presenter/webrtc.py: an in-process aiortc loopback from an AvatarStream with the real
engine (the shipped model on ONNX Runtime) to two viewers sharing ONE H.264 encoder.

ICE: both peer connections run in this process with no ICE servers (``RTCConfiguration()``);
aioice gathers host candidates of the machine's interfaces and the two ends connect over
them, no flags needed. Offer/answer go directly from one connection to the other, as a
browser's offer would (the viewer offers recvonly, the presenter answers).
"""

from __future__ import annotations

import asyncio
import contextlib
from fractions import Fraction

import numpy as np
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from engine.frames import FPS
from presenter.clock import RealClock
from presenter.media import AudioChunk, VideoOut
from presenter.stream import AvatarStream
from presenter.webrtc import SharedAudioEncoder, SharedVideoEncoder, add_viewer, audio_frame
from tests.conftest import ShippedBackends


def test_audio_frame_is_s16_mono_on_the_sample_clock() -> None:
    pcm = np.linspace(-1.0, 1.0, 960, dtype=np.float32)
    frame = audio_frame(AudioChunk(pcm=pcm, sample_rate=48000, pts=1920))
    assert frame.format.name == "s16" and frame.layout.name == "mono"
    assert frame.sample_rate == 48000 and frame.samples == 960
    assert frame.pts == 1920 and float(frame.time) == pytest.approx(0.04)
    data = frame.to_ndarray()
    assert data[0, 0] == -32767 and data[0, -1] == 32767


def test_encoder_forces_keyframes_and_keeps_the_90k_pts() -> None:
    encoder = SharedVideoEncoder(subscription=None, fps=FPS)  # type: ignore[arg-type]  # _encode only
    rng = np.random.default_rng(0)
    keys, pts = [], []
    for index in range(6):
        image = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
        frame = VideoOut(image=image, pts_90k=3600 * index, index=index, speaking=0.0)
        (packet,) = encoder._encode(frame, force_keyframe=index == 4)
        keys.append(packet.is_keyframe)
        pts.append(packet.pts)
        assert packet.time_base == Fraction(1, 90000)
    assert keys == [True, False, False, False, True, False]
    assert pts == [3600 * i for i in range(6)]


class _Viewer:
    """A receiving peer connection: counts decoded video and audio frames."""

    def __init__(self) -> None:
        self.pc = RTCPeerConnection(RTCConfiguration())
        self.pc.addTransceiver("video", direction="recvonly")
        self.pc.addTransceiver("audio", direction="recvonly")
        self.video: list[tuple[int, int]] = []  # (width, height) of each decoded frame
        self.audio_rates: list[int] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.enough = asyncio.Event()  # 1 s of video and audio received
        self.pc.on("track", self._on_track)

    def _on_track(self, track) -> None:
        self.tasks.append(asyncio.get_running_loop().create_task(self._read(track)))

    async def _read(self, track) -> None:
        with contextlib.suppress(MediaStreamError):
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.video.append((frame.width, frame.height))
                else:
                    self.audio_rates.append(frame.sample_rate)
                if len(self.video) >= 25 and len(self.audio_rates) >= 50:
                    self.enough.set()

    async def close(self) -> None:
        await self.pc.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.mark.slow
def test_two_viewers_share_one_encoder(shipped_backends: ShippedBackends) -> None:
    parts = shipped_backends.parts(avatar_seconds=0.4)
    height, width = parts.avatar.frame_size

    async def main() -> None:
        async with (
            AvatarStream(parts.engine(output="yuv420p"), clock=RealClock()) as stream,
            SharedVideoEncoder(stream.subscribe(audio=False), fps=stream.fps) as encoder,
            SharedAudioEncoder(stream.subscribe(video=False)) as audio_encoder,
        ):
            viewers = [_Viewer(), _Viewer()]
            presenters: list[RTCPeerConnection] = []
            for viewer in viewers:
                await viewer.pc.setLocalDescription(await viewer.pc.createOffer())
                pc = RTCPeerConnection(RTCConfiguration())
                presenters.append(pc)
                await pc.setRemoteDescription(viewer.pc.localDescription)
                add_viewer(pc, encoder, audio_encoder.track())
                await pc.setLocalDescription(await pc.createAnswer())
                assert "H264" in pc.localDescription.sdp
                assert "VP8" not in pc.localDescription.sdp
                await viewer.pc.setRemoteDescription(pc.localDescription)
            assert encoder.viewers == 2 and audio_encoder.viewers == 2

            # a PLI from a viewer reaches the shared encoder
            requests = encoder.keyframe_requests
            sender = next(s for s in presenters[0].getSenders() if s.kind == "video")
            sender._send_keyframe()
            assert encoder.keyframe_requests == requests + 1

            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    asyncio.gather(*(v.enough.wait() for v in viewers)), timeout=30.0
                )

            for pc in presenters:
                await pc.close()
            for viewer in viewers:
                await viewer.close()

            for viewer in viewers:
                assert len(viewer.video) >= 10, len(viewer.video)
                assert set(viewer.video) == {(width, height)}
                assert len(viewer.audio_rates) >= 10
                assert set(viewer.audio_rates) == {48000}
            # one encoder each: every chunk and frame released by the stream is encoded once
            assert audio_encoder.chunks_encoded <= stream.stats.audio_chunks
            # each frame released by the stream is encoded once, not per viewer
            # (one frame may still be in the encoder)
            assert encoder.frames_in - 1 <= encoder.frames_encoded <= encoder.frames_in
            assert encoder.frames_encoded <= stream.stats.frames_emitted
            assert max(len(v.video) for v in viewers) <= encoder.frames_encoded
            assert encoder.keyframes >= 1

    asyncio.run(main())
