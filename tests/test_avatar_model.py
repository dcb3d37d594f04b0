"""The shipped default model: loads with nothing downloaded, is small, exports to ONNX."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.audio import MelConfig
from engine.avatar_model import (
    DEFAULT_MODEL,
    GENERATOR_FILE,
    MOTION_FILE,
    load_avatar_model,
    model_folder,
    shipped_model_names,
)
from engine.errors import EngineError
from engine.face3d import DynamicsBasis
from engine.face_crop import CropConfig
from engine.frames import ENGINE_TIMELINE
from engine.generator import export_onnx as export_generator
from engine.generator import save_generator
from engine.motion import export_onnx as export_motion

SUBJECT = "default-avatar"


def test_default_model_is_shipped_small_and_consistent() -> None:
    assert DEFAULT_MODEL in shipped_model_names()
    folder = model_folder()
    size = sum((folder / name).stat().st_size for name in (MOTION_FILE, GENERATOR_FILE))
    assert size <= 40 * 1024 * 1024
    model = load_avatar_model()
    assert SUBJECT in model.subjects
    assert model.style(SUBJECT).shape == (model.motion.config.style_dim,)
    assert not model.motion.model.training and not model.generator.generator.training
    training = model.generator.header["training"]
    assert training["dynamics_source"] == "predicted"  # the joint stage's output
    assert training["heldout_clips"] > 0


def test_the_model_answers_what_an_engine_asks() -> None:
    model = load_avatar_model()
    assert model.crop == CropConfig(**model.generator.header["training"]["crop"])
    assert model.motion.mel == MelConfig() and model.timeline == ENGINE_TIMELINE
    network = model.generator.generator
    # the blend mask is zero outside the support box, and not zero everywhere inside it
    top, bottom, left, right = model.support_box
    support = network.blend_support[0, 0].numpy()
    inside = np.zeros(support.shape, dtype=bool)
    inside[top:bottom, left:right] = True
    assert support[~inside].max() <= 1e-4 < support[inside].max()
    assert model.support_box is model.support_box  # worked out once
    size = model.generator.config.image_size
    crops = np.random.default_rng(0).random((2, 3, size, size), dtype=np.float32)
    expected = crops * (1.0 - network.hole.numpy())
    np.testing.assert_allclose(model.mask_lower_face(crops), expected, rtol=0, atol=1e-7)
    with torch.inference_mode():
        features = network.encode(torch.zeros(1, 3, size, size), torch.zeros(1, 3, size, size))
    assert model.feature_bytes == 4 * sum(f.numel() for f in features)


def test_unknown_model_names_what_is_shipped(tmp_path) -> None:
    with pytest.raises(EngineError, match=r"shipped: .*default"):
        model_folder("no-such-model")
    with pytest.raises(EngineError, match="no avatar model"):
        load_avatar_model(tmp_path)


def test_parts_trained_on_different_bases_are_refused(tmp_path) -> None:
    model = load_avatar_model()
    arrays = model.generator.basis.to_arrays()
    other = DynamicsBasis.from_arrays({**arrays, "mean": arrays["mean"] + 0.01})
    (tmp_path / MOTION_FILE).write_bytes((model.folder / MOTION_FILE).read_bytes())
    save_generator(
        tmp_path / GENERATOR_FILE,
        model.generator.generator,
        basis=other,
        identities=model.generator.identities,
        projections=model.generator.projections,
        training={},
    )
    with pytest.raises(EngineError, match="different dynamics bases"):
        load_avatar_model(tmp_path)


def test_trained_graphs_run_in_onnx_runtime_like_torch(tmp_path) -> None:
    model = load_avatar_model()
    rng = np.random.default_rng(0)
    config = model.motion.config
    transformer = model.motion.model.transformer
    mel = rng.normal(-4.0, 2.0, size=(3, config.window_frames, config.num_mels)).astype(np.float32)
    style = np.repeat(model.style(SUBJECT)[None], 3, axis=0)
    with torch.no_grad():
        expected = transformer(torch.from_numpy(mel), torch.from_numpy(style)).numpy()
    session = ort.InferenceSession(
        str(export_motion(transformer, tmp_path / "motion.onnx")),
        providers=["CPUExecutionProvider"],
    )
    (coefficients,) = session.run(None, {"mel": mel, "style": style})
    assert np.abs(coefficients - expected).max() < 1e-3

    generator = model.generator.generator
    size = generator.config.image_size
    mapper = model.generator.mapper(SUBJECT)
    inputs = {
        "masked_target": torch.rand(2, 3, size, size),
        "reference": torch.rand(2, 3, size, size),
        "geometry_map": torch.from_numpy(np.stack([mapper(row) for row in expected[:2]])),
        "coefficients": torch.from_numpy(expected[:2]),
    }
    with torch.no_grad():
        crop, mask = generator(*inputs.values())
    session = ort.InferenceSession(
        str(export_generator(generator, tmp_path / "generator.onnx")),
        providers=["CPUExecutionProvider"],
    )
    names = [i.name for i in session.get_inputs()]
    onnx_crop, onnx_mask = session.run(None, {n: inputs[n].numpy() for n in names})
    assert np.abs(onnx_crop - crop.numpy()).max() < 1e-3
    assert np.abs(onnx_mask - mask.numpy()).max() < 1e-3
