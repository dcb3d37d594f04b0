"""The avatar for other programs' pipelines: push speech audio in, take lip-synced video
frames and the same audio, re-timed, out.

What the pipecat and LiveKit plug-ins (``presenter.plugins``) are built on, and usable on
its own::

    async with AvatarSession.create() as avatar:        # the default avatar, engine in a process
        avatar.push_audio(pcm, 22050)                    # as the TTS engine delivers it
        avatar.end_segment()                             # the utterance is complete
        async for item in avatar.output():
            ...  # VideoOut (25 fps, RGB), AudioChunk (48 kHz mono, 20 ms), SegmentStart/End

The output is real-time paced from the moment the session starts: one frame every 40 ms,
idle (blinking, mouth at rest) when nothing is pushed, and every audio chunk released
together with the frames that show it, ``delay_seconds`` after the audio went in. Pushed
audio is queued as a segment; ``end_segment()`` closes it (the next push starts another),
``clear()`` is barge-in: everything pushed and not yet heard is dropped and the avatar is at
rest from the next frame on.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

import numpy as np

from engine.frames import StreamEngine
from presenter.clock import Clock
from presenter.media import AudioChunk, SegmentEvent, VideoOut
from presenter.playback import Playback
from presenter.sources.pushed import PushedAudioSource
from presenter.stream import AvatarStream, StreamConfig
from presenter.subscription import StreamClosed

SessionOutput = VideoOut | AudioChunk | SegmentEvent


class AvatarSession:
    """One avatar stream driven by pushed audio. ``engine`` is anything with the stream's
    engine interface (:class:`engine.frames.StreamEngine`: :class:`engine.facade.AvatarEngine`,
    :class:`presenter.engine_process.EngineProcess`); ``owns_engine``: close it with the
    session."""

    def __init__(
        self,
        engine: StreamEngine,
        *,
        config: StreamConfig | None = None,
        clock: Clock | None = None,
        owns_engine: bool = False,
        name: str = "pushed",
    ) -> None:
        self.engine = engine
        self.stream = AvatarStream(engine, config=config, clock=clock)
        self.name = name
        self._owns_engine = owns_engine
        self._source: PushedAudioSource | None = None
        self._segments = 0
        self._playbacks: list[Playback] = []

    @classmethod
    def create(
        cls,
        recipe: Any = None,
        *,
        process: bool = True,
        render_budget_ms: float | None = None,
    ) -> AvatarSession:
        """A session with its own engine, built from an
        :class:`~presenter.engine_setup.EngineRecipe` (default: the shipped avatar),
        in a child process (``process=True``: the caller's event loop keeps its core) or in
        this one. The render budget is sized from the measured frame cost unless given."""
        from presenter.engine_setup import EngineRecipe, start_engine, stream_config_for

        engine, frame_ms = start_engine(recipe or EngineRecipe(), process=process)
        config = stream_config_for(frame_ms, render_budget=render_budget_ms)
        return cls(engine, config=config, owns_engine=True)

    # -- lifecycle ------------------------------------------------------------------------
    async def start(self) -> None:
        await self.stream.start()

    async def close(self) -> None:
        if self._source is not None:
            self._source.end()
            self._source = None
        await self.stream.close()
        if self._owns_engine:  # an engine process may take seconds to end: off the loop
            await asyncio.to_thread(self.engine.close)

    async def __aenter__(self) -> AvatarSession:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- input ------------------------------------------------------------------------------
    @property
    def delay_seconds(self) -> float:
        """From audio pushed (in time) to it leaving with its frames."""
        return self.stream.delay_seconds

    @property
    def fps(self) -> float:
        return self.stream.fps

    @property
    def speaking(self) -> bool:
        """Pushed audio is queued or still to be heard."""
        return self.stream.busy

    def push_audio(self, pcm: np.ndarray, sample_rate: int, *, channels: int = 1) -> Playback:
        """Speech to say: int16 or float PCM (interleaved when ``channels`` > 1), any rate.
        Appends to the open segment, or opens one; returns the segment's playback (its
        ``id`` is the ``segment`` of its start and end events)."""
        if self._source is None:
            self._segments += 1
            source = PushedAudioSource(f"{self.name}-{self._segments}")
            self._playbacks = [p for p in self._playbacks if not p.done]
            self._playbacks.append(self.stream.say(source))
            self._source = source
        self._source.push(pcm, sample_rate, channels=channels)
        return self._playbacks[-1]

    def end_segment(self) -> Playback | None:
        """The open segment is complete (it plays to its end); the next push opens another.
        Returns its playback (``await playback.wait()`` for its end), None if none was open."""
        source, self._source = self._source, None
        if source is None:
            return None
        source.end()
        return next((p for p in self._playbacks if p.source is source), None)

    def clear(self) -> int:
        """Barge-in: drop every segment (open, queued, playing); the avatar is at rest from the
        returned stream sample (48 kHz; the next frame boundary to leave)."""
        if self._source is not None:
            self._source.end()
            self._source = None
        self._playbacks.clear()
        return self.stream.interrupt()

    # -- output -----------------------------------------------------------------------------
    async def output(
        self, *, video: bool = True, audio: bool = True, lossy: bool = False
    ) -> AsyncGenerator[SessionOutput, None]:
        """Frames, audio chunks and segment events as the stream releases them, until the
        session closes (an async generator: close it, e.g. with ``contextlib.aclosing``, when
        done). Each call is a consumer of its own, from now on. Within one release an audio
        chunk and the events at its samples may come in either order; match them by pts.

        A consumer that falls behind loses its oldest video frames; ``lossy=False`` (audio
        never dropped): more than 2 s of audio behind ends the iteration; ``lossy=True``: the
        oldest audio is dropped instead (for a consumer that may stop reading for a while)."""
        subscription = self.stream.subscribe(audio=audio, video=video, lossy=lossy)
        # small: a consumer that does not keep up makes the subscription's own queues fill,
        # which drop the oldest video (and end it when its audio is 2 s behind)
        queue: asyncio.Queue[SessionOutput | None] = asyncio.Queue(maxsize=4)

        async def pump(next_item: Any) -> None:
            with contextlib.suppress(StreamClosed):
                while True:
                    await queue.put(await next_item())
            await queue.put(None)

        loop = asyncio.get_running_loop()
        pumps = [loop.create_task(pump(subscription.next_event))]
        if audio:
            pumps.append(loop.create_task(pump(subscription.next_audio)))
        if video:
            pumps.append(loop.create_task(pump(subscription.next_video)))
        try:
            open_pumps = len(pumps)
            while open_pumps:
                item = await queue.get()
                if item is None:
                    open_pumps -= 1
                    continue
                yield item
        finally:
            for task in pumps:
                task.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            subscription.close("output no longer read")
