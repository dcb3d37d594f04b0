"""Speech sources with phone timings: espeak-ng, Piper, forced alignment of real prompts."""

from __future__ import annotations

import itertools
import logging
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.speech.alignment import (
    ALIGNMENT_SAMPLE_RATE,
    ForcedAligner,
    spell_number,
    spell_ordinal,
    transcript_words,
)
from engine.speech.espeak import EspeakLibrary, EspeakVoice, list_english_voices
from engine.speech.phonemes import ALL_PHONES, SILENCE, VOWELS
from engine.speech.piper_voice import PiperSpeaker
from engine.speech.recordings import AsteriskCorpus, decode_audio, spoken_text
from engine.speech.utterance import Utterance

KNOWN_WORDS = "fish, measure the joy. thought boy"


def _assert_covers_audio(utterance: Utterance) -> None:
    phones = utterance.phones
    assert phones, "no phones"
    assert phones[0].start == 0.0
    assert phones[-1].end == pytest.approx(utterance.duration, abs=1e-6)
    for before, after in itertools.pairwise(phones):
        assert after.start == pytest.approx(before.end, abs=1e-9), (before, after)
        assert after.end >= after.start
    assert {span.label for span in phones} <= set(ALL_PHONES)


def _contains_run(labels: Sequence[str], run: Sequence[str]) -> bool:
    return any(list(labels[i : i + len(run)]) == list(run) for i in range(len(labels)))


def _frame_levels(utterance: Utterance, hop_s: float = 0.01) -> tuple[np.ndarray, list[str]]:
    """RMS level (dBFS) of each 10 ms frame and the phone label at the frame's centre."""
    hop = int(utterance.sample_rate * hop_s)
    count = len(utterance.audio) // hop
    frames = utterance.audio[: count * hop].reshape(count, hop).astype(np.float64)
    levels = 20 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    starts = np.array([span.start for span in utterance.phones])
    centres = (np.arange(count) + 0.5) * hop_s
    indices = np.searchsorted(starts, centres, side="right") - 1
    labels = [utterance.phones[index].label for index in indices]
    return levels, labels


def _assert_timings_follow_energy(utterance: Utterance, *, min_agreement: float) -> None:
    """Frames labelled SIL are quiet, vowel frames are loud, and onsets line up."""
    levels, labels = _frame_levels(utterance)
    silent = np.array([label == SILENCE for label in labels])
    vowel = np.array([label in VOWELS for label in labels])
    assert silent.any() and vowel.any()
    assert levels[vowel].mean() - levels[silent].mean() > 30.0
    active = levels > np.percentile(levels, 95) - 35.0
    agreement = float(np.mean(active == ~silent))
    assert agreement >= min_agreement, f"speech activity matches phones in {agreement:.0%}"
    assert float(np.mean(active[vowel])) > 0.9


# -- espeak-ng -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def espeak_library() -> EspeakLibrary:
    return EspeakLibrary()


def test_espeak_phones_cover_audio_and_spell_known_words(espeak_library: EspeakLibrary) -> None:
    voice = EspeakVoice(voice="en-us", library=espeak_library)
    utterance = voice.synthesize(KNOWN_WORDS)
    _assert_covers_audio(utterance)
    assert utterance.source == "espeak"
    assert utterance.sample_rate == espeak_library.sample_rate
    assert utterance.audio.dtype == np.float32
    assert np.abs(utterance.audio).max() <= 1.0
    labels = [span.label for span in utterance.phones if span.label != SILENCE]
    for run in (["F", "IH", "SH"], ["M", "EH", "ZH", "ER"], ["JH", "OY"], ["B", "OY"]):
        assert _contains_run(labels, run), (run, labels)
    assert _contains_run(labels, ["TH", "AO", "T"])
    assert [word.label for word in utterance.words] == [
        "fish",
        "measure",
        "the",
        "joy",
        "thought",
        "boy",
    ]
    fish = utterance.words[0]
    fish_phones = [p.label for p in utterance.phones if fish.start <= p.start < fish.end]
    assert fish_phones == ["F", "IH", "SH"]


