"""The avatar in a pipecat pipeline: a processor that turns the TTS audio into the lip-synced
avatar's video, and sends the same audio on, re-timed, with the frames that show it.

Place it right after the TTS service, before the output transport::

    pipeline = Pipeline([
        transport.input(), stt, user_aggregator, llm, tts,
        PresenterAvatarProcessor(),          # builds the shipped avatar when the pipeline starts
        transport.output(),
        assistant_aggregator,
    ])

and set the output transport up for the avatar: ``video_out_enabled=True``,
``video_out_is_live=True`` (it gets a stream of frames, not a picture to repeat),
``video_out_width`` / ``video_out_height`` the avatar's frame size (512 x 512 for the shipped
avatar), ``video_out_framerate=25`` and, best, ``audio_out_sample_rate=48000`` (the avatar's
audio rate; at another rate the transport resamples). Pass a ready
:class:`~presenter.avatar_session.AvatarSession` to skip building the engine at start.

Downstream frames:

* ``TTSAudioRawFrame``: consumed; its audio goes into the avatar (``push_audio``).
* Out, from the start of the pipeline to its end, 25 times a second: an
  ``OutputImageRawFrame`` (RGB, ``size`` (w, h)), idle ones too (the avatar blinks and moves
  between utterances, mouth at rest), and 50 times a second 20 ms of audio as a
  ``SpeechOutputAudioRawFrame`` (int16, 48 kHz, mono; silence between utterances). Audio and
  the frames that show it leave together, ``session.delay_seconds`` (0.2 to 0.3 s: the
  engine's look-ahead and the render budget) after the audio came in, paced in real time.
  ``frame.metadata[STREAM_SAMPLE]`` is the output sample (48 kHz, from the session's start)
  where a frame's picture or audio begins; a video frame the avatar could not render in time
  (a busy machine) is skipped, and the next one says where it belongs.
* ``TTSStoppedFrame``: the utterance is complete (``end_segment``).
* Frames that come while speech is still to be heard (``TTSStartedFrame``, ``TTSTextFrame``,
  ``TTSStoppedFrame``, ``LLMFullResponseEndFrame``, ...) are held and sent on unchanged, in
  order, when the output audio reaches the point of the speech where they came: downstream
  sees them against the audio as it would without the avatar (the transport, for one, then
  flushes its audio at the end of the speech, not in its middle). Other frames, system frames
  and frames going upstream pass at once, unchanged.
* ``InterruptionFrame`` (``StartInterruptionFrame`` in older pipecat), either direction:
  barge-in, ``clear()``: the avatar is silent and at rest from the next video frame on; the
  held frames are dropped, as pipecat drops interruptible frames; then it is passed on.
* ``StartFrame`` starts the session (building it first in a worker thread when none was
  given; frames wait until it runs, the pipeline does not), ``EndFrame`` lets the speech
  play out, then closes the session; ``CancelFrame`` closes it at once.

Why ``SpeechOutputAudioRawFrame``: the audio is one continuous stream, speech and silence,
like the audio that pipecat's own avatar services (Tavus, HeyGen) get back from their
avatars and push as this type. The output transport tells the bot is speaking from the
audio itself for this type (``BotStartedSpeakingFrame`` when it turns loud,
``BotStoppedSpeakingFrame`` after a moment of silence), so those events follow the speech as
it is heard. As ``TTSAudioRawFrame`` the idle silence would keep the bot "speaking" forever,
since the transport ends a TTS run only on ``TTSStoppedFrame`` or when no audio comes.

If the avatar fails (the engine cannot be built, the stream stops), the processor pushes an
``ErrorFrame`` upstream (pipecat logs it as one line) and from then on passes every frame
through unchanged, TTS audio included: the bot goes on speaking without its video.

Needs ``pipecat-ai`` (``pip install 'presenter[pipecat]'``); the presenter core does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pipecat.frames.frames as pipecat_frames
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    StartFrame,
    SystemFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor

from engine.audio import float_to_pcm16
from engine.frames import Timeline
from presenter.avatar_session import AvatarSession, SessionOutput
from presenter.media import (
    OUTPUT_RATE,
    AudioChunk,
    SegmentEvent,
    SegmentStart,
    VideoOut,
)
from presenter.subscription import StreamClosed

if TYPE_CHECKING:
    from presenter.engine_setup import EngineRecipe

STREAM_SAMPLE = "avatar_stream_sample"
"""Key of ``frame.metadata`` on the output frames: the 48 kHz stream sample where the
frame's picture or audio begins."""

