"""Flite speech with phone timings, driven through ``libflite.so.1`` with ctypes.

Flite (CMU's small synthesiser, Debian package ``flite``) is kept for evaluation: no
training source uses it. Its voices here are the three statistical parametric
(clustergen) voices that the package builds in: ``slt`` (US female), ``rms`` (US male) and
``awb`` (Scottish male). A clustergen voice predicts a duration for every phone and makes
the waveform frame by frame from those durations, so the ``end`` of each item of the
utterance's Segment relation is where that phone ends in the audio. (The diphone voices
``kal`` and ``kal16`` report target durations that their waveform does not follow: a
sentence's last phone ends 0.1 s after its audio. They are not offered.)

Phones are Flite's US English set: the ARPAbet phonemes in lower case, ``ax`` for the
schwa (``AH``) and ``pau`` for a pause. Words come from the Word relation, through each
word's syllables (SylStructure) to its first and last phone; a word is labelled with the
written token it was read from when that token made one word (``"fish,"`` -> ``fish``),
otherwise with its spoken form (``"25"`` -> ``twenty``, ``five``).

Flite registers voices once per process and keeps their settings as features of the
shared voice object. :class:`FliteLibrary` is a handle that loads each voice once and
holds a lock around every synthesis, which sets the voice's features it relies on first.
Flite ends the process on an internal error, so only features known to exist are read.
"""

from __future__ import annotations

import ctypes
import threading
from dataclasses import dataclass
from typing import Final

import numpy as np

from engine.errors import EngineError
from engine.speech.ipa import merge_silences
from engine.speech.phonemes import SILENCE, normalise_arpabet
from engine.speech.utterance import TimedSpan, Utterance

LIBRARY_NAME: Final = "libflite.so.1"
DEBIAN_PACKAGE: Final = "flite"
FLITE_VOICES: Final = ("slt", "rms", "awb")
_VOICE_LIBRARY: Final = "libflite_cmu_us_{}.so.1"
_VOICE_REGISTER: Final = "register_cmu_us_{}"
# Flite's phones that are not plain ARPAbet.
_PHONE_ALIASES: Final = {"ax": "AH", "pau": SILENCE}
_SAMPLE_SCALE: Final = 1.0 / 32768.0
_SLOWEST_STRETCH: Final = 2.0
_FASTEST_STRETCH: Final = 0.5


class _Wave(ctypes.Structure):
    _fields_ = (
        ("type", ctypes.c_char_p),
        ("sample_rate", ctypes.c_int),
        ("num_samples", ctypes.c_int),
        ("num_channels", ctypes.c_int),
        ("samples", ctypes.POINTER(ctypes.c_short)),
    )


class _Voice(ctypes.Structure):
    _fields_ = (
        ("name", ctypes.c_char_p),
        ("features", ctypes.c_void_p),
        ("ffunctions", ctypes.c_void_p),
    )


@dataclass(frozen=True, kw_only=True)
class FliteWord:
    """A word and the indices of its first and last phone among the segments."""

    label: str
    first: int
    last: int


@dataclass(frozen=True, kw_only=True)
class RawFliteSynthesis:
    """One synthesis: int16 samples, Flite's phones with their end times, the words."""

    samples: np.ndarray
    sample_rate: int
    segments: tuple[tuple[str, float], ...]
    words: tuple[FliteWord, ...]


def _library_missing(detail: str) -> EngineError:
    return EngineError(
        f"Flite is not available ({detail}). Install the Debian package '{DEBIAN_PACKAGE}' "
        f"(sudo apt-get install {DEBIAN_PACKAGE}), which provides {LIBRARY_NAME} and its "
        f"voices {', '.join(FLITE_VOICES)}."
    )


def flite_phone(name: str) -> str:
    """A Flite phone in the project's set: ``"ax"`` -> ``"AH"``, ``"pau"`` -> ``"SIL"``."""
    alias = _PHONE_ALIASES.get(name)
    if alias is not None:
        return alias
    try:
        return normalise_arpabet(name)
    except ValueError as error:
        raise EngineError(f"Flite gave a phone outside the ARPAbet set: {name!r}") from error


