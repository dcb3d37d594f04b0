"""A live presenter: one avatar stream, one shared video encoder, any number of WebRTC viewers.

:class:`Presenter` owns everything a live avatar needs and nothing module-level: the
:class:`~presenter.stream.AvatarStream` (engine on its worker thread, the one clock), the
:class:`~presenter.webrtc.SharedVideoEncoder` and
:class:`~presenter.webrtc.SharedAudioEncoder` (everything encoded once, for every viewer),
and the viewers' peer connections. The server (:mod:`presenter.server`) only translates
between websockets and these methods.

Where the speech comes from (``PresenterConfig.source``):

- ``tts``: the configured text, spoken by espeak-ng each time a viewer starts watching
  (when nothing else is being said);
- ``file:PATH``: that file (any format PyAV reads), likewise;
- ``mic[:DEVICE]``: the server's microphone, live, from the start;
- ``browser-mic``: the microphone of the newest viewer that sends one over its peer
  connection: the avatar mirrors that person in real time;
- ``none``: nothing; the avatar idles until something is queued with ``say``.

Barge-in (``PresenterConfig.barge_in``, with the tts and none sources): the pages send their
microphones too, and a viewer who starts speaking while the bot speaks interrupts it
(:mod:`presenter.barge_in`); controllers are told (``barge_in.events()``).

Viewers offer, the presenter answers (``connect``): each gets a track of the shared H.264
encoder and one of the shared Opus encoder, on one media stream, so the browser lip-syncs
the two. A viewer costs the server packetizing and sending, not encoding.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiortc import (
    RTCConfiguration,
    RTCIceServer,
    RTCPeerConnection,
    RTCSessionDescription,
)

from engine.frames import StreamEngine
from engine.speech.voices import VoiceBook
from presenter.barge_in import BargeIn
from presenter.bot import PresenterBot
from presenter.clock import Clock, RealClock
from presenter.errors import USER_ERRORS, PresenterError
from presenter.media import CHUNK_SAMPLES, OUTPUT_RATE
from presenter.playback import Playback
from presenter.sources.base import AudioSource
from presenter.sources.browser_mic import BrowserMicSource
from presenter.stamp import CLICK_EVERY, CLICK_HZ, stamp_layout
from presenter.stream import AvatarStream, StreamConfig
from presenter.webrtc import (
    EncodedAudioTrack,
    EncodedVideoTrack,
    SharedAudioEncoder,
    SharedVideoEncoder,
    add_viewer,
)

log = logging.getLogger(__name__)

GREETING = (
    "Hello! I am your presenter. I speak, and my lips follow my voice. "
    "Whatever I am given to say, I say it live."
)
SourceKind = Literal["tts", "mic", "file", "browser-mic", "none"]
_SOURCE_KINDS: tuple[SourceKind, ...] = ("tts", "mic", "file", "browser-mic", "none")
_ICE_SCHEMES = ("stun:", "stuns:", "turn:", "turns:")


@dataclass(frozen=True)
class IceServer:
    """A STUN or TURN server, for the server's own peer connections and for the page."""

    urls: tuple[str, ...]
    username: str | None = None
    credential: str | None = None

    def __post_init__(self) -> None:
        if not self.urls:
            raise PresenterError("an ICE server needs at least one URL")
        for url in self.urls:
            if not url.startswith(_ICE_SCHEMES):
                raise PresenterError(
                    f"ICE server URL {url!r} must start with stun:, stuns:, turn: or turns:"
                )
            if url.startswith(("turn:", "turns:")) and not (self.username and self.credential):
                raise PresenterError(f"TURN server {url} needs a username and a credential")

    def for_page(self) -> dict[str, Any]:
        """As an ``RTCIceServer`` dictionary for the browser."""
        entry: dict[str, Any] = {"urls": list(self.urls)}
        if self.username is not None:
            entry["username"] = self.username
        if self.credential is not None:
            entry["credential"] = self.credential
        return entry

    def for_aiortc(self) -> RTCIceServer:
        return RTCIceServer(
            urls=list(self.urls), username=self.username, credential=self.credential
        )


