"""The presenter as a LiveKit Agents avatar: a ``VideoGenerator`` for LiveKit's ``AvatarRunner``.

An avatar worker is a participant of its own in the agent's room: it receives the agent's
speech (``DataStreamAudioReceiver``) and publishes the avatar's lip-synced video and the same
speech, re-timed, as its tracks. LiveKit's ``AvatarRunner`` does the room side (receiving,
publishing, the playback notifications back to the agent); this module is the generator it
drives, built on :class:`presenter.avatar_session.AvatarSession`::

    generator = PresenterVideoGenerator.create()            # builds the shipped avatar
    runner = AvatarRunner(
        room,                                               # connected with the worker's token
        audio_recv=DataStreamAudioReceiver(room),
        video_gen=generator,
        options=generator.options,                          # 512x512, 25 fps, 48 kHz mono
    )
    await runner.start()
    ...                                                     # until the agent leaves
    await runner.aclose()
    await generator.aclose()

``examples/livekit_avatar.py`` is a complete worker. On the agent's side the speech goes to
the worker through ``DataStreamAudioOutput(room, destination_identity=<the worker's
identity>, wait_remote_track=rtc.TrackKind.KIND_VIDEO, wait_playback_start=True)``, as in
LiveKit's avatar examples. ``livekit-agents`` is an optional extra (``presenter[livekit]``):
only this module imports it.

The contract with the runner
----------------------------
* ``push_audio(frame)``: an ``rtc.AudioFrame`` (int16, any rate, any channel count) is
  speech, appended to the open segment or opening one; ``AudioSegmentEnd`` closes the
  segment, which then plays to its end.
* Iterating yields an ``rtc.VideoFrame`` every 40 ms (25 fps) all the time: between
  utterances the avatar idles (blinks, mouth at rest). ``rtc.AudioFrame`` s (48 kHz mono
  int16, 20 ms) come only while a segment plays, each released together with the video frame
  that shows it; an ``AudioSegmentEnd`` follows a segment's last audio frame (when the stream
  releases that audio, i.e. as it is played out). The runner sums the durations of the audio
  frames into the playback position and reports ``playback_finished(interrupted=False)`` at
  the ``AudioSegmentEnd``: that is why nothing is yielded for the silence between segments
  (it would count as playback and fire the runner's "playback started" at every idle frame).
  A segment that closes without audio still gets its ``AudioSegmentEnd``.
* ``clear_buffer()`` (barge-in, called by the runner when the agent clears): the segment
  playing and everything pushed after it are dropped; not one more audio frame of them is
  yielded from the call on (what already went to the runner's ``AudioSource`` queue, at most
  its ``queue_size_ms``, still plays), the video is at rest from the next frame to leave
  (within 40 ms), and no ``AudioSegmentEnd`` is yielded for them: right after calling
  ``clear_buffer`` the runner reports ``playback_finished(interrupted=True)`` itself, with the
  position it counted, and a late ``AudioSegmentEnd`` would end the *next* segment early.

Video frames are ``VideoBufferType.RGB24``: the engine's RGB (H, W, 3) bytes as they are.
Neither ``AvatarRunner`` nor ``AVSynchronizer`` looks at the pixels; ``VideoSource`` converts
whatever it gets to I420 for the encoder in LiveKit's native code (libyuv), from RGB24 as
from RGBA, with the channel order kept. RGBA, which LiveKit's examples draw, would only add a
copy a third larger per frame; ``video_format="rgba"`` gives it to consumers that want it. An
engine built with ``yuv420p`` output gives ``I420`` frames, the encoder's own format.

Video that leaves the generator more than ``max_video_lag_s`` after its release time (the
runner was not reading: it blocks on its first frame until a participant subscribes to the
avatar's audio) is dropped, so that a backlog of idle frames never becomes a lasting delay
behind ``AVSynchronizer``'s 25 fps pacing. Speech audio is never dropped.
"""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator

