"""Forced alignment of real speech to its transcript with pocketsphinx's bundled en-US model.

pocketsphinx aligns in two passes over 16 kHz audio: ``set_align_text`` finds the word
segmentation of the transcript, then ``set_alignment`` and a second pass give the phone
segmentation, in 10 ms frames. Transcripts are normalised first (lower case, no
punctuation, digits spelled out); a word missing from the CMU dictionary gets a
pronunciation from the dictionary entry of its stem ("waldo's"), from espeak-ng's letter
to sound rules when the espeak-ng library is installed, or from two dictionary words it is
made of ("touchtone"), and is dropped (logged) when none of these works.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import numpy as np

from engine.audio import float_to_pcm16, resample
from engine.errors import EngineError
from engine.speech.ipa import IpaToArpabet, merge_silences
from engine.speech.phonemes import ENGLISH_PHONEMES, SILENCE, normalise_arpabet
from engine.speech.utterance import TimedSpan

if TYPE_CHECKING:
    from pocketsphinx import Decoder

    from engine.speech.espeak import EspeakLibrary

logger = logging.getLogger(__name__)

ALIGNMENT_SAMPLE_RATE: Final = 16000
FRAME_SECONDS: Final = 0.01  # pocketsphinx's default frame rate is 100 per second
_FILLER_WORDS: Final = frozenset({"<s>", "</s>", "<sil>", "[noise]", "++noise++"})
# Words of one phone each ("phone_aa"), added to the dictionary for the fallback phone pass.
_PHONE_WORD_PREFIX: Final = "phone_"
_ALTERNATE_SUFFIX = re.compile(r"\(\d+\)$")
# Edges of speech: frames within this many dB of the loud frames, plus a small margin.
_EDGE_BELOW_SPEECH_DB: Final = 35.0
_EDGE_MARGIN_SECONDS: Final = 0.02
_MIN_EDGE_PHONE_SECONDS: Final = 0.03

_ONES: Final = (
    "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen",
    "eighteen", "nineteen",
)  # fmt: skip
_TENS: Final = (
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
)  # fmt: skip
_SCALES: Final = ((10**12, "trillion"), (10**9, "billion"), (10**6, "million"), (1000, "thousand"))
_ORDINAL_EXCEPTIONS: Final = {
    "one": "first", "two": "second", "three": "third", "five": "fifth", "eight": "eighth",
    "nine": "ninth", "twelve": "twelfth",
}  # fmt: skip
# Symbols read out as words; "#" and "*" as on a telephone keypad.
_SYMBOL_WORDS: Final = {
    "&": " and ", "%": " percent ", "+": " plus ", "@": " at ", "=": " equals ",
    "#": " pound ", "*": " star ",
}  # fmt: skip
_NUMBER_TOKEN = re.compile(r"(\d+)(st|nd|rd|th)?\b")
_DIGIT_GROUP_COMMA = re.compile(r"(\d),(\d{3})\b")
_WORD_TOKEN = re.compile(r"[a-z0-9]+(?:['.][a-z0-9]+)*")


def spell_number(number: int) -> list[str]:
    """Cardinal words for a non-negative integer: 162 -> one hundred sixty two."""
    if number < 0:
        return ["minus", *spell_number(-number)]
    if number < 20:
        return [_ONES[number]]
    if number < 100:
        tens, ones = divmod(number, 10)
        return [_TENS[tens]] + ([_ONES[ones]] if ones else [])
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return [_ONES[hundreds], "hundred"] + (spell_number(rest) if rest else [])
    for scale, name in _SCALES:
        if number >= scale:
            leading, rest = divmod(number, scale)
            return [*spell_number(leading), name] + (spell_number(rest) if rest else [])
    raise AssertionError("unreachable")  # pragma: no cover


def spell_ordinal(number: int) -> list[str]:
    """Ordinal words: 21 -> twenty first, 40 -> fortieth."""
    words = spell_number(number)
    last = words[-1]
    if last in _ORDINAL_EXCEPTIONS:
        words[-1] = _ORDINAL_EXCEPTIONS[last]
    elif last.endswith("y"):
        words[-1] = last[:-1] + "ieth"
    else:
        words[-1] = last + "th"
    return words


def transcript_words(text: str) -> list[str]:
    """Lower-case words of a transcript: no punctuation, digits spelled as words.

    Hyphens and slashes separate words; apostrophes inside words stay ("don't"); dots
    inside a token stay ("a.m") so the dictionary can decide.
    """
    lowered = text.lower().replace("’", "'").replace("‘", "'")
    for symbol, words in _SYMBOL_WORDS.items():
        lowered = lowered.replace(symbol, words)

    def spell(match: re.Match[str]) -> str:
        digits, suffix = match.group(1), match.group(2)
        value = int(digits)
        if len(digits) > 1 and digits.startswith("0"):
            return " " + " ".join(_ONES[int(digit)] for digit in digits) + " "
        return " " + " ".join(spell_ordinal(value) if suffix else spell_number(value)) + " "

    grouped = _DIGIT_GROUP_COMMA.sub(r"\1\2", lowered)
    spelled = _NUMBER_TOKEN.sub(spell, grouped)
    return _WORD_TOKEN.findall(spelled)


@dataclass(frozen=True, kw_only=True)
class AlignerConfig:
    """pocketsphinx model and dictionary (None: the bundled en-US ones)."""

    acoustic_model_dir: str | None = None
    dictionary_path: str | None = None
    use_espeak_for_unknown_words: bool = True


class ForcedAligner:
    """Aligns 16 kHz speech to its transcript; one pocketsphinx decoder, used under a lock."""

    def __init__(
        self,
        *,
        acoustic_model_dir: str | None = None,
        dictionary_path: str | None = None,
        use_espeak_for_unknown_words: bool = True,
        espeak_library: EspeakLibrary | None = None,
    ) -> None:
        self.config = AlignerConfig(
            acoustic_model_dir=acoustic_model_dir,
            dictionary_path=dictionary_path,
            use_espeak_for_unknown_words=use_espeak_for_unknown_words,
        )
        self._lock = threading.Lock()
        self._decoder = self._create_decoder()
        self._espeak_library = espeak_library
        self._espeak_unavailable = not use_espeak_for_unknown_words
        self._ipa_converter = IpaToArpabet()
        self._phone_words_added = False

    def _create_decoder(self) -> Decoder:
        try:
            import pocketsphinx
        except ImportError as error:
            raise EngineError(
                "pocketsphinx is not installed; forced alignment needs it: pip install pocketsphinx"
            ) from error
        options: dict[str, object] = {"loglevel": "FATAL", "lm": None}
        if self.config.acoustic_model_dir is not None:
            options["hmm"] = self.config.acoustic_model_dir
        if self.config.dictionary_path is not None:
            options["dict"] = self.config.dictionary_path
        try:
            return pocketsphinx.Decoder(**options)
        except (RuntimeError, ValueError) as error:
            raise EngineError(
                f"pocketsphinx could not load its model/dictionary ({error}); reinstall "
                f"pocketsphinx or pass valid acoustic_model_dir/dictionary_path."
            ) from error

    # -- pronunciations -------------------------------------------------------------------

    def pronunciation(self, word: str) -> list[str] | None:
        """The dictionary pronunciation of ``word`` (ARPAbet with stress), or None."""
        with self._lock:
            found = self._decoder.lookup_word(word)
        return found.split() if found else None

    def _espeak_pronunciation(self, word: str) -> list[str] | None:
        if self._espeak_unavailable:
            return None
        if self._espeak_library is None:
            from engine.speech.espeak import EspeakLibrary

            try:
                self._espeak_library = EspeakLibrary()
            except EngineError as error:
                logger.info("no espeak-ng for words missing from the dictionary: %s", error)
                self._espeak_unavailable = True
                return None
        library = self._espeak_library
        voice = library.resolve_voice_name("en-us")
        phones: list[str] = []
        for phonemes in library.text_to_ipa(word, voice=voice):
            for phoneme in phonemes:
                phones.extend(
                    phone
                    for phone in self._ipa_converter.convert(phoneme, spelling=word)
                    if phone != SILENCE
                )
        return phones or None

    def _derived_pronunciation(self, word: str) -> tuple[list[str], str] | None:
        """A pronunciation for a word missing from the dictionary and how it was found."""
        for suffix in ("'s", "s'", "'"):
            if word.endswith(suffix) and len(word) > len(suffix):
                stem = self._lookup_unlocked(word[: -len(suffix)])
                if stem:
                    last = normalise_arpabet(stem[-1])
                    if suffix == "'":
                        return stem, "possessive"
                    if last in {"S", "Z", "SH", "ZH", "CH", "JH"}:
                        return [*stem, "IH", "Z"], "possessive"
                    voiceless = last in {"P", "T", "K", "F", "TH"}
                    return [*stem, "S" if voiceless else "Z"], "possessive"
        from_espeak = self._espeak_pronunciation(word)
        if from_espeak:
            return from_espeak, "espeak-ng"
        parts = [part for part in re.split(r"[.']", word) if part]
        if len(parts) > 1:
            pieces = [self._lookup_unlocked(part) for part in parts]
            if all(pieces):
                return [phone for piece in pieces if piece for phone in piece], "parts"
        for split in range(len(word) - 2, 1, -1):
            head = self._lookup_unlocked(word[:split])
            tail = self._lookup_unlocked(word[split:])
            if head and tail:
                return [*head, *tail], "compound"
        return None

    def _lookup_unlocked(self, word: str) -> list[str] | None:
        found = self._decoder.lookup_word(word)
        return found.split() if found else None

    def prepare_transcript(self, text: str) -> list[str]:
        """Normalised transcript words, each in the dictionary (missing ones added or dropped)."""
        words: list[str] = []
        with self._lock:
            for token in transcript_words(text):
                candidates = [token, f"{token}.", token.strip(".'")]
                known = next((c for c in candidates if c and self._decoder.lookup_word(c)), None)
                if known:
                    words.append(known)
                    continue
                word = token.strip(".")
                derived = self._derived_pronunciation(word)
                if derived is None:
                    logger.info("dropping %r from the transcript: no pronunciation found", word)
                    continue
                phones, how = derived
                try:
                    self._decoder.add_word(word, " ".join(phones), True)
                except RuntimeError as error:
                    logger.info("dropping %r from the transcript: %s", word, error)
                    continue
                logger.debug("added %r to the dictionary (%s): %s", word, how, " ".join(phones))
                words.append(word)
        return words

    # -- alignment ------------------------------------------------------------------------

    def align(
        self,
        audio: np.ndarray,
        text: str,
        *,
        sample_rate: int = ALIGNMENT_SAMPLE_RATE,
    ) -> tuple[tuple[TimedSpan, ...], tuple[TimedSpan, ...]]:
        """Word and phone spans (seconds) of ``text`` spoken in ``audio`` (float32 mono).

        Words are the normalised transcript words, in order; phones are ARPAbet without
        stress, covering the audio from 0 to its end (gaps are ``SIL``). Raises
        ``EngineError`` when the transcript cannot be aligned to the audio.

        The phone pass (``set_alignment``) keeps every phone inside the frames the word pass
        gave its word and fails when those leave no path; the alignment is then redone with
        each phone as a word of its own, a search that needs no such constraints.
        """
        if audio.ndim != 1:
            raise EngineError(f"alignment needs mono audio, got shape {audio.shape}")
        if sample_rate != ALIGNMENT_SAMPLE_RATE:
            audio = resample(audio, sample_rate, ALIGNMENT_SAMPLE_RATE)
        duration = len(audio) / ALIGNMENT_SAMPLE_RATE
        words = self.prepare_transcript(text)
        if not words:
            raise EngineError(f"nothing to align: no usable words in {text!r}")
        pcm = float_to_pcm16(audio.astype(np.float32)).tobytes()
        with self._lock:
            spoken = self._word_pass(pcm, words, text)
            aligned = self._state_alignment_pass(pcm)
            if aligned is None:
                logger.debug("phone pass failed for %r; aligning phones as words", text)
                aligned = self._phone_word_pass(pcm, spoken, text)
        word_spans, phone_spans = aligned
        phones = _trim_edge_silence(_fill_gaps(phone_spans, duration), audio)
        return tuple(_clip_words(word_spans, phones, duration)), tuple(phones)

    def _decode(self, pcm: bytes) -> None:
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()

    def _word_pass(self, pcm: bytes, words: Sequence[str], text: str) -> list[str]:
        """Align the words; returns the dictionary entries chosen (``"your(2)"``)."""
        failure = EngineError(
            f"could not align the transcript {text!r} to the audio; check that the audio is "
            f"16 kHz speech of exactly this text."
        )
        try:
            self._decoder.set_align_text(" ".join(words))
            self._decode(pcm)
        except RuntimeError as error:
            raise failure from error
        if self._decoder.hyp() is None:
            raise failure
        entries = [segment.word for segment in self._decoder.seg()]
        spoken = [entry for entry in entries if _base_word(entry) not in _FILLER_WORDS]
        # The search returns its best partial path when it cannot reach the end.
        if [_base_word(entry) for entry in spoken] != list(words):
            raise failure
        return spoken

    def _state_alignment_pass(self, pcm: bytes) -> tuple[list[TimedSpan], list[TimedSpan]] | None:
        """Phone segmentation by a second pass over the word pass's result, or None."""
        try:
            self._decoder.set_alignment()
            self._decode(pcm)
        except RuntimeError:
            return None
        alignment = self._decoder.get_alignment()
        if alignment is None:
            return None
        word_spans: list[TimedSpan] = []
        phone_spans: list[TimedSpan] = []
        for entry in alignment:
            name = _base_word(entry.name)
            if name not in _FILLER_WORDS:
                word_spans.append(_frames_span(name, entry.start, entry.duration))
            for phone in entry:
                phone_spans.append(
                    _frames_span(normalise_arpabet(phone.name), phone.start, phone.duration)
                )
        return word_spans, phone_spans

    def _phone_word_pass(
        self, pcm: bytes, spoken: Sequence[str], text: str
    ) -> tuple[list[TimedSpan], list[TimedSpan]]:
        """Phone segmentation by aligning the pronunciation with one word per phone."""
        pronunciations: list[list[str]] = []
        for entry in spoken:
            found = self._decoder.lookup_word(entry)
            if not found:
                raise EngineError(f"no pronunciation for {entry!r} while aligning {text!r}")
            pronunciations.append([normalise_arpabet(phone) for phone in found.split()])
        expected = [phone for pronunciation in pronunciations for phone in pronunciation]
        if not self._phone_words_added:
            for index, phone in enumerate(ENGLISH_PHONEMES):
                update = index == len(ENGLISH_PHONEMES) - 1
                self._decoder.add_word(_PHONE_WORD_PREFIX + phone.lower(), phone, update)
            self._phone_words_added = True
        failure = EngineError(
            f"could not align the phones of {text!r} to the audio; check that the audio is "
            f"16 kHz speech of exactly this text."
        )
        try:
            self._decoder.set_align_text(
                " ".join(_PHONE_WORD_PREFIX + phone.lower() for phone in expected)
            )
            self._decode(pcm)
        except RuntimeError as error:
            raise failure from error
        if self._decoder.hyp() is None:
            raise failure
        phone_spans: list[TimedSpan] = []
        for segment in self._decoder.seg():
            name = _base_word(segment.word)
            duration = segment.end_frame - segment.start_frame + 1
            if name.startswith(_PHONE_WORD_PREFIX):
                label = name.removeprefix(_PHONE_WORD_PREFIX).upper()
            else:
                label = SILENCE
            phone_spans.append(_frames_span(label, segment.start_frame, duration))
        spoken_phones = [span for span in phone_spans if span.label != SILENCE]
        if [span.label for span in spoken_phones] != expected:
            raise failure
        word_spans: list[TimedSpan] = []
        position = 0
        for entry, pronunciation in zip(spoken, pronunciations, strict=True):
            first = spoken_phones[position]
            last = spoken_phones[position + len(pronunciation) - 1]
            word_spans.append(TimedSpan(label=_base_word(entry), start=first.start, end=last.end))
            position += len(pronunciation)
        return word_spans, phone_spans


