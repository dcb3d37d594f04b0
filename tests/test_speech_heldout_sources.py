"""The speech kept for evaluation: Flite's voices (their own phone timings, checked against
pocketsphinx's forced alignment) and the Warzone 2100 announcer (aligned like the first
real speaker), plus the measure of agreement between two phone timelines."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.speech.alignment import ForcedAligner
from engine.speech.flite import FLITE_VOICES, FliteLibrary, FliteVoice, flite_phone
from engine.speech.phonemes import ALL_PHONES, SILENCE
from engine.speech.timing_agreement import boundary_differences, matched_share
from engine.speech.utterance import TimedSpan, Utterance
from engine.speech.warzone_announcer import SPEAKER_ID, WarzoneAnnouncer

TEXT = "The fish, bottle and rhythm. Measure the joy of a good book, thought the boy."
# Two sentences of the generator's kind: frequent words, not grammatical.
SENTENCES = (
    "Thunderstorms prevailing pharmaceutical bouncing mortgages enthusiastic a registration.",
    "Accordingly he of monster exiled it perfection usually futures.",
)


def _assert_covers_audio(utterance: Utterance) -> None:
    phones = utterance.phones
    assert phones[0].start == 0.0
    assert phones[-1].end == pytest.approx(utterance.duration, abs=1e-6)
    for before, after in itertools.pairwise(phones):
        assert after.start == pytest.approx(before.end, abs=1e-9), (before, after)
        assert after.end > after.start
    assert {span.label for span in phones} <= set(ALL_PHONES)


def _contains_run(labels: list[str], run: list[str]) -> bool:
    return any(labels[i : i + len(run)] == run for i in range(len(labels)))


@pytest.fixture(scope="module")
def flite() -> FliteLibrary:
    try:
        return FliteLibrary()
    except EngineError as error:
        pytest.skip(f"Flite (Debian package flite, scripts/setup installs it) is absent: {error}")


@pytest.fixture(scope="module")
def aligner() -> ForcedAligner:
    return ForcedAligner()


def test_timeline_agreement_matches_phones_in_order() -> None:
    def timeline(*phones: tuple[str, float, float]) -> list[TimedSpan]:
        return [TimedSpan(label=label, start=start, end=end) for label, start, end in phones]

    ours = timeline(("SIL", 0.0, 0.1), ("K", 0.1, 0.2), ("AE", 0.2, 0.4), ("T", 0.4, 0.5))
    shifted = timeline(("SIL", 0.0, 0.13), ("K", 0.13, 0.22), ("AE", 0.22, 0.41), ("T", 0.41, 0.5))
    assert boundary_differences(ours, shifted) == pytest.approx([0.03, 0.02, 0.01, 0.0])
    # a phone only one side has breaks the run: K's end and AE's start are not compared
    other = timeline(("K", 0.1, 0.2), ("AH", 0.2, 0.25), ("AE", 0.25, 0.4), ("T", 0.4, 0.5))
    assert boundary_differences(ours, other) == pytest.approx([0.0, 0.0, 0.05, 0.0, 0.0])
    assert matched_share(ours, other) == 1.0
    assert matched_share(other, ours) == 0.75


def test_flite_phones_cover_audio_and_spell_known_words(flite: FliteLibrary) -> None:
    assert flite_phone("ax") == "AH" and flite_phone("pau") == SILENCE
    assert flite_phone("zh") == "ZH"
    with pytest.raises(EngineError, match="outside the ARPAbet"):
        flite_phone("x")
    for voice in FLITE_VOICES:
        utterance = FliteVoice(voice=voice, library=flite).synthesize(TEXT)
        assert utterance.source == "flite" and voice in utterance.voice
        assert utterance.sample_rate == 16000
        assert np.abs(utterance.audio).max() > 0.1
        _assert_covers_audio(utterance)
        labels = [span.label for span in utterance.phones if span.label != SILENCE]
        for run in (["F", "IH", "SH"], ["M", "EH", "ZH", "ER"], ["JH", "OY"], ["B", "OY"]):
            assert _contains_run(labels, run), (voice, run, labels)
        words = [word.label for word in utterance.words]
        assert words[:4] == ["The", "fish", "bottle", "and"] and words[-1] == "boy"
        fish = utterance.words[1]
        inside = [p.label for p in utterance.phones if fish.start <= p.start < fish.end]
        assert inside == ["F", "IH", "SH"]


def test_flite_spells_numbers_as_words_and_stretch_slows(flite: FliteLibrary) -> None:
    normal = FliteVoice(voice="slt", library=flite).synthesize("Take 25 apples.")
    assert [word.label for word in normal.words] == ["Take", "twenty", "five", "apples"]
    slow = FliteVoice(voice="slt", duration_stretch=1.5, library=flite).synthesize(
        "Take 25 apples."
    )
    assert slow.duration > 1.3 * normal.duration
    assert "stretch1.50" in slow.voice
    with pytest.raises(EngineError, match="no voice"):
        FliteVoice(voice="kal", library=flite)
    with pytest.raises(EngineError, match="duration_stretch"):
        FliteVoice(voice="slt", duration_stretch=3.0, library=flite)


def test_flite_timings_agree_with_forced_alignment(
    flite: FliteLibrary, aligner: ForcedAligner
) -> None:
    # pocketsphinx works in 10 ms frames: its boundaries and Flite's agree within a frame
    # or so; a timeline off by a phone or two would be far past these bounds.
    for voice, text in zip(FLITE_VOICES, itertools.cycle(SENTENCES), strict=False):
        utterance = FliteVoice(voice=voice, library=flite).synthesize(text)
        _, aligned = aligner.align(utterance.audio, text, sample_rate=utterance.sample_rate)
        differences = boundary_differences(utterance.phones, aligned)
        assert matched_share(utterance.phones, aligned) > 0.9, voice
        assert len(differences) > 30
        assert float(np.median(differences)) < 0.02, (voice, np.median(differences))
        assert float(np.mean(differences <= 0.05)) > 0.9, voice


def test_missing_flite_names_the_debian_package() -> None:
    with pytest.raises(EngineError, match="apt-get install flite"):
        FliteLibrary(library_name="libflite-not-installed.so.99")


@pytest.fixture(scope="module")
def announcer() -> WarzoneAnnouncer:
    try:
        return WarzoneAnnouncer()
    except EngineError as error:
        pytest.skip(f"the Warzone 2100 data (scripts/setup installs it) is absent: {error}")


def test_announcer_lines_come_with_what_they_say(announcer: WarzoneAnnouncer) -> None:
    lines = announcer.lines()
    assert len(lines) > 150
    assert all(line.name.startswith("pcv") and line.transcript for line in lines)
    assert len({line.name for line in lines}) == len(lines)
    assert announcer.line("pcv357").transcript == "Research Completed"
    assert announcer.line("pcv463").transcript == "10 Minutes Remaining"
    with pytest.raises(EngineError, match="no Warzone 2100 announcer line"):
        announcer.line("t-gogogo")  # a pilot's line, another speaker


def test_announcer_line_is_aligned_to_its_words(
    announcer: WarzoneAnnouncer, aligner: ForcedAligner
) -> None:
    utterance = announcer.utterance(announcer.line("pcv463"), aligner=aligner)
    assert utterance.voice == SPEAKER_ID and utterance.sample_rate == 11025
    assert [word.label for word in utterance.words] == ["ten", "minutes", "remaining"]
    _assert_covers_audio(utterance)
    labels = [span.label for span in utterance.phones if span.label != SILENCE]
    assert _contains_run(labels, ["T", "EH", "N"]) and labels[-2:] == ["IH", "NG"]
    with pytest.raises(EngineError, match="could not align"):
        aligner.align(
            utterance.audio,
            "the quick brown fox jumps over the lazy dog again and again",
            sample_rate=utterance.sample_rate,
        )


def test_missing_warzone_data_names_the_debian_package(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="warzone2100-data"):
        WarzoneAnnouncer(archive=tmp_path / "base.wz")
