"""StreamingResampler: any chunking reproduces engine.audio.resample, with a known delay."""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import numpy as np
import pytest
from scipy.signal import resample_poly

from engine.audio import resample
from engine.streaming_resample import StreamingResampler

RATES = [8000, 11025, 16000, 22050, 32000, 44100, 48000]
OUT = 16000


def _test_signal(rate: int, seconds: float, seed: int) -> np.ndarray:
    """Tones (one just under the lower Nyquist, one above 8 kHz when the input has it),
    noise bursts and a stretch of silence; non-zero at both ends."""
    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    times = np.arange(n) / rate
    near_nyquist = 0.97 * min(rate, OUT) / 2
    audio = 0.2 * np.sin(2 * np.pi * 220.0 * times + 0.3)
    audio += 0.1 * np.sin(2 * np.pi * 1234.5 * times)
    audio += 0.15 * np.sin(2 * np.pi * near_nyquist * times + 1.0)
    if rate > OUT:
        audio += 0.1 * np.sin(2 * np.pi * 0.45 * rate * times)  # must be filtered out
    for _ in range(4):
        start = int(rng.integers(0, n - n // 10))
        audio[start : start + n // 10] += rng.normal(0.0, 0.2, len(audio[start : start + n // 10]))
    silence = int(0.4 * n)
    audio[silence : silence + n // 8] = 0.0
    return audio.astype(np.float32)


@cache
def _case(rate: int, seconds: float) -> tuple[np.ndarray, np.ndarray]:
    audio = _test_signal(rate, seconds, seed=rate)
    audio.flags.writeable = False
    offline = resample(audio, rate, OUT)
    offline.flags.writeable = False
    return audio, offline


def _stream(audio: np.ndarray, rate: int, sizes: list[int]) -> tuple[np.ndarray, list[int]]:
    """Push ``audio`` in chunks of ``sizes`` (cycled), then flush; also the per-push counts."""
    streaming = StreamingResampler(rate, OUT)
    parts, counts, start, index, total = [], [], 0, 0, 0
    while start < len(audio):
        size = sizes[index % len(sizes)]
        parts.append(streaming.push(audio[start : start + size]))
        counts.append(len(parts[-1]))
        assert parts[-1].dtype == np.float32
        start, index, total = start + size, index + 1, total + counts[-1]
        assert streaming.samples_in == min(start, len(audio))
        assert streaming.samples_out == total
        assert streaming.buffered_samples < streaming.taps_per_branch
    parts.append(streaming.flush())
    assert streaming.samples_out == sum(len(part) for part in parts)
    return np.concatenate(parts), counts


def _random_sizes(seed: int) -> list[int]:
    rng = np.random.default_rng(seed)
    sizes = [int(size) for size in rng.integers(0, 3000, 200)]
    sizes[::7] = [0] * len(sizes[::7])
    sizes[3::11] = [1] * len(sizes[3::11])
    return sizes


@pytest.mark.parametrize("rate", RATES)
@pytest.mark.parametrize("chunk", [7, 160, 441, 960, 4096, "random"])
def test_streaming_equals_offline(rate: int, chunk: int | str) -> None:
    audio, offline = _case(rate, 1.05)
    sizes = _random_sizes(rate) if chunk == "random" else [int(chunk)]
    streamed, _ = _stream(audio, rate, sizes)
    assert len(offline) == math.ceil(len(audio) * Fraction(OUT, rate))
    assert streamed.shape == offline.shape
    assert np.max(np.abs(streamed - offline)) < 1e-6


@pytest.mark.parametrize("rate", RATES)
def test_one_sample_chunks_on_a_short_signal(rate: int) -> None:
    audio, offline = _case(rate, 0.04)
    streamed, counts = _stream(audio, rate, [1])
    assert streamed.shape == offline.shape
    assert np.max(np.abs(streamed - offline)) < 1e-6
    if rate != OUT:
        assert counts[0] == 0  # the first output waits for the filter's look-ahead


@pytest.mark.parametrize("rate", RATES)
def test_output_length_is_ceil_n_times_ratio(rate: int) -> None:
    rng = np.random.default_rng(1)
    for n in [0, 1, 2, 3, 5, 99, 441, 1001, 4801]:
        audio = rng.normal(0.0, 0.3, n).astype(np.float32)
        expected = math.ceil(n * Fraction(OUT, rate))
        streamed, _ = _stream(audio, rate, [97])
        assert len(streamed) == expected == len(resample(audio, rate, OUT))
        assert StreamingResampler(rate, OUT).output_length(n) == expected


@pytest.mark.parametrize("rate", RATES)
def test_delay_formula(rate: int) -> None:
    streaming = StreamingResampler(rate, OUT)
    ratio = Fraction(OUT, rate)
    up, down = ratio.numerator, ratio.denominator
    assert (streaming.up, streaming.down) == (up, down)
    assert (streaming.rate_in, streaming.rate_out) == (rate, OUT)
    half_len = 0 if rate == OUT else 10 * max(up, down)
    assert streaming.half_length == half_len
    assert streaming.delay_samples_out == half_len / down
    assert streaming.delay_samples_in == half_len / up
    assert streaming.delay_seconds == pytest.approx(half_len / down / OUT)
    if rate > OUT:
        assert streaming.delay_samples_out == 10  # 0.625 ms at 16 kHz
    delay = Fraction(half_len, down)
    for n in range(300):
        # Output n (at n / rate_out) waits for the input delay_samples_out output samples later.
        assert streaming.input_needed(n) == math.floor((n + delay) / ratio) + 1
        ready = streaming.outputs_ready(streaming.input_needed(n))
        assert ready >= n + 1
        assert streaming.outputs_ready(streaming.input_needed(n) - 1) <= n


@pytest.mark.parametrize("rate", RATES)
def test_each_output_is_emitted_when_its_last_input_arrives(rate: int) -> None:
    audio, _ = _case(rate, 0.04)
    streaming = StreamingResampler(rate, OUT)
    emitted_after: list[int] = []  # input samples received when output n was emitted
    for i in range(len(audio)):
        emitted_after += [i + 1] * len(streaming.push(audio[i : i + 1]))
        assert streaming.samples_out == streaming.outputs_ready(i + 1)
    assert emitted_after, "a 40 ms signal emits outputs before the flush"
    for n, received in enumerate(emitted_after):
        assert received == streaming.input_needed(n)


@pytest.mark.parametrize("rate", RATES)
def test_documented_delay_matches_the_offline_dependence(rate: int) -> None:
    """Offline output n depends on input input_needed(n) - 1 and on no later input, so
    streaming can emit it neither earlier nor later. One output per polyphase branch."""
    streaming = StreamingResampler(rate, OUT)
    up, down, half_len = streaming.up, streaming.down, streaming.half_length
    count = up + 20
    length = streaming.input_needed(count - 1) + 3
    # Column j: the offline resampling of an impulse at input j (what engine.audio.resample
    # computes: resample_poly in float64, trimmed to ceil(N * up / down)).
    impulses = resample_poly(np.eye(length), up, down, axis=0)[: math.ceil(length * up / down)]
    impulse = np.zeros(length, np.float32)
    impulse[length // 2] = 1.0
    np.testing.assert_allclose(resample(impulse, rate, OUT), impulses[:, length // 2], atol=1e-7)
    for n in range(count):
        last = streaming.input_needed(n) - 1
        first = max(0, -((half_len - n * down) // up))  # ceil((n * down - half_len) / up)
        support = np.flatnonzero(impulses[n])
        assert (support[0], support[-1]) == (first, last), n


def test_future_input_does_not_change_emitted_samples() -> None:
    rate = 44100
    audio, _ = _case(rate, 0.2)
    streaming = StreamingResampler(rate, OUT)
    prefix = 3001
    emitted = streaming.push(audio[:prefix])
    other = np.concatenate([audio[:prefix], -audio[prefix:]])
    assert len(emitted) == streaming.outputs_ready(prefix) > 0
    np.testing.assert_array_equal(emitted, resample(other, rate, OUT)[: len(emitted)])


def test_identity_passes_through_with_no_delay() -> None:
    audio, _ = _case(OUT, 0.1)
    streaming = StreamingResampler(OUT, OUT)
    assert streaming.delay_samples_out == 0.0
    for start in range(0, len(audio), 37):
        chunk = audio[start : start + 37]
        np.testing.assert_array_equal(streaming.push(chunk), chunk)
    assert len(streaming.flush()) == 0
    assert streaming.samples_out == streaming.samples_in == len(audio)


def test_reset_reproduces() -> None:
    rate = 22050
    audio, offline = _case(rate, 0.3)
    streaming = StreamingResampler(rate, OUT)
    first = np.concatenate([streaming.push(audio[:5000]), streaming.push(audio[5000:])])
    first = np.concatenate([first, streaming.flush()])
    assert len(streaming.flush()) == 0  # a second flush has nothing left
    streaming.reset()
    assert streaming.samples_in == streaming.samples_out == 0
    second = np.concatenate([streaming.push(audio[:777]), streaming.push(audio[777:])])
    second = np.concatenate([second, streaming.flush()])
    np.testing.assert_array_equal(first, second)
    assert np.max(np.abs(first - offline)) < 1e-6
    streaming.reset()
    streaming.push(np.ones(3000, np.float32))  # reset mid-stream forgets this
    streaming.reset()
    third = np.concatenate([streaming.push(audio), streaming.flush()])
    np.testing.assert_array_equal(first, third)


def test_float64_input_is_resampled_like_the_offline_function() -> None:
    rate = 48000
    audio = np.random.default_rng(2).normal(0.0, 0.3, 4000)
    streaming = StreamingResampler(rate, OUT)
    streamed = np.concatenate([streaming.push(audio), streaming.flush()])
    assert np.max(np.abs(streamed - resample(audio, rate, OUT))) < 1e-6


def test_bad_input_raises() -> None:
    for rate_in, rate_out in [(0, OUT), (-8000, OUT), (OUT, 0), (44100, -1)]:
        with pytest.raises(ValueError, match="positive"):
            StreamingResampler(rate_in, rate_out)
    with pytest.raises(TypeError):
        StreamingResampler(44100.0, OUT)  # type: ignore[arg-type]
    streaming = StreamingResampler(44100, OUT)
    with pytest.raises(ValueError, match="1-D"):
        streaming.push(np.zeros((2, 100), np.float32))
    with pytest.raises(ValueError, match="1-D"):
        streaming.push(np.float32(0.5))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="floating"):
        streaming.push(np.zeros(100, np.int16))
    for bad in (np.nan, np.inf, -np.inf):
        chunk = np.zeros(100, np.float32)
        chunk[50] = bad
        with pytest.raises(ValueError, match="NaN or infinite"):
            streaming.push(chunk)
    assert streaming.samples_in == 0  # rejected chunks leave no trace
    with pytest.raises(ValueError):
        streaming.input_needed(-1)
    streaming.push(np.zeros(100, np.float32))
    streaming.flush()
    with pytest.raises(RuntimeError, match="reset"):
        streaming.push(np.zeros(10, np.float32))
    streaming.reset()
    assert len(streaming.push(np.zeros(1000, np.float32))) > 0
