"""Waveform augmentation for motion training: each condition does what it says, keeps the
length and the timing, and the same seed gives the same audio."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.signal import lfilter

from engine.audio import MelConfig, log_mel, mel_center_frequencies, pcm_to_float
from engine.data.prep.dataset import TRACK_NAME, clip_dir, read_header, read_track, write_track
from engine.data.prep.dataset import read_basis as read_dataset_basis
from engine.errors import EngineError
from engine.frames import ENGINE_RATE
from engine.motion import MotionConfig
from engine.silence_gate import mel_energy
from engine.train.audio_augment import (
    AugmentConfig,
    active_power,
    add_noise,
    augment,
    augmented_mels,
    opus_round_trip,
    reverberate,
    room_impulse_response,
    telephone,
    vtlp,
)
from engine.train.sequences import MotionSequences
from tests.conftest import SmallDataset

RATE = ENGINE_RATE


def _vowel(
    formants: tuple[float, ...] = (700.0, 1200.0, 2600.0), seconds: float = 1.0
) -> np.ndarray:
    """A pulse train at 125 Hz through resonators at ``formants``."""
    pulses = np.zeros(int(seconds * RATE))
    pulses[:: RATE // 125] = 1.0
    for formant in formants:
        radius, angle = np.exp(-np.pi * 80.0 / RATE), 2 * np.pi * formant / RATE
        pulses = lfilter([1 - radius], [1, -2 * radius * np.cos(angle), radius**2], pulses)
    return (0.5 * pulses / np.abs(pulses).max()).astype(np.float32)


def _speechlike(seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    """Bursts of vowels of changing formants with silences between: an envelope to align."""
    rng = np.random.default_rng(seed)
    out = np.zeros(int(seconds * RATE), np.float32)
    start = int(0.3 * RATE)
    while start < len(out) - RATE // 2:
        length = int(rng.uniform(0.08, 0.3) * RATE)
        burst = _vowel((rng.uniform(300, 900), rng.uniform(900, 2200), 2700.0), length / RATE)
        out[start : start + length] = burst * np.hanning(length).astype(np.float32)
        start += length + int(rng.uniform(0.05, 0.25) * RATE)
    return out


def _second_formant_hz(audio: np.ndarray) -> float:
    centres = mel_center_frequencies(MelConfig())
    spectrum = log_mel(audio).mean(axis=0)
    band = (centres > 900) & (centres < 1700)
    return float(centres[band][np.argmax(spectrum[band])])


def _lag_samples(reference: np.ndarray, other: np.ndarray, search: int = 200) -> int:
    middle = slice(search, len(reference) - search)
    window = reference[middle]
    scores = [
        float(np.dot(window, other[search + lag : len(reference) - search + lag]))
        for lag in range(-search, search + 1)
    ]
    return int(np.argmax(scores)) - search


def _envelope_lag_frames(reference: np.ndarray, other: np.ndarray) -> int:
    a = np.maximum(mel_energy(log_mel(reference)), -7.0)
    b = np.maximum(mel_energy(log_mel(other)), -7.0)
    n = len(a)
    scores = [
        np.corrcoef(a[max(0, -lag) : n - max(0, lag)], b[max(0, lag) : n - max(0, -lag)])[0, 1]
        for lag in range(-5, 6)
    ]
    return int(np.argmax(scores)) - 5


def test_vtlp_moves_the_formants_the_right_way_and_keeps_length_and_level() -> None:
    vowel = _vowel()
    clean = _second_formant_hz(vowel)
    assert abs(clean - 1200) < 60
    longer_tract, shorter_tract = vtlp(vowel, 0.85), vtlp(vowel, 1.15)
    assert _second_formant_hz(longer_tract) < 0.9 * clean
    assert _second_formant_hz(shorter_tract) > 1.1 * clean
    for warped in (longer_tract, shorter_tract):
        assert warped.shape == vowel.shape and warped.dtype == np.float32
        assert active_power(warped) == pytest.approx(active_power(vowel), rel=1e-3)
    speech = _speechlike()
    assert _envelope_lag_frames(speech, vtlp(speech, 1.12)) == 0
    assert np.array_equal(vtlp(speech, 1.0), speech)


def test_opus_round_trip_keeps_length_and_alignment() -> None:
    speech = _speechlike()
    for bitrate in (12000, 32000):
        decoded = opus_round_trip(speech, bitrate)
        assert decoded.shape == speech.shape
        assert abs(_lag_samples(speech, decoded)) <= 2
        assert _envelope_lag_frames(speech, decoded) == 0
        assert np.corrcoef(speech, decoded)[0, 1] > 0.8
    odd = speech[: 16000 + 123]
    assert opus_round_trip(odd, 16000).shape == odd.shape


def test_telephone_band_and_alignment() -> None:
    rng = np.random.default_rng(1)
    noise = (0.1 * rng.standard_normal(RATE)).astype(np.float32)
    line = telephone(noise)
    assert line.shape == noise.shape
    spectrum = np.abs(np.fft.rfft(line)) ** 2
    hz = np.fft.rfftfreq(len(line), 1 / RATE)
    inside = spectrum[(hz > 500) & (hz < 3000)].mean()
    assert spectrum[hz > 4200].mean() < 1e-3 * inside
    assert spectrum[hz < 100].mean() < 1e-2 * inside
    speech = _speechlike()
    assert abs(_lag_samples(speech, telephone(speech))) <= 2


def test_reverberation_decays_at_its_rt60_and_keeps_timing() -> None:
    room = room_impulse_response(0.5, 6.0, np.random.default_rng(0))
    assert room[0] == 1.0 and len(room) == int(0.5 * RATE)
    tail = room[1:] ** 2
    early = tail[: RATE // 20].mean()  # the first 50 ms
    late = tail[int(0.4 * RATE) : int(0.45 * RATE)].mean()  # 400-450 ms: about 48 dB less
    assert 40 < 10 * np.log10(early / late) < 56
    assert 10 * np.log10(1.0 / tail.sum()) == pytest.approx(6.0, abs=0.01)
    speech = _speechlike()
    wet = reverberate(speech, room)
    assert wet.shape == speech.shape
    assert active_power(wet) == pytest.approx(active_power(speech), rel=1e-3)
    assert abs(_lag_samples(speech, wet)) <= 2


@pytest.mark.parametrize("kind", ["white", "pink", "babble"])
def test_noise_at_the_asked_snr(kind: str) -> None:
    speech = _speechlike()
    pool = [_speechlike(seed=seed) for seed in (2, 3, 4)]
    noisy = add_noise(speech, 15.0, kind, np.random.default_rng(0), pool)
    noise = noisy - speech
    snr = 10 * np.log10(active_power(speech) / np.mean(noise.astype(np.float64) ** 2))
    assert snr == pytest.approx(15.0, abs=0.5)
    silence = np.zeros(800, np.float32)
    assert np.array_equal(add_noise(silence, 15.0, kind, np.random.default_rng(0)), silence)


def test_the_chain_is_seeded_and_stays_in_range() -> None:
    speech = _speechlike()
    config = AugmentConfig(codec_probability=1.0, gain_probability=1.0, gain_db=(12.0, 12.0))
    first, applied = augment(speech, config, np.random.default_rng(5), [speech])
    again, applied_again = augment(speech, config, np.random.default_rng(5), [speech])
    other, _ = augment(speech, config, np.random.default_rng(6), [speech])
    assert np.array_equal(first, again) and applied == applied_again
    assert not np.array_equal(first, other)
    assert first.shape == speech.shape and np.abs(first).max() <= 1.0
    assert applied["gain_db"] == 12.0 and "codec" in applied
    mels = augmented_mels(speech, "clip-a", AugmentConfig(versions=3), MelConfig())
    assert len(mels) == 3 and all(mel.shape == log_mel(speech).shape for mel in mels)
    assert not np.array_equal(mels[0], mels[1])


def test_prepared_clips_keep_the_audio_their_mel_is_made_of(small_dataset: SmallDataset) -> None:
    header = read_header(small_dataset.dataset)
    for clip in header.clips:
        track = read_track(clip_dir(small_dataset.dataset, clip.id) / TRACK_NAME, ["mel", "audio"])
        assert track["audio"].dtype == np.int16
        assert np.array_equal(log_mel(pcm_to_float(track["audio"]), header.mel), track["mel"])


def _model_config(dataset: Path) -> MotionConfig:
    return MotionConfig(num_coefficients=read_dataset_basis(dataset)[0].num_components)


def test_augmented_training_clips(small_dataset: SmallDataset) -> None:
    dataset = small_dataset.dataset
    config = _model_config(dataset)
    augment_config = AugmentConfig(versions=2)
    clips = MotionSequences(dataset, "train", config, augment=augment_config)
    again = MotionSequences(dataset, "train", config, augment=augment_config)
    plain = MotionSequences(dataset, "train", config)
    for clip, same, clean in zip(clips.clips, again.clips, plain.clips, strict=True):
        assert len(clip.augmented) == 2 and not clean.augmented
        assert all(
            np.array_equal(a, b) for a, b in zip(clip.augmented, same.augmented, strict=True)
        )
        assert all(mel.shape == clip.mel.shape for mel in clip.augmented)
        assert np.array_equal(clip.mel, clean.mel)
    mel, target, _, _ = clips.sequence(0, 0, 8, version=2)
    clean_mel, clean_target, _, _ = clips.sequence(0, 0, 8)
    assert mel.shape == clean_mel.shape and not np.array_equal(mel, clean_mel)
    assert np.array_equal(target, clean_target)
    batch = clips.sample(
        np.random.default_rng(0), batch_size=4, frames=8, edge_frames=2, style_frames=(10, 20)
    )
    assert batch.mel.shape[0] == 4


def test_a_dataset_without_audio_loads_but_refuses_augmentation(
    small_dataset: SmallDataset, tmp_path: Path
) -> None:
    copy = tmp_path / "dataset"
    shutil.copytree(small_dataset.dataset, copy, ignore=shutil.ignore_patterns("*.mp4"))
    for clip in read_header(copy).clips:
        path = clip_dir(copy, clip.id) / TRACK_NAME
        track = read_track(path)
        del track["audio"]
        write_track(path, track)
    config = _model_config(copy)
    assert len(MotionSequences(copy, "train", config)) > 0
    with pytest.raises(EngineError, match="has no audio") as raised:
        MotionSequences(copy, "train", config, augment=AugmentConfig())
    assert "\n" not in str(raised.value)
