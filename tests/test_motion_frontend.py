"""The motion model's streaming audio front end: equals the offline windows for any chunking,
emits every frame exactly when ``delay_samples`` says, ends like the offline path."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pytest

from engine.audio import MelConfig, log_mel
from engine.frames import ENGINE_TIMELINE, Timeline
from engine.motion import MotionConfig, slice_mel
from engine.motion_frontend import FrontEndFrames, MotionFrontEnd

RATE = 16000
DEFAULT = MotionConfig(num_coefficients=4)
TOLERANCE = 1e-5


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    """Seeded audio-like mix: a gliding harmonic tone, a pure tone, noise bursts and silence,
    with a length that is not a multiple of the hop or of a video frame."""
    rng = np.random.default_rng(seed)
    count = int(seconds * RATE) + 237
    times = np.arange(count) / RATE
    pitch = 140.0 + 30.0 * np.sin(2 * np.pi * 0.7 * times)
    phase = 2 * np.pi * np.cumsum(pitch) / RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 10))
    envelope = 0.5 * (1 - np.cos(2 * np.pi * 3.0 * times))
    audio = 0.2 * voiced * envelope + 0.1 * np.sin(2 * np.pi * 1000.0 * times)
    for _ in range(4):  # noise bursts
        start = int(rng.integers(0, count - 1600))
        audio[start : start + 1600] += rng.normal(0.0, 0.2, 1600)
    audio[count // 3 : count // 3 + 4000] = 0.0  # a quarter second of silence
    audio[:300] = 0.0  # and a silent start
    return audio.astype(np.float32)


def _chunks(size: int | str, total: int, seed: int = 1) -> Iterable[int]:
    if size == "random":
        rng = np.random.default_rng(seed)
        while total > 0:
            step = min(int(rng.choice([0, 1, 2, 159, 161, 640, 1000, 3001])), total)
            yield step
            total -= step
        return
    assert isinstance(size, int)
    while total > 0:
        yield min(size, total)
        total -= size


def _stream(front: MotionFrontEnd, audio: np.ndarray, sizes: Iterable[int]) -> np.ndarray:
    """Push ``audio`` in chunks of ``sizes`` and finish; checks the frames are consecutive."""
    parts: list[FrontEndFrames] = []
    position = 0
    for size in sizes:
        parts.append(front.push(audio[position : position + size]))
        position += size
        assert front.buffered_mel_frames < front.window_frames  # bounded memory
    assert position == len(audio)
    parts.append(front.finish())
    expected_first = 0
    for part in parts:
        assert part.first_frame == expected_first
        assert part.windows.dtype == np.float32
        assert part.windows.shape[1:] == (front.window_frames, front.mel_config.num_mels)
        expected_first = part.stop_frame
    return np.concatenate([part.windows for part in parts])


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    return _signal(3.0)


@pytest.fixture(scope="module")
def offline(audio: np.ndarray) -> np.ndarray:
    return MotionFrontEnd(DEFAULT).offline_windows(audio)


def test_offline_windows_follow_the_window_convention(audio: np.ndarray) -> None:
    front = MotionFrontEnd(DEFAULT)
    windows = front.offline_windows(audio)
    frames = -(-len(audio) // 640)
    assert windows.shape == (frames, 52, 80)
    assert front.num_video_frames(len(audio)) == frames
    mel = log_mel(audio)
    for t in (0, 1, 10, frames - 1):
        expected = slice_mel(mel, 4 * t - 40, 4 * t + 12, silence=front.silence)
        np.testing.assert_array_equal(windows[t], expected)
    assert np.all(windows[0, :40] == np.float32(np.log(1e-5)))  # silence before the audio


@pytest.mark.parametrize("chunk", [1, 160, 333, 640, 7919, "random"])
def test_streaming_equals_offline(chunk: int | str, audio: np.ndarray, offline: np.ndarray) -> None:
    signal, reference = audio, offline
    if chunk == 1:  # 1-sample pushes: a shorter clip keeps the test fast
        signal = audio[: 16000 + 123]
        reference = MotionFrontEnd(DEFAULT).offline_windows(signal)
    front = MotionFrontEnd(DEFAULT)
    streamed = _stream(front, signal, _chunks(chunk, len(signal)))
    assert streamed.shape == reference.shape
    assert float(np.max(np.abs(streamed - reference))) < TOLERANCE
    assert front.frames_emitted == front.num_video_frames(len(signal))


def test_default_delay() -> None:
    front = MotionFrontEnd(DEFAULT)
    # look-ahead (8 hops) plus half a 25 ms window, less one hop: the window's last mel frame
    # is centred one hop before the end of the look-ahead.
    assert front.delay_samples == 8 * 160 + 200 - 160 == 1320
    assert front.samples_needed(0) == 640 + 1320
    assert front.samples_needed(3) == 4 * 640 + 1320


def test_the_frame_clock_comes_from_the_configs() -> None:
    # the defaults are the engine's clock; another rate or fps gives another clock
    assert MotionFrontEnd(DEFAULT).timeline == ENGINE_TIMELINE
    assert MotionFrontEnd(DEFAULT).samples_per_frame == ENGINE_TIMELINE.frame_samples
    slow = MotionConfig(num_coefficients=1, fps=20)
    front = MotionFrontEnd(slow, MelConfig(sample_rate=8000, fmax=4000.0))
    assert front.timeline == Timeline(8000, 400) and front.samples_per_frame == 400
    with pytest.raises(ValueError, match="whole number of samples"):
        DEFAULT.timeline(16010)


@pytest.mark.parametrize(
    ("motion", "mel"),
    [
        (DEFAULT, MelConfig()),
        (MotionConfig(num_coefficients=1, past_ms=200.0, lookahead_ms=0.0), MelConfig()),
        # a 10 ms mel window and no look-ahead: frames are ready before their span ends
        (
            MotionConfig(num_coefficients=1, past_ms=0.0, lookahead_ms=0.0),
            MelConfig(window_ms=10.0),
        ),
    ],
)
def test_frames_are_emitted_exactly_when_delay_samples_says(
    motion: MotionConfig, mel: MelConfig, audio: np.ndarray
) -> None:
    front = MotionFrontEnd(motion, mel)
    hop, half = mel.hop_length, mel.win_length // 2
    assert front.delay_samples == (motion.lookahead_frames - 1) * hop + half
    assert front.delay_samples > -hop
    signal = audio[:12000]
    reference = front.offline_windows(signal)
    position = 0
    t = 0
    while front.samples_needed(t) <= len(signal):
        needed = front.samples_needed(t)
        early = front.push(signal[position : needed - 1])  # one sample short
        position = needed - 1
        assert early.stop_frame == t, f"frame {t} emitted before sample {needed}"
        on_time = front.push(signal[position:needed])
        position = needed
        assert on_time.first_frame == t
        assert len(on_time) == 1, f"frame {t} not emitted at sample {needed}"
        assert float(np.max(np.abs(on_time.windows[0] - reference[t]))) < TOLERANCE
        t += 1
    assert t > 5
    rest = front.push(signal[position:])
    assert len(rest) == 0
    tail = front.finish()
    assert tail.first_frame == t
    assert tail.stop_frame == len(reference) == front.num_video_frames(len(signal))
    assert float(np.max(np.abs(tail.windows - reference[t:]))) < TOLERANCE


@pytest.mark.parametrize("samples", [0, 1, 159, 160, 639, 640, 641, 1320, 1960, 1961, 5000])
def test_finish_yields_the_offline_frame_count(samples: int, audio: np.ndarray) -> None:
    signal = audio[1000 : 1000 + samples]
    front = MotionFrontEnd(DEFAULT)
    reference = front.offline_windows(signal)
    assert len(reference) == -(-samples // 640) == front.num_video_frames(samples)
    streamed = _stream(front, signal, _chunks(333, samples))
    assert streamed.shape == reference.shape
    if samples:
        assert float(np.max(np.abs(streamed - reference))) < TOLERANCE
    again = front.finish()  # a second finish adds nothing
    assert len(again) == 0
    assert again.first_frame == len(reference)


def test_reset_starts_over_identically(audio: np.ndarray, offline: np.ndarray) -> None:
    front = MotionFrontEnd(DEFAULT)
    front.push(audio[:9000])
    front.reset()
    assert front.samples_received == 0
    assert front.frames_emitted == 0
    first = _stream(front, audio, _chunks(7919, len(audio)))
    assert front.finished
    with pytest.raises(RuntimeError, match="reset"):
        front.push(audio[:10])
    front.reset()
    second = _stream(front, audio, _chunks(640, len(audio)))
    np.testing.assert_array_equal(first, second)
    assert float(np.max(np.abs(first - offline))) < TOLERANCE


def test_bad_input_raises_value_error() -> None:
    front = MotionFrontEnd(DEFAULT)
    with pytest.raises(ValueError, match="float32"):
        front.push(np.zeros(100, np.float64))
    with pytest.raises(ValueError, match="float32"):
        front.push(np.zeros(100, np.int16))
    with pytest.raises(ValueError, match="1-D"):
        front.push(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        front.push(np.zeros((), np.float32))
    with pytest.raises(ValueError, match="numpy array"):
        front.push([0.0, 0.1])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="NaN"):
        front.push(np.array([0.0, np.nan], np.float32))
    with pytest.raises(ValueError, match="1-D"):
        front.offline_windows(np.zeros((2, 100), np.float32))
    assert front.samples_received == 0  # rejected chunks change nothing
    with pytest.raises(ValueError, match="mels"):
        MotionFrontEnd(MotionConfig(num_coefficients=1, num_mels=40))
    with pytest.raises(ValueError, match="hop"):
        MotionFrontEnd(
            MotionConfig(num_coefficients=1, mel_hop_ms=20.0, past_ms=400.0, lookahead_ms=80.0),
            MelConfig(),
        )
    with pytest.raises(ValueError, match="frame"):
        front.samples_needed(-1)