class FliteLibrary:
    """A handle on Flite and its voices (see the module docstring)."""

    def __init__(self, *, library_name: str = LIBRARY_NAME) -> None:
        try:
            self._lib = ctypes.CDLL(library_name)
        except OSError as error:
            raise _library_missing(str(error)) from error
        self._bind_signatures()
        self.lock = threading.Lock()
        self._lib.flite_init()
        # name -> (the voice's shared library, kept loaded; its voice; its sample rate)
        self._voices: dict[str, tuple[ctypes.CDLL, ctypes._Pointer[_Voice], int]] = {}

    def _bind_signatures(self) -> None:
        lib = self._lib
        pointer = ctypes.c_void_p
        lib.flite_init.restype = ctypes.c_int
        lib.flite_synth_text.argtypes = (ctypes.c_char_p, pointer)
        lib.flite_synth_text.restype = pointer
        lib.flite_feat_set_float.argtypes = (pointer, ctypes.c_char_p, ctypes.c_float)
        lib.flite_feat_set_float.restype = None
        lib.delete_utterance.argtypes = (pointer,)
        lib.delete_utterance.restype = None
        lib.utt_wave.argtypes = (pointer,)
        lib.utt_wave.restype = ctypes.POINTER(_Wave)
        lib.utt_relation.argtypes = (pointer, ctypes.c_char_p)
        lib.utt_relation.restype = pointer
        lib.relation_head.argtypes = (pointer,)
        lib.relation_head.restype = pointer
        for walk in ("item_next", "item_daughter", "item_last_daughter", "item_parent"):
            getattr(lib, walk).argtypes = (pointer,)
            getattr(lib, walk).restype = pointer
        lib.item_as.argtypes = (pointer, ctypes.c_char_p)
        lib.item_as.restype = pointer
        lib.item_feat_present.argtypes = (pointer, ctypes.c_char_p)
        lib.item_feat_present.restype = ctypes.c_int
        lib.item_feat_float.argtypes = (pointer, ctypes.c_char_p)
        lib.item_feat_float.restype = ctypes.c_float
        lib.item_feat_string.argtypes = (pointer, ctypes.c_char_p)
        lib.item_feat_string.restype = ctypes.c_char_p

    def _voice(self, name: str) -> tuple[ctypes._Pointer[_Voice], int]:
        """The voice called ``name`` (registered on first use) and its sample rate; call
        with the lock held."""
        if name not in FLITE_VOICES:
            raise EngineError(f"Flite has no voice {name!r} here; choose one of {FLITE_VOICES}")
        if name not in self._voices:
            try:
                library = ctypes.CDLL(_VOICE_LIBRARY.format(name))
            except OSError as error:
                raise _library_missing(str(error)) from error
            register = getattr(library, _VOICE_REGISTER.format(name))
            register.argtypes = (ctypes.c_void_p,)
            register.restype = ctypes.POINTER(_Voice)
            voice = register(None)
            if not voice:
                raise _library_missing(f"the voice {name} could not be registered")
            utterance = self._lib.flite_synth_text(b"a", ctypes.cast(voice, ctypes.c_void_p))
            try:
                sample_rate = int(self._lib.utt_wave(utterance).contents.sample_rate)
            finally:
                self._lib.delete_utterance(utterance)
            self._voices[name] = (library, voice, sample_rate)
        _, voice, sample_rate = self._voices[name]
        return voice, sample_rate

    def sample_rate(self, voice: str) -> int:
        with self.lock:
            return self._voice(voice)[1]

    def synthesize(self, text: str, *, voice: str, duration_stretch: float) -> RawFliteSynthesis:
        """Speak ``text`` with ``voice``; ``duration_stretch`` > 1 is slower."""
        encoded = text.encode("utf-8")
        with self.lock:
            handle, _ = self._voice(voice)
            self._lib.flite_feat_set_float(
                handle.contents.features, b"duration_stretch", duration_stretch
            )
            utterance = self._lib.flite_synth_text(encoded, ctypes.cast(handle, ctypes.c_void_p))
            if not utterance:
                raise EngineError(f"Flite could not synthesise {text!r}")
            try:
                wave = self._lib.utt_wave(utterance).contents
                count = int(wave.num_samples)
                samples = (
                    np.ctypeslib.as_array(wave.samples, shape=(count,)).copy()
                    if count > 0
                    else np.zeros(0, np.int16)
                )
                segments, addresses = self._segments(utterance)
                words = self._words(utterance, addresses)
                sample_rate = int(wave.sample_rate)
            finally:
                self._lib.delete_utterance(utterance)
        return RawFliteSynthesis(
            samples=samples.astype(np.int16, copy=False),
            sample_rate=sample_rate,
            segments=segments,
            words=words,
        )

    def _name(self, item: int) -> str:
        raw = self._lib.item_feat_string(item, b"name")
        return (raw or b"").decode("utf-8", errors="replace")

    def _segments(self, utterance: int) -> tuple[tuple[tuple[str, float], ...], dict[int, int]]:
        """(phone, end seconds) of the Segment relation, and each item's index by address."""
        segments: list[tuple[str, float]] = []
        addresses: dict[int, int] = {}
        item = self._lib.relation_head(self._lib.utt_relation(utterance, b"Segment"))
        while item:
            if not self._lib.item_feat_present(item, b"end"):
                raise EngineError("Flite gave a phone without an end time")
            addresses[item] = len(segments)
            segments.append((self._name(item), float(self._lib.item_feat_float(item, b"end"))))
            item = self._lib.item_next(item)
        return tuple(segments), addresses

    def _words(self, utterance: int, addresses: dict[int, int]) -> tuple[FliteWord, ...]:
        lib = self._lib
        words: list[FliteWord] = []
        word = lib.relation_head(lib.utt_relation(utterance, b"Word"))
        while word:
            structure = lib.item_as(word, b"SylStructure")
            first_syllable = lib.item_daughter(structure) if structure else None
            last_syllable = lib.item_last_daughter(structure) if structure else None
            first = lib.item_daughter(first_syllable) if first_syllable else None
            last = lib.item_last_daughter(last_syllable) if last_syllable else None
            if first and last:
                first_index = addresses.get(lib.item_as(first, b"Segment") or 0)
                last_index = addresses.get(lib.item_as(last, b"Segment") or 0)
                if first_index is not None and last_index is not None:
                    words.append(
                        FliteWord(label=self._word_label(word), first=first_index, last=last_index)
                    )
            word = lib.item_next(word)
        return tuple(words)

    def _word_label(self, word: int) -> str:
        """The written token when it made this one word, else the word as spoken."""
        lib = self._lib
        in_token = lib.item_as(word, b"Token")
        token = lib.item_parent(in_token) if in_token else None
        if token:
            daughter = lib.item_daughter(token)
            if daughter and not lib.item_next(daughter):
                written = self._name(token)
                if written:
                    return written
        return self._name(word)


