"""espeak-ng speech with phoneme timings, driven through ``libespeak-ng.so.1`` with ctypes.

The library is initialised for synchronous output with phoneme events named in IPA; a synth
callback collects the 16-bit samples and the events (phoneme events carry the sample
position where each phoneme starts, word events the position of the word in the text).

espeak-ng keeps a single synthesizer per process: voice, rate, pitch and the synth
callback are global to the library. ``EspeakLibrary`` is a handle on it that owns a lock;
every call that touches the synthesizer takes that lock and re-applies all the settings it
relies on, so voices sharing one handle can be used from any thread, and voices with
separate handles still never see each other's settings when used from the same thread.
Voices used concurrently from several threads must share one ``EspeakLibrary``
(``EspeakVoice(library=...)``).
"""

from __future__ import annotations

import ctypes
import logging
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import numpy as np

from engine.errors import EngineError
from engine.speech.ipa import IpaToArpabet, merge_silences, split_timed_phonemes
from engine.speech.phonemes import SILENCE
from engine.speech.utterance import TimedSpan, Utterance

logger = logging.getLogger(__name__)

LIBRARY_NAME: Final = "libespeak-ng.so.1"
DEFAULT_RATE_WPM: Final = 175  # words a minute: espeak-ng's own, and every voice's default
DEFAULT_PITCH_RANGE: Final = 50  # espeak-ng's own: the voice's intonation as it is (0: monotone)

# espeak_AUDIO_OUTPUT
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
# espeak_Initialize options
_INITIALIZE_PHONEME_EVENTS: Final = 0x0001
_INITIALIZE_PHONEME_IPA: Final = 0x0002
_INITIALIZE_DONT_EXIT: Final = 0x8000
# espeak_EVENT_TYPE
_EVENT_LIST_TERMINATED: Final = 0
_EVENT_WORD: Final = 1
_EVENT_PHONEME: Final = 7
# espeak_PARAMETER
_PARAMETER_RATE: Final = 1
_PARAMETER_PITCH: Final = 3
_PARAMETER_RANGE: Final = 4
# espeak_POSITION_TYPE, text flags, phoneme modes
_POSITION_CHARACTER: Final = 1
_CHARS_UTF8: Final = 1
_PHONEMES_IPA: Final = 0x02
_PHONEME_SEPARATOR: Final = "_"
# espeak_ERROR
_EE_OK: Final = 0

_SAMPLE_SCALE: Final = 1.0 / 32768.0
_TEXT_WORD = re.compile(r"[^\W_](?:[\w'’-]*[^\W_])?")
_VARIANT_PREFIX: Final = "!v/"


class _EventId(ctypes.Union):
    _fields_ = (
        ("number", ctypes.c_int),
        ("name", ctypes.c_char_p),
        ("string", ctypes.c_char * 8),
    )


class _Event(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    )


class _VoiceRecord(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    )


_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event)
)


@dataclass(frozen=True, kw_only=True)
class PhonemeEvent:
    """espeak-ng's report that phoneme ``name`` (IPA; empty for a pause) starts at ``sample``."""

    name: str
    sample: int


@dataclass(frozen=True, kw_only=True)
class WordEvent:
    """A word of the input text (``text_position`` is 0-based, in characters)."""

    sample: int
    text_position: int
    length: int


@dataclass(kw_only=True)
class RawSynthesis:
    """What one espeak-ng synthesis call produced: int16 samples and events in order."""

    samples: np.ndarray
    sample_rate: int
    events: list[PhonemeEvent | WordEvent] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class EspeakVoiceInfo:
    """A voice (``kind="voice"``, e.g. ``en-us``) or a variant to append as ``+name``."""

    name: str
    identifier: str
    language: str
    gender: str
    kind: str


@dataclass(kw_only=True)
class _Collector:
    chunks: list[np.ndarray] = field(default_factory=list)
    events: list[PhonemeEvent | WordEvent] = field(default_factory=list)
    sample_count: int = 0


def _library_missing(detail: str) -> EngineError:
    return EngineError(
        f"espeak-ng is not available ({detail}). Install the Debian package 'espeak-ng' "
        f"(sudo apt-get install espeak-ng), which provides {LIBRARY_NAME}."
    )


