"""The seeded sentence generator: determinism, sentence shape, phoneme coverage."""

from __future__ import annotations

import re

import pytest

from engine.speech.phonemes import ENGLISH_PHONEMES
from engine.speech.sentences import SentenceGenerator, is_blocked, phoneme_coverage, usable_word


@pytest.fixture(scope="module")
def generator_300() -> tuple[SentenceGenerator, list[str]]:
    generator = SentenceGenerator(seed=7)
    return generator, generator.take(300)


def test_same_seed_same_sentences_other_seed_others() -> None:
    first = SentenceGenerator(seed=3).take(20)
    assert SentenceGenerator(seed=3).take(20) == first
    assert SentenceGenerator(seed=4).take(20) != first
    continued = SentenceGenerator(seed=3)
    assert continued.take(10) + continued.take(10) == first


def test_sentence_shape(generator_300: tuple[SentenceGenerator, list[str]]) -> None:
    generator, sentences = generator_300
    assert len(set(sentences)) == len(sentences)
    for sentence in sentences:
        assert sentence[0].isupper() and sentence.endswith(".")
        words = sentence[:-1].split()
        assert 5 <= len(words) <= 14
        for word in words:
            assert re.fullmatch(r"[A-Za-z]+", word), word
            assert not is_blocked(word)
            assert word.lower() in generator.pronunciations
        assert generator.expected_phones(sentence)


def test_300_sentences_cover_every_phoneme_many_times(
    generator_300: tuple[SentenceGenerator, list[str]],
) -> None:
    generator, sentences = generator_300
    coverage = phoneme_coverage(generator, sentences)
    assert set(coverage) == set(ENGLISH_PHONEMES)
    for rare in ("ZH", "OY", "UH", "TH", "DH"):
        assert coverage[rare] >= 50, (rare, coverage[rare])
    assert min(coverage.values()) >= 50
    assert generator.phone_counts_so_far == coverage


def test_expected_phones_come_from_the_dictionary() -> None:
    generator = SentenceGenerator(seed=0)
    assert generator.expected_phones("Fish measure.") == ["F", "IH", "SH", "M", "EH", "ZH", "ER"]
    assert generator.phone_counts("the boy and the toy")["OY"] == 2


def test_word_filter() -> None:
    assert usable_word("measure")
    assert usable_word("a") and usable_word("i")
    assert not usable_word("x")
    assert not usable_word("don't")
    assert not usable_word("café")
    assert not usable_word("bbc")
    assert is_blocked("Motherfucker") and is_blocked("ass") and not is_blocked("class")
