"""Live speech from a microphone through sounddevice (PortAudio).

PortAudio calls back on its own thread with each captured block; the block is handed to the
event loop with ``loop.call_soon_threadsafe`` and put in a bounded queue. When the consumer
falls behind, the oldest blocks are dropped (a live source must not build up latency), and
``overflows`` counts them. ``sounddevice`` is imported only when a microphone is opened.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from presenter.errors import PresenterError
from presenter.media import CHUNK_MS, AudioChunk

log = logging.getLogger(__name__)


def _import_sounddevice() -> Any:
    try:
        import sounddevice
    except (ImportError, OSError) as exc:  # OSError: the PortAudio library is missing
        raise PresenterError(
            f"cannot use a microphone: sounddevice/PortAudio is not available ({exc}); "
            "install the Debian package libportaudio2"
        ) from exc
    return sounddevice


def _describe(devices: Sequence[Mapping[str, Any]]) -> str:
    if not devices:
        return "there are no audio devices at all"
    parts = [
        f"{index} {device.get('name', '?')!r} "
        f"({int(device.get('max_input_channels', 0))} in, "
        f"{int(device.get('max_output_channels', 0))} out)"
        for index, device in enumerate(devices)
    ]
    return "devices: " + ", ".join(parts)


def find_input_device(sd: Any, device: int | str | None) -> tuple[int, Mapping[str, Any]]:
    """(index, info) of the input device to open: ``device`` by index or name (a substring,
    case-insensitive), or the default input, or the first device with input channels.
    Raises a one-line ``PresenterError`` naming the devices that exist."""
    try:
        devices = [dict(info) for info in sd.query_devices()]
    except Exception as exc:
        raise PresenterError(f"cannot list audio devices ({exc})") from exc
    inputs = [index for index, info in enumerate(devices) if info.get("max_input_channels", 0) > 0]
    if device is None:
        try:
            default = int(sd.default.device[0])
        except (TypeError, ValueError, IndexError):
            default = -1
        if default in inputs:
            return default, devices[default]
        if inputs:
            return inputs[0], devices[inputs[0]]
        raise PresenterError(f"no audio input device (microphone) found; {_describe(devices)}")
    if isinstance(device, int):
        if device in inputs:
            return device, devices[device]
        problem = "does not exist" if not 0 <= device < len(devices) else "has no input channels"
        raise PresenterError(f"audio device {device} {problem}; {_describe(devices)}")
    matches = [index for index in inputs if device.lower() in str(devices[index]["name"]).lower()]
    if not matches:
        raise PresenterError(f"no audio input device named {device!r}; {_describe(devices)}")
    return matches[0], devices[matches[0]]


class MicrophoneSource:
    """Mono float32 blocks of ``block_ms`` from an input device, at ``sample_rate`` (default:
    the device's own rate). The device is checked when the source is made; capture starts on
    the first read and stops at ``close()``."""

    def __init__(
        self,
        device: int | str | None = None,
        *,
        sample_rate: int | None = None,
        block_ms: float = CHUNK_MS,
        queue_ms: float = 500.0,
    ) -> None:
        self._sd = _import_sounddevice()
        self.device, info = find_input_device(self._sd, device)
        self.name = f"microphone:{info.get('name', self.device)}"
        self.live = True  # delivers in real time: the stream keeps its backlog short
        self.sample_rate = int(sample_rate or round(float(info.get("default_samplerate", 48000))))
        self.block_samples = max(1, round(self.sample_rate * block_ms / 1000))
        self._queue: asyncio.Queue[AudioChunk | None] = asyncio.Queue(
            maxsize=max(2, round(queue_ms / block_ms))
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stream: Any = None
        self._captured = 0  # samples delivered by PortAudio (pts of the next block)
        self._closed = False
        self.overflows = 0  # blocks dropped because the consumer fell behind

    def __aiter__(self) -> MicrophoneSource:
        return self

    async def __anext__(self) -> AudioChunk:
        if self._closed and self._queue.empty():
            raise StopAsyncIteration
        if self._stream is None and not self._closed:
            self._start(asyncio.get_running_loop())
        chunk = await self._queue.get()
        if chunk is None:
            raise StopAsyncIteration
        return chunk

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        try:
            stream = self._sd.InputStream(
                device=self.device,
                channels=1,
                samplerate=self.sample_rate,
                blocksize=self.block_samples,
                dtype="float32",
                callback=self._callback,
            )
            stream.start()
        except Exception as exc:
            raise PresenterError(f"cannot open {self.name} ({exc})") from exc
        self._stream = stream

    def _callback(self, indata: np.ndarray, frames: int, time: Any, status: Any) -> None:
        """PortAudio's thread: copy the block and hand it to the event loop."""
        if status:
            log.debug("%s: %s", self.name, status)
        pcm = np.array(indata, dtype=np.float32).reshape(frames, -1).mean(axis=1)
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._put, pcm.astype(np.float32, copy=False))

    def _put(self, pcm: np.ndarray) -> None:
        pts = self._captured
        self._captured += len(pcm)
        if self._closed:
            return
        if self._queue.full():
            self._queue.get_nowait()  # the oldest block goes: a live source keeps up
            self.overflows += 1
        self._queue.put_nowait(AudioChunk(pcm, self.sample_rate, pts))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        stream, self._stream = self._stream, None
        if stream is not None:
            try:
                stream.stop()
                stream.close()
            except Exception as exc:
                log.debug("closing %s: %s", self.name, exc)
        if self._queue.full():
            self._queue.get_nowait()
        self._queue.put_nowait(None)