def align(
    audio_16k: np.ndarray,
    text: str,
    *,
    aligner: ForcedAligner | None = None,
) -> tuple[tuple[TimedSpan, ...], tuple[TimedSpan, ...]]:
    """Align 16 kHz float32 speech to ``text``: ``(words, phones)``.

    Pass an ``aligner`` to reuse its decoder; otherwise one is created (and its model
    loaded) for this call.
    """
    return (aligner if aligner is not None else ForcedAligner()).align(audio_16k, text)


def _base_word(entry: str) -> str:
    """``"your(2)"`` -> ``"your"``; filler names lower-cased (``"<SIL>"`` -> ``"<sil>"``)."""
    base = _ALTERNATE_SUFFIX.sub("", entry)
    return base.lower() if base.startswith(("<", "[", "+")) else base


def _frames_span(label: str, start_frame: int, frame_count: int) -> TimedSpan:
    return TimedSpan(
        label=label,
        start=start_frame * FRAME_SECONDS,
        end=(start_frame + frame_count) * FRAME_SECONDS,
    )


def _clip_words(
    words: Sequence[TimedSpan], phones: Sequence[TimedSpan], duration: float
) -> list[TimedSpan]:
    """Words inside the audio and inside the span of the (non-silent) phones."""
    spoken = [phone for phone in phones if phone.label != SILENCE]
    first = spoken[0].start if spoken else 0.0
    last = spoken[-1].end if spoken else duration
    clipped: list[TimedSpan] = []
    for word in words:
        start = min(max(word.start, first), duration)
        end = min(max(word.end, start), last, duration)
        clipped.append(TimedSpan(label=word.label, start=start, end=max(end, start)))
    return clipped


