"""The default avatar frame: a head-and-shoulders portrait cut from scikit-image's astronaut.

``skimage.data.astronaut()`` is a public-domain NASA photograph (512 x 512). The face is small
in it (about 90 px wide), so a square around the head is cut out and upscaled to the
avatar's 512 x 512 with a Lanczos filter: the face ends up about 180 px wide, centred
horizontally, with the eyes at about 40 % of the height.
"""

from __future__ import annotations

import logging
from typing import Final

import cv2
import numpy as np

log = logging.getLogger(__name__)

AVATAR_SIZE: Final = 512

# The square cut from the 512 x 512 photograph: (top, left, side) in its pixels. The face spans
# x 180-270 there, centred at x ~225; the eyes are at y ~102, so a 256-px square from the top
# edge puts them at 40 % of the height.
PORTRAIT_CROP: Final = (0, 97, 256)


def astronaut_photo() -> np.ndarray:
    """The public-domain astronaut photograph shipped with scikit-image, (512, 512, 3) uint8."""
    from skimage import data

    photo = np.asarray(data.astronaut())
    if photo.shape != (512, 512, 3) or photo.dtype != np.uint8:
        raise ValueError(f"unexpected astronaut photo: {photo.dtype} {photo.shape}")
    return photo


def default_avatar_image() -> np.ndarray:
    """The default avatar frame: (512, 512, 3) uint8 RGB, a head-and-shoulders portrait."""
    top, left, side = PORTRAIT_CROP
    crop = astronaut_photo()[top : top + side, left : left + side]
    # Lanczos on float data, then round and clip: no ringing wraps around in uint8.
    upscaled = cv2.resize(
        crop.astype(np.float32),
        (AVATAR_SIZE, AVATAR_SIZE),
        interpolation=cv2.INTER_LANCZOS4,
    )
    return np.clip(np.rint(upscaled), 0, 255).astype(np.uint8)
