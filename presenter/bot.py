"""The presenter bot: what other programs drive (``say``, ``interrupt``, ``status``).

Text is split at sentence boundaries and each sentence becomes its own TTS source, queued on
the stream at once and synthesised ahead (``prefetch``): the first words are spoken while
later sentences synthesise, and no sentence waits for its synthesis when its turn comes.
``interrupt`` drops everything queued and the avatar is at rest from the next frame.

Limits are checked before anything is queued; over one, :class:`ControlError` says which
(text length, queued sentences, voice, rate), and nothing changes.

Events (``events()``): speech started / word / speech ended / interrupted, each with the
stream sample (48 kHz) at which it is heard — not when it was synthesised. "speech started"
also lists the sentence's phones (``[ARPAbet label, first sample, end sample]``) on the same
clock. Voices: espeak-ng or Piper, by name (``engine.speech.voices``).
"""

from __future__ import annotations

import asyncio
import itertools
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.frames import AVATAR_STYLE, SpeakingStyle
from engine.speech.voices import DEFAULT_RATE_WPM, VoiceBook
from presenter.errors import USER_ERRORS, PresenterError
from presenter.media import OUTPUT_RATE, SegmentEnd, SegmentStart
from presenter.playback import Playback
from presenter.sources.tts import TtsSource
from presenter.stream import AvatarStream
from presenter.subscription import StreamClosed

# a stop (with its closing quotes or brackets) where the next sentence starts
_SENTENCE_END = re.compile(r"[.!?…][\"')\]]*(?=\s+[\"'(\[]?[A-Z0-9])")


class ControlError(PresenterError):
    """A control call was refused (bad input or over a limit); the message says why."""


@dataclass(frozen=True, kw_only=True)
class BotLimits:
    max_text_chars: int = 2000
    max_queued_sentences: int = 32
    min_rate_wpm: int = 80
    max_rate_wpm: int = 450
    max_reference_frames: int = 1500  # a style reference: 60 s of dynamics at 25 fps


def split_sentences(text: str) -> list[str]:
    """``text`` cut after . ! ? (and closing quotes) where the next sentence starts."""
    parts, start = [], 0
    for stop in _SENTENCE_END.finditer(text):
        parts.append(text[start : stop.end()])
        start = stop.end()
    parts.append(text[start:])
    return [part.strip() for part in parts if part.strip()]


@dataclass
class _Utterance:
    id: int
    text: str
    sentences: list[Playback]