INTERRUPTION_FRAMES: tuple[type[Frame], ...] = tuple(
    kind
    for name in ("InterruptionFrame", "StartInterruptionFrame")  # current, older pipecat
    if isinstance(kind := getattr(pipecat_frames, name, None), type)
)

END_GRACE_S = 5.0  # beyond the speech still to be heard, how long EndFrame waits for it


@dataclass(eq=False)
class _Utterance:
    """One utterance of the TTS on its way through the avatar: how much audio went in, where
    it plays in the output once that is known, and the frames that came with it, each at the
    point of its audio where it came (``None``: at its end)."""

    pushed: float = 0.0  # seconds of audio pushed into the session
    closed: bool = False  # its TTSStoppedFrame came (the session's segment is ended)
    start: int | None = None  # output sample of its first sample (SegmentStart)
    end: int | None = None  # output sample one past its last (SegmentEnd)
    held: deque[tuple[int | None, Frame]] = field(default_factory=deque)

    @property
    def voiced(self) -> bool:
        """Audio of it went in: it is a segment of the session."""
        return self.pushed > 0.0

    def hold(self, frame: Frame) -> None:
        """Keep ``frame`` until the output reaches the audio pushed so far."""
        self.held.append((None if self.closed else round(self.pushed * OUTPUT_RATE), frame))


