"""WebRTC tracks for an :class:`~presenter.stream.AvatarStream` (aiortc).

Video: ONE H.264 encoder per presenter
--------------------------------------
:class:`SharedVideoEncoder` reads the frames of one subscription, encodes each frame once
(libx264 through PyAV: yuv420p, constrained baseline, ``tune=zerolatency``, no B-frames,
1.5 Mbps for 512x512, an IDR every 2 s) and fans the encoded ``av.Packet`` out to any
number of :class:`EncodedVideoTrack` (one per viewer). aiortc's ``RTCRtpSender`` takes an
``av.Packet`` from ``recv()`` as pre-encoded data and only packetizes it (``H264Encoder.pack``:
Annex B split, STAP-A / FU-A), so no viewer costs an encoder. Packet pts are the stream's
``pts_90k`` with a 1/90000 time base: the RTP timestamp is the stream's video clock.

H.264 rather than VP8: browsers decode it (often in hardware), libx264 with zerolatency
took less CPU than libvpx at this size (benchmarks/README.md, "Figures behind design
choices"), and aiortc packetizes pre-encoded H.264 statelessly (its VP8
``pack`` numbers pictures per sender, which is fine too, but has no advantage). Because the
packets ARE H.264, the video transceiver must negotiate H.264: :func:`add_viewer` /
:func:`prefer_h264` restrict it (an offerer through ``setCodecPreferences``; an answerer,
whose codecs aiortc already fixed in ``setRemoteDescription``, by filtering them).

Keyframes
---------
aiortc turns a viewer's PLI / FIR into ``RTCRtpSender._send_keyframe()``, which only affects
frames it encodes itself; :func:`forward_keyframe_requests` (done by :func:`add_viewer`) makes
it also ask the shared encoder, whose next frame is then an IDR (for every viewer: an extra
keyframe is cheap, a second encoder is not). A new viewer waits for a keyframe (and asks for
one), and a viewer that falls more than ``viewer_queue`` frames behind drops its backlog and
waits for (and asks for) the next keyframe: a viewer never gets a P-frame whose reference it
lacks.

Audio: ONE Opus encoder per presenter too
-----------------------------------------
:class:`SharedAudioEncoder` encodes each of the stream's 20 ms / 48 kHz chunks once (Opus,
mono, 64 kbit/s: full band, so the 15 kHz measurement clicks survive) and every viewer's
:class:`EncodedAudioTrack` hands aiortc the packet (pts in samples, time base 1/48000): with
aiortc's own per-viewer encoding, Opus was the largest share of the server's work with four
viewers (benchmarks/README.md, "Figures behind design choices").
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import logging
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Self

import av
from aiortc import MediaStreamTrack, RTCPeerConnection, RTCRtpSender, RTCRtpTransceiver
from aiortc.mediastreams import MediaStreamError

from engine.audio import float_to_pcm16
from engine.frames import VIDEO_CLOCK
from presenter.media import OUTPUT_RATE, AudioChunk, VideoOut
from presenter.subscription import StreamClosed, Subscription
from presenter.trace import FrameTrace

log = logging.getLogger(__name__)

VIDEO_TIME_BASE = fractions.Fraction(1, VIDEO_CLOCK)
AUDIO_TIME_BASE = fractions.Fraction(1, OUTPUT_RATE)
H264_MIME = "video/h264"


class _SharedEncoder:
    """What the shared encoders have in common: one subscription in, encoded packets out to
    any number of viewer tracks. ``start()`` (or ``async with``) runs ``_encode_loop``;
    ``close()`` closes the subscription and ends the tracks."""

    kind = ""

    def __init__(self, subscription: Subscription) -> None:
        self.subscription = subscription
        self._viewers: list[_PacketTrack] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    async def start(self) -> None:
        if self._tasks or self._closed:
            return
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._run(), name=f"{self.kind}-encoder")]

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.subscription.close(f"{self.kind} encoder closed")
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._end_viewers()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def viewers(self) -> int:
        return len(self._viewers)

    def _attach(self, track: _PacketTrack) -> None:
        if self._closed:
            raise StreamClosed(f"the {self.kind} encoder is closed")
        self._viewers.append(track)

    def _detach(self, track: _PacketTrack) -> None:
        with contextlib.suppress(ValueError):
            self._viewers.remove(track)

    def _end_viewers(self) -> None:
        for track in list(self._viewers):
            track._end()
        self._viewers.clear()

    async def _run(self) -> None:
        try:
            await self._encode_loop()
        except StreamClosed:
            pass
        except Exception:
            log.exception("the shared %s encoder failed", self.kind)
        finally:
            self._end_viewers()

    async def _encode_loop(self) -> None:
        raise NotImplementedError


class _PacketTrack(MediaStreamTrack):
    """One viewer's track of a shared encoder: the packets offered to it (``_offer``, by the
    subclass's rules), in order, as aiortc's pre-encoded input."""

    def __init__(self, encoder: _SharedEncoder) -> None:
        super().__init__()
        self._encoder = encoder
        self.packets_sent = 0
        self._queue: deque[av.Packet] = deque()
        self._ended = False
        self._wakeup = asyncio.Event()

    async def recv(self) -> av.Packet:
        while not self._queue:
            if self._ended or self.readyState != "live":
                raise MediaStreamError
            self._wakeup.clear()
            await self._wakeup.wait()
        self.packets_sent += 1
        return self._queue.popleft()

    def stop(self) -> None:
        super().stop()
        self._encoder._detach(self)
        self._wakeup.set()

    def _push(self, packet: av.Packet) -> None:
        self._queue.append(packet)
        self._wakeup.set()

    def _offer(self, packet: av.Packet) -> None:
        raise NotImplementedError

    def _end(self) -> None:
        self._ended = True
        self._wakeup.set()


class SharedVideoEncoder(_SharedEncoder):
    """One H.264 encoder for all viewers of a presenter.

    ``subscription``: a subscription of the stream, owned (and closed) by the encoder (best
    made with ``audio=False``; any audio it has is drained and discarded). ``start()`` (or
    ``async with``) runs it; ``track()`` makes a viewer's track; ``close()`` ends the tracks.
    ``trace``: the stream's frame trace, told when each frame is encoded and sent.
    """

    kind = "video"

    def __init__(
        self,
        subscription: Subscription,
        *,
        fps: float,
        bitrate: int = 1_500_000,
        keyframe_interval_s: float = 2.0,
        preset: str = "superfast",
        viewer_queue: int = 8,
        trace: FrameTrace | None = None,
    ) -> None:
        if bitrate <= 0 or fps <= 0 or keyframe_interval_s <= 0 or viewer_queue <= 0:
            raise ValueError("bitrate, fps, keyframe_interval_s and viewer_queue must be > 0")
        super().__init__(subscription)
        self.trace = trace
        self.bitrate = bitrate
        self.fps = fps
        self.gop = max(1, round(keyframe_interval_s * fps))
        self.preset = preset
        self.viewer_queue = viewer_queue
        self.frames_in = 0  # frames read from the stream
        self.frames_encoded = 0  # frames that came out of the encoder (one packet each)
        self.keyframes = 0
        self.keyframe_requests = 0
        self._force_keyframe = False
        self._codec: Any = None
        self._size: tuple[int, int] | None = None
        self._executor: ThreadPoolExecutor | None = None

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._tasks or self._closed:
            return
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="video-encoder")
        await super().start()
        if self.subscription.wants_audio:
            loop = asyncio.get_running_loop()
            self._tasks.append(loop.create_task(self._drain_audio(), name="video-encoder-audio"))

    async def close(self) -> None:
        await super().close()
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    # -- viewers --------------------------------------------------------------------------
    def track(self) -> EncodedVideoTrack:
        """A new viewer's track: it starts at the next keyframe (requested now)."""
        track = EncodedVideoTrack(self)
        self._attach(track)
        self.request_keyframe()
        return track

    def request_keyframe(self) -> None:
        """Make the next encoded frame an IDR (PLI / FIR from any viewer, or a new viewer)."""
        self.keyframe_requests += 1
        self._force_keyframe = True

    # -- encoding -------------------------------------------------------------------------
    async def _encode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            frame = await self.subscription.next_video()
            self.frames_in += 1
            force = self._force_keyframe
            self._force_keyframe = False
            packets = await loop.run_in_executor(self._executor, self._encode, frame, force)
            for packet in packets:
                self.frames_encoded += 1
                if self.trace is not None and packet.pts is not None:
                    self.trace.encoded(packet.pts)
                if packet.is_keyframe:
                    self.keyframes += 1
                for viewer in list(self._viewers):
                    viewer._offer(packet)

    async def _drain_audio(self) -> None:
        with contextlib.suppress(StreamClosed):
            while True:
                await self.subscription.next_audio()

    def _open(self, width: int, height: int) -> Any:
        codec = av.CodecContext.create("libx264", "w")
        codec.width = width
        codec.height = height
        codec.pix_fmt = "yuv420p"
        codec.bit_rate = self.bitrate
        codec.framerate = fractions.Fraction(self.fps).limit_denominator(1001)
        codec.time_base = VIDEO_TIME_BASE
        codec.gop_size = self.gop
        codec.max_b_frames = 0
        codec.profile = "Baseline"
        codec.options = {
            "preset": self.preset,
            "tune": "zerolatency",
            "level": "31",
            "forced-idr": "1",
            "x264-params": f"keyint={self.gop}:min-keyint={self.gop}:scenecut=0",
        }
        codec.open()
        return codec

    def _encode(self, frame: VideoOut, force_keyframe: bool) -> list[av.Packet]:
        """On the encoder thread: one frame in, its packet(s) out (pts on the 90 kHz clock)."""
        if frame.format == "yuv420p":
            height, width = frame.image.shape[0] * 2 // 3, frame.image.shape[1]
            video = av.VideoFrame.from_ndarray(frame.image, format="yuv420p")
        else:
            height, width = frame.image.shape[:2]
            video = av.VideoFrame.from_ndarray(frame.image, format="rgb24").reformat(
                format="yuv420p"
            )
        if self._codec is None or self._size != (width, height):
            self._codec, self._size = self._open(width, height), (width, height)
            force_keyframe = True
        video.pts = frame.pts_90k
        video.time_base = VIDEO_TIME_BASE
        video.pict_type = (
            av.video.frame.PictureType.I if force_keyframe else av.video.frame.PictureType.NONE
        )
        packets: list[av.Packet] = list(self._codec.encode(video))
        for packet in packets:
            packet.time_base = VIDEO_TIME_BASE
        return packets


