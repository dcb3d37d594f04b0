"""Rest on silence: the mouth goes to its rest pose when the audio around a frame is silent.

The motion model learns the data's own closing, and the training data close slowly after
speech (the tracked mouth reaches rest well after the last phone: the quality benchmark's
closing figures, benchmarks/README.md), and a live microphone's noise makes an ungated
model murmur. The gate is a per-frame weight ``w`` in [0, 1] from the audio
energy of the frame's own 40 ms and a short look-ahead after it (the look-ahead keeps the
mouth free to open *before* a word starts, as it does in speech):

    energy(m)  = log(sum over bins of exp(log-mel[m]))        (mel frame m)
    E_t        = max energy over mel frames 4 t .. 4 t + 3 + lookahead_mel_frames
    w_t        = smoothstep((E_t - silent_level) / (speaking_level - silent_level))
    output_t   = rest + w_t * (prediction_t - rest)

``rest`` is what the model predicts for pure silence with the same style. The mel frames
involved all lie inside the motion model's window of frame ``t`` (its look-ahead is at
least as long), so the gate adds no delay and a streamed frame's weight is a function of
its window alone: :meth:`SilenceGate.window_weights` (streaming) equals
:meth:`SilenceGate.clip_weights` (a whole clip's log-mel).

Levels are in the natural-log units of :func:`engine.audio.log_mel` summed over the 80
bins: digital silence is ``log(80 * 1e-5) = -7.13``; speech in the corpus sits above the
speaking level in nearly all its phone frames (the quietest are stop closures, shorter than
the gate's span; the share: benchmarks/README.md, "Figures behind design choices"). A frame
is silent at or below ``-6.0``, speaking from ``-4.5``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from engine.motion import MotionConfig, MotionModel


def mel_energy(mel: np.ndarray) -> np.ndarray:
    """(..., num_mels) raw log-mel -> (...) log of the summed mel power."""
    values = np.asarray(mel, dtype=np.float64)
    peak = values.max(axis=-1, keepdims=True)
    return np.asarray(peak[..., 0] + np.log(np.exp(values - peak).sum(axis=-1)))


@dataclass(frozen=True, kw_only=True)
class SilenceGate:
    silent_level: float = -6.0
    speaking_level: float = -4.5
    lookahead_mel_frames: int = 4  # 40 ms past the frame's own span

    def __post_init__(self) -> None:
        if not self.speaking_level > self.silent_level:
            raise ValueError("speaking_level must be above silent_level")
        if self.lookahead_mel_frames < 0:
            raise ValueError("lookahead_mel_frames must be non-negative")

    def _weight(self, energy: np.ndarray) -> np.ndarray:
        x = np.clip((energy - self.silent_level) / (self.speaking_level - self.silent_level), 0, 1)
        return np.asarray(x * x * (3.0 - 2.0 * x), dtype=np.float32)

    def span(self, config: MotionConfig) -> tuple[int, int]:
        """Window rows [start, stop) of the frame's own mel frames and the look-ahead."""
        start = config.past_frames
        stop = start + config.mel_per_frame + self.lookahead_mel_frames
        if stop > config.window_frames:
            raise ValueError(
                f"the gate looks {self.lookahead_mel_frames} mel frames ahead, the motion "
                f"window only {config.lookahead_frames}"
            )
        return start, stop

    def window_weights(self, windows: np.ndarray, config: MotionConfig) -> np.ndarray:
        """(N, W, num_mels) raw log-mel windows of the motion model -> (N,) weights."""
        if windows.ndim != 3 or windows.shape[1] != config.window_frames:
            raise ValueError(
                f"expected (N, {config.window_frames}, num_mels) windows, got {windows.shape}"
            )
        start, stop = self.span(config)
        return self._weight(mel_energy(windows[:, start:stop]).max(axis=1))

    def clip_weights(
        self, mel: np.ndarray, frames: int, config: MotionConfig, *, silence: float
    ) -> np.ndarray:
        """(frames,) weights of video frames 0 .. frames-1 of a clip's (M, num_mels) raw
        log-mel; mel frames past its end are ``silence`` (the log floor), as in the motion
        model's windows."""
        if frames <= 0:
            return np.zeros(0, np.float32)
        start, stop = self.span(config)
        per_frame = config.mel_per_frame
        needed = (frames - 1) * per_frame + (stop - start)
        padded = np.full((max(needed, mel.shape[0]), mel.shape[1]), silence, dtype=np.float64)
        padded[: mel.shape[0]] = mel
        energy = mel_energy(padded)
        rows = np.arange(frames)[:, None] * per_frame + np.arange(stop - start)[None, :]
        return self._weight(energy[rows].max(axis=1))

    @staticmethod
    def apply(coefficients: np.ndarray, weights: np.ndarray, rest: np.ndarray) -> np.ndarray:
        """(N, K) predictions pulled to ``rest`` (K,) by (N,) weights."""
        gated = rest[None, :] + weights[:, None] * (coefficients - rest[None, :])
        return np.asarray(gated, dtype=np.float32)


@torch.no_grad()
def rest_coefficients(model: MotionModel, style: np.ndarray, *, silence: float) -> np.ndarray:
    """(K,) what ``model`` predicts for a window of pure silence with ``style`` (style_dim,)."""
    config = model.config
    window = torch.full((1, config.window_frames, config.num_mels), float(silence))
    was_training = model.training
    model.eval()
    rest = model.transformer(window, torch.as_tensor(style, dtype=torch.float32)[None])[0]
    model.train(was_training)
    return np.asarray(rest.numpy(), dtype=np.float32)
