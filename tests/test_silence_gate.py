"""The silence gate: rest pose on silent audio, speech untouched, streaming equals clip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio import MelConfig, log_mel
from engine.motion import MotionConfig, MotionModel, slice_mel
from engine.silence_gate import SilenceGate, mel_energy, rest_coefficients

RATE = 16000
SILENCE = float(np.log(MelConfig().log_floor))


def _speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """Voiced bursts (a harmonic tone with a syllable-rate envelope) between silences."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 8))
    envelope = 0.3 + 0.7 * np.abs(np.sin(2 * np.pi * 4.0 * t))
    audio = 0.2 * voice * envelope + 0.002 * rng.normal(size=t.size)
    audio[(t > 1.0) & (t < 1.6)] = 0.0  # a pause
    audio[t > 2.4] = 0.0  # the end
    return audio.astype(np.float32)


def test_energy_of_digital_silence_is_the_floor() -> None:
    mel = log_mel(np.zeros(RATE, np.float32))
    np.testing.assert_allclose(mel_energy(mel), SILENCE + np.log(80), atol=1e-4)


def test_weights_open_in_speech_and_close_in_silence() -> None:
    config = MotionConfig(num_coefficients=4)
    audio = _speech_like(3.2)
    mel = log_mel(audio)
    frames = int(np.ceil(audio.size / 640))
    weights = SilenceGate().clip_weights(mel, frames, config, silence=SILENCE)
    centres = (np.arange(frames) + 0.5) / 25
    assert weights.shape == (frames,)
    assert weights.min() >= 0.0 and weights.max() <= 1.0
    assert np.all(weights[(centres > 0.1) & (centres < 0.9)] > 0.99)  # talking
    assert np.all(weights[(centres > 1.15) & (centres < 1.45)] == 0.0)  # inside the pause
    assert np.all(weights[centres > 2.48] == 0.0)  # 80 ms after the end: at rest
    # The look-ahead opens the gate before the sound starts again at 1.6 s.
    assert weights[int(1.56 * 25)] > 0.5


def test_streaming_windows_give_the_clip_weights() -> None:
    config = MotionConfig(num_coefficients=4)
    audio = _speech_like(3.0, seed=2)
    mel = log_mel(audio)
    frames = int(np.ceil(audio.size / 640))
    gate = SilenceGate()
    windows = np.stack(
        [slice_mel(mel, *config.mel_range(t, 1), silence=SILENCE) for t in range(frames)]
    )
    np.testing.assert_allclose(
        gate.window_weights(windows, config),
        gate.clip_weights(mel, frames, config, silence=SILENCE),
        atol=1e-6,
    )


def test_apply_pulls_to_rest_and_keeps_speech() -> None:
    predictions = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], np.float32)
    rest = np.array([0.5, -0.5], np.float32)
    gated = SilenceGate.apply(predictions, np.array([1.0, 0.5, 0.0], np.float32), rest)
    np.testing.assert_allclose(gated, [[1.0, 2.0], [1.75, 1.75], [0.5, -0.5]])


def test_rest_is_the_models_prediction_for_silence() -> None:
    torch.manual_seed(0)
    config = MotionConfig(num_coefficients=4, width=32, layers=1, heads=2, style_dim=8)
    model = MotionModel(config).train()
    style = np.random.default_rng(0).normal(size=8).astype(np.float32)
    rest = rest_coefficients(model, style, silence=SILENCE)
    assert model.training  # left as it was
    window = torch.full((1, config.window_frames, config.num_mels), SILENCE)
    with torch.no_grad():
        expected = model.eval().transformer(window, torch.from_numpy(style)[None])[0].numpy()
    np.testing.assert_allclose(rest, expected, atol=1e-6)


def test_configuration_is_checked() -> None:
    with pytest.raises(ValueError):
        SilenceGate(silent_level=-4.0, speaking_level=-5.0)
    with pytest.raises(ValueError, match="window only"):
        SilenceGate(lookahead_mel_frames=9).span(MotionConfig(num_coefficients=4))
    with pytest.raises(ValueError):
        SilenceGate().window_weights(np.zeros((2, 3, 80)), MotionConfig(num_coefficients=4))