from engine.audio import float_to_pcm16
from presenter.avatar_session import AvatarSession
from presenter.media import OUTPUT_RATE, AudioChunk, SegmentEnd, SegmentStart, VideoOut

if TYPE_CHECKING:
    from presenter.engine_setup import EngineRecipe

log = logging.getLogger(__name__)

__all__ = ["GeneratorOutput", "LiveKitVideoFormat", "PresenterVideoGenerator"]

GeneratorOutput = rtc.VideoFrame | rtc.AudioFrame | AudioSegmentEnd
LiveKitVideoFormat = Literal["rgb24", "rgba"]


@dataclass(frozen=True)
class _Ended:
    """A segment's audio is over at output sample ``pts``."""

    pts: int


@dataclass
class _Segment:
    id: int
    start: int  # output sample of its first sample
    end: int | None = None  # one past its last sample, once known


class _Playout:
    """Which of the stream's audio belongs to a segment (to be yielded) and when a segment's
    audio is over, from the stream's audio chunks and segment events, whichever comes first.

    All positions are output samples (48 kHz). Segments play one after another. The stream
    releases a segment's start and end events together with the audio chunk that holds the
    boundary, and ``AvatarSession.output()`` gives that chunk first: the newest chunk seen
    outside a segment is held, so that a start falling in it still gets its audio, and a
    chunk in which a segment ends goes with that segment whole (at most 20 ms more than its
    audio; the runner counts its duration). Events for what ``clear`` dropped are ignored.
    """

    def __init__(self) -> None:
        self.floor = 0  # cleared: audio and events before this sample are dropped
        self.position = 0  # the end of the newest audio chunk seen
        self.closed = 0  # segments with an id up to this one are over
        self.playing: _Segment | None = None
        self.upcoming: deque[_Segment] = deque()  # started beyond the audio seen so far
        self.held: AudioChunk | None = None  # newest audio outside a segment

    def clear(self, boundary: int) -> None:
        """Barge-in: everything playing or to come is dropped, silently, up to ``boundary``
        (the stream's sample from which it is at rest)."""
        self.floor = max(self.floor, boundary)
        self.playing = None
        self.upcoming.clear()
        self.held = None

    def audio(self, chunk: AudioChunk) -> list[AudioChunk | _Ended]:
        if chunk.end <= self.floor:
            return []
        out: list[AudioChunk | _Ended] = []
        self.held = None
        pos = max(chunk.pts, self.floor)
        while pos < chunk.end:
            playing = self.playing
            if playing is None:
                if self.upcoming and self.upcoming[0].start < chunk.end:
                    playing = self.playing = self.upcoming.popleft()
                    pos = max(pos, playing.start)
                    continue
                self.held = _cut(chunk, pos, chunk.end)
                break
            stop = chunk.end if playing.end is None else min(chunk.end, playing.end)
            if stop > pos:
                out.append(_cut(chunk, pos, stop))
                pos = stop
            if playing.end is None or playing.end > chunk.end:
                break
            out.append(self._finish(playing))
        self.position = max(self.position, chunk.end)
        return out

    def start(self, event: SegmentStart) -> list[AudioChunk | _Ended]:
        if event.segment <= self.closed or event.pts < self.floor:
            return []  # stale: over already, or cleared
        out: list[AudioChunk | _Ended] = []
        playing = self.playing
        if playing is not None and playing.id == event.segment:
            return out
        if playing is not None:
            # Sources play one after another: the playing segment is over where this starts.
            playing.end = event.pts if playing.end is None else min(playing.end, event.pts)
            if event.pts > self.position:
                self.upcoming.append(_Segment(event.segment, event.pts))
                return out
            out.append(self._finish(playing))
        segment = _Segment(event.segment, event.pts)
        if event.pts >= self.position:
            self.upcoming.append(segment)
            return out
        self.playing = segment
        held, self.held = self.held, None
        if held is not None and held.end > event.pts:
            out.append(_cut(held, max(held.pts, event.pts), held.end))
        return out

    def end(self, event: SegmentEnd) -> list[AudioChunk | _Ended]:
        if event.segment <= self.closed or event.pts <= self.floor:
            return []  # stale: over already, or cleared (an interruption by ``clear``)
        playing = self.playing
        if playing is not None and playing.id == event.segment:
            playing.end = event.pts
            if event.pts <= self.position:
                return [self._finish(playing)]
            return []  # its last audio is still to come
        for segment in self.upcoming:
            if segment.id == event.segment:
                segment.end = event.pts
                return []
        # It never played: closed without audio (or dropped by an interruption that did not
        # come through ``clear``). The runner waits for its end all the same, after the end
        # of whatever plays before it.
        if playing is not None or self.upcoming:
            self.upcoming.append(_Segment(event.segment, event.pts, event.pts))
            return []
        self.closed = max(self.closed, event.segment)
        return [_Ended(event.pts)]

    def _finish(self, segment: _Segment) -> _Ended:
        self.playing = None
        self.closed = max(self.closed, segment.id)
        return _Ended(self.position if segment.end is None else segment.end)