class PresenterAvatarProcessor(FrameProcessor):
    """TTS audio in, the avatar's video and the re-timed audio out (see the module docstring).

    ``session``: a ready (not started) :class:`AvatarSession`; the processor starts and
    closes it, and is its only user. Without one, the processor builds one on ``StartFrame``
    with :meth:`AvatarSession.create` from ``recipe`` (default: the shipped avatar), its
    engine in a child process (``process=True``; the script that runs the pipeline then needs
    an ``if __name__ == "__main__":`` guard) or in this one. ``kwargs``: ``FrameProcessor``'s.
    """

    def __init__(
        self,
        session: AvatarSession | None = None,
        *,
        recipe: EngineRecipe | None = None,
        process: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._session = session
        self._recipe = recipe
        self._process = process
        self._task: asyncio.Task[None] | None = None  # builds, starts and reads the session
        self._ready = False  # the session runs and its output is read
        self._failed = False  # the avatar is off: every frame passes through
        self._closing = False
        self._settled = asyncio.Event()  # ready, failed or closed
        self._waiting: deque[Frame] = deque()  # downstream frames that came before it was ready
        self._utterances: deque[_Utterance] = deque()  # not yet heard to their end
        self._open: _Utterance | None = None  # the one the TTS is still sending
        self._drained = asyncio.Event()  # no utterance left to be heard
        self._drained.set()
        self._heard = 0  # output sample up to which the audio has been pushed downstream
        self._stale = -1  # segment events at or before this sample predate the last clear()
        self._order = asyncio.Lock()  # held frames leave in order, before frames that pass

    @property
    def session(self) -> AvatarSession | None:
        """The avatar session (None before it is built and after it is closed)."""
        return self._session

    # -- frames in ------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, StartFrame):
            await self.push_frame(frame, direction)
            self._start()
        elif isinstance(frame, INTERRUPTION_FRAMES):
            await self._interrupt(frame, direction)
        elif isinstance(frame, CancelFrame):
            await self._guard(self._stop())
            await self.push_frame(frame, direction)
        elif isinstance(frame, EndFrame) and direction is FrameDirection.DOWNSTREAM:
            await self._guard(self._end())
            await self.push_frame(frame, direction)
        elif (
            direction is FrameDirection.UPSTREAM
            or isinstance(frame, SystemFrame)
            or self._failed
            or self._closing
        ):
            await self.push_frame(frame, direction)
        elif not self._ready:
            self._waiting.append(frame)
        else:
            await self._guard(self._take(frame))

    async def cleanup(self) -> None:
        await self._stop()
        await super().cleanup()

    async def _take(self, frame: Frame) -> None:
        """A downstream frame while the session runs."""
        if isinstance(frame, TTSAudioRawFrame):
            await self._say(frame)
        elif isinstance(frame, TTSStartedFrame):
            (self._open or self._begin()).hold(frame)
        elif isinstance(frame, TTSStoppedFrame) and self._open is not None:
            utterance, self._open = self._open, None
            if utterance.voiced and self._session is not None:
                self._session.end_segment()
            utterance.closed = True
            utterance.hold(frame)
            await self._release()
        else:
            await self._pass(frame)

    async def _say(self, frame: TTSAudioRawFrame) -> None:
        session = self._session
        assert session is not None
        channels = max(1, frame.num_channels)
        whole = len(frame.audio) // (2 * channels) * channels  # samples, all channels
        pcm = np.frombuffer(frame.audio, np.int16, count=whole)
        if not pcm.size:
            return
        utterance = self._open or self._begin()
        try:
            session.push_audio(pcm, frame.sample_rate, channels=channels)
        except ValueError as exc:  # this frame's audio is unusable; the next may be fine
            await self.push_error(f"dropped a TTS audio frame: {exc}", exception=exc)
            return
        utterance.pushed += pcm.size / channels / frame.sample_rate

    def _begin(self) -> _Utterance:
        utterance = _Utterance()
        self._utterances.append(utterance)
        self._open = utterance
        self._drained.clear()
        return utterance

    async def _pass(self, frame: Frame) -> None:
        """On now if no speech is to be heard, else behind what is heard so far."""
        async with self._order:
            if self._utterances:
                self._utterances[-1].hold(frame)
            else:
                await self.push_frame(frame)

    async def _interrupt(self, frame: Frame, direction: FrameDirection) -> None:
        error: Exception | None = None
        async with self._order:
            kept = [held for u in self._utterances for _, held in u.held if not held.interruptible]
            self._utterances.clear()
            self._open = None
            self._drained.set()
            self._waiting = deque(held for held in self._waiting if not held.interruptible)
            if self._session is not None and not self._failed and not self._closing:
                try:
                    self._stale = self._session.clear()
                except Exception as exc:
                    error = exc
            await self.push_frame(frame, direction)
            for held in kept:
                await self.push_frame(held)
        if error is not None:
            await self._fail(error)

    # -- lifecycle ------------------------------------------------------------------------
    def _start(self) -> None:
        if self._task is None and not self._closing and not self._failed:
            self._task = self.create_task(self._run(), "avatar")

    async def _run(self) -> None:
        """Build (if need be) and start the session, let the frames that waited in, then
        send its output on until it is closed."""
        try:
            session = self._session
            if session is None:
                session = self._session = await self._build()
            await session.start()
            async with contextlib.aclosing(session.output()) as output:
                while self._waiting:
                    await self._take(self._waiting.popleft())
                self._ready = True
                self._settled.set()
                async for item in output:
                    await self._emit(item, session.stream.timeline)
            if not self._closing:
                raise StreamClosed("the avatar stream stopped")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            await self._fail(exc)

    async def _build(self) -> AvatarSession:
        recipe, process = self._recipe, self._process
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(None, lambda: AvatarSession.create(recipe, process=process))
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            future.add_done_callback(_discard)
            raise

    async def _end(self) -> None:
        """EndFrame: the speech queued plays out (held frames leave with it), then the
        session closes."""
        if self._task is not None and not self._failed:
            await self._settled.wait()
        if self._ready and self._session is not None:
            if self._open is not None:
                utterance, self._open = self._open, None
                if utterance.voiced:
                    self._session.end_segment()
                utterance.closed = True
                await self._release()
            speech = sum(u.pushed for u in self._utterances)
            timeout = speech + self._session.delay_seconds + END_GRACE_S
            try:
                await asyncio.wait_for(self._drained.wait(), timeout)
            except TimeoutError:
                await self.push_error(f"the avatar's speech did not end in {timeout:.1f} s")
        await self._stop()
        await self._flush()

    async def _stop(self) -> None:
        """Close the session and stop reading it."""
        self._closing = True
        self._ready = False
        self._settled.set()
        await self._close_session()

    async def _close_session(self) -> None:
        session, self._session = self._session, None
        task, self._task = self._task, None
        try:
            if session is not None:
                await session.close()  # its output ends: so does the task, once it has read it
        finally:
            if task is not None and task is not asyncio.current_task():
                await self.cancel_task(task)

    async def _fail(self, exc: Exception) -> None:
        """The avatar is off from now on: report it (one line), send on what was held and
        let every frame pass through."""
        if self._failed:
            return
        self._failed = True
        self._ready = False
        self._settled.set()
        await self.push_error(
            f"the avatar stopped ({type(exc).__name__}: {exc}); "
            "TTS audio passes through without video from now on",
            exception=exc,
        )
        await self._flush()
        await self._close_session()

    async def _flush(self) -> None:
        """Send on every frame still held or waiting, in order."""
        async with self._order:
            frames = [held for u in self._utterances for _, held in u.held]
            frames += self._waiting
            self._utterances.clear()
            self._waiting.clear()
            self._open = None
            self._drained.set()
            for frame in frames:
                await self.push_frame(frame)

    async def _guard(self, work: Awaitable[None]) -> None:
        try:
            await work
        except Exception as exc:
            await self._fail(exc)

    # -- frames out -----------------------------------------------------------------------
    async def _emit(self, item: SessionOutput, timeline: Timeline) -> None:
        if isinstance(item, VideoOut):
            await self.push_frame(image_frame(item, timeline))
            return
        if isinstance(item, AudioChunk):
            await self.push_frame(audio_frame(item))
            self._heard = item.end
        elif item.pts > self._stale:
            self._place(item)
        await self._release()

    def _place(self, event: SegmentEvent) -> None:
        """A segment of the session started or ended: so did the first utterance (of those
        with audio) that had not. Segments play in the order their utterances came."""
        voiced = [u for u in self._utterances if u.voiced]
        if isinstance(event, SegmentStart):
            utterance = next((u for u in voiced if u.start is None), None)
            if utterance is not None:
                utterance.start = event.pts
            return
        utterance = next((u for u in voiced if u.end is None), None)
        if utterance is None:
            return
        utterance.end = event.pts
        if utterance.start is None:
            utterance.start = event.pts
        if event.error is not None and utterance is self._open and self._session is not None:
            self._open = None  # the segment failed: the TTS audio still to come opens another
            self._session.end_segment()

    async def _release(self) -> None:
        """Send on the held frames that the output audio has reached."""
        async with self._order:
            for frame in self._due():
                await self.push_frame(frame)

    def _due(self) -> list[Frame]:
        due: list[Frame] = []
        while self._utterances:
            utterance = self._utterances[0]
            if utterance.voiced:
                start = utterance.start
                if start is None:
                    break
                held = utterance.held
                while held and (at := held[0][0]) is not None and start + at <= self._heard:
                    due.append(held.popleft()[1])
                if utterance.end is None or self._heard < utterance.end:
                    break
            elif not utterance.closed:
                break
            due.extend(frame for _, frame in utterance.held)
            self._utterances.popleft()
            if utterance is self._open:
                self._open = None
        if not self._utterances:
            self._drained.set()
        return due


def image_frame(frame: VideoOut, timeline: Timeline) -> OutputImageRawFrame:
    """A video frame of a stream on ``timeline`` as pipecat's ``OutputImageRawFrame`` (RGB
    bytes, size (w, h))."""
    image = frame.image
    if frame.format == "yuv420p":
        import cv2

        image = cv2.cvtColor(image, cv2.COLOR_YUV2RGB_I420)
    height, width = image.shape[:2]
    out = OutputImageRawFrame(
        image=np.ascontiguousarray(image).tobytes(), size=(width, height), format="RGB"
    )
    out.metadata[STREAM_SAMPLE] = timeline.frame_start(frame.index)
    return out


def audio_frame(chunk: AudioChunk) -> SpeechOutputAudioRawFrame:
    """An audio chunk as pipecat's ``SpeechOutputAudioRawFrame`` (int16 mono bytes)."""
    pcm = float_to_pcm16(chunk.pcm)
    out = SpeechOutputAudioRawFrame(
        audio=pcm.tobytes(), sample_rate=chunk.sample_rate, num_channels=1
    )
    out.metadata[STREAM_SAMPLE] = chunk.pts
    return out


def _discard(future: asyncio.Future[AvatarSession]) -> None:
    """A session built for a pipeline that was gone by then: close its engine (off the
    event loop: an engine process takes a moment to end)."""
    if future.cancelled() or future.exception() is not None:
        return
    engine = future.result().engine
    threading.Thread(target=engine.close, name="avatar-engine-close", daemon=True).start()