class EspeakLibrary:
    """A handle on the process-global espeak-ng synthesizer (see the module docstring)."""

    def __init__(self, *, library_name: str = LIBRARY_NAME, data_path: str | None = None) -> None:
        try:
            self._lib = ctypes.CDLL(library_name)
        except OSError as error:
            raise _library_missing(str(error)) from error
        self._bind_signatures()
        self.lock = threading.RLock()
        self._collector: _Collector | None = None
        # Kept on the instance: the C library holds only a raw pointer to it.
        self._callback = _SynthCallback(self._on_synth)
        with self.lock:
            sample_rate = self._lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS,
                0,
                data_path.encode() if data_path else None,
                _INITIALIZE_PHONEME_EVENTS | _INITIALIZE_PHONEME_IPA | _INITIALIZE_DONT_EXIT,
            )
        if sample_rate <= 0:
            raise _library_missing(
                "espeak_Initialize failed; its data directory (espeak-ng-data) may be missing"
            )
        self.sample_rate: int = sample_rate

    def _bind_signatures(self) -> None:
        lib = self._lib
        lib.espeak_Initialize.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int)
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = (_SynthCallback,)
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = (ctypes.c_char_p,)
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = (ctypes.c_int, ctypes.c_int, ctypes.c_int)
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = (
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        )
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = ()
        lib.espeak_Synchronize.restype = ctypes.c_int
        lib.espeak_ListVoices.argtypes = (ctypes.POINTER(_VoiceRecord),)
        lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_VoiceRecord))
        lib.espeak_TextToPhonemes.argtypes = (
            ctypes.POINTER(ctypes.c_void_p),
            ctypes.c_int,
            ctypes.c_int,
        )
        lib.espeak_TextToPhonemes.restype = ctypes.c_char_p

    def _on_synth(
        self,
        wav: ctypes._Pointer[ctypes.c_short],
        sample_count: int,
        events: ctypes._Pointer[_Event],
    ) -> int:
        collector = self._collector
        if collector is None:
            return 0
        if wav and sample_count > 0:
            chunk = np.ctypeslib.as_array(wav, shape=(sample_count,)).copy()
            collector.chunks.append(chunk)
            collector.sample_count += sample_count
        if events:
            index = 0
            while events[index].type != _EVENT_LIST_TERMINATED:
                event = events[index]
                if event.type == _EVENT_PHONEME:
                    raw_name = bytes(event.id.string).split(b"\0", 1)[0]
                    collector.events.append(
                        PhonemeEvent(
                            name=raw_name.decode("utf-8", errors="replace"), sample=event.sample
                        )
                    )
                elif event.type == _EVENT_WORD:
                    collector.events.append(
                        WordEvent(
                            sample=event.sample,
                            text_position=event.text_position - 1,
                            length=event.length,
                        )
                    )
                index += 1
        return 0

    def resolve_voice_name(self, voice: str) -> str:
        """The name espeak-ng accepts for ``voice`` (``"en-gb+f3"`` -> ``"gmw/en+f3"``).

        ``espeak_SetVoiceByName`` knows voice file names; a language name such as ``en-gb``
        whose voice file is named differently is looked up among the installed voices.
        """
        with self.lock:
            if self._lib.espeak_SetVoiceByName(voice.encode()) == _EE_OK:
                return voice
            base, plus, variant = voice.partition("+")
            for info in self.list_voices():
                if info.language.lower() == base.lower():
                    candidate = f"{info.identifier}{plus}{variant}"
                    if self._lib.espeak_SetVoiceByName(candidate.encode()) == _EE_OK:
                        return candidate
        raise EngineError(
            f"espeak-ng has no voice {voice!r}. Pick one of list_english_voices() "
            f"(e.g. 'en-us', 'en-gb', 'en-us+f3')."
        )

    def _select_voice(self, voice: str) -> None:
        status = self._lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK:
            raise EngineError(
                f"espeak-ng has no voice {voice!r}. Pick one of "
                f"list_english_voices() (e.g. 'en-us', 'en-gb', 'en-us+f3')."
            )

    def synthesize(
        self,
        text: str,
        *,
        voice: str,
        rate_wpm: int,
        pitch: int,
        pitch_range: int = DEFAULT_PITCH_RANGE,
    ) -> RawSynthesis:
        """Speak ``text``; returns all samples and phoneme/word events of the call."""
        encoded = text.encode("utf-8")
        buffer = ctypes.create_string_buffer(encoded)
        with self.lock:
            self._select_voice(voice)
            self._lib.espeak_SetParameter(_PARAMETER_RATE, rate_wpm, 0)
            self._lib.espeak_SetParameter(_PARAMETER_PITCH, pitch, 0)
            self._lib.espeak_SetParameter(_PARAMETER_RANGE, pitch_range, 0)
            self._lib.espeak_SetSynthCallback(self._callback)
            collector = _Collector()
            self._collector = collector
            try:
                status = self._lib.espeak_Synth(
                    ctypes.cast(buffer, ctypes.c_void_p),
                    len(encoded) + 1,
                    0,
                    _POSITION_CHARACTER,
                    0,
                    _CHARS_UTF8,
                    None,
                    None,
                )
                self._lib.espeak_Synchronize()
            finally:
                self._collector = None
        if status != _EE_OK:
            raise EngineError(f"espeak-ng could not synthesise the text (status {status}).")
        samples = (
            np.concatenate(collector.chunks) if collector.chunks else np.zeros(0, dtype=np.int16)
        )
        return RawSynthesis(
            samples=samples.astype(np.int16, copy=False),
            sample_rate=self.sample_rate,
            events=collector.events,
        )

    def text_to_ipa(self, text: str, *, voice: str) -> list[list[str]]:
        """IPA phonemes of ``text`` without synthesis: one list of phonemes per word.

        Stress marks stay on the phoneme they precede (``ˈɪ``).
        """
        encoded = ctypes.create_string_buffer(text.encode("utf-8"))
        text_pointer = ctypes.c_void_p(ctypes.cast(encoded, ctypes.c_void_p).value)
        phoneme_mode = _PHONEMES_IPA | (ord(_PHONEME_SEPARATOR) << 8)
        words: list[list[str]] = []
        with self.lock:
            self._select_voice(voice)
            while text_pointer.value:
                clause = self._lib.espeak_TextToPhonemes(
                    ctypes.byref(text_pointer), _CHARS_UTF8, phoneme_mode
                )
                if not clause:
                    break
                for word in clause.decode("utf-8", errors="replace").split():
                    phonemes = [phoneme for phoneme in word.split(_PHONEME_SEPARATOR) if phoneme]
                    if phonemes:
                        words.append(phonemes)
        return words

    def list_voices(self, *, variants: bool = False) -> list[EspeakVoiceInfo]:
        """Installed voices (languages/accents), or the voice variants when ``variants``."""
        # The voice spec and its language string must outlive the call.
        variant_language = ctypes.create_string_buffer(b"variant")
        variant_spec = _VoiceRecord()
        variant_spec.languages = ctypes.addressof(variant_language)
        spec = ctypes.pointer(variant_spec) if variants else None
        infos: list[EspeakVoiceInfo] = []
        with self.lock:
            records = self._lib.espeak_ListVoices(spec)
            index = 0
            while records and records[index]:
                record = records[index].contents
                identifier = (record.identifier or b"").decode("utf-8", errors="replace")
                language = ""
                if record.languages:
                    # A priority byte, then the first language name, NUL-terminated.
                    language = ctypes.string_at(record.languages + 1).decode(
                        "utf-8", errors="replace"
                    )
                is_variant = identifier.startswith(_VARIANT_PREFIX)
                if is_variant == variants:
                    infos.append(
                        EspeakVoiceInfo(
                            name=(
                                identifier.removeprefix(_VARIANT_PREFIX) if is_variant else language
                            ),
                            identifier=identifier,
                            language=language,
                            gender={1: "male", 2: "female"}.get(record.gender, "unspecified"),
                            kind="variant" if is_variant else "voice",
                        )
                    )
                index += 1
        return infos


