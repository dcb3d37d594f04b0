"""The audio front end: log-mel framing, streaming equivalence, resampling."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import (
    MelConfig,
    StreamingLogMel,
    log_mel,
    mel_center_frequencies,
    mel_filterbank,
    num_mel_frames,
    resample,
)


def _speech_like(seconds: float, rate: int = 16000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    times = np.arange(int(seconds * rate)) / rate
    pitch = 130.0 + 25.0 * np.sin(2 * np.pi * 0.8 * times)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 12))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * times))
    noise = rng.normal(0.0, 0.05, times.shape)
    return (0.2 * voiced * envelope + noise).astype(np.float32)


def _stream(audio: np.ndarray, chunk: int, config: MelConfig | None = None) -> np.ndarray:
    streaming = StreamingLogMel(config)
    parts = [streaming.push(audio[start : start + chunk]) for start in range(0, len(audio), chunk)]
    parts.append(streaming.flush())
    return np.concatenate(parts)


@pytest.mark.parametrize("chunk", [1, 7, 160, 333, 16000])
def test_streaming_equals_offline(chunk: int) -> None:
    audio = _speech_like(1.37)
    offline = log_mel(audio)
    streamed = _stream(audio, chunk)
    assert offline.shape == (num_mel_frames(len(audio)), 80) == (137, 80)
    assert streamed.shape == offline.shape
    assert np.max(np.abs(streamed - offline)) < 1e-5


def test_streaming_emits_a_frame_once_half_a_window_past_its_centre() -> None:
    config = MelConfig()
    streaming = StreamingLogMel(config)
    hop, half = config.hop_length, config.win_length // 2
    audio = _speech_like(0.2)
    # Frame m needs samples up to m * hop + half - 1, i.e. m * hop + half samples.
    assert len(streaming.push(audio[: half - 1])) == 0
    assert len(streaming.push(audio[half - 1 : half])) == 1
    assert len(streaming.push(audio[half : hop + half - 1])) == 0
    assert len(streaming.push(audio[hop + half - 1 : hop + half])) == 1
    assert streaming.frames_emitted == 2
    streaming.flush()
    with pytest.raises(RuntimeError):
        streaming.push(audio[:10])


def test_frame_m_is_centred_on_sample_m_times_hop() -> None:
    config = MelConfig()
    audio = np.zeros(16000, np.float32)
    impulse_at = 31 * config.hop_length  # the centre of frame 31
    audio[impulse_at] = 1.0
    energy = np.exp(log_mel(audio, config)).sum(axis=1)
    touched = np.flatnonzero(energy > 10 * config.log_floor * config.num_mels)
    # The periodic Hann window is non-zero strictly inside +-200 samples of the centre:
    # frames 30 and 32 (centres 160 samples away) see the impulse, 29 and 33 do not.
    assert touched.tolist() == [30, 31, 32]
    assert int(np.argmax(energy)) == 31
    assert energy[30] == pytest.approx(energy[32], rel=1e-6)


def test_440_hz_tone_peaks_in_its_mel_band() -> None:
    config = MelConfig()
    times = np.arange(16000) / 16000
    tone = (0.5 * np.sin(2 * np.pi * 440.0 * times)).astype(np.float32)
    spectrum = log_mel(tone, config)[5:-5].mean(axis=0)
    expected = int(np.argmin(np.abs(mel_center_frequencies(config) - 440.0)))
    assert int(np.argmax(spectrum)) == expected
    high = (0.5 * np.sin(2 * np.pi * 2000.0 * times)).astype(np.float32)
    assert int(np.argmax(log_mel(high, config)[5:-5].mean(axis=0))) == int(
        np.argmin(np.abs(mel_center_frequencies(config) - 2000.0))
    )


def test_every_mel_filter_sees_some_fft_bins() -> None:
    weights = mel_filterbank(MelConfig())
    assert weights.shape == (257, 80)
    assert np.all(weights.sum(axis=0) > 0)


def test_short_and_empty_audio() -> None:
    assert log_mel(np.zeros(0, np.float32)).shape == (0, 80)
    assert log_mel(np.zeros(1, np.float32)).shape == (1, 80)
    assert _stream(np.zeros(161, np.float32), 5).shape == (2, 80)


def test_config_rejects_fractional_windows() -> None:
    with pytest.raises(ValueError):
        MelConfig(window_ms=25.03)
    with pytest.raises(ValueError):
        MelConfig(fmax=9000.0)


@pytest.mark.parametrize("rate_in", [22050, 44100, 48000, 8000])
def test_resample_keeps_frequency_and_level(rate_in: int) -> None:
    seconds = 1.0
    times = np.arange(int(seconds * rate_in)) / rate_in
    tone = (0.5 * np.sin(2 * np.pi * 1000.0 * times)).astype(np.float32)
    out = resample(tone, rate_in, 16000)
    assert out.dtype == np.float32
    assert len(out) == 16000
    core = out[800:-800].astype(np.float64)
    spectrum = np.abs(np.fft.rfft(core * np.hanning(len(core))))
    peak_hz = np.argmax(spectrum) * 16000 / len(core)
    assert abs(peak_hz - 1000.0) < 2.0
    assert abs(np.sqrt(np.mean(core**2)) - 0.5 / np.sqrt(2)) < 0.01


def test_resample_removes_content_above_the_new_nyquist() -> None:
    times = np.arange(22050) / 22050
    alias_prone = (0.5 * np.sin(2 * np.pi * 10000.0 * times)).astype(np.float32)
    out = resample(alias_prone, 22050, 16000)
    assert np.sqrt(np.mean(out[800:-800] ** 2)) < 0.01
