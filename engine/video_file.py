"""Writing talking-head clips: H.264 video at a fixed frame rate with the speech muxed in.

Video frame k has pts k / fps and the audio starts at pts 0, so the container carries the
exact alignment of the clip (no offset, no drift).
"""

from __future__ import annotations

from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.frames import ENGINE_RATE, FPS

AAC_FRAME_SIZE = 1024


def write_mp4(
    path: Path,
    frames: Iterable[np.ndarray],
    *,
    fps: int = FPS,
    audio: np.ndarray | None = None,
    sample_rate: int = ENGINE_RATE,
    crf: int = 17,
    preset: str = "veryfast",
    audio_bitrate: int = 96_000,
) -> int:
    """Encode RGB uint8 frames (H, W, 3) and optional mono float32 audio; returns frame count.

    The file is written to ``path`` via a temporary name and renamed at the end, so an
    interrupted run never leaves a truncated clip behind.
    """
    path = Path(path)
    partial = path.with_name(path.name + ".partial.mp4")
    count = 0
    with av.open(str(partial), mode="w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.pix_fmt = "yuv420p"
        video.options = {"crf": str(crf), "preset": preset, "tune": "film"}
        video.codec_context.time_base = Fraction(1, fps)
        video.thread_count = 1
        sound = None
        if audio is not None:
            if audio.ndim != 1:
                raise ValueError(f"audio must be mono (1-D), got shape {audio.shape}")
            sound = container.add_stream("aac", rate=sample_rate)
            sound.layout = "mono"
            sound.bit_rate = audio_bitrate
        for frame_rgb in frames:
            if count == 0:
                video.height, video.width = frame_rgb.shape[:2]
            picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
            picture.pts = count
            picture.time_base = Fraction(1, fps)
            container.mux(video.encode(picture))
            count += 1
        container.mux(video.encode(None))
        if sound is not None and audio is not None:
            samples = np.clip(audio.astype(np.float32), -1.0, 1.0)
            for start in range(0, len(samples), AAC_FRAME_SIZE):
                block = samples[start : start + AAC_FRAME_SIZE]
                chunk = av.AudioFrame.from_ndarray(block[None, :], format="fltp", layout="mono")
                chunk.sample_rate = sample_rate
                chunk.pts = start
                chunk.time_base = Fraction(1, sample_rate)
                container.mux(sound.encode(chunk))
            container.mux(sound.encode(None))
    partial.replace(path)
    return count