@dataclass(frozen=True, kw_only=True)
class FliteVoiceConfig:
    """Which Flite voice and how slowly it speaks (``duration_stretch`` > 1 is slower)."""

    voice: str = "slt"
    duration_stretch: float = 1.0

    def __post_init__(self) -> None:
        if self.voice not in FLITE_VOICES:
            raise EngineError(
                f"Flite has no voice {self.voice!r} here; choose one of {FLITE_VOICES}"
            )
        if not _FASTEST_STRETCH <= self.duration_stretch <= _SLOWEST_STRETCH:
            raise EngineError(
                f"Flite duration_stretch must be {_FASTEST_STRETCH}-{_SLOWEST_STRETCH}, "
                f"got {self.duration_stretch}"
            )


class FliteVoice:
    """Flite text-to-speech returning ``Utterance`` s with ARPAbet phone timings.

    Phones follow each other without gaps from 0 to the end of the audio (Flite's pauses
    are ``SIL``); the last one ends with the audio.
    """

    def __init__(
        self,
        *,
        voice: str = "slt",
        duration_stretch: float = 1.0,
        library: FliteLibrary | None = None,
    ) -> None:
        self.config = FliteVoiceConfig(voice=voice, duration_stretch=duration_stretch)
        self.library = library if library is not None else FliteLibrary()
        self._sample_rate = self.library.sample_rate(voice)  # fails early without the voice

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def voice_id(self) -> str:
        config = self.config
        return f"flite:{config.voice}:stretch{config.duration_stretch:.2f}"

    def synthesize(self, text: str) -> Utterance:
        """Speak ``text`` and return the audio with phone and word timings."""
        if not text.strip():
            raise EngineError("Nothing to say: the text for Flite is empty.")
        raw = self.library.synthesize(
            text, voice=self.config.voice, duration_stretch=self.config.duration_stretch
        )
        audio = (raw.samples.astype(np.float32) * np.float32(_SAMPLE_SCALE)).astype(np.float32)
        duration = len(audio) / raw.sample_rate
        phones = _phone_spans(raw.segments, duration)
        words = tuple(
            TimedSpan(
                label=word.label,
                start=_segment_start(raw.segments, word.first, duration),
                end=min(raw.segments[word.last][1], duration),
            )
            for word in raw.words
        )
        return Utterance(
            audio=audio,
            sample_rate=raw.sample_rate,
            text=text,
            phones=tuple(phones),
            words=words,
            source="flite",
            voice=self.voice_id,
        )


def _segment_start(segments: tuple[tuple[str, float], ...], index: int, duration: float) -> float:
    """Where segment ``index`` starts: the end of the one before it (0 for the first)."""
    return min(segments[index - 1][1], duration) if index > 0 else 0.0


def _phone_spans(segments: tuple[tuple[str, float], ...], duration: float) -> list[TimedSpan]:
    """Contiguous phone spans over [0, duration) from Flite's (phone, end) segments."""
    spans: list[TimedSpan] = []
    start = 0.0
    for name, end in segments:
        stop = min(max(end, start), duration)
        if stop > start:
            spans.append(TimedSpan(label=flite_phone(name), start=start, end=stop))
            start = stop
    if not spans:
        return [TimedSpan(label=SILENCE, start=0.0, end=duration)]
    last = spans[-1]
    if start < duration:  # the audio runs on past the last phone's end: it is that phone's
        spans[-1] = TimedSpan(label=last.label, start=last.start, end=duration)
    return merge_silences(spans)