def _cut(chunk: AudioChunk, start: int, stop: int) -> AudioChunk:
    """Output samples ``[start, stop)`` of ``chunk``."""
    if start == chunk.pts and stop == chunk.end:
        return chunk
    return AudioChunk(chunk.pcm[start - chunk.pts : stop - chunk.pts], chunk.sample_rate, start)


def audio_frame(chunk: AudioChunk) -> rtc.AudioFrame:
    """A mono float32 chunk as LiveKit's int16 ``AudioFrame``."""
    pcm = float_to_pcm16(chunk.pcm)
    return rtc.AudioFrame(pcm.tobytes(), chunk.sample_rate, 1, len(pcm))


class PresenterVideoGenerator(VideoGenerator):
    """The avatar of an :class:`AvatarSession` as LiveKit's ``VideoGenerator`` (see the
    module docstring for the contract). One consumer iterates it at a time (the runner);
    iterating starts the session. ``owns_session``: ``aclose()`` closes the session too.

    ``video_size`` (width, height) is needed only when the session's engine cannot tell its
    frame size. ``max_video_lag_s``: video frames later than this are dropped.
    """

    def __init__(
        self,
        session: AvatarSession,
        *,
        video_format: LiveKitVideoFormat = "rgb24",
        video_size: tuple[int, int] | None = None,
        max_video_lag_s: float = 0.2,
        owns_session: bool = False,
    ) -> None:
        if video_format not in ("rgb24", "rgba"):
            raise ValueError(f"video_format must be rgb24 or rgba, got {video_format!r}")
        if max_video_lag_s <= 0:
            raise ValueError(f"max_video_lag_s must be positive, got {max_video_lag_s}")
        self.session = session
        self.video_format = video_format
        self.max_video_lag_s = max_video_lag_s
        self.video_size = video_size or _engine_video_size(session)
        self.late_frames_dropped = 0  # video frames dropped for being later than the limit
        self._owns_session = owns_session
        self._playout: _Playout | None = None

    @classmethod
    def create(
        cls,
        recipe: EngineRecipe | None = None,
        *,
        process: bool = True,
        render_budget_ms: float | None = None,
        video_format: LiveKitVideoFormat = "rgb24",
    ) -> PresenterVideoGenerator:
        """A generator on a session of its own (:meth:`AvatarSession.create`: the engine of
        ``recipe``, default the shipped avatar, in a child process when ``process``). Blocks
        while the engine is built; from a running event loop use ``asyncio.to_thread``. A
        script that calls this needs ``if __name__ == "__main__":`` (the child is spawned)."""
        session = AvatarSession.create(recipe, process=process, render_budget_ms=render_budget_ms)
        return cls(session, video_format=video_format, owns_session=True)

    @property
    def options(self) -> AvatarOptions:
        """What ``AvatarRunner`` needs to make its sources: the frame size, 25 fps, 48 kHz
        mono."""
        width, height = self.video_size
        return AvatarOptions(
            video_width=width,
            video_height=height,
            video_fps=self.session.fps,
            audio_sample_rate=OUTPUT_RATE,
            audio_channels=1,
        )

    async def aclose(self) -> None:
        """Close the session if this generator owns it."""
        if self._owns_session:
            await self.session.close()

    # -- VideoGenerator -----------------------------------------------------------------------
    async def push_audio(self, frame: rtc.AudioFrame | AudioSegmentEnd) -> None:
        """Speech to say (int16 PCM at any rate) or the end of the segment."""
        if isinstance(frame, AudioSegmentEnd):
            self.session.end_segment()
            return
        if frame.samples_per_channel == 0:
            return
        pcm = np.frombuffer(frame.data, dtype=np.int16)
        self.session.push_audio(pcm, frame.sample_rate, channels=frame.num_channels)

    def clear_buffer(self) -> None:
        """Barge-in: drop every segment pushed and not yet heard; no audio or
        ``AudioSegmentEnd`` of them follows (the runner reports the interruption)."""
        boundary = self.session.clear()
        if self._playout is not None:
            self._playout.clear(boundary)

    def __aiter__(self) -> AsyncIterator[GeneratorOutput]:
        return self._untimed()

    async def timed(self) -> AsyncGenerator[tuple[GeneratorOutput, int], None]:
        """What iterating the generator yields, each with its place on the stream's clock: the
        output sample (48 kHz) a video or audio frame starts at, or where a segment's audio
        ended (for recording, or for checking the timing)."""
        session = self.session
        stream = session.stream
        await session.start()
        playout = _Playout()
        self._playout = playout
        try:
            # lossy: the runner may not read for a while (it waits for a subscriber)
            async with contextlib.aclosing(session.output(lossy=True)) as items:
                async for item in items:
                    if isinstance(item, VideoOut):
                        pts = stream.timeline.frame_start(item.index)
                        if stream.clock.now() - stream.release_time(pts) > self.max_video_lag_s:
                            self._note_late_frame()
                            continue
                        yield self._video_frame(item), pts
                        continue
                    if isinstance(item, AudioChunk):
                        outs = playout.audio(item)
                    elif isinstance(item, SegmentStart):
                        outs = playout.start(item)
                    else:
                        outs = playout.end(item)
                    for out in outs:
                        if isinstance(out, _Ended):
                            yield AudioSegmentEnd(), out.pts
                        else:
                            yield audio_frame(out), out.pts
        finally:
            if self._playout is playout:
                self._playout = None

    async def _untimed(self) -> AsyncGenerator[GeneratorOutput, None]:
        async with contextlib.aclosing(self.timed()) as items:
            async for item, _ in items:
                yield item

    # -- conversions --------------------------------------------------------------------------
    def _video_frame(self, frame: VideoOut) -> rtc.VideoFrame:
        image = frame.image
        if frame.format == "yuv420p":
            height = image.shape[0] * 2 // 3
            return rtc.VideoFrame(image.shape[1], height, rtc.VideoBufferType.I420, image.tobytes())
        height, width = image.shape[:2]
        if self.video_format == "rgba":
            rgba = np.empty((height, width, 4), np.uint8)
            rgba[..., :3] = image
            rgba[..., 3] = 255
            return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGBA, rgba.tobytes())
        return rtc.VideoFrame(width, height, rtc.VideoBufferType.RGB24, image.tobytes())

    def _note_late_frame(self) -> None:
        self.late_frames_dropped += 1
        if self.late_frames_dropped == 1 or self.late_frames_dropped % 250 == 0:
            log.warning(
                "video read more than %.0f ms after its time (the runner was not reading): "
                "%d late frame(s) dropped so far",
                self.max_video_lag_s * 1000,
                self.late_frames_dropped,
            )


def _engine_video_size(session: AvatarSession) -> tuple[int, int]:
    """(width, height) of the session engine's frames."""
    height, width = session.engine.frame_size
    return width, height
