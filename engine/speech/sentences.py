"""Seeded English sentences for text-to-speech, chosen to cover every ARPAbet phoneme.

Words come from packages, not from a typed-in corpus: the most frequent English words of
``wordfreq`` that have a pronunciation in pocketsphinx's bundled CMU dictionary (so the
expected phones of every sentence are known). Sentences are sequences of such words -
pronounceable, not grammatical - with frequent short words mixed in for a speech-like
rhythm. Each content word is picked greedily from a random handful of candidates,
preferring words whose phonemes have been seen least so far, so a few hundred sentences
cover all 39 phonemes many times, rare ones (ZH, OY, UH) included.
"""

from __future__ import annotations

import logging
import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.errors import EngineError
from engine.speech.phonemes import ENGLISH_PHONEMES, normalise_arpabet

logger = logging.getLogger(__name__)

# Words starting with one of these are never used (profanity, slurs, sexual terms).
BLOCKED_PREFIXES: Final = (
    "fuck", "shit", "cunt", "nigg", "negro", "fag", "whor", "slut", "bitch", "puss", "porn",
    "rapist", "rape", "dildo", "wank", "twat", "cock", "dick", "tits", "titt", "boob",
    "horny", "retard", "kike", "chink", "tranny", "molest", "pedo", "paedo", "incest",
    "orgasm", "penis", "vagin", "sex", "nude", "naked", "nazi", "bastard", "bollock",
    "jizz", "goddam", "masturb", "erotic", "fetish", "hooker", "stripper", "genital",
)  # fmt: skip
# Words containing one of these anywhere are never used ("motherfucker", "heterosexual").
BLOCKED_INFIXES: Final = (
    "fuck", "shit", "cunt", "nigg", "porn", "sexual", "whore", "slut", "bitch", "dildo",
)  # fmt: skip
# Words blocked only as whole words (as prefixes they would hit innocent words).
BLOCKED_WORDS: Final = frozenset({
    "ass", "asses", "arse", "anal", "cum", "damn", "crap", "piss", "pissed", "hoe", "hoes",
    "homo", "homos", "spic", "spics", "gook", "dyke", "slave", "slaves", "nsfw", "xxx",
})  # fmt: skip

_VOWEL_LETTERS = re.compile(r"[aeiouy]")
_WORD = re.compile(r"[A-Za-z']+")
_SINGLE_LETTER_WORDS: Final = frozenset({"a", "i"})


def cmu_dictionary_path() -> Path:
    """The CMU pronouncing dictionary that ships with pocketsphinx."""
    try:
        import pocketsphinx
    except ImportError as error:
        raise EngineError(
            "pocketsphinx is not installed; the sentence generator needs its CMU dictionary: "
            "pip install pocketsphinx"
        ) from error
    path = Path(pocketsphinx.get_model_path("en-us/cmudict-en-us.dict"))
    if not path.is_file():
        raise EngineError(f"pocketsphinx's CMU dictionary is missing: {path}")
    return path


def load_pronunciations(
    words: Iterable[str], *, path: Path | None = None
) -> dict[str, tuple[str, ...]]:
    """First CMU pronunciation (ARPAbet without stress) of each of ``words`` that has one."""
    wanted = set(words)
    pronunciations: dict[str, tuple[str, ...]] = {}
    with (path or cmu_dictionary_path()).open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            parts = line.split()
            if len(parts) < 2 or parts[0] not in wanted or parts[0] in pronunciations:
                continue  # alternates ("word(2)") never match a plain word
            pronunciations[parts[0]] = tuple(normalise_arpabet(phone) for phone in parts[1:])
    return pronunciations


def is_blocked(word: str) -> bool:
    """True for words on the profanity/slur blocklist."""
    lowered = word.lower()
    return (
        lowered in BLOCKED_WORDS
        or lowered.startswith(BLOCKED_PREFIXES)
        or any(infix in lowered for infix in BLOCKED_INFIXES)
    )


def usable_word(word: str) -> bool:
    """A plain alphabetic ASCII word with a vowel letter, not blocked."""
    if not (word.isascii() and word.isalpha()):
        return False
    if len(word) == 1:
        return word in _SINGLE_LETTER_WORDS
    return bool(_VOWEL_LETTERS.search(word)) and not is_blocked(word)


@dataclass(frozen=True, kw_only=True)
class SentenceGeneratorConfig:
    """How many frequent words to draw from and the shape of the sentences."""

    seed: int = 0
    vocabulary_size: int = 20000
    function_word_count: int = 120
    min_words: int = 5
    max_words: int = 14
    function_word_share: float = 0.3
    candidates_per_word: int = 40

    def __post_init__(self) -> None:
        if not 1 <= self.min_words <= self.max_words:
            raise ValueError(
                f"need 1 <= min_words <= max_words, got {self.min_words}, {self.max_words}"
            )
        if not 0.0 <= self.function_word_share < 1.0:
            raise ValueError(
                f"function_word_share must be in [0, 1), got {self.function_word_share}"
            )


