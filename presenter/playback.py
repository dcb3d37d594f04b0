"""What the stream plays: queued sources, one after another, read ahead and resampled.

A source said to the stream becomes a :class:`Playback` in the :class:`Playlist`; when its
turn comes a :class:`SourceFeed` reads it ahead (``read_ahead`` samples) in a task of its own,
resampled to the stream's 48 kHz. Every 20 ms the stream takes the next input chunk from
the playlist (:meth:`Playlist.next_input`): the playing source's audio, silence where there
is none. The playlist keeps where each source's first sample went into the stream and where
its last one did, and hands out the matching :class:`~presenter.media.SegmentStart` /
:class:`~presenter.media.SegmentEnd` events once the stream has released those samples.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

import numpy as np

from engine.streaming_resample import StreamingResampler
from presenter.media import (
    CHUNK_SAMPLES,
    OUTPUT_RATE,
    SegmentEnd,
    SegmentEvent,
    SegmentStart,
)
from presenter.sources.base import AudioSource

log = logging.getLogger(__name__)


class Playback:
    """A source queued with ``AvatarStream.say``: ``await wait()`` gives its ``SegmentEnd``
    (when its last sample has left the stream, or when it was interrupted or failed)."""

    def __init__(self, segment: int, source: AudioSource) -> None:
        self.id = segment
        self.source = source
        self.name = source.name
        self.start_pts: int | None = None  # output sample of its first sample, once known
        self.result: SegmentEnd | None = None
        self._finished = asyncio.Event()

    @property
    def done(self) -> bool:
        return self.result is not None

    async def wait(self) -> SegmentEnd:
        await self._finished.wait()
        assert self.result is not None
        return self.result

    def finish(self, end: SegmentEnd) -> bool:
        """Record how it ended; False if it had ended already."""
        if self.result is not None:
            return False
        self.result = end
        self._finished.set()
        return True


class SourceFeed:
    """The playing source, read ahead by a task, resampled to 48 kHz, buffered.

    A live source (``source.live``, e.g. the microphone) delivers in real time, and what it
    delivers late must not pile up as latency: beyond ``live_budget`` samples buffered, the
    oldest are dropped."""

    def __init__(self, playback: Playback, budget: int, live_budget: int) -> None:
        self.playback = playback
        self.budget = budget
        self.live = playback.source.live
        self.live_budget = live_budget
        self.dropped = 0  # samples of a live source dropped to keep its latency down
        self.pieces: deque[np.ndarray] = deque()
        self.buffered = 0
        self.exhausted = False
        self.started = False  # a sample of it went into the stream
        self.error: str | None = None
        self._space = asyncio.Event()
        self.task: asyncio.Task[None] = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        source = self.playback.source
        resampler: StreamingResampler | None = None
        try:
            async for chunk in source:
                if resampler is not None and resampler.rate_in != chunk.sample_rate:
                    self._append(resampler.flush())
                    resampler = None
                if resampler is None:
                    resampler = StreamingResampler(chunk.sample_rate, OUTPUT_RATE)
                self._append(resampler.push(chunk.pcm))
                while self.buffered >= self.budget:
                    self._space.clear()
                    await self._space.wait()
            if resampler is not None:
                self._append(resampler.flush())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            log.warning("source %s failed: %s", self.playback.name, self.error)
        finally:
            self.exhausted = True
            source.close()

    def _append(self, samples: np.ndarray) -> None:
        if len(samples):
            self.pieces.append(samples)
            self.buffered += len(samples)
        if self.live and self.buffered > self.live_budget:
            excess = self.buffered - self.live_budget
            self.take(excess)
            self.dropped += excess

    @property
    def finished(self) -> bool:
        return self.exhausted and self.buffered == 0

    def take(self, count: int) -> np.ndarray:
        out: list[np.ndarray] = []
        while count > 0 and self.pieces:
            piece = self.pieces[0]
            if len(piece) <= count:
                out.append(self.pieces.popleft())
            else:
                out.append(piece[:count])
                self.pieces[0] = piece[count:]
            count -= len(out[-1])
        taken = np.concatenate(out) if out else np.zeros(0, np.float32)
        self.buffered -= len(taken)
        if self.buffered < self.budget:
            self._space.set()
        return taken

    def stop(self) -> None:
        self.task.cancel()
        self.playback.source.close()


class Playlist:
    """Queued sources, the one playing, and where each started and ended in the stream.

    ``read_ahead``: samples a playing source is read ahead; ``live_budget``: samples a live
    source may have buffered before its oldest are dropped."""

    def __init__(self, *, read_ahead: int, live_budget: int) -> None:
        self.read_ahead = read_ahead
        self.live_budget = live_budget
        self.underruns = 0  # chunks a playing source could not fill in time
        self._retired_dropped = 0  # live samples dropped by the feeds no longer playing
        self.sound_end = 0  # input sample after the last sample a source gave
        self._ids = itertools.count(1)
        self._queue: deque[Playback] = deque()
        self._feed: SourceFeed | None = None
        self._starts: deque[tuple[int, Playback]] = deque()
        self._ends: deque[tuple[int, Playback, str | None]] = deque()

    @property
    def live_samples_dropped(self) -> int:
        """Samples (48 kHz) of live sources dropped to keep their latency down, so far."""
        playing = self._feed.dropped if self._feed is not None else 0
        return self._retired_dropped + playing

    @property
    def busy(self) -> bool:
        """A source is playing or queued, or the end of one has not left the stream yet."""
        return bool(self._queue or self._feed or self._ends)

    @property
    def settled(self) -> bool:
        """No start or end of a source is waiting to leave the stream."""
        return not (self._starts or self._ends)

    def add(self, source: AudioSource) -> Playback:
        playback = Playback(next(self._ids), source)
        self._queue.append(playback)
        return playback

    def playing(self) -> SourceFeed | None:
        """The source playing: its feed, opened from the queue's head when it is its turn
        (read ahead from then on; needs a running event loop)."""
        if self._feed is None and self._queue:
            self._feed = SourceFeed(self._queue.popleft(), self.read_ahead, self.live_budget)
        return self._feed

    def next_input(self, position: int) -> np.ndarray:
        """The input chunk that goes into the stream at input sample ``position``: the playing
        source's audio, silence where there is none."""
        out = np.zeros(CHUNK_SAMPLES, np.float32)
        filled = 0
        while filled < CHUNK_SAMPLES:
            feed = self.playing()
            if feed is None:
                break
            if feed.buffered == 0 and not feed.exhausted:
                if feed.started:
                    self.underruns += 1
                break  # not there yet (synthesis, a live source's jitter): silence
            piece = feed.take(CHUNK_SAMPLES - filled)
            if len(piece):
                if not feed.started:
                    self.mark_started(feed, position + filled)
                out[filled : filled + len(piece)] = piece
                filled += len(piece)
                self.sound_end = position + filled
            if feed.finished:
                self._ends.append((position + filled, feed.playback, feed.error))
                feed.stop()
                self._retired_dropped += feed.dropped
                self._feed = None
        return out

    def mark_started(self, feed: SourceFeed, position: int) -> None:
        """``feed``'s first sample goes into the stream at input sample ``position``."""
        feed.started = True
        feed.playback.start_pts = position
        self._starts.append((position, feed.playback))

    def released(self, released: int) -> list[SegmentEvent]:
        """The events of the starts and ends that the stream's output up to sample
        ``released`` (exclusive) has now carried out."""
        events: list[SegmentEvent] = []
        while self._starts and self._starts[0][0] < released:
            pts, playback = self._starts.popleft()
            events.append(SegmentStart(segment=playback.id, name=playback.name, pts=pts))
        while self._ends and self._ends[0][0] <= released:
            end, playback, error = self._ends.popleft()
            events.extend(_ended(playback, end, error=error))
        return events

    def interrupt(self, boundary: int) -> list[SegmentEvent]:
        """Drop every source that has not ended before output sample ``boundary``: each ends
        interrupted there. Returns their end events."""
        dropped = self._drop_sources()
        kept: deque[tuple[int, Playback, str | None]] = deque()
        for end, playback, error in self._ends:
            if end <= boundary:
                kept.append((end, playback, error))
            else:
                dropped.append(playback)
        self._ends = kept
        self._starts = deque(
            (pts, playback)
            for pts, playback in self._starts
            if pts < boundary and all(playback is not other for other in dropped)
        )
        self.sound_end = min(self.sound_end, boundary)
        events: list[SegmentEvent] = []
        for playback in dropped:
            events.extend(_ended(playback, boundary, interrupted=True))
        return events

    def close(self, boundary: int) -> list[SegmentEvent]:
        """Every source ends (interrupted at output sample ``boundary``); their events."""
        events: list[SegmentEvent] = []
        for playback in self._drop_sources():
            events.extend(_ended(playback, boundary, interrupted=True))
        for _, playback, error in self._ends:
            events.extend(_ended(playback, boundary, interrupted=True, error=error))
        self._ends.clear()
        return events

    def _drop_sources(self) -> list[Playback]:
        dropped: list[Playback] = []
        feed, self._feed = self._feed, None
        if feed is not None:
            feed.stop()
            self._retired_dropped += feed.dropped
            dropped.append(feed.playback)
        while self._queue:
            playback = self._queue.popleft()
            playback.source.close()
            dropped.append(playback)
        return dropped


def _ended(
    playback: Playback, pts: int, *, interrupted: bool = False, error: str | None = None
) -> list[SegmentEvent]:
    """The end event of ``playback`` (none if it had ended already)."""
    event = SegmentEnd(
        segment=playback.id, name=playback.name, pts=pts, interrupted=interrupted, error=error
    )
    return [event] if playback.finish(event) else []
