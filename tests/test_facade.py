"""AvatarEngine: audio in any chunking and rate -> the same frames; timing; reset; errors."""

from __future__ import annotations

import numpy as np
import pytest

from engine.audio import resample
from engine.errors import EngineError
from engine.frames import AVATAR_STYLE, SAMPLES_PER_FRAME, RenderedFrame, SpeakingStyle
from engine.speech.espeak import EspeakVoice
from tests.conftest import EngineParts, ShippedBackends

SECONDS = 1.6


@pytest.fixture(scope="module")
def parts(shipped_backends: ShippedBackends) -> EngineParts:
    """The shipped model on ONNX Runtime (built once), a 2 s idle loop of the avatar."""
    return shipped_backends.parts(avatar_seconds=2.0)


@pytest.fixture(scope="module")
def speech() -> tuple[np.ndarray, int]:
    utterance = EspeakVoice(voice="en-us+f3", rate_wpm=175).synthesize("Hello, how are you?")
    audio = np.asarray(utterance.audio, np.float32)[: int(SECONDS * utterance.sample_rate)]
    return audio, utterance.sample_rate


def _render(parts, audio: np.ndarray, rate: int, chunk_ms: float | None) -> list[RenderedFrame]:
    engine = parts.engine()
    frames: list[RenderedFrame] = []
    step = len(audio) if chunk_ms is None else max(1, round(rate * chunk_ms / 1000))
    for start in range(0, len(audio), step):
        engine.push_audio(audio[start : start + step], rate)
        frames.extend(engine.pull())
    engine.flush()
    frames.extend(engine.pull())
    return frames


def _max_difference(a: list[RenderedFrame], b: list[RenderedFrame]) -> int:
    assert [f.index for f in a] == [f.index for f in b]
    pairs = zip(a, b, strict=True)
    return max(int(np.abs(x.image.astype(int) - y.image.astype(int)).max()) for x, y in pairs)


def test_streaming_equals_offline_for_any_chunking(parts, speech) -> None:
    audio, rate = speech
    offline = _render(parts, audio, rate, None)
    expected_frames = int(np.ceil(np.ceil(len(audio) * 16000 / rate) / SAMPLES_PER_FRAME))
    assert len(offline) == expected_frames
    assert [f.index for f in offline] == list(range(expected_frames))
    assert offline[0].image.shape == (*parts.avatar.frame_size, 3)
    assert max(f.speaking for f in offline) == 1.0
    for chunk_ms in (10, 20, 37, 500):
        assert _max_difference(_render(parts, audio, rate, chunk_ms), offline) <= 1


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000])
def test_streaming_equals_offline_at_common_rates(parts, speech, rate) -> None:
    audio, source_rate = speech
    audio = resample(audio, source_rate, rate)
    assert _max_difference(_render(parts, audio, rate, 20), _render(parts, audio, rate, None)) <= 1


def test_silence_renders_the_idle_loop_with_the_mouth_at_rest(parts) -> None:
    avatar = parts.avatar
    engine = parts.engine()
    engine.push_audio(np.zeros(16000, np.float32), 16000)
    frames = engine.pull()
    assert frames and all(f.speaking == 0.0 for f in frames)
    # The loop plays back and forth: frame k and frame (2N - 2 - k) show the same picture.
    count = avatar.num_frames
    engine.push_audio(np.zeros(16000 * 3, np.float32), 16000)
    frames += engine.pull()
    by_index = {f.index: f.image for f in frames}
    assert np.array_equal(by_index[3], by_index[2 * count - 2 - 3])