class SentenceGenerator:
    """A deterministic stream of sentences for a seed; ``take(n)`` continues the stream."""

    def __init__(
        self,
        *,
        seed: int = 0,
        vocabulary_size: int = 20000,
        function_word_count: int = 120,
        min_words: int = 5,
        max_words: int = 14,
        function_word_share: float = 0.3,
        candidates_per_word: int = 40,
        dictionary_path: Path | None = None,
    ) -> None:
        self.config = SentenceGeneratorConfig(
            seed=seed,
            vocabulary_size=vocabulary_size,
            function_word_count=function_word_count,
            min_words=min_words,
            max_words=max_words,
            function_word_share=function_word_share,
            candidates_per_word=candidates_per_word,
        )
        try:
            from wordfreq import top_n_list
        except ImportError as error:
            raise EngineError(
                "wordfreq is not installed; the sentence generator needs it: pip install wordfreq"
            ) from error
        frequent = [word for word in top_n_list("en", vocabulary_size) if usable_word(word)]
        self.pronunciations = load_pronunciations(frequent, path=dictionary_path)
        ranked = [word for word in frequent if word in self.pronunciations]
        if len(ranked) <= function_word_count:
            raise EngineError(
                f"only {len(ranked)} usable words; raise vocabulary_size ({vocabulary_size})"
            )
        self.function_words: tuple[str, ...] = tuple(ranked[:function_word_count])
        self.content_words: tuple[str, ...] = tuple(sorted(ranked[function_word_count:]))
        # Zipf-like weights for the frequent words: the commonest appear most.
        self._function_weights = [1.0 / (rank + 1) for rank in range(len(self.function_words))]
        self._random = random.Random(seed)
        self._phone_counts: Counter[str] = Counter()
        self._word_uses: Counter[str] = Counter()
        missing = set(ENGLISH_PHONEMES) - {
            phone for word in self.content_words for phone in self.pronunciations[word]
        }
        if missing:
            logger.warning("no content word contains %s", ", ".join(sorted(missing)))

    @property
    def phone_counts_so_far(self) -> Counter[str]:
        """Expected phone counts of all sentences generated so far."""
        return Counter(self._phone_counts)

    def _coverage_score(self, word: str) -> float:
        phones = self.pronunciations[word]
        gain = sum(1.0 / (1.0 + self._phone_counts[phone]) for phone in set(phones))
        return gain / (len(phones) ** 0.5) / (1.0 + self._word_uses[word])

    def _pick_content_word(self, taken: set[str]) -> str:
        candidates = self._random.sample(self.content_words, self.config.candidates_per_word)
        candidates = [word for word in candidates if word not in taken] or candidates
        return max(candidates, key=self._coverage_score)

    def next_sentence(self) -> str:
        """One more sentence: first letter capitalised, ending in a full stop."""
        config = self.config
        length = self._random.randint(config.min_words, config.max_words)
        words: list[str] = []
        taken: set[str] = set()
        for position in range(length):
            use_function_word = (
                position < length - 1 and self._random.random() < config.function_word_share
            )
            if use_function_word:
                word = self._random.choices(self.function_words, self._function_weights)[0]
            else:
                word = self._pick_content_word(taken)
            words.append(word)
            taken.add(word)
            self._word_uses[word] += 1
            self._phone_counts.update(self.pronunciations[word])
        text = " ".join("I" if word == "i" else word for word in words)
        return text[0].upper() + text[1:] + "."

    def __iter__(self) -> Iterator[str]:
        while True:
            yield self.next_sentence()

    def take(self, count: int) -> list[str]:
        """The next ``count`` sentences of the stream."""
        return [self.next_sentence() for _ in range(count)]

    def expected_phones(self, sentence: str) -> list[str]:
        """The phones of a sentence by the dictionary (words it does not know are skipped)."""
        phones: list[str] = []
        for word in _WORD.findall(sentence):
            phones.extend(self.pronunciations.get(word.lower(), ()))
        return phones

    def phone_counts(self, sentence: str) -> Counter[str]:
        """How often each phoneme occurs in a sentence's expected phones."""
        return Counter(self.expected_phones(sentence))


def phoneme_coverage(generator: SentenceGenerator, sentences: Iterable[str]) -> Counter[str]:
    """Expected phone counts over ``sentences``; every English phoneme is a key (0 if unseen)."""
    total: Counter[str] = Counter(dict.fromkeys(ENGLISH_PHONEMES, 0))
    for sentence in sentences:
        total.update(generator.phone_counts(sentence))
    return total
