"""The motion model: window convention, config checks, shapes, style, ONNX parity, speed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.data.prep.dataset import mel_centre_index
from engine.motion import (
    MotionConfig,
    MotionModel,
    count_parameters,
    export_onnx,
    slice_mel,
)

K = 6
TINY = MotionConfig(
    num_coefficients=K, width=32, layers=2, heads=2, style_dim=16, style_hidden=24, dropout=0.0
)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: the per-frame setting the model is sized for (and tiny graphs
    only lose time to thread hand-offs)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _model(config: MotionConfig = TINY, seed: int = 0) -> MotionModel:
    torch.manual_seed(seed)
    model = MotionModel(config)
    generator = np.random.default_rng(seed)
    model.set_statistics(
        mel_mean=generator.normal(-6.0, 1.0, config.num_mels),
        mel_std=generator.uniform(2.0, 5.0, config.num_mels),
        coefficient_mean=generator.normal(0.0, 0.1, config.num_coefficients),
        coefficient_std=generator.uniform(0.05, 0.3, config.num_coefficients),
    )
    return model.eval()


def _mel(batch: int, frames: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 80, generator=generator) * 3.0 - 7.0


def _reference(batch: int, frames: int, seed: int = 2, scale: float = 0.2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, K, generator=generator) * scale


def test_window_convention_matches_the_dataset() -> None:
    config = MotionConfig(num_coefficients=K)
    assert (config.past_frames, config.mel_per_frame, config.lookahead_frames) == (40, 4, 8)
    assert config.window_frames == 52
    for frame in (0, 1, 7, 100):
        start = config.window_start(frame)
        assert start == 4 * frame - 40
        last = start + config.window_frames - 1
        assert last == 4 * frame + 11
        # The dataset's centre mel frame of video frame t sits right after the past context.
        assert mel_centre_index(frame) == start + config.past_frames + 2
    assert config.mel_range(3, 5) == (12 - 40, 12 - 40 + 52 + 16)
    # Frame t can be computed once mel frame 4 t + 11 exists.
    assert config.frames_ready(11) == 0
    assert config.frames_ready(12) == 1
    assert config.frames_ready(15) == 1
    assert config.frames_ready(16) == 2


def test_config_validation_and_round_trip() -> None:
    assert MotionConfig(num_coefficients=K, lookahead_ms=120.0).lookahead_frames == 12
    with pytest.raises(ValueError, match="lookahead_ms"):
        MotionConfig(num_coefficients=K, lookahead_ms=130.0)
    with pytest.raises(ValueError, match="past_ms"):
        MotionConfig(num_coefficients=K, past_ms=405.0)
    with pytest.raises(ValueError, match="heads"):
        MotionConfig(num_coefficients=K, width=30, heads=4)
    with pytest.raises(ValueError, match="num_coefficients"):
        MotionConfig(num_coefficients=0)
    config = MotionConfig(num_coefficients=K, past_ms=300.0, lookahead_ms=40.0, width=64)
    assert MotionConfig.from_dict(config.to_dict()) == config


def test_slice_mel_pads_with_silence() -> None:
    mel = np.arange(12, dtype=np.float32).reshape(6, 2)
    window = slice_mel(mel, -2, 3, silence=-11.5)
    assert window.shape == (5, 2)
    np.testing.assert_array_equal(window[:2], -11.5)
    np.testing.assert_array_equal(window[2:], mel[:3])
    tail = slice_mel(mel, 5, 8, silence=-11.5)
    np.testing.assert_array_equal(tail[0], mel[5])
    np.testing.assert_array_equal(tail[1:], -11.5)


def test_shapes_and_boundary_checks() -> None:
    model = _model()
    window = TINY.window_frames
    reference = _reference(3, 40)
    style = model.style(reference)
    assert style.shape == (3, TINY.style_dim)
    out = model.transformer(_mel(3, window), style)
    assert out.shape == (3, K)
    assert torch.isfinite(out).all()
    with pytest.raises(ValueError, match=r"mel window must have shape \(\*, 52, 80\)"):
        model.transformer(_mel(3, window - 1), style)
    with pytest.raises(ValueError, match="style must have shape"):
        model.transformer(_mel(3, window), style[:2])
    with pytest.raises(ValueError, match="reference dynamics"):
        model.style(torch.zeros(3, 40, K + 1))
    with pytest.raises(ValueError, match="reference mask"):
        model.style(reference, torch.ones(3, 39, dtype=torch.bool))
    with pytest.raises(ValueError, match="mel sequence"):
        model.transformer.forward_sequence(_mel(3, window + 2), style)
    with pytest.raises(ValueError, match="mel_mean"):
        model.set_statistics(
            mel_mean=np.zeros(79),
            mel_std=np.ones(80),
            coefficient_mean=np.zeros(K),
            coefficient_std=np.ones(K),
        )


def test_sequence_prediction_equals_frame_by_frame() -> None:
    model = _model()
    frames = 9
    mel = _mel(2, TINY.window_frames + TINY.mel_per_frame * (frames - 1))
    style = model.style(_reference(2, 30))
    with torch.no_grad():
        sequence = model.transformer.forward_sequence(mel, style)
        single = torch.stack(
            [
                model.transformer(mel[:, 4 * i : 4 * i + TINY.window_frames], style)
                for i in range(frames)
            ],
            dim=1,
        )
    assert sequence.shape == (2, frames, K)
    torch.testing.assert_close(sequence, single, atol=1e-5, rtol=1e-5)


def test_style_changes_the_output_and_ignores_masked_frames() -> None:
    model = _model()
    mel = _mel(1, TINY.window_frames)
    calm = _reference(1, 50, seed=3, scale=0.05)
    lively = _reference(1, 50, seed=4, scale=0.5)
    with torch.no_grad():
        out_calm = model(mel, calm)
        out_lively = model(mel, lively)
        assert float((out_calm - out_lively).abs().max()) > 1e-3
        assert torch.equal(model(mel, calm), out_calm)
        # Frames outside the mask do not change the style code.
        padded = torch.cat([calm, torch.full((1, 20, K), 9.0)], dim=1)
        mask = torch.zeros(1, 70, dtype=torch.bool)
        mask[:, :50] = True
        torch.testing.assert_close(
            model.style(padded, mask), model.style(calm), atol=1e-5, rtol=1e-5
        )


def test_onnx_export_matches_torch(tmp_path: Path) -> None:
    model = _model(MotionConfig(num_coefficients=K))
    path = export_onnx(model.transformer, tmp_path / "motion.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["mel", "style"]
    with torch.no_grad():
        for batch in (1, 4):
            mel = _mel(batch, model.config.window_frames, seed=batch)
            style = model.style(_reference(batch, 60, seed=batch + 10))
            expected = model.transformer(mel, style).numpy()
            (got,) = session.run(None, {"mel": mel.numpy(), "style": style.numpy()})
            assert got.shape == (batch, K)
            assert float(np.abs(got - expected).max()) < 1e-3


def test_default_model_is_small_enough_for_real_time() -> None:
    """Speed is measured by the benchmarks; here only the size that makes it possible."""
    model = _model(MotionConfig(num_coefficients=K))
    assert 300_000 < count_parameters(model) < 3_000_000