def test_espeak_timings_follow_the_audio(espeak_library: EspeakLibrary) -> None:
    text = "The fish, bottle and rhythm. Measure the joy of a good book, thought the boy."
    for voice_name in ("en-us", "en-gb+f3"):
        utterance = EspeakVoice(voice=voice_name, library=espeak_library).synthesize(text)
        _assert_covers_audio(utterance)
        _assert_timings_follow_energy(utterance, min_agreement=0.9)
        assert utterance.phones[0].label == SILENCE
        assert utterance.phones[-1].label == SILENCE


def test_espeak_voice_settings_change_the_audio(espeak_library: EspeakLibrary) -> None:
    slow = EspeakVoice(voice="en-us", rate_wpm=120, library=espeak_library).synthesize("Hello")
    fast = EspeakVoice(voice="en-us", rate_wpm=300, library=espeak_library).synthesize("Hello")
    assert slow.duration > fast.duration * 1.4
    assert "rate120" in slow.voice and "en-us" in slow.voice
    variant = EspeakVoice(voice="en-us+f3", pitch=80, library=espeak_library)
    assert "en-us+f3" in variant.voice_id and "pitch80" in variant.voice_id


def test_espeak_lists_english_voices_and_rejects_unknown(espeak_library: EspeakLibrary) -> None:
    voices = list_english_voices(library=espeak_library)
    names = {info.name for info in voices if info.kind == "voice"}
    assert {"en-us", "en-gb"} <= names
    assert "f3" in {info.name for info in voices if info.kind == "variant"}
    with pytest.raises(EngineError, match="no voice"):
        EspeakVoice(voice="xx-nonexistent", library=espeak_library)


def test_missing_espeak_library_names_the_debian_package() -> None:
    with pytest.raises(EngineError, match="espeak-ng"):
        EspeakLibrary(library_name="libespeak-ng-not-installed.so.99")


# -- Piper -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def piper_speaker() -> PiperSpeaker:
    pytest.importorskip("piper", reason="Piper TTS (optional extra) is not installed")
    try:
        return PiperSpeaker()
    except EngineError as error:
        pytest.skip(f"Piper voice unavailable: {error}")


def test_piper_phones_cover_audio_and_follow_energy(piper_speaker: PiperSpeaker) -> None:
    text = "The fish, bottle and rhythm. Measure the joy of a good book, thought the boy."
    utterance = piper_speaker.synthesize(text)
    assert utterance.source == "piper"
    assert utterance.sample_rate == 22050
    _assert_covers_audio(utterance)
    _assert_timings_follow_energy(utterance, min_agreement=0.85)
    labels = [span.label for span in utterance.phones if span.label != SILENCE]
    for run in (["F", "IH", "SH"], ["M", "EH", "ZH", "ER"], ["B", "OY"]):
        assert _contains_run(labels, run), (run, labels)
    assert [word.label for word in utterance.words][:3] == ["The", "fish", "bottle"]


def test_piper_length_scale_slows_speech(piper_speaker: PiperSpeaker) -> None:
    normal = piper_speaker.synthesize("Measure twice, cut once.", length_scale=1.0)
    slow = piper_speaker.synthesize("Measure twice, cut once.", length_scale=1.6)
    assert slow.duration > normal.duration * 1.3


def test_piper_missing_voice_file_is_a_presenter_error() -> None:
    pytest.importorskip("piper", reason="Piper TTS (optional extra) is not installed")
    with pytest.raises(EngineError, match="not found"):
        PiperSpeaker(model_path=Path("/nonexistent/voice.onnx"))


