"""The avatar as a viewer receives it while the viewer's own microphone drives it.

``python -m presenter serve --source browser-mic`` runs in its own process; one headless
Chromium viewer (``presenter/testing/live_harness.py``) has a fake microphone that plays a
WAV file (``--use-file-for-fake-audio-capture``; the file starts when the page asks for the
microphone and loops). The page takes its microphone as it always does (``getUserMedia``
with echo cancellation, noise suppression and automatic gain control: ``web/viewer.js``)
and sends it over its peer connection (Opus); the server's browser-mic source drives the
avatar, and the avatar comes back over the same connection (H.264).

Every frame the page presents is read back where it is presented: a
``requestVideoFrameCallback`` on the page's own ``<video>`` copies the face box of the
decoded frame (``VideoFrame.copyTo``: its YUV planes, no colour conversion) with the
frame's RTP timestamp and display time, and keeps it in the page until the run is over;
then everything goes over a local websocket to this process (:class:`FrameSink`), so the
capture costs the machine little while the avatar is live (about 2 ms of the page's time a
frame) and nothing large passes through the browser's automation channel. The RTP timestamp
(90 kHz, 3600 per stream frame) gives each frame's place in the stream: frames the server
dropped or the page never presented are holes, not shifts. The live and the offline frames
are turned into RGB by the same conversion (:func:`yuv_to_rgb`).
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from presenter.testing.live_harness import (
    chromium,
    click_start,
    fake_microphone_args,
    live_server,
    open_viewer,
    wait_connected,
)

RTP_TICKS_PER_FRAME = 3600  # the 90 kHz video clock at 25 fps (docs/live.md)
HEADER_VALUES = 8  # float64 values before each frame's planes (see CAPTURE_SCRIPT)

# Installed before the page's own script runs: notes when the microphone was granted (the
# fake device's file starts then); ``OVERRIDES`` (JSON: null, or audio constraints) replace
# what the page asks for (a variant of the measurement, never the default).
MIC_CLOCK_SCRIPT = """
(() => {
  const overrides = OVERRIDES;
  const media = navigator.mediaDevices;
  if (!media || !media.getUserMedia) return;
  const ask = media.getUserMedia.bind(media);
  media.getUserMedia = async (constraints) => {
    if (overrides && constraints && constraints.audio) {
      constraints = { ...constraints, audio: { ...constraints.audio, ...overrides } };
    }
    const asked = performance.now();
    const stream = await ask(constraints);
    window.__micClock = { asked, granted: performance.now(), constraints };
    return stream;
  };
})();
"""

# Run in the page once it is loaded: every presented frame's face box as the decoder gave it
# (its YUV planes: no colour conversion, no canvas), kept in the page while the run lasts
# (sending them as they come cost the page a fifth of a core: the server then dropped
# frames); ``window.__captureSend()`` stops and sends them all to the sink.
CAPTURE_SCRIPT = """
({ sink, box, mute }) => {
  const video = document.getElementById('video');
  if (mute) video.muted = true; // a variant: the page plays nothing back
  const socket = new WebSocket(sink);
  socket.binaryType = 'arraybuffer';
  const kept = [];
  const state = { frames: 0, skipped: 0, stopped: false, formats: [], busyMs: 0, error: null };
  window.__capture = state;
  const formats = { I420: 0, NV12: 1 };
  const onFrame = async (now, meta) => {
    if (state.stopped) return;
    video.requestVideoFrameCallback(onFrame);
    const began = performance.now();
    let frame = null;
    try {
      frame = new VideoFrame(video);
      if (!state.formats.includes(frame.format)) state.formats.push(frame.format);
      if (!(frame.format in formats)) throw new Error(`frame format ${frame.format}`);
      const rect = { x: box.x, y: box.y, width: box.w, height: box.h };
      const header = new Float64Array([
        meta.rtpTimestamp ?? -1, meta.mediaTime, meta.expectedDisplayTime,
        meta.presentedFrames, formats[frame.format], now, box.w, box.h,
      ]);
      const message = new Uint8Array(header.byteLength + frame.allocationSize({ rect }));
      message.set(new Uint8Array(header.buffer), 0);
      await frame.copyTo(message.subarray(header.byteLength), { rect });
      kept.push(message);
      state.frames += 1;
    } catch (error) {
      state.skipped += 1;
      state.error = String(error);
    } finally {
      if (frame) frame.close();
      state.busyMs += performance.now() - began;
    }
  };
  video.requestVideoFrameCallback(onFrame);
  window.__captureSend = async () => {
    state.stopped = true;
    while (socket.readyState === WebSocket.CONNECTING) {
      await new Promise((done) => setTimeout(done, 20));
    }
    for (const message of kept.splice(0)) socket.send(message.buffer);
    while (socket.bufferedAmount > 0) await new Promise((done) => setTimeout(done, 20));
    return state.frames;
  };
}
"""

MIC_SETTINGS_SCRIPT = """
() => {
  const pc = window.viewer.peerConnection();
  const sender = pc && pc.getSenders().find((s) => s.track && s.track.kind === 'audio');
  return sender ? sender.track.getSettings() : null;
}
"""


YUV_FORMATS = ("I420", "NV12")  # the page's header numbers them in this order


@dataclass(frozen=True)
class CropBox:
    """A rectangle of the frame, in pixels (even numbers: the chroma planes are half size)."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        if any(value % 2 for value in (self.x, self.y, self.w, self.h)):
            raise ValueError(f"a crop box of a 4:2:0 frame needs even numbers: {self}")

    def cut_i420(self, planes: np.ndarray) -> np.ndarray:
        """The box of a whole I420 frame ((H * 3 / 2, W) uint8, as PyAV gives it), packed as
        I420 of the box's size."""
        height, width = planes.shape[0] * 2 // 3, planes.shape[1]
        luma = planes[:height].reshape(height, width)
        chroma = planes[height:].reshape(2, height // 2, width // 2)
        x, y, w, h = self.x, self.y, self.w, self.h
        parts = [luma[y : y + h, x : x + w]]
        parts += [plane[y // 2 : (y + h) // 2, x // 2 : (x + w) // 2] for plane in chroma]
        return np.concatenate([part.reshape(-1) for part in parts]).reshape(h * 3 // 2, w)

    def as_dict(self) -> dict[str, int]:
        return {"x": self.x, "y": self.y, "w": self.w, "h": self.h}


def yuv_to_rgb(packed: np.ndarray, layout: str = "I420") -> np.ndarray:
    """A packed 4:2:0 image ((H * 3 / 2, W) uint8, I420 or NV12) as (H, W, 3) RGB: one
    conversion for the live and the offline frames alike."""
    import cv2

    code = cv2.COLOR_YUV2RGB_I420 if layout == "I420" else cv2.COLOR_YUV2RGB_NV12
    return np.asarray(cv2.cvtColor(np.ascontiguousarray(packed), code))


class FrameSink:
    """A websocket server on 127.0.0.1 that keeps the frames a page sends (a thread of its
    own; ``with FrameSink() as sink``: ``sink.url``, then ``sink.frames()``)."""

    def __init__(self) -> None:
        from websockets.sync.server import serve

        self._lock = threading.Lock()
        self._headers: list[np.ndarray] = []
        self._planes: list[np.ndarray] = []
        self._server = serve(self._receive, "127.0.0.1", 0, max_size=None)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self._server.socket.getsockname()[1]}"

    def __enter__(self) -> FrameSink:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._thread.join(timeout=10)

    def _receive(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        size = HEADER_VALUES * 8
        try:
            for message in connection:
                if not isinstance(message, bytes) or len(message) <= size:
                    continue
                header = np.frombuffer(message[:size], np.float64).copy()
                width, height = int(header[6]), int(header[7])
                planes = np.frombuffer(message[size:], np.uint8).reshape(height * 3 // 2, width)
                with self._lock:
                    self._headers.append(header)
                    self._planes.append(planes)
        except ConnectionClosed:  # the page went away: what came is kept
            pass

    def wait_for(self, count: int, timeout: float) -> None:
        """Until ``count`` frames have come (or ``timeout`` seconds have passed)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self._planes) >= count:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"the page sent {count} frames; {len(self._planes)} came")

    def frames(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """(N, HEADER_VALUES) headers and the N frames' packed YUV planes, in arrival order."""
        with self._lock:
            if not self._planes:
                return np.zeros((0, HEADER_VALUES)), []
            return np.stack(self._headers), list(self._planes)


@dataclass
class LiveCapture:
    """What the viewer presented: one row per distinct stream frame, in stream order."""

    index: np.ndarray  # (N,) stream frame, counted from the first frame captured
    display_ms: np.ndarray  # (N,) expected display time, on the page's performance clock
    crops: np.ndarray  # (N, H, W, 3) RGB, from the decoder's YUV by :func:`yuv_to_rgb`
    presented: int  # frames the page presented while capturing (with duplicates)
    mic_granted_ms: float | None  # when getUserMedia resolved, on the same clock
    page: dict[str, Any] = field(default_factory=dict)  # microphone settings, stats, errors
    server: dict[str, Any] = field(default_factory=dict)  # /status at the end


def stream_frames(headers: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The stream frame of each captured frame (from its RTP timestamp, 0 for the first,
    the 32-bit wrap undone) and the rows to keep: each frame's first capture, in order."""
    if not len(headers):
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    rtp = headers[:, 0].astype(np.int64)
    if np.any(rtp < 0):
        raise RuntimeError("the browser gave no RTP timestamps for the presented frames")
    ticks = np.mod(rtp - rtp[0], 2**32)
    index = np.round(ticks / RTP_TICKS_PER_FRAME).astype(np.int64)
    _, first = np.unique(index, return_index=True)
    keep = np.sort(first)
    order = keep[np.argsort(index[keep], kind="stable")]
    return index[order], order


def capture_live(
    wav: Path,
    *,
    seconds: float,
    box: CropBox,
    serve_args: list[str],
    log: Path,
    audio_constraints: dict[str, Any] | None = None,
    mute_playback: bool = False,
) -> LiveCapture:
    """Serve with the browser-mic source, play ``wav`` into one page's fake microphone and
    capture every frame it presents for ``seconds`` from the click. ``audio_constraints``
    replace some of what the page asks ``getUserMedia`` for; ``mute_playback`` mutes the
    page's ``<video>`` (variants: by default the page runs as it is)."""
    args = ["--source", "browser-mic", *serve_args]
    with (
        FrameSink() as sink,
        live_server(args, log) as server,
        chromium(fake_microphone_args(str(wav))) as browser,
    ):
        page = open_viewer(browser, server.url)
        page.add_init_script(MIC_CLOCK_SCRIPT.replace("OVERRIDES", json.dumps(audio_constraints)))
        page.reload()
        page.wait_for_function("window.viewer && window.viewer.ready", timeout=30_000)
        page.evaluate(
            CAPTURE_SCRIPT, {"sink": sink.url, "box": box.as_dict(), "mute": mute_playback}
        )
        clicked = time.monotonic()
        click_start(page)
        wait_connected(page)
        time.sleep(max(0.0, seconds - (time.monotonic() - clicked)))
        facts = {
            "microphone_settings": page.evaluate(MIC_SETTINGS_SCRIPT),
            "microphone_request": page.evaluate("window.__micClock || null"),
            "stats": page.evaluate("window.viewer.stats()"),
            "errors": list(page.errors),
        }
        status = server.status()
        sent = page.evaluate("window.__captureSend()")
        facts["capture"] = page.evaluate("window.__capture")
        sink.wait_for(int(sent), timeout=120.0)
    headers, planes = sink.frames()
    index, rows = stream_frames(headers)
    crops = [yuv_to_rgb(planes[row], YUV_FORMATS[int(headers[row, 4])]) for row in rows]
    clock = facts["microphone_request"]
    return LiveCapture(
        index=index,
        display_ms=headers[rows, 2] if len(rows) else np.zeros(0),
        crops=np.stack(crops) if crops else np.zeros((0, box.h, box.w, 3), np.uint8),
        presented=len(headers),
        mic_granted_ms=None if clock is None else float(clock["granted"]),
        page=facts,
        server=status,
    )
