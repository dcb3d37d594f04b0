"""Audio sources: file, text-to-speech, in-memory PCM, microphone (real and a stand-in)."""

from __future__ import annotations

import asyncio
import sys
import threading
import wave
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from engine.audio import resample
from engine.errors import EngineError
from presenter.clock import VirtualClock
from presenter.errors import PresenterError
from presenter.media import OUTPUT_RATE, AudioChunk
from presenter.sources import ArraySource, AudioSource, FileSource, MicrophoneSource, TtsSource
from presenter.stream import AvatarStream
from tests.stream_doubles import FakeEngine, Recorder


async def _collect(source: AudioSource) -> list[AudioChunk]:
    return [chunk async for chunk in source]


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture
def wav(tmp_path: Path) -> tuple[Path, np.ndarray, int]:
    rate = 22050
    t = np.arange(int(0.5 * rate)) / rate
    samples = np.round(12000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    path = tmp_path / "tone.wav"
    _write_wav(path, samples, rate)
    return path, samples.astype(np.float32) / 32768.0, rate


def test_file_source_reads_a_wav_in_20_ms_chunks(wav) -> None:
    path, expected, rate = wav
    source = FileSource(path)
    assert isinstance(source, AudioSource)
    chunks = asyncio.run(_collect(source))
    assert source.sample_rate == rate and all(c.sample_rate == rate for c in chunks)
    assert [c.samples for c in chunks[:-1]] == [441] * (len(chunks) - 1)
    assert [c.pts for c in chunks] == [i * 441 for i in range(len(chunks))]
    np.testing.assert_allclose(np.concatenate([c.pcm for c in chunks]), expected, atol=1e-4)
    with pytest.raises(PresenterError, match="does not exist"):
        FileSource(path.with_name("missing.wav"))

    async def closed_early() -> list[AudioChunk]:
        source = FileSource(path)
        first = await anext(source)
        source.close()
        return [first, *[chunk async for chunk in source]]

    assert len(asyncio.run(closed_early())) == 1


def test_a_file_plays_through_the_stream_unchanged(wav) -> None:
    path, expected, rate = wav

    async def main() -> None:
        clock = VirtualClock(auto_advance=True)
        async with AvatarStream(FakeEngine(), clock=clock) as stream:
            recorder = Recorder(stream.subscribe(video_queue_ms=60_000), clock).start()
            playback = stream.say(FileSource(path))
            end = await asyncio.wait_for(playback.wait(), timeout=30)
            await recorder.until(lambda r: len(r.events) == 2)
            assert playback.start_pts is not None
            played = recorder.pcm[playback.start_pts : end.pts]
            np.testing.assert_allclose(played, resample(expected, rate, OUTPUT_RATE), atol=1e-4)
            await recorder.stop()

    asyncio.run(main())


def test_tts_source_speaks_the_text() -> None:
    source = TtsSource("Hello there.", voice="en-us")
    chunks = asyncio.run(_collect(source))
    utterance = source.utterance
    assert utterance is not None and [w.label for w in utterance.words] == ["Hello", "there"]
    assert all(c.sample_rate == utterance.sample_rate == source.sample_rate for c in chunks)
    np.testing.assert_array_equal(np.concatenate([c.pcm for c in chunks]), utterance.audio)
    assert chunks[1].pts == chunks[0].samples == round(source.sample_rate * 0.02)
    with pytest.raises(PresenterError, match="empty"):
        TtsSource("   ")
    with pytest.raises(EngineError, match="no voice"):
        TtsSource("Hello.", voice="xx-nonexistent")


def test_array_source_takes_int16() -> None:
    pcm = (np.arange(1000) - 500).astype(np.int16)
    chunks = asyncio.run(_collect(ArraySource(pcm, 16000)))
    assert [c.samples for c in chunks] == [320, 320, 320, 40]
    np.testing.assert_array_equal(np.concatenate([c.pcm for c in chunks]), pcm / 32768.0)
    with pytest.raises(ValueError, match="mono"):
        ArraySource(np.zeros((2, 10), np.float32), 16000)


def _has_input_device() -> bool:
    try:
        import sounddevice
    except (ImportError, OSError):
        return False
    return any(device["max_input_channels"] > 0 for device in sounddevice.query_devices())


@pytest.mark.skipif(_has_input_device(), reason="this machine has a real input device")
def test_microphone_without_an_input_device_gives_a_one_line_error() -> None:
    with pytest.raises(PresenterError) as caught:
        MicrophoneSource()
    message = str(caught.value)
    assert "\n" not in message
    assert "no audio input device" in message or "sounddevice/PortAudio" in message


class _FakeInputStream:
    def __init__(self, **kwargs: Any) -> None:
        self.kwargs = kwargs
        self.started = self.stopped = self.closed = False
        _FakeInputStream.last = self

    last: _FakeInputStream | None = None

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


def _fake_sounddevice(devices: list[dict[str, Any]], default_input: int = -1) -> Any:
    return SimpleNamespace(
        query_devices=lambda: devices,
        default=SimpleNamespace(device=[default_input, -1]),
        InputStream=_FakeInputStream,
    )


SPEAKERS = {"name": "Speakers", "max_input_channels": 0, "max_output_channels": 2}
HEADSET = {
    "name": "USB Headset",
    "max_input_channels": 1,
    "max_output_channels": 2,
    "default_samplerate": 16000.0,
}


def test_microphone_errors_name_the_devices_that_exist(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice([SPEAKERS]))
    with pytest.raises(
        PresenterError, match=r"no audio input device .*0 'Speakers' \(0 in, 2 out\)"
    ):
        MicrophoneSource()
    with pytest.raises(PresenterError, match="has no input channels"):
        MicrophoneSource(0)
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice([]))
    with pytest.raises(PresenterError, match="no audio devices at all"):
        MicrophoneSource()
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice([SPEAKERS, HEADSET]))
    with pytest.raises(PresenterError, match=r"named 'webcam'.*1 'USB Headset'"):
        MicrophoneSource("webcam")
    assert MicrophoneSource("usb").device == 1
    assert MicrophoneSource().device == 1


