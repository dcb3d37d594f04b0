"""Streaming front end of the motion model: 16 kHz PCM chunks -> per-frame mel windows.

:class:`MotionFrontEnd` turns mono float32 PCM at the mel sample rate (16 kHz), pushed in
chunks of any size, into the raw log-mel window ``(W, num_mels)`` of every 25 fps video frame
as soon as that whole window can be computed. Its output is exactly what the offline path
gives (:func:`engine.audio.log_mel` on the whole signal, then
:func:`engine.motion.slice_mel` per window; :meth:`MotionFrontEnd.offline_windows`).

Timing (symbols at the defaults: hop 160 samples = 10 ms, mel window 400 samples = 25 ms,
``S = 640`` samples per video frame, ``P = 40``, ``A = 8``, ``W = 52``)
---------------------------------------------------------------------------------------
* Video frame ``t`` spans samples ``[t S, (t + 1) S)``. Its window is mel frames
  ``4 t - P .. 4 t + 3 + A`` (see :mod:`engine.motion`); mel frames before 0 are silence
  (the log floor), so the stream starts as if preceded by silence.
* Mel frame ``m`` is centred on sample ``m hop`` and :class:`engine.audio.StreamingLogMel`
  emits it once sample ``m hop + win / 2 - 1`` has arrived (``m hop + win / 2`` samples in).
* The last mel frame of the window, ``4 t + 3 + A``, is centred one hop *before* the end of
  the look-ahead (``(t + 1) S + A hop - hop``), so frame ``t`` is emitted as soon as

      samples received >= (t + 1) S + delay_samples,
      delay_samples = A hop + win / 2 - hop   (1280 + 200 - 160 = 1320 samples = 82.5 ms).

  That is the look-ahead plus half a mel window, less one hop. With no look-ahead and a
  short mel window ``delay_samples`` can be negative
  (the frame is ready before its span has fully arrived); it is always ``> -hop``.
* End of stream: a signal of ``N`` samples covers ``F = ceil(N / S)`` video frames (every
  frame whose span starts inside the signal, the last one possibly partial). ``finish()``
  computes the mel frames still missing up to ``ceil(N / hop) - 1`` with zeros past the
  end (as ``log_mel`` does), treats later mel frames as silence (as ``slice_mel`` does), and
  emits the video frames still missing up to ``F - 1``. Pushes plus ``finish()`` therefore
  yield exactly frames ``0 .. F - 1``, equal to :meth:`MotionFrontEnd.offline_windows`.

Memory is bounded: only the mel frames from the window start of the next frame to emit are
kept (fewer than ``W`` rows between calls), plus the mel analyser's own less than one
window of samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.audio import MelConfig, StreamingLogMel, log_mel
from engine.motion import MotionConfig, slice_mel


@dataclass(frozen=True)
class FrontEndFrames:
    """Consecutive video frames ``first_frame .. first_frame + len(windows) - 1`` and their
    raw log-mel windows ``(N, W, num_mels)`` float32 (``N`` may be 0; ``first_frame`` is then
    the next frame the front end will emit)."""

    first_frame: int
    windows: np.ndarray

    def __len__(self) -> int:
        return int(self.windows.shape[0])

    @property
    def stop_frame(self) -> int:
        """One past the last frame: the ``first_frame`` of the next batch."""
        return self.first_frame + len(self)

    @property
    def frame_indices(self) -> np.ndarray:
        return np.arange(self.first_frame, self.stop_frame)


class MotionFrontEnd:
    """Incremental log-mel and per-video-frame windows for the motion model.

    ``push(pcm)`` takes a 1-D float32 chunk (any length, 0 included) and returns the frames
    it completed; ``finish()`` ends the stream and returns the rest (frames up to
    ``num_video_frames(samples_received) - 1``); ``reset()`` starts a new stream. See the
    module docstring for the timing.
    """

    def __init__(self, motion_config: MotionConfig, mel_config: MelConfig | None = None) -> None:
        mel_config = mel_config or MelConfig()
        if motion_config.num_mels != mel_config.num_mels:
            raise ValueError(
                f"motion config has {motion_config.num_mels} mels, mel config {mel_config.num_mels}"
            )
        if abs(motion_config.mel_hop_ms - mel_config.hop_ms) > 1e-9:
            raise ValueError(
                f"motion config mel hop {motion_config.mel_hop_ms} ms != "
                f"mel config hop {mel_config.hop_ms} ms"
            )
        self.timeline = motion_config.timeline(mel_config.sample_rate)  # on the mel's clock
        frame_samples = self.timeline.frame_samples
        if frame_samples != motion_config.mel_per_frame * mel_config.hop_length:
            raise ValueError(
                f"a video frame of {frame_samples} samples is not "
                f"{motion_config.mel_per_frame} hops of {mel_config.hop_length} samples"
            )
        self.motion_config = motion_config
        self.mel_config = mel_config
        self.silence = float(np.float32(np.log(mel_config.log_floor)))
        self._mel = StreamingLogMel(mel_config)
        self._mel_rows = np.zeros((0, mel_config.num_mels), np.float32)
        self._mel_base = 0  # mel frame index of self._mel_rows[0]
        self._next_frame = 0
        self._finished = False
        self.reset()

    # ----------------------------------------------------------------------------- timing

    @property
    def sample_rate(self) -> int:
        return self.mel_config.sample_rate

    @property
    def samples_per_frame(self) -> int:
        """``S``: samples of one video frame (640 at 16 kHz and 25 fps)."""
        return self.timeline.frame_samples

    @property
    def window_frames(self) -> int:
        """``W``: mel frames per window."""
        return self.motion_config.window_frames

    @property
    def delay_samples(self) -> int:
        """Samples needed past the end of a video frame's span before it is emitted:
        ``A hop + win / 2 - hop`` (1320 at the defaults; may be negative, always ``> -hop``)."""
        hop = self.mel_config.hop_length
        return (self.motion_config.lookahead_frames - 1) * hop + self.mel_config.win_length // 2

    def samples_needed(self, frame: int) -> int:
        """Samples that must have been pushed for ``push`` to emit video frame ``frame``."""
        if frame < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        return (frame + 1) * self.samples_per_frame + self.delay_samples

    def num_video_frames(self, num_samples: int) -> int:
        """``F = ceil(N / S)``: video frames a stream of ``N`` samples yields in all."""
        if num_samples < 0:
            raise ValueError(f"num_samples must be >= 0, got {num_samples}")
        return -(-num_samples // self.samples_per_frame)

    # ------------------------------------------------------------------------------ state

    @property
    def samples_received(self) -> int:
        return self._mel.samples_received

    @property
    def frames_emitted(self) -> int:
        """Video frames emitted so far (the index of the next frame)."""
        return self._next_frame

    @property
    def finished(self) -> bool:
        return self._finished

    @property
    def buffered_mel_frames(self) -> int:
        """Mel frames held between calls: fewer than ``W`` after every push."""
        return int(self._mel_rows.shape[0])

    def reset(self) -> None:
        """Forget the stream; the next push is sample 0 of a new one."""
        config = self.motion_config
        self._mel.reset()
        # Mel frames -P .. -1 lie before the audio: silence.
        self._mel_rows = np.full(
            (config.past_frames, self.mel_config.num_mels), self.silence, np.float32
        )
        self._mel_base = config.window_start(0)
        self._next_frame = 0
        self._finished = False

    # ------------------------------------------------------------------------- streaming

    def push(self, pcm: np.ndarray) -> FrontEndFrames:
        """Append a chunk of mono float32 PCM; returns the video frames it completed."""
        samples = self._check_pcm(pcm)
        if self._finished:
            raise RuntimeError("push after finish: call reset() to start a new stream")
        self._append_mel(self._mel.push(samples))
        ready = self.motion_config.frames_ready(self._mel.frames_emitted)
        return self._emit(ready)

    def finish(self) -> FrontEndFrames:
        """End the stream: the frames still missing up to ``F - 1``, ``F = ceil(N / S)``.
        A second call returns no frames."""
        if self._finished:
            return self._emit(self._next_frame)
        self._finished = True
        self._append_mel(self._mel.flush())
        total = self.num_video_frames(self.samples_received)
        if total > self._next_frame:
            # Mel frames past the audio (index >= ceil(N / hop)) are silence, as in slice_mel.
            _, stop = self.motion_config.mel_range(total - 1, 1)
            missing = stop - (self._mel_base + self._mel_rows.shape[0])
            if missing > 0:
                self._append_mel(
                    np.full((missing, self.mel_config.num_mels), self.silence, np.float32)
                )
        return self._emit(total)

    def offline_windows(self, pcm: np.ndarray) -> np.ndarray:
        """Reference: all ``F = ceil(N / S)`` windows ``(F, W, num_mels)`` float32 of a whole
        signal, from :func:`engine.audio.log_mel` and :func:`engine.motion.slice_mel`."""
        samples = self._check_pcm(pcm)
        config = self.motion_config
        total = self.num_video_frames(len(samples))
        if total == 0:
            return np.zeros((0, config.window_frames, config.num_mels), np.float32)
        mel = log_mel(samples, self.mel_config)  # ceil(N / hop) frames
        start, stop = config.mel_range(0, total)
        span = slice_mel(mel, start, stop, silence=self.silence)
        return self._windows(span, total)

    # --------------------------------------------------------------------------- helpers

    def _check_pcm(self, pcm: np.ndarray) -> np.ndarray:
        if not isinstance(pcm, np.ndarray):
            raise ValueError(f"expected a numpy array of float32 PCM, got {type(pcm).__name__}")
        if pcm.ndim != 1:
            raise ValueError(f"expected mono 1-D PCM of shape (samples,), got shape {pcm.shape}")
        if pcm.dtype != np.float32:
            raise ValueError(f"expected float32 PCM, got dtype {pcm.dtype}")
        if not np.isfinite(pcm).all():
            raise ValueError("PCM contains NaN or infinite samples")
        return pcm

    def _append_mel(self, frames: np.ndarray) -> None:
        if frames.shape[0]:
            self._mel_rows = np.concatenate([self._mel_rows, frames.astype(np.float32)])

    def _windows(self, span: np.ndarray, count: int) -> np.ndarray:
        """``count`` windows from ``span``, which starts at the first window's first frame."""
        config = self.motion_config
        length = config.window_frames + config.mel_per_frame * (count - 1)
        view = np.lib.stride_tricks.sliding_window_view(
            span[:length], config.window_frames, axis=0
        )[:: config.mel_per_frame]  # (count, num_mels, W)
        return view.transpose(0, 2, 1).astype(np.float32, order="C", copy=True)

    def _emit(self, stop_frame: int) -> FrontEndFrames:
        """Windows of frames ``next .. stop_frame - 1``, then drop mel frames no later window
        needs."""
        config = self.motion_config
        first = self._next_frame
        count = stop_frame - first
        if count <= 0:
            empty = np.zeros((0, config.window_frames, config.num_mels), np.float32)
            return FrontEndFrames(first_frame=first, windows=empty)
        offset = config.window_start(first) - self._mel_base
        windows = self._windows(self._mel_rows[offset:], count)
        self._next_frame = stop_frame
        keep_from = config.window_start(stop_frame) - self._mel_base
        self._mel_rows = self._mel_rows[keep_from:].copy()
        self._mel_base += keep_from
        return FrontEndFrames(first_frame=first, windows=windows)
