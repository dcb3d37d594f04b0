"""Decoding talking-head video with PyAV: RGB frames resampled to 25 fps, 16 kHz mono audio.

Frame-rate resampling is by timestamp: output frame ``k`` (time ``k / fps`` from the first
video frame) takes the latest source frame whose presentation time is ``<=`` that time
(within 1 ms, for containers that round timestamps). A constant 25 fps source maps one to
one. Audio is aligned to the first video frame: audio that starts later is preceded by
silence, audio that starts earlier is cut.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from engine.audio import resample
from engine.audio_file import decode_mono
from engine.errors import EngineError
from engine.frames import ENGINE_RATE, FPS

log = logging.getLogger(__name__)

_TIMESTAMP_TOLERANCE = Fraction(1, 1000)  # seconds


@dataclass(frozen=True, kw_only=True)
class VideoInfo:
    """What the container says, before decoding."""

    path: Path
    width: int
    height: int
    average_fps: float
    duration: float  # seconds, 0 when unknown
    has_audio: bool
    audio_rate: int  # 0 without audio

    @property
    def estimated_frames(self) -> int:
        """Frames at 25 fps, from the duration."""
        return max(1, round(self.duration * FPS))


@dataclass(frozen=True, kw_only=True)
class VideoFrame:
    index: int  # output frame index at 25 fps
    source_index: int  # index of the decoded source frame it shows
    time: float  # seconds from the first video frame: index / 25
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclass(kw_only=True)
class FrameRateSummary:
    """Filled in while frames are decoded; final once the iterator is exhausted."""

    source_frames: int = 0
    output_frames: int = 0
    min_duration: float = 0.0  # seconds between consecutive source frames
    max_duration: float = 0.0
    mean_fps: float = 0.0
    variable: bool = False

    @property
    def resampled(self) -> bool:
        return self.variable or abs(self.mean_fps - FPS) > 0.01 * FPS


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise EngineError(f"video {path} does not exist; check the path")
    try:
        return av.open(str(path), mode="r")
    except (av.FFmpegError, OSError, UnicodeDecodeError) as exc:
        raise EngineError(
            f"cannot read video {path} ({exc}); give an mp4/mov/mkv/webm file that plays"
        ) from exc


def probe_video(path: str | Path) -> VideoInfo:
    """Container facts; raises :class:`EngineError` for unreadable files or no video."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.video:
            raise EngineError(f"{path} has no video stream; give a video of a talking face")
        video = container.streams.video[0]
        audio = container.streams.audio[0] if container.streams.audio else None
        duration = 0.0
        if video.duration is not None and video.time_base is not None:
            duration = float(video.duration * video.time_base)
        elif container.duration is not None:
            duration = container.duration / av.time_base
        rate = video.average_rate or video.guessed_rate
        return VideoInfo(
            path=path,
            width=int(video.codec_context.width),
            height=int(video.codec_context.height),
            average_fps=float(rate) if rate else 0.0,
            duration=duration,
            has_audio=audio is not None,
            audio_rate=int(audio.rate) if audio is not None and audio.rate else 0,
        )


def _frame_time(frame: av.VideoFrame, time_base: Fraction | None) -> Fraction | None:
    if frame.pts is None or time_base is None:
        return None
    return Fraction(frame.pts) * time_base


class _PendingFrame:
    """The latest decoded source frame; converted to RGB only if some output frame shows it
    (sources above 25 fps drop frames)."""

    def __init__(self, source_index: int, frame: av.VideoFrame) -> None:
        self.source_index = source_index
        self._frame = frame
        self._rgb: np.ndarray | None = None

    def at(self, index: int, step: Fraction) -> VideoFrame:
        if self._rgb is None:
            self._rgb = self._frame.to_ndarray(format="rgb24")
        return VideoFrame(
            index=index, source_index=self.source_index, time=float(index * step), rgb=self._rgb
        )