class EncodedVideoTrack(_PacketTrack):
    """One viewer's video: the shared encoder's H.264 packets, from a keyframe on."""

    kind = "video"

    def __init__(self, encoder: SharedVideoEncoder) -> None:
        super().__init__(encoder)
        self.encoder = encoder
        self.resyncs = 0  # times it dropped its backlog and waited for a keyframe
        self._waiting_keyframe = True

    def request_keyframe(self) -> None:
        self.encoder.request_keyframe()

    async def recv(self) -> av.Packet:
        packet = await super().recv()
        trace = self.encoder.trace
        if trace is not None and packet.pts is not None:
            trace.sent(packet.pts)  # aiortc's sender packetizes and sends it now
        return packet

    def _offer(self, packet: av.Packet) -> None:
        if self._waiting_keyframe:
            if not packet.is_keyframe:
                return
            self._waiting_keyframe = False
        if len(self._queue) >= self.encoder.viewer_queue:
            self._queue.clear()
            self.resyncs += 1
            if not packet.is_keyframe:
                self._waiting_keyframe = True
                self.encoder.request_keyframe()
                return
        self._push(packet)


class SharedAudioEncoder(_SharedEncoder):
    """One Opus encoder for all viewers: each 20 ms chunk is encoded once (mono, 48 kHz) and
    the packet goes to every :class:`EncodedAudioTrack`; aiortc only packetizes it.

    ``subscription``: made with ``video=False``; owned (and closed) by the encoder.
    """

    kind = "audio"

    def __init__(
        self, subscription: Subscription, *, bitrate: int = 64_000, viewer_queue: int = 50
    ) -> None:
        if bitrate <= 0 or viewer_queue <= 0:
            raise ValueError("bitrate and viewer_queue must be > 0")
        super().__init__(subscription)
        self.bitrate = bitrate
        self.viewer_queue = viewer_queue  # packets (20 ms each) a viewer may be behind
        self.chunks_encoded = 0
        self._codec: Any = None

    def track(self) -> EncodedAudioTrack:
        track = EncodedAudioTrack(self)
        self._attach(track)
        return track

    async def _encode_loop(self) -> None:
        while True:
            chunk = await self.subscription.next_audio()
            for packet in self._encode(chunk):  # ~0.1 ms: not worth a thread handoff
                for viewer in list(self._viewers):
                    viewer._offer(packet)

    def _encode(self, chunk: AudioChunk) -> list[av.Packet]:
        if self._codec is None:
            codec = av.CodecContext.create("libopus", "w")
            codec.bit_rate = self.bitrate
            codec.format = "s16"
            codec.layout = "mono"
            codec.sample_rate = OUTPUT_RATE
            codec.time_base = AUDIO_TIME_BASE
            codec.options = {"application": "voip"}
            codec.open()
            self._codec = codec
        packets: list[av.Packet] = list(self._codec.encode(audio_frame(chunk)))
        for packet in packets:
            packet.time_base = AUDIO_TIME_BASE
        self.chunks_encoded += 1
        return packets