def _trim_edge_silence(phones: list[TimedSpan], audio: np.ndarray) -> list[TimedSpan]:
    """Move the first/last spoken phone off quiet audio at the edges onto ``SIL``.

    The alignment search has no optional silence at the start, so a prompt that begins
    with a pause gets that pause inside its first phone. The edges of speech are where
    10 ms frames come within ``_EDGE_BELOW_SPEECH_DB`` of the loud frames' level.
    """
    frame = int(ALIGNMENT_SAMPLE_RATE * FRAME_SECONDS)
    count = len(audio) // frame
    spoken = [index for index, phone in enumerate(phones) if phone.label != SILENCE]
    if count == 0 or not spoken:
        return phones
    frames = audio[: count * frame].astype(np.float64).reshape(count, frame)
    level = 20.0 * np.log10(np.sqrt(np.mean(frames**2, axis=1)) + 1e-9)
    loud = np.flatnonzero(level > np.percentile(level, 95) - _EDGE_BELOW_SPEECH_DB)
    if len(loud) == 0:
        return phones
    duration = len(audio) / ALIGNMENT_SAMPLE_RATE
    onset = max(0.0, int(loud[0]) * FRAME_SECONDS - _EDGE_MARGIN_SECONDS)
    offset = min(duration, (int(loud[-1]) + 1) * FRAME_SECONDS + _EDGE_MARGIN_SECONDS)
    trimmed = list(phones)
    first = spoken[0]
    phone = trimmed[first]
    if phone.start < onset <= phone.end - _MIN_EDGE_PHONE_SECONDS:
        trimmed[first] = TimedSpan(label=phone.label, start=onset, end=phone.end)
        if first > 0:
            before = trimmed[first - 1]
            trimmed[first - 1] = TimedSpan(label=before.label, start=before.start, end=onset)
        else:
            trimmed.insert(0, TimedSpan(label=SILENCE, start=phone.start, end=onset))
            spoken = [index + 1 for index in spoken]
    last = spoken[-1]
    phone = trimmed[last]
    if phone.start + _MIN_EDGE_PHONE_SECONDS <= offset < phone.end:
        trimmed[last] = TimedSpan(label=phone.label, start=phone.start, end=offset)
        if last + 1 < len(trimmed):
            after = trimmed[last + 1]
            trimmed[last + 1] = TimedSpan(label=after.label, start=offset, end=after.end)
        else:
            trimmed.append(TimedSpan(label=SILENCE, start=offset, end=phone.end))
    return trimmed


def _fill_gaps(phones: Sequence[TimedSpan], duration: float) -> list[TimedSpan]:
    """Phones covering [0, duration): gaps become ``SIL``; the last phone ends at the end."""
    filled: list[TimedSpan] = []
    cursor = 0.0
    for span in sorted(phones, key=lambda span: span.start):
        start = min(max(span.start, cursor), duration)
        end = min(max(span.end, start), duration)
        if start > cursor:
            filled.append(TimedSpan(label=SILENCE, start=cursor, end=start))
        if end > start:
            filled.append(TimedSpan(label=span.label, start=start, end=end))
            cursor = end
    if cursor < duration:
        if filled and duration - cursor < FRAME_SECONDS:
            last = filled.pop()
            filled.append(TimedSpan(label=last.label, start=last.start, end=duration))
        else:
            filled.append(TimedSpan(label=SILENCE, start=cursor, end=duration))
    if not filled:
        filled.append(TimedSpan(label=SILENCE, start=0.0, end=duration))
    return merge_silences(filled)
