"""The avatar generator network, its geometry map and its ONNX export."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from engine.data.prep.dataset import TRACK_NAME, clip_dir, read_basis, read_header, read_track
from engine.face3d import LIPS_INNER
from engine.generator import (
    ONNX_INPUTS,
    AvatarGenerator,
    GeneratorConfig,
    composite,
    export_onnx,
    lower_face_region,
    mask_lower_face,
)
from engine.generator_parts import (
    GeneratorEncoder,
    GeneratorSynthesis,
    feature_bytes,
    feature_shapes,
)
from engine.geometry_map import CropProjection, GeometryMapper, GeometryRasteriser
from engine.modulated_conv import ModulatedConv2d
from engine.train.crop_projections import fit_subject_projections

TINY = GeneratorConfig(
    image_size=32,
    min_resolution=8,
    channel_base=128,
    channel_min=8,
    channel_max=16,
    style_dim=16,
    num_coefficients=5,
    mapping_layers=2,
)


def _inputs(config: GeneratorConfig, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    generator = torch.Generator().manual_seed(seed)
    size = config.image_size
    target = torch.rand(batch, 3, size, size, generator=generator)
    return (
        mask_lower_face(target, config),
        torch.rand(batch, 3, size, size, generator=generator),
        torch.rand(batch, config.geometry_channels, size, size, generator=generator),
        torch.randn(batch, config.num_coefficients, generator=generator),
    )


@pytest.mark.parametrize(("kernel", "demodulate"), [(3, True), (1, False), (5, True)])
def test_modulated_conv_export_form_matches_grouped_reference(kernel, demodulate):
    torch.manual_seed(1)
    conv = ModulatedConv2d(
        in_channels=7, out_channels=5, kernel_size=kernel, style_dim=12, demodulate=demodulate
    )
    with torch.no_grad():
        conv.bias.normal_()
    x = torch.randn(3, 7, 9, 11, requires_grad=True)
    w = torch.randn(3, 12)
    styles = conv.styles(w)
    exported = conv.forward_export(x, styles)
    reference = conv.forward_reference(x, styles)
    assert exported.shape == (3, 5, 9, 11)
    assert torch.allclose(exported, reference, atol=1e-5, rtol=1e-5)
    # Different styles per sample must give different results (the styles do something).
    assert not torch.allclose(exported[0], conv.forward_export(x, styles.roll(1, 0))[0])
    grad_export = torch.autograd.grad(exported.square().sum(), [x, conv.weight])
    grad_reference = torch.autograd.grad(reference.square().sum(), [x, conv.weight])
    for a, b in zip(grad_export, grad_reference, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-4)


def test_whole_generator_same_in_both_modulation_forms():
    torch.manual_seed(2)
    generator = AvatarGenerator(TINY).eval()
    inputs = _inputs(TINY, 2)
    with torch.no_grad():
        crop, mask = generator(*inputs)
        generator.set_modulation_impl("reference")
        crop_ref, mask_ref = generator(*inputs)
    assert torch.allclose(crop, crop_ref, atol=1e-5)
    assert torch.allclose(mask, mask_ref, atol=1e-6)


def test_encoder_and_synthesis_parts_are_the_whole_generator():
    """synthesis(encoder(images), geometry, coefficients) is the forward, bit for bit; the
    parts are views (the generator's own parameters) with their feature shapes."""
    torch.manual_seed(3)
    generator = AvatarGenerator(TINY).eval()
    masked, reference, geometry, coefficients = _inputs(TINY, 2)
    encoder, synthesis = GeneratorEncoder(generator), GeneratorSynthesis(generator)
    with torch.no_grad():
        crop, mask = generator(masked, reference, geometry, coefficients)
        features = encoder(masked, reference)
        parts_crop, parts_mask = synthesis(*features, geometry, coefficients)
    assert [tuple(f.shape[1:]) for f in features] == list(feature_shapes(TINY))
    assert feature_bytes(TINY) == 4 * sum(f[0].numel() for f in features)
    assert torch.equal(crop, parts_crop)
    assert torch.equal(mask, parts_mask)
    assert next(encoder.parameters()) is next(generator.parameters())
    with pytest.raises(ValueError, match="inputs"):
        synthesis(*features, geometry)


def test_config_validation_and_round_trip():
    config = GeneratorConfig()
    assert config.image_size == 128
    assert config.resolutions == (8, 16, 32, 64, 128)
    assert GeneratorConfig.from_dict(config.to_dict()) == config
    assert GeneratorConfig(image_size=96, min_resolution=6).resolutions == (6, 12, 24, 48, 96)
    with pytest.raises(ValueError, match="image_size"):
        GeneratorConfig(image_size=100)
    with pytest.raises(ValueError, match="image_size"):
        GeneratorConfig(image_size=8, min_resolution=8)
    with pytest.raises(ValueError, match="mask_top"):
        GeneratorConfig(mask_top=0.9, mask_bottom=0.5)
    with pytest.raises(ValueError, match="mask_feather"):
        GeneratorConfig(mask_feather=0.0)
    with pytest.raises(ValueError, match="unknown"):
        GeneratorConfig.from_dict({**config.to_dict(), "colour": 3})
    with pytest.raises(TypeError):
        GeneratorConfig(128)  # type: ignore[call-arg]


def test_shapes_are_checked_at_the_boundary():
    generator = AvatarGenerator(TINY)
    masked, reference, geometry, coefficients = _inputs(TINY, 2)
    crop, mask = generator(masked, reference, geometry, coefficients)
    assert crop.shape == (2, 3, 32, 32)
    assert mask.shape == (2, 1, 32, 32)
    with pytest.raises(ValueError, match="reference"):
        generator(masked, reference[:1], geometry, coefficients)
    with pytest.raises(ValueError, match="geometry_map"):
        generator(masked, reference, geometry[:, :2], coefficients)
    with pytest.raises(ValueError, match="coefficients"):
        generator(masked, reference, geometry, coefficients[:, :4])
    with pytest.raises(ValueError, match="masked_target"):
        generator(masked[..., :16, :16], reference, geometry, coefficients)
    with pytest.raises(ValueError, match="positive"):
        generator.set_coefficient_std([1.0, 1.0, 0.0, 1.0, 1.0])


def test_mask_in_unit_range_and_composite_keeps_the_target_outside_the_region():
    config = GeneratorConfig(
        image_size=64, channel_base=256, channel_min=8, channel_max=16, num_coefficients=5
    )
    torch.manual_seed(3)
    generator = AvatarGenerator(config)
    target = torch.rand(2, 3, 64, 64)
    masked = mask_lower_face(target, config)
    hole = lower_face_region(config, 64)
    support = lower_face_region(config, 64, margin=config.blend_margin)
    # The hole is blacked out; the rest of the target is untouched.
    assert torch.all(masked[:, :, hole[0, 0] == 1.0] == 0.0)
    assert torch.equal(masked[:, :, hole[0, 0] == 0.0], target[:, :, hole[0, 0] == 0.0])
    # The blend support contains the hole and is a strict part of the crop.
    assert torch.all(support >= hole - 1e-6)
    outside = support[0, 0] == 0.0
    assert 0.3 < float(outside.float().mean()) < 0.9
    _, reference, geometry, coefficients = _inputs(config, 2)
    with torch.no_grad():
        crop, mask = generator(masked, reference, geometry * 3.0, coefficients * 10.0)
    assert float(mask.min()) >= 0.0
    assert float(mask.max()) <= 1.0
    inside = hole[0, 0] == 1.0
    # Where the target was hidden the mask is 1: the generator alone fills those pixels.
    assert torch.all(mask[:, :, inside] == 1.0)
    assert torch.all(mask >= hole - 1e-6) and torch.all(mask <= support + 1e-6)
    band = (support[0, 0] > 0.2) & (hole[0, 0] < 0.01)
    assert 0.0 < float(mask[:, :, band].mean()) < 1.0  # learned between hole and support
    blended = composite(crop, mask, target)
    assert torch.equal(blended[:, :, outside], target[:, :, outside])
    assert torch.equal(blended[:, :, inside], crop[:, :, inside])


def test_onnx_export_matches_torch(tmp_path):
    config = GeneratorConfig(
        image_size=64, channel_base=512, channel_min=8, channel_max=32, num_coefficients=6
    )
    torch.manual_seed(4)
    generator = AvatarGenerator(config)
    generator.set_coefficient_std(torch.linspace(0.1, 0.6, 6))
    path = export_onnx(generator, tmp_path / "generator.onnx")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(ONNX_INPUTS)
    for batch in (1, 3):
        inputs = _inputs(config, batch, seed=batch)
        with torch.no_grad():
            crop, mask = generator(*inputs)
        feed = {name: t.numpy() for name, t in zip(ONNX_INPUTS, inputs, strict=True)}
        onnx_crop, onnx_mask = session.run(None, feed)
        assert onnx_crop.shape == crop.shape
        assert np.abs(onnx_crop - crop.numpy()).max() < 1e-3
        assert np.abs(onnx_mask - mask.numpy()).max() < 1e-3


def test_crop_projection_fit_recovers_a_known_map():
    rng = np.random.default_rng(0)
    matrix = np.array([[0.25, 0.01, 0.002, 0.5], [-0.01, 0.26, -0.03, 0.3]])
    canonical = rng.normal(size=(20, 30, 3))
    pixels = (canonical @ matrix[:, :3].T + matrix[:, 3]) * 256.0
    fitted = CropProjection.fit(canonical, pixels, 256)
    assert np.allclose(fitted.matrix, matrix, atol=1e-9)
    assert fitted.residual_px(canonical, pixels, 256) < 1e-6
    assert np.array_equal(CropProjection.from_array(fitted.to_array()).matrix, fitted.matrix)
    with pytest.raises(ValueError):
        CropProjection(matrix=np.zeros((3, 3)))


def test_rasteriser_draws_each_channel_where_the_points_are():
    basis_indices = tuple(range(478))
    rasteriser = GeometryRasteriser(indices=basis_indices, size=64)
    points = np.full((478, 2), 0.5)
    ring = np.linspace(0, 2 * np.pi, len(LIPS_INNER), endpoint=False)
    points[list(LIPS_INNER)] = 0.5 + 0.1 * np.stack([np.cos(ring), np.sin(ring)], axis=1)
    image = rasteriser(points)
    assert image.shape == (3, 64, 64)
    assert image.dtype == np.float32
    assert image.min() >= 0.0 and image.max() <= 1.0
    filled = image[1] > 0.5
    # A disc of radius 0.1 * 64 = 6.4 px: about 129 pixels (the anti-aliased edge of an
    # OpenCV polygon reaches about half a pixel further out).
    assert 110 < int(filled.sum()) < 170
    assert image[1, 32, 32] == 1.0 and image[1, 5, 5] == 0.0
    with pytest.raises(ValueError, match="lack landmarks"):
        GeometryRasteriser(indices=(1, 2, 3), size=64)


def test_geometry_map_follows_the_mouth_opening(small_dataset):
    root = small_dataset.dataset
    header = read_header(root)
    basis, _, identities = read_basis(root)
    projections = fit_subject_projections(root)
    clip = header.clips_in("train")[0]
    track = read_track(clip_dir(root, clip.id) / TRACK_NAME)
    projection = projections[clip.subject]
    tracked = track["landmarks2d"][:, basis.indices]
    assert projection.residual_px(track["lower_face"], tracked, header.crop.size) < 3.0

    mapper = GeometryMapper(
        basis=basis, identity=identities[clip.subject], projection=projection, size=128
    )
    opening = track["mouth_opening"]
    closed_frame, open_frame = int(np.argmin(opening)), int(np.argmax(opening))
    assert opening[open_frame] > opening[closed_frame] + 0.05
    closed = mapper(track["coefficients"][closed_frame])
    wide = mapper(track["coefficients"][open_frame])
    assert closed.shape == (3, 128, 128)
    assert wide[1].sum() > 2.0 * closed[1].sum() + 20.0
    # The drawn lips sit where the tracker put them (within a few pixels at 128 px).
    lips_rows = np.flatnonzero(wide[0].max(axis=1) > 0.5)
    tracked_lips = track["landmarks2d"][open_frame, 61:62]  # a mouth corner, crop pixels
    assert lips_rows.min() - 3 <= tracked_lips[0, 1] * 128 / header.crop.size <= lips_rows.max() + 3
    batch = mapper(track["coefficients"][[closed_frame, open_frame]])
    assert np.array_equal(batch[1], wide)