@dataclass(frozen=True)
class SourceSpec:
    """``tts`` | ``mic`` | ``mic:DEVICE`` | ``file:PATH`` | ``browser-mic`` | ``none``."""

    kind: SourceKind
    argument: str | None = None

    @classmethod
    def parse(cls, text: str) -> SourceSpec:
        kind, _, argument = text.partition(":")
        if kind not in _SOURCE_KINDS:
            raise PresenterError(
                f"unknown source {text!r}: use tts, mic, mic:DEVICE, file:PATH, browser-mic or none"
            )
        if kind == "file":
            if not argument:
                raise PresenterError("the file source needs a path: file:PATH")
            if not Path(argument).is_file():
                raise PresenterError(f"audio file {argument} does not exist")
        elif argument and kind != "mic":
            raise PresenterError(f"the {kind} source takes no argument (got {text!r})")
        return cls(kind, argument or None)

    def __str__(self) -> str:
        return self.kind if self.argument is None else f"{self.kind}:{self.argument}"


@dataclass(frozen=True, kw_only=True)
class PresenterConfig:
    source: SourceSpec = field(default_factory=lambda: SourceSpec("tts"))
    text: str = GREETING  # what the tts source says to each new viewer
    voice: str = "en-us"  # the tts source's and say's voice (engine.speech.voices)
    ice_servers: tuple[IceServer, ...] = ()
    video_bitrate: int = 1_500_000  # H.264 for 512x512 at 25 fps
    max_viewers: int = 16
    stream: StreamConfig = field(default_factory=StreamConfig)
    barge_in: bool = False  # a viewer speaking over the bot interrupts it (tts, none)

    def __post_init__(self) -> None:
        if self.barge_in and self.source.kind not in ("tts", "none"):
            raise PresenterError(
                f"barge-in works with the tts and none sources, not {self.source.kind} (it "
                "interrupts the bot's speech)"
            )
        if self.max_viewers <= 0:
            raise PresenterError(f"max_viewers must be positive, got {self.max_viewers}")
        if self.video_bitrate < 100_000:
            raise PresenterError(f"video bitrate {self.video_bitrate} bit/s is too low")


class Viewer:
    """One browser (or other peer) watching: its peer connection and tracks."""

    def __init__(self, number: int, pc: RTCPeerConnection) -> None:
        self.id = number
        self.pc = pc
        self.video: EncodedVideoTrack | None = None
        self.audio: EncodedAudioTrack | None = None
        self.microphone: BrowserMicSource | None = None
        self.connected = asyncio.Event()
        self.closed = asyncio.Event()

    @property
    def state(self) -> str:
        return str(self.pc.connectionState)