def list_english_voices(*, library: EspeakLibrary | None = None) -> list[EspeakVoiceInfo]:
    """English voices (``en-us``, ``en-gb``, ...) followed by all variants (``f3``, ...).

    A variant is used by appending it to a voice name: ``"en-us+f3"``.
    """
    handle = library if library is not None else EspeakLibrary()
    voices = [info for info in handle.list_voices() if info.language.lower().startswith("en")]
    voices.sort(key=lambda info: info.name)
    variant_list = sorted(handle.list_voices(variants=True), key=lambda info: info.name.lower())
    return voices + variant_list


@dataclass(frozen=True, kw_only=True)
class EspeakVoiceConfig:
    """Voice name (``en-us``, ``en-gb``, ``en-us+f3``), speaking rate, pitch and pitch range
    (how far the intonation moves; 50 is the voice's own)."""

    voice: str = "en-us"
    rate_wpm: int = DEFAULT_RATE_WPM
    pitch: int = 50
    pitch_range: int = DEFAULT_PITCH_RANGE

    def __post_init__(self) -> None:
        if not 80 <= self.rate_wpm <= 450:
            raise EngineError(
                f"espeak-ng rate must be 80-450 words per minute, got {self.rate_wpm}"
            )
        if not 0 <= self.pitch <= 100:
            raise EngineError(f"espeak-ng pitch must be 0-100, got {self.pitch}")
        if not 0 <= self.pitch_range <= 100:
            raise EngineError(f"espeak-ng pitch range must be 0-100, got {self.pitch_range}")


