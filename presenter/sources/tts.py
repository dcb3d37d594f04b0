"""Speech from text: any :class:`~engine.speech.voices.Speaker` (espeak-ng by default, Piper
neural voices with the ``piper`` extra; see ``engine.speech.voices``)."""

from __future__ import annotations

import asyncio

import numpy as np

from engine.speech.espeak import DEFAULT_RATE_WPM, EspeakLibrary, EspeakVoice
from engine.speech.utterance import Utterance
from engine.speech.voices import Speaker
from presenter.errors import PresenterError
from presenter.media import CHUNK_MS
from presenter.sources.base import WholeSignalSource


class TtsSource(WholeSignalSource):
    """``text`` spoken by ``speaker``, or else by an espeak-ng voice (``en-us``, ``en-gb``,
    ``en-us+f3``, ...).

    The voice is checked when the source is made (an unknown voice or a missing espeak-ng
    raises ``PresenterError`` there); the text is synthesised in a thread on the first
    read (or at ``prefetch()``). ``utterance`` then holds the audio with its phone and word
    timings.
    """

    def __init__(
        self,
        text: str,
        *,
        voice: str = "en-us",
        rate_wpm: int = DEFAULT_RATE_WPM,
        pitch: int = 50,
        library: EspeakLibrary | None = None,
        speaker: Speaker | None = None,
        chunk_ms: float = CHUNK_MS,
    ) -> None:
        if not text.strip():
            raise PresenterError("Nothing to say: the text is empty.")
        self.text = text
        super().__init__(f"tts:{text[:40]}", chunk_ms=chunk_ms)
        self.speaker: Speaker = speaker or EspeakVoice(
            voice=voice, rate_wpm=rate_wpm, pitch=pitch, library=library
        )
        self.utterance: Utterance | None = None

    @property
    def sample_rate(self) -> int:
        return self.speaker.sample_rate

    async def _load(self) -> tuple[np.ndarray, int]:
        utterance = await asyncio.to_thread(self.speaker.synthesize, self.text)
        if not self._closed:
            self.utterance = utterance
        return utterance.audio, utterance.sample_rate