def test_reset_drops_pending_frames_and_the_clock_moves_on(parts, speech) -> None:
    audio, rate = speech
    engine = parts.engine()
    engine.push_audio(audio[: rate // 2], rate)
    first = engine.pull()
    engine.push_audio(audio[rate // 2 :], rate)
    assert engine.frames_ready > 0
    engine.reset()
    assert engine.frames_ready == 0 and engine.pull() == []
    engine.push_audio(np.zeros(3200, np.float32), 16000)
    after = engine.pull()
    assert after[0].index == first[-1].index + 1


def test_yuv_output_and_bad_input(parts) -> None:
    avatar = parts.avatar
    engine = parts.engine(output="yuv420p")
    engine.push_audio((np.zeros(1600) * 32767).astype(np.int16), 16000)
    engine.flush()
    frame = engine.pull()[0]
    height, width = avatar.frame_size
    assert frame.image.shape == (height * 3 // 2, width) and frame.format == "yuv420p"
    with pytest.raises(EngineError, match="mono"):
        engine.push_audio(np.zeros((2, 100), np.float32), 16000)
    with pytest.raises(EngineError, match="NaN"):
        engine.push_audio(np.array([0.0, np.nan], np.float32), 16000)
    engine.push_audio(np.zeros(100, np.float32), 16000)
    with pytest.raises(EngineError, match="flush"):
        engine.push_audio(np.zeros(100, np.float32), 48000)
    assert engine.delay_samples > 0


def test_style_and_driver_hooks(parts, speech) -> None:
    audio, rate = speech
    baseline = _render(parts, audio, rate, None)
    engine = parts.engine()
    style_dim = parts.model.motion.config.style_dim
    engine.set_style(SpeakingStyle(code=np.full(style_dim, 0.5, np.float32)))
    engine.push_audio(audio, rate)
    engine.flush()
    styled = engine.pull()
    assert _max_difference(styled, baseline) > 5  # another style moves the mouth otherwise
    with pytest.raises(EngineError, match="style code"):
        engine.set_style(SpeakingStyle(code=np.zeros(3, np.float32)))

    # A driver that holds the face at the model's rest pose: speech no longer opens it.
    driven = parts.engine()
    rest = driven.rest
    driven.set_driver(lambda index: rest)
    driven.push_audio(audio, rate)
    driven.flush()
    held = driven.pull()
    idle = parts.engine()
    idle.push_audio(np.zeros_like(audio), rate)
    idle.flush()
    assert _max_difference(held, idle.pull()) <= 1
    driven.set_driver(None)
    driven.set_style(AVATAR_STYLE)  # back to the avatar's own style


def test_warm_idle_renders_the_rest_frames_the_stream_would(parts) -> None:
    silence = np.zeros(16000 * 3, np.float32)  # 75 frames: more than the 2 s loop
    cold = parts.engine()
    cold.push_audio(silence, 16000)
    cold_frames = cold.pull()
    warm = parts.engine()
    assert warm.warm_idle() == parts.avatar.num_frames
    assert warm.warm_idle() == 0  # kept
    warm.times.clear()
    warm.push_audio(silence, 16000)
    warm_frames = warm.pull()
    assert _max_difference(warm_frames, cold_frames) <= 1
    assert all(f.speaking == 0.0 for f in warm_frames)
    assert warm.times.seconds["generator"] == 0.0  # idle frames were all kept
    assert not warm_frames[0].image.flags.writeable  # shared between passes: read-only


def test_kept_encoder_features_change_no_pixel(parts, speech) -> None:
    """The encoder's feature maps, kept per loop frame, render the same frames as the
    encoder run with every frame (feature_cache_mb=0), for speech and at rest."""
    audio, rate = speech
    kept, each = parts.engine(), parts.engine(feature_cache_mb=0)
    assert kept.encode_loop() == parts.avatar.num_frames
    assert kept.encode_loop() == 0  # kept
    assert each.encode_loop() == 0  # nothing is kept
    frames = []
    for engine in (kept, each):
        engine.push_audio(audio, rate)
        engine.flush()
        frames.append(engine.pull())
    assert max(f.speaking for f in frames[0]) == 1.0
    assert _max_difference(*frames) == 0
    with pytest.raises(ValueError, match="feature_cache_mb"):
        parts.engine(feature_cache_mb=-1)