def test_microphone_blocks_cross_from_the_audio_thread_into_a_bounded_queue(monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "sounddevice", _fake_sounddevice([SPEAKERS, HEADSET], 1))

    async def main() -> None:
        mic = MicrophoneSource(queue_ms=100)  # 5 blocks of 20 ms
        assert mic.sample_rate == 16000 and mic.block_samples == 320
        first = asyncio.ensure_future(anext(mic))
        await asyncio.sleep(0)
        stream = _FakeInputStream.last
        assert stream is not None and stream.started
        assert stream.kwargs["device"] == 1 and stream.kwargs["channels"] == 1

        def audio_thread(blocks: range) -> None:
            for value in blocks:
                block = np.full((320, 1), value / 100, np.float32)
                stream.kwargs["callback"](block, 320, None, None)

        thread = threading.Thread(target=audio_thread, args=(range(1, 9),))
        thread.start()
        thread.join()
        # Eight blocks arrive before the consumer runs: the queue keeps the newest five.
        chunk = await asyncio.wait_for(first, timeout=10)
        rest = [await anext(mic) for _ in range(4)]
        assert mic.overflows == 3
        assert [c.pts for c in [chunk, *rest]] == [320 * i for i in range(3, 8)]
        assert [c.pcm[0] for c in [chunk, *rest]] == pytest.approx([0.04, 0.05, 0.06, 0.07, 0.08])
        thread = threading.Thread(target=audio_thread, args=(range(9, 10),))
        thread.start()
        thread.join()
        assert (await asyncio.wait_for(anext(mic), timeout=10)).pts == 320 * 8
        mic.close()
        assert stream.stopped and stream.closed
        with pytest.raises(StopAsyncIteration):
            await anext(mic)

    asyncio.run(main())
