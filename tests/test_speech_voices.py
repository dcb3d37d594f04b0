"""Voices by name (engine/speech/voices.py): espeak-ng always, Piper with its extra; every
voice gives audio with word and phone timings, at the asked rate."""

from __future__ import annotations

import itertools
import shutil
from pathlib import Path

import numpy as np
import pytest

from engine.errors import EngineError
from engine.speech.voices import VoiceBook

TEXT = "The quick brown fox jumps over the lazy dog while the presenter keeps talking."


def _check_timings(utterance, words: int) -> None:
    assert len(utterance.words) == words
    assert [w.label.lower() for w in utterance.words[:3]] == ["the", "quick", "brown"]
    starts = [w.start for w in utterance.words]
    assert starts == sorted(starts) and utterance.words[-1].end <= utterance.duration + 1e-6
    phones = utterance.phones
    assert phones[0].start == pytest.approx(0.0, abs=1e-6)
    assert phones[-1].end == pytest.approx(utterance.duration, abs=0.02)
    assert all(a.end == pytest.approx(b.start, abs=1e-6) for a, b in itertools.pairwise(phones))
    voiced = [p for p in phones if p.label != "SIL"]
    assert len(voiced) >= 2 * words  # a phone or more per word, most words two or more
    rms = float(np.sqrt(np.mean(utterance.audio**2)))
    assert rms > 0.02, rms


def test_espeak_voices_by_name() -> None:
    book = VoiceBook()
    normal = book.speaker("en-us").synthesize(TEXT)
    fast = book.speaker("en-gb", 350).synthesize(TEXT)
    _check_timings(normal, 14)
    _check_timings(fast, 14)
    assert fast.duration < 0.65 * normal.duration
    with pytest.raises(EngineError, match="xx-nowhere"):
        book.speaker("xx-nowhere")


def test_piper_voices_by_name(tmp_path: Path) -> None:
    pytest.importorskip("piper", reason="Piper is the optional 'piper' extra")
    from engine.speech.piper_voice import default_voice_path

    # a user's voice file, registered under its own name (a copy of the packaged one)
    own = tmp_path / "en_US-mine-medium.onnx"
    shutil.copy(default_voice_path(), own)
    shutil.copy(f"{default_voice_path()}.json", f"{own}.json")
    book = VoiceBook({"en_US-mine-medium": own})
    assert book.names() == ["piper:en_US-joe-medium", "piper:en_US-mine-medium"]
    speaker = book.speaker("piper")
    assert speaker.sample_rate == 22050
    normal = speaker.synthesize(TEXT)
    assert normal.source == "piper"
    _check_timings(normal, 14)
    fast = book.speaker("piper:en_US-joe-medium", 350).synthesize(TEXT)
    assert fast.duration < 0.75 * normal.duration
    mine = book.speaker("piper:en_US-mine-medium").synthesize("Hello there.")
    assert [w.label for w in mine.words] == ["Hello", "there"]
    # a name that is not registered never becomes a path
    for name in ("piper:nobody", f"piper:{own}", "piper:../en_US-mine-medium"):
        with pytest.raises(EngineError, match="unknown Piper voice"):
            book.speaker(name)
    with pytest.raises(EngineError, match="no such file"):
        VoiceBook({"gone": tmp_path / "gone.onnx"})