class EncodedAudioTrack(_PacketTrack):
    """One viewer's audio: the shared Opus encoder's packets. A viewer more than
    ``viewer_queue`` packets behind loses its oldest (counted in ``dropped``)."""

    kind = "audio"

    def __init__(self, encoder: SharedAudioEncoder) -> None:
        super().__init__(encoder)
        self.encoder = encoder
        self.dropped = 0

    def _offer(self, packet: av.Packet) -> None:
        if len(self._queue) >= self.encoder.viewer_queue:
            self._queue.popleft()
            self.dropped += 1
        self._push(packet)


def audio_frame(chunk: AudioChunk) -> av.AudioFrame:
    """An ``AudioChunk`` (float32 mono) as an s16 mono ``av.AudioFrame``, pts in samples."""
    pcm = float_to_pcm16(chunk.pcm)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = chunk.sample_rate
    frame.pts = chunk.pts
    frame.time_base = fractions.Fraction(1, chunk.sample_rate)
    return frame


# -- wiring into a peer connection -----------------------------------------------------------


def prefer_h264(transceiver: RTCRtpTransceiver) -> None:
    """Restrict a video transceiver to H.264 (and its RTX).

    Before an offer: through ``setCodecPreferences``. After a remote offer was applied (we
    answer), aiortc has already fixed the transceiver's codecs: they are filtered instead.
    """
    capabilities = RTCRtpSender.getCapabilities("video").codecs
    preferred = [c for c in capabilities if c.mimeType.lower() in (H264_MIME, "video/rtx")]
    transceiver.setCodecPreferences(preferred)
    negotiated = list(getattr(transceiver, "_codecs", []) or [])
    if negotiated:
        h264 = [c for c in negotiated if c.mimeType.lower() == H264_MIME]
        if not h264:
            raise ValueError("the remote peer does not offer H.264 video")
        payload_types = {c.payloadType for c in h264}
        rtx = [
            c
            for c in negotiated
            if c.mimeType.lower() == "video/rtx" and c.parameters.get("apt") in payload_types
        ]
        transceiver._codecs = h264 + rtx


def forward_keyframe_requests(sender: RTCRtpSender, track: EncodedVideoTrack) -> None:
    """Have the viewer's PLI / FIR (``sender._send_keyframe``) reach the shared encoder."""
    original = sender._send_keyframe

    def send_keyframe() -> None:
        original()
        track.request_keyframe()

    sender._send_keyframe = send_keyframe  # type: ignore[method-assign]


def add_viewer(
    pc: RTCPeerConnection, encoder: SharedVideoEncoder, audio: MediaStreamTrack | None = None
) -> EncodedVideoTrack:
    """Add the shared video (H.264 only, keyframe requests forwarded) and ``audio`` to ``pc``.

    Call it before ``createOffer`` or, when the viewer offers, after ``setRemoteDescription``
    and before ``createAnswer``.
    """
    track = encoder.track()
    sender = pc.addTrack(track)
    transceiver = next(t for t in pc.getTransceivers() if t.sender is sender)
    prefer_h264(transceiver)
    forward_keyframe_requests(sender, track)
    if audio is not None:
        pc.addTrack(audio)
    return track