def iter_frames(
    path: str | Path,
    *,
    fps: int = FPS,
    summary: FrameRateSummary | None = None,
    quiet: bool = False,
) -> Iterator[VideoFrame]:
    """RGB frames at ``fps``, resampled by timestamp. When exhausted, fills ``summary``
    (when given) and, unless ``quiet``, logs one line if the source was not constant
    ``fps``."""
    path = Path(path)
    summary = summary if summary is not None else FrameRateSummary()
    step = Fraction(1, fps)
    with _open(path) as container:
        if not container.streams.video:
            raise EngineError(f"{path} has no video stream; give a video of a talking face")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        time_base = stream.time_base
        nominal = stream.average_rate or stream.guessed_rate
        nominal_step = Fraction(1) / Fraction(nominal) if nominal else step
        first_time: Fraction | None = None
        previous_time: Fraction | None = None
        pending: _PendingFrame | None = None
        last_duration: Fraction | None = None
        durations: list[float] = []
        output_index = 0
        source_index = -1
        try:
            for frame in container.decode(stream):
                source_index += 1
                absolute = _frame_time(frame, time_base)
                if absolute is not None and first_time is None:
                    first_time = absolute
                if absolute is None or first_time is None:
                    time = (
                        previous_time + nominal_step if previous_time is not None else Fraction(0)
                    )
                else:
                    time = absolute - first_time
                if previous_time is not None:
                    time = max(time, previous_time)  # broken files: never go back
                    durations.append(float(time - previous_time))
                if frame.duration and time_base is not None:
                    last_duration = Fraction(frame.duration) * time_base
                if pending is not None:
                    while output_index * step + _TIMESTAMP_TOLERANCE < time:
                        yield pending.at(output_index, step)
                        output_index += 1
                pending = _PendingFrame(source_index, frame)
                previous_time = time
        except av.FFmpegError as exc:
            raise EngineError(
                f"video {path} is damaged at frame {source_index} ({exc}); re-export it"
            ) from exc
        if pending is None or previous_time is None:
            raise EngineError(f"{path} has no decodable video frames; re-export it")
        if last_duration is None or last_duration <= 0:
            last_duration = (
                Fraction(float(np.median(durations))).limit_denominator(100000)
                if durations
                else nominal_step
            )
        end_time = previous_time + last_duration
        while output_index * step + _TIMESTAMP_TOLERANCE < end_time or output_index == 0:
            yield pending.at(output_index, step)
            output_index += 1
    _summarise(
        path,
        summary=summary,
        durations=durations,
        source_frames=source_index + 1,
        output_frames=output_index,
        fps=fps,
        end_time=end_time,
        quiet=quiet,
    )


def _summarise(
    path: Path,
    *,
    summary: FrameRateSummary,
    durations: list[float],
    source_frames: int,
    output_frames: int,
    fps: int,
    end_time: Fraction,
    quiet: bool,
) -> None:
    summary.source_frames = source_frames
    summary.output_frames = output_frames
    summary.mean_fps = source_frames / float(end_time) if end_time > 0 else float(fps)
    if durations:
        values = np.asarray(durations)
        summary.min_duration = float(values.min())
        summary.max_duration = float(values.max())
        median = float(np.median(values))
        summary.variable = bool(values.max() - values.min() > 0.1 * median + 0.002)
    if quiet:
        return
    if summary.variable:
        log.info(
            "%s: variable frame rate (frame durations %.1f-%.1f ms, mean %.2f fps), "
            "resampled to %d fps by timestamp: %d -> %d frames",
            path.name,
            summary.min_duration * 1000,
            summary.max_duration * 1000,
            summary.mean_fps,
            fps,
            source_frames,
            output_frames,
        )
    elif abs(summary.mean_fps - fps) > 0.01 * fps:
        log.info(
            "%s: %.2f fps, resampled to %d fps by timestamp: %d -> %d frames",
            path.name,
            summary.mean_fps,
            fps,
            source_frames,
            output_frames,
        )


def _first_video_time(path: Path) -> Fraction:
    with _open(path) as container:
        if not container.streams.video:
            return Fraction(0)
        stream = container.streams.video[0]
        try:
            for frame in container.decode(stream):
                time = _frame_time(frame, stream.time_base)
                return time if time is not None else Fraction(0)
        except av.FFmpegError:
            return Fraction(0)
    return Fraction(0)


def decode_audio(
    path: str | Path, *, sample_rate: int = ENGINE_RATE, align_to_video: bool = True
) -> np.ndarray:
    """Mono float32 audio at ``sample_rate``, starting at the first video frame (when
    ``align_to_video``). Channels are averaged."""
    path = Path(path)
    with _open(path) as container:
        if not container.streams.audio:
            raise EngineError(
                f"{path} has no audio track; lip-sync data needs the speech: "
                "give a video with its sound (or mux the audio in with ffmpeg)"
            )
        audio, source_rate, start_time = decode_mono(container, path)
    if align_to_video:
        offset = (start_time or Fraction(0)) - _first_video_time(path)
        shift = round(offset * source_rate)
        if shift > 0:
            audio = np.concatenate([np.zeros(shift, np.float32), audio])
        elif shift < 0:
            audio = audio[-shift:]
    return resample(audio, source_rate, sample_rate)
