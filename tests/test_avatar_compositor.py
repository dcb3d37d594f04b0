"""The fixed avatar (idle loop, crops) and the compositor (paste-back without seams)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from engine.avatar import Avatar, load_avatar
from engine.compositor import CompositorConfig, colour_offset, paste
from engine.data.synth.default_avatar import make_default_avatar
from engine.errors import EngineError
from engine.face_crop import CropConfig


@pytest.fixture(scope="module")
def avatar() -> Avatar:
    return make_default_avatar(seconds=0.4)


def test_default_avatar_loop_and_crops(avatar: Avatar) -> None:
    assert avatar.num_frames == 10 and avatar.frame_size == (512, 512)
    assert avatar.subject == "default-avatar"
    # Forth and back: 0..9, then 8..1, then 0 again.
    shown = [avatar.loop_index(k) for k in range(20)]
    assert shown == [*range(10), *range(8, 0, -1), 0, 1]
    crop = avatar.crop_of(3)
    assert crop.shape == (256, 256, 3) and crop.dtype == np.uint8
    assert not avatar.frames.flags.writeable
    # The loop moves (idle head motion) but stays the same face.
    assert 0 < np.abs(avatar.frames[0].astype(int) - avatar.frames[9].astype(int)).mean() < 20
    with pytest.raises(EngineError, match="available: default"):
        load_avatar("someone-else")
    with pytest.raises(ValueError):
        avatar.loop_index(-1)


def _crop_inputs(avatar: Avatar, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    target = cv2.resize(avatar.crop_of(0), (size, size), interpolation=cv2.INTER_AREA)
    mask = np.zeros((size, size), np.float32)
    mask[60:110, 30:98] = 1.0
    mask = cv2.GaussianBlur(mask, (0, 0), 4.0)
    return target.astype(np.float32) / 255.0, mask


def test_paste_changes_only_the_masked_region(avatar: Avatar) -> None:
    target, mask = _crop_inputs(avatar)
    rendered = np.clip(target + 0.3, 0, 1)  # clearly different inside
    frame = avatar.frames[0]
    out = paste(
        frame, rendered, mask, target=target, frame_to_crop=avatar.crop_matrices[0],
        crop_size=256, config=CompositorConfig(max_colour_shift=0.0, detail=0.0),
    )  # fmt: skip
    changed = np.abs(out.astype(int) - frame.astype(int)).max(axis=2) > 0
    rows, cols = np.nonzero(changed)
    # The mask covers the lower-middle of the face crop: the change stays around the mouth.
    assert changed.sum() > 1000
    assert 250 < rows.mean() < 400 and 180 < cols.mean() < 330
    assert not changed[:200].any() and not changed[:, :100].any()


def test_paste_of_the_target_itself_is_nearly_lossless(avatar: Avatar) -> None:
    target, mask = _crop_inputs(avatar, size=256)
    out = paste(
        avatar.frames[0], target, mask, target=target, frame_to_crop=avatar.crop_matrices[0],
        crop_size=256,
    )  # fmt: skip
    difference = np.abs(out.astype(int) - avatar.frames[0].astype(int))
    assert difference.mean() < 0.5 and difference.max() <= 40


def test_colour_matching_removes_a_tone_shift(avatar: Avatar) -> None:
    target, mask = _crop_inputs(avatar)
    shifted = np.clip(target + np.array([0.04, -0.03, 0.02], np.float32), 0, 1)
    offset = colour_offset(shifted, target, mask, CompositorConfig())
    np.testing.assert_allclose(offset, [-0.04, 0.03, -0.02], atol=0.01)
    assert np.all(np.abs(colour_offset(shifted + 0.5, target, mask, CompositorConfig())) <= 0.06)


def test_detail_restoration_brings_back_the_frames_texture(avatar: Avatar) -> None:
    size = 128
    target, mask = _crop_inputs(avatar, size)
    soft = cv2.GaussianBlur(target, (0, 0), 1.0)  # a soft rendering of the face
    frame = avatar.frames[0]

    def high_frequency(image: np.ndarray) -> float:
        region = image[280:360, 210:300].astype(np.float32)
        return float(np.abs(region - cv2.GaussianBlur(region, (0, 0), 1.0)).mean())

    results = {
        detail: paste(
            frame,
            soft,
            mask,
            target=target,
            frame_to_crop=avatar.crop_matrices[0],
            crop_size=256,
            config=CompositorConfig(detail=detail),
        )
        for detail in (0.0, 1.0)
    }
    assert high_frequency(results[1.0]) > 1.5 * high_frequency(results[0.0])
    # Most of the frame's own fine texture comes back (not all: where the soft rendering
    # strays from the frame's low-pass, detail is held back so that nothing ghosts).
    assert high_frequency(results[1.0]) > 0.6 * high_frequency(frame)


def test_bad_shapes_and_config() -> None:
    frame = np.zeros((64, 64, 3), np.uint8)
    with pytest.raises(ValueError):
        paste(frame, np.zeros((8, 8, 3)), np.zeros((4, 4)), target=np.zeros((8, 8, 3)),
              frame_to_crop=np.eye(2, 3), crop_size=8)  # fmt: skip
    with pytest.raises(ValueError):
        CompositorConfig(band=(0.9, 0.1))
    with pytest.raises(ValueError):
        make_default_avatar(seconds=0.04, crop=CropConfig(size=8))
