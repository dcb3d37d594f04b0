"""Lip-sync a whole audio file into an mp4: the engine's frames with the sound muxed in.

The audio goes through :class:`engine.facade.AvatarEngine` in one-second chunks (the
streaming path, which equals the offline one), frames are encoded as they come (H.264 at
the engine's frame rate, :attr:`AvatarEngine.timeline`: 25 fps for the shipped model) and
the original audio is muxed at its own rate starting at pts 0, so frame ``k`` (pts
``k / 25`` s) shows the mouth of audio ``[k * 40 ms, (k + 1) * 40 ms)``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from engine.audio_file import read_audio
from engine.facade import AvatarEngine
from engine.video_file import write_mp4

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RenderSummary:
    frames: int
    audio_seconds: float
    wall_seconds: float

    @property
    def real_time_factor(self) -> float:
        """Wall time over audio time (< 1: faster than real time)."""
        return self.wall_seconds / self.audio_seconds if self.audio_seconds else 0.0


def render_file(
    engine: AvatarEngine, audio_path: Path, out_path: Path, *, progress: bool = True
) -> RenderSummary:
    """Render ``audio_path`` through ``engine`` into ``out_path`` (mp4, H.264 + AAC)."""
    pcm, rate = read_audio(audio_path)
    return render_audio(engine, pcm, rate, out_path, progress=progress)


def render_audio(
    engine: AvatarEngine, pcm: np.ndarray, rate: int, out_path: Path, *, progress: bool = True
) -> RenderSummary:
    """Render mono float32 ``pcm`` at ``rate`` into ``out_path`` (mp4, H.264 + AAC)."""
    seconds = len(pcm) / rate
    fps = round(engine.timeline.fps)
    total = int(np.ceil(seconds * fps - 1e-9))
    began = time.perf_counter()

    def frames() -> Iterator[np.ndarray]:
        with tqdm(total=total, desc="render", unit="frame", disable=not progress) as bar:
            for start in range(0, len(pcm), rate):
                engine.push_audio(pcm[start : start + rate], rate)
                for frame in engine.pull():
                    bar.update(1)
                    yield frame.image
            engine.flush()
            for frame in engine.pull():
                bar.update(1)
                yield frame.image

    out_path.parent.mkdir(parents=True, exist_ok=True)
    count = write_mp4(out_path, frames(), fps=fps, audio=pcm, sample_rate=rate)
    summary = RenderSummary(
        frames=count, audio_seconds=seconds, wall_seconds=time.perf_counter() - began
    )
    log.info(
        "%s: %d frames for %.1f s of audio in %.1f s (%.2fx real time)",
        out_path, count, seconds, summary.wall_seconds, summary.real_time_factor,
    )  # fmt: skip
    return summary
