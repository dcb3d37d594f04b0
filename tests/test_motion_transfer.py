"""The transfer benchmark's live-microphone condition and its table."""

from __future__ import annotations

import numpy as np

from benchmarks.motion_transfer import CONDITIONS, live_mic, markdown
from engine.train.audio_augment import active_power


def _speechlike() -> np.ndarray:
    rng = np.random.default_rng(0)
    audio = np.zeros(32000, np.float32)
    for start in range(4000, 28000, 6000):
        tone = np.sin(2 * np.pi * rng.uniform(150, 300) * np.arange(3000) / 16000)
        audio[start : start + 3000] = 0.3 * tone * np.hanning(3000)
    return audio


def test_live_mic_is_seeded_by_the_clip_and_keeps_the_length() -> None:
    audio = _speechlike()
    first = live_mic(audio, "clip-a", snr_db=20.0, kbps=16.0)
    assert first.shape == audio.shape
    assert np.array_equal(first, live_mic(audio, "clip-a", snr_db=20.0, kbps=16.0))
    assert not np.array_equal(first, live_mic(audio, "clip-b", snr_db=20.0, kbps=16.0))
    # Room noise fills the pauses: about 20 dB under the speech.
    pause = first[:3000]
    level = 10 * np.log10(active_power(audio) / np.mean(pause.astype(np.float64) ** 2))
    assert 14 < level < 26


def test_the_table_has_a_row_per_model_and_condition() -> None:
    figures = {"lip_px": 1.5, "opening_r": 0.7}
    by_condition = {c: {"espeak": figures, "human": figures} for c in CONDITIONS}
    result = {
        "clips": {"espeak": 3, "human": 2},
        "models": {"a": by_condition, "b": by_condition},
        "loudness_mouth": by_condition,
    }
    lines = markdown(result).splitlines()
    assert len(lines) == 2 + 3 * len(CONDITIONS)
    assert "espeak: lip px / r" in lines[0] and "| a | live | 1.50 / 0.700 |" in lines[3]
