"""Live speech from a viewer's own microphone, received over its WebRTC peer connection.

The browser sends its microphone as an Opus track on the same peer connection that carries
the avatar back; aiortc decodes it into 20 ms ``av.AudioFrame`` s (s16, 48 kHz, usually
stereo). This source averages the channels into mono float32 chunks as they arrive: a
live source (``live = True``), so the stream drops a backlog rather than let it grow into
latency. The source ends when the track ends (the viewer left) or at ``close()``.
"""

from __future__ import annotations

import asyncio
from typing import Any, Self

import numpy as np
from aiortc.mediastreams import MediaStreamError

from presenter.media import AudioChunk


def frame_to_mono(frame: Any) -> tuple[np.ndarray, int]:
    """An ``av.AudioFrame`` (any sample format, packed or planar) as mono float32 + rate."""
    data = frame.to_ndarray()
    channels = len(frame.layout.channels)
    name = frame.format.name
    # planar: one row per channel; packed: channels interleaved
    planar = frame.format.is_planar
    samples = data.reshape(channels, -1) if planar else data.reshape(-1, channels).T
    pcm = samples.astype(np.float32)
    if name.startswith("s16"):
        pcm /= 32768.0
    elif name.startswith("s32"):
        pcm /= 2147483648.0
    elif not name.startswith(("flt", "dbl")):
        raise ValueError(f"unsupported audio sample format {name}")
    return pcm.mean(axis=0).astype(np.float32), int(frame.sample_rate)


class BrowserMicSource:
    """Mono float32 chunks of a remote audio track (``track.recv()`` gives ``av.AudioFrame``)."""

    def __init__(self, track: Any, *, name: str = "browser-mic") -> None:
        self.track = track
        self.name = name
        self.live = True
        self.frames = 0
        self._next_pts = 0
        self._closed = False
        self._pending: asyncio.Task[Any] | None = None

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> AudioChunk:
        while not self._closed:
            self._pending = asyncio.ensure_future(self.track.recv())
            try:
                frame = await self._pending
            except MediaStreamError:  # the track ended: the viewer left
                self.close()
                break
            except asyncio.CancelledError:
                if self._closed:  # close() while waiting
                    break
                raise
            finally:
                self._pending = None
            pcm, rate = frame_to_mono(frame)
            if not len(pcm):
                continue
            chunk = AudioChunk(pcm, rate, self._next_pts)
            self._next_pts += len(pcm)
            self.frames += 1
            return chunk
        raise StopAsyncIteration

    def close(self) -> None:
        """Stop reading (the track itself belongs to the peer connection)."""
        self._closed = True
        pending = self._pending
        if pending is not None and not pending.done():
            pending.cancel()
