"""IPA phonemes (as espeak-ng writes them for English, also used by Piper) -> ARPAbet.

espeak-ng names its English phonemes in IPA: plain symbols (``f``, ``ɪ``, ``ʃ``), vowels with
length marks (``ɑː``), diphthongs (``aɪ``), affricates (``dʒ``), r-coloured vowels (``ɚ``,
``ɑːɹ``), syllabic consonants (``n̩``, ``əl``) and stress marks placed before the stressed
vowel (``ˈ``, ``ˌ``). Piper feeds the same IPA to its model one code point at a time.

``tokenize_ipa`` cuts an IPA string into phoneme tokens (plus stress, word-boundary and
pause tokens) keeping character offsets, so durations given per code point can be summed
per phoneme. ``IpaToArpabet`` maps one phoneme to one or more ARPAbet phones of
``engine.speech.phonemes`` and ``split_timed_phonemes`` turns timed IPA phonemes into timed
ARPAbet phones, dividing a span evenly when a phoneme maps to several phones.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

from engine.speech.phonemes import SILENCE
from engine.speech.utterance import TimedSpan

logger = logging.getLogger(__name__)

PRIMARY_STRESS: Final = "ˈ"
SECONDARY_STRESS: Final = "ˌ"
STRESS_MARKS: Final = frozenset({PRIMARY_STRESS, SECONDARY_STRESS})
LENGTH_MARKS: Final = frozenset({"ː", "ˑ"})
TIE_BARS: Final = frozenset({"\u0361", "\u035c"})
SYLLABIC_MARKS: Final = frozenset({"\u0329", "\u030d"})
# Spacing modifier letters that qualify the preceding symbol (aspiration, palatalisation,
# labialisation, velarisation, pharyngealisation, rhotic hook, ejective).
MODIFIER_LETTERS: Final = frozenset({"ʰ", "ʲ", "ʷ", "ˠ", "ˤ", "˞", "ʼ", "ⁿ", "ˡ"})

# Two-symbol units that are one English phoneme when written adjacent.
_DIGRAPHS: Final = frozenset({
    "aɪ", "aʊ", "eɪ", "oʊ", "əʊ", "ɔɪ", "eə", "ɪə", "ʊə",
    "tʃ", "dʒ",
})  # fmt: skip

TokenKind = Literal["phoneme", "stress", "space", "pause"]


@dataclass(frozen=True, kw_only=True)
class IpaToken:
    """A piece of an IPA string: ``text == source[start:end]``."""

    text: str
    kind: TokenKind
    start: int
    end: int


def _is_attached_mark(char: str) -> bool:
    """A symbol that modifies the symbol before it rather than standing alone."""
    return (
        char in LENGTH_MARKS
        or char in MODIFIER_LETTERS
        or unicodedata.combining(char) != 0
        or unicodedata.category(char) == "Mn"
    )


def _is_pause_symbol(char: str) -> bool:
    """Punctuation that espeak-ng/Piper keep in the phoneme stream (clause ends, commas)."""
    return unicodedata.category(char)[0] in {"P", "S"} and char not in STRESS_MARKS


def tokenize_ipa(ipa: str) -> list[IpaToken]:
    """Cut an IPA string into phoneme, stress, space and pause tokens, in order.

    Length marks, combining diacritics and modifier letters stay with the symbol they follow;
    a tie bar joins the symbols on both sides; the digraphs of English (diphthongs such as
    ``aɪ``, affricates ``tʃ``/``dʒ``) are one token when their symbols are adjacent.
    Offsets index ``ipa`` as given (pass NFD text to have diacritics as separate code points).
    """
    tokens: list[IpaToken] = []
    index = 0
    length = len(ipa)
    while index < length:
        char = ipa[index]
        if char in STRESS_MARKS:
            tokens.append(IpaToken(text=char, kind="stress", start=index, end=index + 1))
            index += 1
            continue
        if char.isspace():
            end = index + 1
            while end < length and ipa[end].isspace():
                end += 1
            tokens.append(IpaToken(text=ipa[index:end], kind="space", start=index, end=end))
            index = end
            continue
        if _is_attached_mark(char) and char not in TIE_BARS:
            if tokens and tokens[-1].kind == "phoneme" and tokens[-1].end == index:
                previous = tokens.pop()
                tokens.append(
                    IpaToken(
                        text=ipa[previous.start : index + 1],
                        kind="phoneme",
                        start=previous.start,
                        end=index + 1,
                    )
                )
            else:
                # A stray mark with nothing to attach to carries no sound of its own.
                tokens.append(IpaToken(text=char, kind="stress", start=index, end=index + 1))
            index += 1
            continue
        if char in TIE_BARS:
            # Join the previous phoneme with the next base symbol.
            if tokens and tokens[-1].kind == "phoneme" and tokens[-1].end == index:
                previous = tokens.pop()
                end = min(index + 2, length)
                tokens.append(
                    IpaToken(
                        text=ipa[previous.start : end],
                        kind="phoneme",
                        start=previous.start,
                        end=end,
                    )
                )
                index = end
            else:
                tokens.append(IpaToken(text=char, kind="stress", start=index, end=index + 1))
                index += 1
            continue
        if _is_pause_symbol(char):
            end = index + 1
            while end < length and _is_pause_symbol(ipa[end]):
                end += 1
            tokens.append(IpaToken(text=ipa[index:end], kind="pause", start=index, end=end))
            index = end
            continue
        end = index + 1
        if ipa[index : index + 2] in _DIGRAPHS:
            end = index + 2
        tokens.append(IpaToken(text=ipa[index:end], kind="phoneme", start=index, end=end))
        index = end
    return tokens


def split_ipa_phonemes(ipa: str) -> list[str]:
    """The phonemes of an IPA string, without stress marks, spaces or punctuation."""
    return [
        token.text
        for token in tokenize_ipa(unicodedata.normalize("NFD", ipa))
        if token.kind == "phoneme"
    ]


# Keys are symbols without stress; those with a length mark are looked up before the mark
# is dropped, so ``oː`` (espeak-ng's en-US vowel of "four") differs from ``o``.
_IPA_TO_ARPABET: Final[dict[str, tuple[str, ...]]] = {
    # Vowels
    "i": ("IY",), "iː": ("IY",), "ɪ": ("IH",), "ᵻ": ("IH",), "ɨ": ("IH",),
    "e": ("EH",), "eː": ("EY",), "ɛ": ("EH",), "ɛː": ("EH",), "æ": ("AE",), "a": ("AE",),
    "aː": ("AA",), "ɑ": ("AA",), "ɒ": ("AA",), "ɔ": ("AO",), "o": ("OW",), "oː": ("AO",),
    "ʊ": ("UH",), "u": ("UW",), "ʉ": ("UW",), "ʌ": ("AH",), "ə": ("AH",), "ɐ": ("AH",),
    "ɘ": ("AH",), "ɵ": ("OW",), "ɤ": ("AH",), "ɯ": ("UW",), "y": ("UW",), "ʏ": ("UH",),
    "ø": ("UH",), "œ": ("AH",), "ɶ": ("AA",), "ɞ": ("ER",),
    "ɜ": ("ER",), "ɚ": ("ER",), "ɝ": ("ER",), "ə˞": ("ER",),
    # Diphthongs
    "aɪ": ("AY",), "aʊ": ("AW",), "eɪ": ("EY",), "oʊ": ("OW",), "əʊ": ("OW",),
    "ɔɪ": ("OY",), "eə": ("EH", "AH"), "ɪə": ("IH", "AH"), "ʊə": ("UH", "AH"),
    # Plosives, affricates
    "p": ("P",), "b": ("B",), "t": ("T",), "d": ("D",), "k": ("K",), "g": ("G",),
    "ɡ": ("G",), "c": ("K",), "ɟ": ("G",), "q": ("K",), "ɢ": ("G",), "ʈ": ("T",), "ɖ": ("D",),
    "ʔ": ("T",),  # English glottal stops stand for /t/ ("button")
    "tʃ": ("CH",), "dʒ": ("JH",), "ʧ": ("CH",), "ʤ": ("JH",),
    "ts": ("T", "S"), "dz": ("D", "Z"), "ʦ": ("T", "S"), "ʣ": ("D", "Z"),
    # Fricatives
    "f": ("F",), "v": ("V",), "θ": ("TH",), "ð": ("DH",), "s": ("S",), "z": ("Z",),
    "ʃ": ("SH",), "ʒ": ("ZH",), "h": ("HH",), "ɦ": ("HH",), "x": ("K",), "ç": ("HH",),
    "χ": ("HH",), "ħ": ("HH",), "ʕ": ("HH",), "ɣ": ("G",), "β": ("V",), "ɸ": ("F",),
    "ɕ": ("SH",), "ʑ": ("ZH",), "ʂ": ("SH",), "ʐ": ("ZH",), "ʝ": ("Y",),
    # Nasals
    "m": ("M",), "ɱ": ("M",), "n": ("N",), "ɲ": ("N", "Y"), "ŋ": ("NG",), "ɳ": ("N",),
    "ɴ": ("NG",),
    # Approximants, liquids
    "l": ("L",), "ɫ": ("L",), "ɬ": ("L",), "ɮ": ("L",), "ʎ": ("L",), "ɭ": ("L",), "ʟ": ("L",),
    "ɹ": ("R",), "r": ("R",), "ɻ": ("R",), "ʁ": ("R",), "ʀ": ("R",), "ɽ": ("R",), "ɺ": ("R",),
    "j": ("Y",), "w": ("W",), "ʍ": ("W",), "ɥ": ("W",), "ʋ": ("V",), "ɰ": ("W",),
}  # fmt: skip

# The nearest phone for a symbol outside the table, from the letter in its Unicode name
# ("LATIN SMALL LETTER TURNED V", "GREEK SMALL LETTER EPSILON").
_LETTER_NAME_TO_ARPABET: Final[dict[str, str]] = {
    "A": "AA", "E": "EH", "I": "IH", "O": "AO", "U": "UH", "Y": "IY",
    "B": "B", "C": "K", "D": "D", "F": "F", "G": "G", "H": "HH", "J": "Y", "K": "K",
    "L": "L", "M": "M", "N": "N", "P": "P", "Q": "K", "R": "R", "S": "S", "T": "T",
    "V": "V", "W": "W", "X": "HH", "Z": "Z",
    "ALPHA": "AA", "EPSILON": "EH", "IOTA": "IH", "OMICRON": "AO", "UPSILON": "UH",
    "OMEGA": "AO", "ETA": "IY", "BETA": "B", "GAMMA": "G", "DELTA": "DH", "THETA": "TH",
    "KAPPA": "K", "LAMDA": "L", "MU": "M", "NU": "N", "PI": "P", "RHO": "R", "SIGMA": "S",
    "TAU": "T", "PHI": "F", "CHI": "HH", "ZETA": "Z",
}  # fmt: skip
_LETTER_NAME = re.compile(
    r"\b(?:LATIN|GREEK)\b.*?\bLETTER\b(?: SMALL| CAPITAL)*"
    r"(?: TURNED| REVERSED| CLOSED| DOTLESS| SCRIPT| BARRED)* (\w+)\b"
)
_NEUTRAL_VOWEL: Final = "AH"


class IpaToArpabet:
    """Maps IPA phonemes to ARPAbet phones; reports each unknown symbol once (at debug).

    Each instance remembers which unknown symbols it has already reported, so keep one per
    voice or per run rather than one per phoneme.
    """

    def __init__(self) -> None:
        self._reported_unknown: set[str] = set()

    def convert(self, phoneme: str, *, spelling: str = "") -> tuple[str, ...]:
        """ARPAbet phones (without stress) for one IPA phoneme; ``('SIL',)`` for a pause.

        ``phoneme`` may be a single symbol (``ʃ``), a symbol with marks (``ɑː``, ``n̩``) or a
        sequence espeak-ng treats as one phoneme (``ɑːɹ``, ``aɪɚ``, ``əl``): sequences map to
        the phones of their parts. ``spelling`` is the written word the phoneme belongs to;
        it decides whether a flap ``ɾ`` is a ``T`` ("water") or a ``D`` ("ladder").
        """
        text = unicodedata.normalize("NFD", phoneme)
        tokens = [token for token in tokenize_ipa(text) if token.kind == "phoneme"]
        if not tokens:
            # Empty names are espeak-ng's pauses; stress marks or punctuation carry no sound.
            return (SILENCE,)
        phones: list[str] = []
        for token in tokens:
            phones.extend(self._convert_symbol(token.text, spelling=spelling))
        return tuple(phones)

    def _convert_symbol(self, symbol: str, *, spelling: str) -> tuple[str, ...]:
        composed = unicodedata.normalize("NFC", symbol)
        for candidate in (symbol, composed):
            if candidate in _IPA_TO_ARPABET:
                return _IPA_TO_ARPABET[candidate]
        if any(mark in symbol for mark in SYLLABIC_MARKS):
            base = self._strip_marks(symbol)
            if base in {"ɹ", "r", "ɻ"}:
                return ("ER",)
            base_phones = self._convert_symbol(base, spelling=spelling)
            return (_NEUTRAL_VOWEL, *base_phones)
        if "˞" in symbol:
            return ("ER",)
        without_length = "".join(char for char in symbol if char not in LENGTH_MARKS)
        if without_length != symbol:
            return self._convert_symbol(without_length, spelling=spelling)
        if symbol.startswith("ɾ"):
            return self._flap(spelling)
        bare = self._strip_marks(symbol)
        if bare and bare != symbol:
            return self._convert_symbol(bare, spelling=spelling)
        if len(symbol) > 1:
            # Tied or unexpected multi-symbol unit: map the symbols one by one.
            phones: list[str] = []
            for char in symbol:
                phones.extend(self._convert_symbol(char, spelling=spelling))
            return tuple(phones)
        return (self._nearest(symbol),)

    @staticmethod
    def _flap(spelling: str) -> tuple[str, ...]:
        letters = spelling.lower()
        if "d" in letters and "t" not in letters:
            return ("D",)
        return ("T",)

    @staticmethod
    def _strip_marks(symbol: str) -> str:
        return "".join(
            char
            for char in symbol
            if not _is_attached_mark(char) and char not in TIE_BARS and char not in STRESS_MARKS
        )

    def _nearest(self, symbol: str) -> str:
        name = unicodedata.name(symbol, "")
        match = _LETTER_NAME.search(name)
        letter = match.group(1) if match else ""
        phone = _LETTER_NAME_TO_ARPABET.get(letter, _NEUTRAL_VOWEL)
        if symbol not in self._reported_unknown:
            self._reported_unknown.add(symbol)
            logger.debug(
                "unknown IPA symbol %r (U+%04X %s): mapped to %s",
                symbol,
                ord(symbol),
                name or "unnamed",
                phone,
            )
        return phone


def ipa_to_arpabet(phoneme: str, *, spelling: str = "") -> tuple[str, ...]:
    """ARPAbet phones for one IPA phoneme (see ``IpaToArpabet.convert``)."""
    return IpaToArpabet().convert(phoneme, spelling=spelling)


def split_timed_phonemes(
    phonemes: Sequence[TimedSpan],
    *,
    spellings: Sequence[str] | None = None,
    converter: IpaToArpabet | None = None,
) -> list[TimedSpan]:
    """Timed IPA phonemes -> timed ARPAbet phones.

    A phoneme mapping to several phones has its span divided evenly between them; adjacent
    silences are merged. ``spellings`` (one per phoneme, may be empty strings) resolve
    flaps; ``converter`` lets callers share the unknown-symbol reporting of one instance.
    """
    if spellings is not None and len(spellings) != len(phonemes):
        raise ValueError(f"{len(spellings)} spellings for {len(phonemes)} phonemes")
    mapper = converter if converter is not None else IpaToArpabet()
    phones: list[TimedSpan] = []
    for index, span in enumerate(phonemes):
        spelling = spellings[index] if spellings is not None else ""
        labels = mapper.convert(span.label, spelling=spelling)
        step = (span.end - span.start) / len(labels)
        for part, label in enumerate(labels):
            start = span.start + part * step
            end = span.end if part == len(labels) - 1 else span.start + (part + 1) * step
            phones.append(TimedSpan(label=label, start=start, end=end))
    return merge_silences(phones)


def merge_silences(phones: Sequence[TimedSpan]) -> list[TimedSpan]:
    """Merge runs of adjacent ``SIL`` spans into one span."""
    merged: list[TimedSpan] = []
    for span in phones:
        if merged and span.label == SILENCE and merged[-1].label == SILENCE:
            merged[-1] = TimedSpan(label=SILENCE, start=merged[-1].start, end=span.end)
        else:
            merged.append(span)
    return merged