class PresenterBot:
    """Speech for a running :class:`~presenter.stream.AvatarStream`, one utterance at a time
    in the order asked. ``make_tts(text, voice, rate)`` makes a source (default: espeak-ng)."""

    def __init__(
        self,
        stream: AvatarStream,
        *,
        voice: str = "en-us",
        limits: BotLimits | None = None,
        voices: VoiceBook | None = None,
        make_tts: Callable[[str, str, int], TtsSource] | None = None,
    ) -> None:
        self.stream = stream
        self.voice = voice
        self.limits = limits or BotLimits()
        # one book for every sentence: espeak-ng has one synthesizer per process (one handle
        # and its lock, so sentences synthesised ahead in threads never mix), a Piper voice
        # is loaded once
        self.voices = voices or VoiceBook()
        self._make_tts = make_tts or self._speak
        self._ids = itertools.count(1)
        self._utterances: list[_Utterance] = []
        self._playbacks: dict[int, tuple[_Utterance, TtsSource]] = {}
        self.style = "default"  # the speaking style last chosen (set_style)

    def _speak(self, text: str, voice: str, rate: int) -> TtsSource:
        return TtsSource(text, speaker=self.voices.speaker(voice, rate))

    # -- control calls ----------------------------------------------------------------------
    def say(self, text: object, *, voice: object = None, rate: object = None) -> int:
        """Queue ``text``; returns the utterance id its events carry. The arguments come from
        the network as they are: each is checked here."""
        if not isinstance(text, str) or not text.strip():
            raise ControlError("say needs a non-empty 'text'")
        if voice is not None and not isinstance(voice, str):
            raise ControlError(
                f"voice must be an espeak-ng voice (en-us) or piper[:NAME], got {voice!r}"
            )
        if len(text) > self.limits.max_text_chars:
            raise ControlError(
                f"text of {len(text)} characters is over the limit of {self.limits.max_text_chars}"
            )
        rate = DEFAULT_RATE_WPM if rate is None else rate
        if (
            not isinstance(rate, int)
            or isinstance(rate, bool)
            or not (self.limits.min_rate_wpm <= rate <= self.limits.max_rate_wpm)
        ):
            raise ControlError(
                f"rate must be {self.limits.min_rate_wpm}-{self.limits.max_rate_wpm} words "
                f"per minute, got {rate!r}"
            )
        sentences = split_sentences(text)
        self._prune()
        queued = self.queued_sentences
        if queued + len(sentences) > self.limits.max_queued_sentences:
            raise ControlError(
                f"the queue holds {queued} sentences; {len(sentences)} more would be over the "
                f"limit of {self.limits.max_queued_sentences} (interrupt, or wait)"
            )
        chosen = voice or self.voice
        try:
            sources = [self._make_tts(sentence, chosen, rate) for sentence in sentences]
        except USER_ERRORS as exc:  # e.g. an unknown voice
            raise ControlError(str(exc)) from exc
        utterance = _Utterance(next(self._ids), text, [])
        for source in sources:
            source.prefetch()
            playback = self.stream.say(source)
            utterance.sentences.append(playback)
            self._playbacks[playback.id] = (utterance, source)
        self._utterances.append(utterance)
        return utterance.id

    def interrupt(self) -> int:
        """Stop speaking now: returns the stream sample from which the avatar is at rest."""
        return self.stream.interrupt()

    async def set_style(self, style: object) -> str:
        """Change the speaking style (how the mouth and face move with the same speech):
        ``{"subject": name}`` (a style the model knows), ``{"code": [style_dim floats]}``,
        ``{"reference": [[K floats] per frame, ...]}`` (dynamics of a reference clip at 25
        fps, up to ``max_reference_frames``), or ``{}`` / None: the avatar's own style. It
        shows from the frames rendered after the call (within the stream delay). Returns
        the style's name."""
        chosen = self._speaking_style(style)
        try:
            name = await self.stream.run_on_engine(lambda engine: engine.set_style(chosen))
        except USER_ERRORS as exc:  # e.g. a subject the model does not know, a bad shape
            raise ControlError(str(exc)) from exc
        self.style = str(name)
        return self.style

    def _speaking_style(self, style: object) -> SpeakingStyle:
        """The speaking style for the engine, from a style as it came in."""
        if style is None:
            style = {}
        if not isinstance(style, dict):
            raise ControlError("a style is an object with 'subject', 'code' or 'reference'")
        unknown = set(style) - {"subject", "code", "reference"}
        if unknown or len(style) > 1:
            raise ControlError(
                "a style has one of 'subject', 'code' or 'reference' (or none: the avatar's "
                f"own), got {sorted(style)}"
            )
        if "subject" in style:
            subject = style["subject"]
            if not isinstance(subject, str) or not 0 < len(subject) <= 200:
                raise ControlError("'subject' must be the name of a style the model knows")
            return SpeakingStyle(subject=subject)
        for key, dims in (("code", 1), ("reference", 2)):
            if key in style:
                values = _finite_array(style[key], dims, key)
                if key == "reference" and len(values) > self.limits.max_reference_frames:
                    raise ControlError(
                        f"a reference of {len(values)} frames is over the limit of "
                        f"{self.limits.max_reference_frames}"
                    )
                if key == "reference":
                    return SpeakingStyle(reference=values)
                return SpeakingStyle(code=values)
        return AVATAR_STYLE

    @property
    def queued_sentences(self) -> int:
        return sum(not playback.done for u in self._utterances for playback in u.sentences)

    def status(self) -> dict[str, Any]:
        """The queue (the server adds the presenter's status: speaking, delay, viewers)."""
        self._prune()
        return {
            "queuedSentences": self.queued_sentences,
            "utterances": [u.id for u in self._utterances],
            "position": self.stream.position,
            "style": self.style,
        }

    # -- events -------------------------------------------------------------------------------
    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """Speech events as they are heard, until the stream closes: started / ended /
        interrupted when the stream releases them, each word when the stream releases its
        first sample (words after an interruption's rest point never come)."""
        subscription = self.stream.subscribe(audio=False, video=False)
        queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()
        ended: dict[int, int] = {}  # segment -> the sample where it ended
        timers: set[asyncio.Task[None]] = set()
        loop = asyncio.get_running_loop()

        async def release(segment: int, words: list[dict[str, Any]]) -> None:
            for word in words:
                await self.stream.clock.sleep_until(self.stream.release_time(word["pts"]))
                if word["pts"] >= ended.get(segment, word["pts"] + 1):
                    return
                queue.put_nowait(word)

        async def read() -> None:
            try:
                while True:
                    event = await subscription.next_event()
                    if isinstance(event, SegmentEnd):
                        ended[event.segment] = event.pts
                    now, words = self._describe(event)
                    for message in now:
                        queue.put_nowait(message)
                    if words:
                        timer = loop.create_task(release(event.segment, words))
                        timers.add(timer)
                        timer.add_done_callback(timers.discard)
            except StreamClosed:
                queue.put_nowait(None)

        reader = loop.create_task(read())
        try:
            while (message := await queue.get()) is not None:
                yield message
        finally:
            for task in (reader, *timers):
                task.cancel()
            subscription.close("events no longer read")

    def _describe(
        self, event: SegmentStart | SegmentEnd
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(messages now, word messages to release at their pts) for a stream event."""
        known = self._playbacks.get(event.segment)
        if known is None:
            kind = "started" if isinstance(event, SegmentStart) else "ended"
            other = {"type": "event", "event": f"speech {kind}", "name": event.name}
            return [{**other, "pts": event.pts}], []
        utterance, source = known
        base = {"utterance": utterance.id, "sentence": _index(utterance, event.segment)}
        if isinstance(event, SegmentStart):
            words: list[dict[str, Any]] = []
            started: dict[str, Any] = {"type": "event", "event": "speech started"}
            if source.utterance is not None:
                # every phone (ARPAbet, SIL for pauses) with the stream samples it covers
                started["phones"] = [
                    [
                        phone.label,
                        event.pts + round(phone.start * OUTPUT_RATE),
                        event.pts + round(phone.end * OUTPUT_RATE),
                    ]
                    for phone in source.utterance.phones
                ]
                words = [
                    {
                        "type": "event",
                        "event": "word",
                        "word": word.label,
                        "pts": event.pts + round(word.start * OUTPUT_RATE),
                        **base,
                    }
                    for word in source.utterance.words
                ]
            return [{**started, "pts": event.pts, **base}], words
        kind = "interrupted" if event.interrupted else "speech ended"
        message: dict[str, Any] = {"type": "event", "event": kind, "pts": event.pts, **base}
        if event.error:
            message["error"] = event.error
        return [message], []

    def _prune(self) -> None:
        """Forget utterances that are over (after their events went out)."""
        keep = []
        for utterance in self._utterances:
            if all(playback.done for playback in utterance.sentences):
                for playback in utterance.sentences:
                    self._playbacks.pop(playback.id, None)
            else:
                keep.append(utterance)
        self._utterances = keep


def _finite_array(values: object, dims: int, name: str) -> np.ndarray:
    """A JSON list (of lists) of numbers as a float32 array of ``dims`` dimensions."""
    shape = "a list of numbers" if dims == 1 else "a list of equal-length lists of numbers"
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ControlError(f"'{name}' must be {shape}") from exc
    if array.ndim != dims or not array.size or not (np.abs(array) < 1e6).all():
        raise ControlError(f"'{name}' must be {shape} (finite, below 1e6)")
    return array.astype(np.float32)


def _index(utterance: _Utterance, segment: int) -> int:
    return next((i for i, p in enumerate(utterance.sentences) if p.id == segment), -1)
