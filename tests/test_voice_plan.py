"""The corpus's espeak-ng voice plan: many training voices, the held-out plan unchanged."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data.synth.corpus import CorpusPlan, plan_clips
from engine.data.synth.voice_plan import (
    ESPEAK_ACCENTS,
    ESPEAK_HELDOUT_VOICE,
    ESPEAK_TRAIN_VOICES,
    ESPEAK_VARIANTS,
    TRAIN_PITCH_RANGES,
    TRAIN_PITCHES,
    TRAIN_RATES_WPM,
    training_voices,
    variant_of,
)
from engine.errors import EngineError
from engine.speech.espeak import EspeakLibrary, EspeakVoice

# The held-out clips of the shipped model's 30-minute corpus, as made
# (/work/data/corpus30-heldout): they must not move when the training voices change.
SHIPPED_PLAN = CorpusPlan(minutes=30, seed=0, espeak_seconds_per_clip=3.5)
SHIPPED_HELDOUT = {
    "espeak-heldout-00000": ("en-us+f3", 169, 62, "Automobiles spanning by christopher with"),
    "espeak-heldout-00025": ("en-us+f3", 170, 53, "Which exemplary wakefield schedule gradu"),
    "piper-heldout-00000": ("", 175, 50, "Merchandise legislature neighbourhood th"),
}


@pytest.fixture(scope="module")
def library() -> EspeakLibrary:
    return EspeakLibrary()


def test_every_accent_with_every_variant_but_the_held_out_one() -> None:
    assert len(ESPEAK_TRAIN_VOICES) == len(ESPEAK_ACCENTS) * len(ESPEAK_VARIANTS)
    assert len(set(ESPEAK_TRAIN_VOICES)) == len(ESPEAK_TRAIN_VOICES)
    assert ESPEAK_HELDOUT_VOICE not in ESPEAK_TRAIN_VOICES
    assert not [voice for voice in ESPEAK_TRAIN_VOICES if variant_of(voice) == "f3"]
    assert set(ESPEAK_ACCENTS) <= set(ESPEAK_TRAIN_VOICES)  # the plain voices too
    assert "en-gb-scotland+klatt3" in ESPEAK_TRAIN_VOICES
    other = training_voices("en-gb+m3")
    assert "en-us+f3" in other and not [v for v in other if variant_of(v) == "m3"]


def test_the_fixed_pool_is_what_espeak_ng_ships(library: EspeakLibrary) -> None:
    installed = {info.name for info in library.list_voices(variants=True)}
    assert set(ESPEAK_VARIANTS) == installed
    for accent in ESPEAK_ACCENTS:
        library.resolve_voice_name(f"{accent}+m3")


def test_training_clips_spread_over_voices_rates_pitches_and_ranges() -> None:
    plan = CorpusPlan(minutes=20, seed=5, sources=("espeak",))
    train = [spec for spec in plan_clips(plan) if spec.split == "train"]
    assert len(train) > 200
    voices = [spec.espeak_voice for spec in train]
    assert len(set(voices)) == len(voices)  # a permutation of the pool: no repeat yet
    assert len({voice.partition("+")[0] for voice in voices}) == len(ESPEAK_ACCENTS)
    for values, (low, high) in (
        ([spec.rate_wpm for spec in train], TRAIN_RATES_WPM),
        ([spec.pitch for spec in train], TRAIN_PITCHES),
        ([spec.pitch_range for spec in train], TRAIN_PITCH_RANGES),
    ):
        assert low <= min(values) and max(values) <= high
        assert max(values) - min(values) > 0.8 * (high - low)
    assert plan_clips(plan) == plan_clips(CorpusPlan(minutes=20, seed=5, sources=("espeak",)))


def test_the_held_out_plan_does_not_depend_on_the_training_voices() -> None:
    def held_out_and_piper(plan: CorpusPlan) -> list[object]:
        return [s for s in plan_clips(plan) if s.split == "heldout" or s.source == "piper"]

    few = CorpusPlan(minutes=3, seed=2, espeak_voices=("en-gb", "en-us+m3"))
    assert held_out_and_piper(CorpusPlan(minutes=3, seed=2)) == held_out_and_piper(few)
    specs = {spec.clip_id: spec for spec in plan_clips(SHIPPED_PLAN)}
    for clip_id, (voice, rate, pitch, text) in SHIPPED_HELDOUT.items():
        spec = specs[clip_id]
        assert (spec.espeak_voice, spec.rate_wpm, spec.pitch) == (voice, rate, pitch)
        assert spec.text.startswith(text)
        assert spec.pitch_range == 50


def test_given_voices_plan_the_training_clips_as_before() -> None:
    with pytest.raises(EngineError, match="share its variant"):
        CorpusPlan(minutes=1, espeak_voices=("en-us", "en-gb+f3"))
    # The six voices of the shipped model's corpus give its training clips again.
    six = ("en-us", "en-gb", "en-us+f2", "en-us+m3", "en-gb+f4", "en-us+m1")
    plan = CorpusPlan(minutes=30, seed=0, espeak_seconds_per_clip=3.5, espeak_voices=six)
    specs = {spec.clip_id: spec for spec in plan_clips(plan)}
    for clip_id, (voice, rate, pitch, text) in {
        "espeak-train-00000": ("en-us", 171, 35, "Discriminate time who flanders"),
        "espeak-train-00001": ("en-gb", 157, 46, "Whoa breathe secured groundwat"),
        "espeak-train-00100": ("en-gb+f4", 179, 59, "The are snapshot probation clo"),
    }.items():
        spec = specs[clip_id]
        assert (spec.espeak_voice, spec.rate_wpm, spec.pitch, spec.pitch_range) == (
            voice,
            rate,
            pitch,
            50,
        )
        assert spec.text.startswith(text)


def _pitch_spread(audio: np.ndarray, rate: int) -> float:
    """Standard deviation of log F0 over the voiced 40 ms frames (autocorrelation)."""
    size = int(0.04 * rate)
    pitches = []
    for start in range(0, len(audio) - size, size // 2):
        frame = audio[start : start + size] - audio[start : start + size].mean()
        if np.sqrt(np.mean(frame**2)) < 0.02:
            continue
        correlation = np.correlate(frame, frame, "full")[size - 1 :]
        correlation /= correlation[0]
        low, high = rate // 400, rate // 60
        lag = low + int(np.argmax(correlation[low:high]))
        if correlation[lag] > 0.6:
            pitches.append(np.log(rate / lag))
    return float(np.std(pitches))


def test_pitch_range_widens_the_intonation(library: EspeakLibrary) -> None:
    text = "Is this really the way that we should go home tonight, or not?"
    spreads = []
    for pitch_range in (10, 50, 90):
        voice = EspeakVoice(voice="en-us", pitch_range=pitch_range, library=library)
        utterance = voice.synthesize(text)
        spreads.append(_pitch_spread(utterance.audio, utterance.sample_rate))
        assert utterance.voice.endswith("pitch50") == (pitch_range == 50)
    assert spreads[0] < spreads[1] < spreads[2]
    # Every synthesis sets the range again: a voice without one is back at espeak-ng's own.
    plain = EspeakVoice(voice="en-us", library=library).synthesize(text)
    assert abs(_pitch_spread(plain.audio, plain.sample_rate) - spreads[1]) < 0.2 * spreads[1]
    with pytest.raises(EngineError, match="pitch range"):
        EspeakVoice(voice="en-us", pitch_range=101, library=library)