class EspeakVoice:
    """espeak-ng text-to-speech returning ``Utterance`` s with ARPAbet phone timings.

    Phone spans start where espeak-ng's phoneme events say; audio before the first phoneme
    and espeak-ng's pauses (between clauses, at the end) are ``SIL`` spans.
    """

    def __init__(
        self,
        *,
        voice: str = "en-us",
        rate_wpm: int = DEFAULT_RATE_WPM,
        pitch: int = 50,
        pitch_range: int = DEFAULT_PITCH_RANGE,
        library: EspeakLibrary | None = None,
    ) -> None:
        self.config = EspeakVoiceConfig(
            voice=voice, rate_wpm=rate_wpm, pitch=pitch, pitch_range=pitch_range
        )
        self.library = library if library is not None else EspeakLibrary()
        self._converter = IpaToArpabet()
        # Fails early on an unknown voice name.
        self._library_voice_name = self.library.resolve_voice_name(voice)

    @property
    def sample_rate(self) -> int:
        return self.library.sample_rate

    @property
    def voice_id(self) -> str:
        config = self.config
        voice_id = f"espeak-ng:{config.voice}:rate{config.rate_wpm}:pitch{config.pitch}"
        if config.pitch_range != DEFAULT_PITCH_RANGE:
            voice_id += f":range{config.pitch_range}"
        return voice_id

    def synthesize(self, text: str) -> Utterance:
        """Speak ``text`` and return the audio with phone and word timings."""
        if not text.strip():
            raise EngineError("Nothing to say: the text for espeak-ng is empty.")
        config = self.config
        raw = self.library.synthesize(
            text,
            voice=self._library_voice_name,
            rate_wpm=config.rate_wpm,
            pitch=config.pitch,
            pitch_range=config.pitch_range,
        )
        audio = (raw.samples.astype(np.float32) * np.float32(_SAMPLE_SCALE)).astype(np.float32)
        phones, words = _timings_from_events(
            raw.events,
            text=text,
            total_samples=len(audio),
            sample_rate=raw.sample_rate,
            converter=self._converter,
        )
        return Utterance(
            audio=audio,
            sample_rate=raw.sample_rate,
            text=text,
            phones=tuple(phones),
            words=tuple(words),
            source="espeak",
            voice=self.voice_id,
        )

    def phonemize(self, text: str) -> list[list[str]]:
        """IPA phonemes per word for ``text`` with this voice (no audio)."""
        return self.library.text_to_ipa(text, voice=self._library_voice_name)


def _word_at(text: str, position: int) -> str:
    """The written word at or after ``position``.

    espeak-ng's word events give the word's character position, but after some punctuation
    the position lands on the space before the word and the length is wrong, so the word is
    taken from the text rather than cut by the reported length.
    """
    for match in _TEXT_WORD.finditer(text):
        if match.end() > position:
            return match.group()
    return ""


def _timings_from_events(
    events: Sequence[PhonemeEvent | WordEvent],
    *,
    text: str,
    total_samples: int,
    sample_rate: int,
    converter: IpaToArpabet,
) -> tuple[list[TimedSpan], list[TimedSpan]]:
    """Phone spans covering [0, end) and word spans from espeak-ng's events."""
    duration = total_samples / sample_rate
    # (start sample, IPA name, index of the word it belongs to or -1)
    starts: list[tuple[int, str, int]] = []
    word_labels: list[str] = []
    current_word = -1
    for event in events:
        if isinstance(event, WordEvent):
            word_labels.append(_word_at(text, event.text_position))
            current_word = len(word_labels) - 1
        else:
            sample = min(max(event.sample, 0), total_samples)
            if starts and sample < starts[-1][0]:
                sample = starts[-1][0]
            word = current_word if event.name else -1
            starts.append((sample, event.name, word))
    ipa_spans: list[TimedSpan] = []
    spellings: list[str] = []
    span_words: list[int] = []
    if not starts or starts[0][0] > 0:
        first = starts[0][0] if starts else total_samples
        ipa_spans.append(TimedSpan(label="", start=0.0, end=first / sample_rate))
        spellings.append("")
        span_words.append(-1)
    for index, (sample, name, word) in enumerate(starts):
        end_sample = starts[index + 1][0] if index + 1 < len(starts) else total_samples
        if end_sample <= sample:
            continue
        ipa_spans.append(
            TimedSpan(label=name, start=sample / sample_rate, end=end_sample / sample_rate)
        )
        spellings.append(word_labels[word] if word >= 0 else "")
        span_words.append(word)
    phones = split_timed_phonemes(ipa_spans, spellings=spellings, converter=converter)
    if phones:
        last = phones[-1]
        phones[-1] = TimedSpan(label=last.label, start=last.start, end=duration)
    else:
        phones = [TimedSpan(label=SILENCE, start=0.0, end=duration)]
    words: list[TimedSpan] = []
    for word_index, label in enumerate(word_labels):
        spans = [
            span
            for span, owner in zip(ipa_spans, span_words, strict=True)
            if owner == word_index and span.label
        ]
        if spans and label:
            words.append(TimedSpan(label=label, start=spans[0].start, end=spans[-1].end))
    return merge_silences(phones), words