class Presenter:
    """The live avatar. ``async with Presenter(engine, config) as presenter:`` runs it.

    ``engine``: an :class:`engine.facade.AvatarEngine` made with ``output="yuv420p"`` (the
    encoder's format: converted once, on the engine's thread) or anything with its stream
    interface.
    """

    def __init__(
        self,
        engine: StreamEngine,
        config: PresenterConfig | None = None,
        *,
        clock: Clock | None = None,
        voices: VoiceBook | None = None,
    ) -> None:
        self.config = config or PresenterConfig()
        self.stream = AvatarStream(engine, clock=clock or RealClock(), config=self.config.stream)
        self.encoder = SharedVideoEncoder(
            self.stream.subscribe(audio=False),
            fps=self.stream.fps,
            bitrate=self.config.video_bitrate,
            trace=self.stream.trace,
        )
        self.audio_encoder = SharedAudioEncoder(self.stream.subscribe(video=False))
        self.bot = PresenterBot(self.stream, voice=self.config.voice, voices=voices)
        self.barge_in = (
            BargeIn(self.bot.interrupt, lambda: self.stream.busy) if self.config.barge_in else None
        )
        self.viewers: dict[int, Viewer] = {}
        self._numbers = itertools.count(1)
        self._mic_owner: Viewer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._started = False
        self._closed = False

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        if self._started:
            return
        self._started = True
        if self.barge_in is not None:
            await asyncio.to_thread(self.barge_in.check)  # no VAD: one line, before serving
        await self.stream.start()
        await self.encoder.start()
        await self.audio_encoder.start()
        if self.config.source.kind == "mic":
            from presenter.sources.microphone import MicrophoneSource

            self.stream.say(MicrophoneSource(self.config.source.argument))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for viewer in list(self.viewers.values()):
            await self.disconnect(viewer)
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.encoder.close()
        await self.audio_encoder.close()
        await self.stream.close()

    async def __aenter__(self) -> Presenter:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- what the page needs to know --------------------------------------------------------
    def hello(self) -> dict[str, Any]:
        """The first message to a page: ICE servers, the source, the timing constants."""
        stream = self.stream
        message: dict[str, Any] = {
            "type": "hello",
            "iceServers": [server.for_page() for server in self.config.ice_servers],
            "source": self.config.source.kind,
            "bargeIn": self.barge_in is not None,
            "stamp": self.config.stream.stamp,
            "fps": stream.fps,
            "sampleRate": OUTPUT_RATE,
            "frameSamples": stream.frame_samples,
            "delayMs": round(stream.delay_seconds * 1000, 1),
        }
        if self.config.stream.stamp:
            height, _ = stream.engine.frame_size
            message["stampLayout"] = stamp_layout(height)
            message["clickEverySamples"] = CLICK_EVERY
            message["clickHz"] = CLICK_HZ
        return message

    def clock_message(self) -> dict[str, Any]:
        """How stream samples map to wall-clock time, for glass-to-glass measurement: sample
        ``s`` (a multiple of the 20 ms chunk) entered the pipeline at
        ``anchorEpochMs + (s - anchorSample) / 48`` ms since the epoch."""
        stream = self.stream
        sample = stream.position
        epoch_offset = time.time() - stream.clock.now()
        entered = stream.input_time(sample)
        return {
            "type": "clock",
            "epochMs": time.time() * 1000,
            "anchorEpochMs": (entered + epoch_offset) * 1000,
            "anchorSample": (sample // CHUNK_SAMPLES) * CHUNK_SAMPLES,
        }

    def status(self) -> dict[str, Any]:
        stats = self.stream.stats
        return {
            "viewers": len(self.viewers),
            "source": str(self.config.source),
            "speaking": self.stream.busy,
            "bargeIn": self.barge_in is not None,
            "bargeIns": 0 if self.barge_in is None else self.barge_in.count,
            "bargeInMicrophones": 0 if self.barge_in is None else self.barge_in.listening,
            "delayMs": round(self.stream.delay_seconds * 1000, 1),
            "framesEmitted": stats.frames_emitted,
            "framesDropped": stats.frames_dropped,
            # the input side: 20 ms chunks a playing source did not fill in time (silence
            # went in), samples of a live source dropped (its backlog), pacing re-anchored
            "sourceUnderruns": stats.source_underruns,
            "liveSamplesDropped": stats.live_samples_dropped,
            "reanchors": stats.reanchors,
            "framesEncoded": self.encoder.frames_encoded,
            "keyframes": self.encoder.keyframes,
            "engine": self.engine_kind,
        }

    @property
    def engine_kind(self) -> str:
        """What renders the frames (:attr:`engine.frames.StreamEngine.kind`): ``model`` or
        ``prerendered``."""
        return self.stream.engine.kind

    def trace(self, since: int = -1) -> dict[str, Any]:
        """The frame trace after frame ``since`` (:meth:`presenter.trace.FrameTrace.frames`)
        with :meth:`trace_timing`: what ``GET /api/trace`` answers."""
        trace = self.stream.trace
        return {"frames": [] if trace is None else trace.frames(since), **self.trace_timing()}

    def trace_timing(self) -> dict[str, Any]:
        """What a trace is read against: ``delayMs`` (D), ``renderBudgetMs`` (R), the engine."""
        stream = self.stream
        return {
            "delayMs": round(stream.delay_seconds * 1000, 1),
            "renderBudgetMs": round(stream.render_budget_samples * 1000 / OUTPUT_RATE, 1),
            "engine": self.engine_kind,
        }

    # -- speech -----------------------------------------------------------------------------
    def say(self, source: AudioSource) -> Playback:
        """Queue ``source`` (played after what is queued already)."""
        return self.stream.say(source)

    def greet(self) -> None:
        """What a new viewer hears with the tts and file sources (unless speech is on): the
        text through the bot (sentence by sentence, with events), or the file. Interrupting
        is the bot's (``bot.interrupt()``)."""
        if self.stream.busy or self._closed:
            return
        spec = self.config.source
        if spec.kind == "tts":
            self.bot.say(self.config.text)
        elif spec.kind == "file" and spec.argument is not None:
            from presenter.sources.file import FileSource

            self.say(FileSource(spec.argument))

    # -- viewers ----------------------------------------------------------------------------
    async def connect(self, offer_sdp: str, *, microphone: bool = False) -> tuple[Viewer, str]:
        """A viewer's SDP offer -> (the viewer, the answer SDP). With ``microphone`` and the
        browser-mic source, the viewer's audio track becomes the avatar's voice; with
        barge-in, it is listened to for speech that interrupts the bot."""
        if self._closed:
            raise PresenterError("the presenter is shutting down")
        if len(self.viewers) >= self.config.max_viewers:
            raise PresenterError(
                f"this presenter already has its maximum of {self.config.max_viewers} viewers"
            )
        if "m=video" not in offer_sdp:
            raise PresenterError("the offer has no video section: offer to receive video")
        servers = [server.for_aiortc() for server in self.config.ice_servers]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=servers))
        viewer = Viewer(next(self._numbers), pc)
        self.viewers[viewer.id] = viewer
        try:
            pc.on("connectionstatechange", lambda: self._on_state(viewer))
            pc.on("track", lambda track: self._on_track(viewer, track, microphone))
            await pc.setRemoteDescription(RTCSessionDescription(sdp=offer_sdp, type="offer"))
            viewer.audio = self.audio_encoder.track()
            viewer.video = add_viewer(pc, self.encoder, viewer.audio)
            await pc.setLocalDescription(await pc.createAnswer())
        except Exception as exc:
            await self.disconnect(viewer)
            if isinstance(exc, USER_ERRORS):
                raise
            raise PresenterError(f"cannot answer the offer: {exc}") from exc
        log.info("viewer %d: answered (%d watching)", viewer.id, len(self.viewers))
        return viewer, pc.localDescription.sdp

    async def disconnect(self, viewer: Viewer) -> None:
        if self.viewers.pop(viewer.id, None) is None and viewer.closed.is_set():
            return
        viewer.closed.set()
        if viewer.microphone is not None:
            viewer.microphone.close()
        if self._mic_owner is viewer:
            self._mic_owner = None
        for track in (viewer.video, viewer.audio):
            if track is not None:
                track.stop()
        if viewer.pc.connectionState != "closed":  # aiortc may be closing it already
            with contextlib.suppress(Exception):
                await viewer.pc.close()
        log.info("viewer %d: gone (%d watching)", viewer.id, len(self.viewers))

    def _on_state(self, viewer: Viewer) -> None:
        state = viewer.pc.connectionState
        log.debug("viewer %d: %s", viewer.id, state)
        if state == "connected" and not viewer.connected.is_set():
            viewer.connected.set()
            self.greet()
        elif state in ("failed", "closed"):
            self._spawn(self.disconnect(viewer))

    def _on_track(self, viewer: Viewer, track: Any, microphone: bool) -> None:
        if track.kind != "audio" or not microphone:
            return
        if self.barge_in is not None:
            if viewer.microphone is not None:
                viewer.microphone.close()
            listened = BrowserMicSource(track, name=f"barge-in:{viewer.id}")
            viewer.microphone = listened
            self._spawn(self.barge_in.listen(viewer.id, listened))
            log.info("viewer %d: listening to its microphone for barge-in", viewer.id)
            return
        if self.config.source.kind != "browser-mic":
            return
        previous = self._mic_owner
        if previous is not None and previous.microphone is not None:
            previous.microphone.close()
        source = BrowserMicSource(track, name=f"browser-mic:{viewer.id}")
        viewer.microphone = source
        self._mic_owner = viewer
        if self.stream.busy:
            self.stream.interrupt()
        self.stream.say(source)
        log.info("viewer %d: its microphone drives the avatar", viewer.id)

    def _spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