def test_piper_not_installed_gives_the_install_hint() -> None:
    # A fresh interpreter where importing piper fails, as on an install without the extra.
    program = (
        "import sys; sys.modules['piper'] = None\n"
        "from engine.errors import EngineError\n"
        "from engine.speech.piper_voice import PiperSpeaker\n"
        "try:\n    PiperSpeaker()\nexcept EngineError as error:\n    print(error)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert "pip install 'presenter[piper]'" in result.stdout


# -- forced alignment of real speech ---------------------------------------------------------


@pytest.fixture(scope="module")
def aligner() -> ForcedAligner:
    return ForcedAligner()


@pytest.fixture(scope="module")
def corpus() -> AsteriskCorpus:
    try:
        return AsteriskCorpus()
    except EngineError as error:
        pytest.skip(str(error))


def test_transcript_normalisation_spells_numbers() -> None:
    assert spell_number(162) == ["one", "hundred", "sixty", "two"]
    assert spell_number(1_000_040) == ["one", "million", "forty"]
    assert spell_ordinal(21) == ["twenty", "first"]
    assert spell_ordinal(40) == ["fortieth"]
    assert transcript_words("Press 1, then #; it's 3rd & 1,000 A.M.") == [
        "press",
        "one",
        "then",
        "pound",
        "it's",
        "third",
        "and",
        "one",
        "thousand",
        "a.m",
    ]


def test_alignment_of_a_real_prompt(corpus: AsteriskCorpus, aligner: ForcedAligner) -> None:
    prompt = corpus.prompt("agent-alreadyon")
    audio, rate = decode_audio(prompt.path)
    assert rate == ALIGNMENT_SAMPLE_RATE
    duration = len(audio) / rate
    assert prompt.seconds == pytest.approx(duration, abs=0.01)
    words, phones = aligner.align(audio, prompt.transcript)
    assert [word.label for word in words] == transcript_words(prompt.transcript)
    for word in words:
        assert 0.0 <= word.start < word.end <= duration
    assert all(a.end <= b.start + 1e-9 for a, b in itertools.pairwise(words))
    utterance = Utterance(audio=audio, sample_rate=rate, text=prompt.transcript, phones=phones)
    _assert_covers_audio(utterance)
    _assert_timings_follow_energy(utterance, min_agreement=0.9)
    labels = [phone.label for phone in phones if phone.label != SILENCE]
    assert _contains_run(labels, ["EY", "JH", "AH", "N", "T"])  # "agent"
    assert _contains_run(labels, ["P", "AW", "N", "D"])  # "pound"


def test_alignment_falls_back_when_the_phone_pass_fails(
    corpus: AsteriskCorpus, aligner: ForcedAligner, caplog: pytest.LogCaptureFixture
) -> None:
    # pocketsphinx's phone pass cannot align this prompt within its word pass's frames.
    with caplog.at_level(logging.DEBUG, logger="engine.speech.alignment"):
        utterance = corpus.utterance(corpus.prompt("digits/mon-3"), aligner=aligner)
    assert any("phone pass failed" in record.getMessage() for record in caplog.records)
    assert [word.label for word in utterance.words] == ["april"]
    assert [p.label for p in utterance.phones if p.label != SILENCE] == ["EY", "P", "R", "AH", "L"]
    _assert_covers_audio(utterance)


def test_alignment_rejects_a_wrong_transcript(
    corpus: AsteriskCorpus, aligner: ForcedAligner
) -> None:
    audio, _ = decode_audio(corpus.prompt("auth-thankyou").path)
    with pytest.raises(EngineError):
        aligner.align(audio, "the quick brown fox jumps over the lazy dog again and again")


def test_asterisk_prompts_and_human_utterance(
    corpus: AsteriskCorpus, aligner: ForcedAligner
) -> None:
    prompts = corpus.prompts()
    names = {prompt.name for prompt in prompts}
    assert len(prompts) > 500
    assert "beep" not in names and "silence/1" not in names
    assert spoken_text("at [@]") == "at"
    assert spoken_text("(10 seconds of silence)") == ""
    utterance = corpus.utterance(corpus.prompt("auth-thankyou"), aligner=aligner)
    assert utterance.source == "human"
    assert utterance.voice == "asterisk-en-f1"
    assert [word.label for word in utterance.words] == ["thank", "you"]
    _assert_covers_audio(utterance)


def test_missing_asterisk_sounds_name_the_debian_packages(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="asterisk-core-sounds-en-g722"):
        AsteriskCorpus(sounds_dir=tmp_path / "missing")
