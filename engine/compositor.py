"""Paste a rendered face crop back into the avatar's full frame, with no seam.

The generator renders the crop at its own size ``g`` (the stabilised face crop of size
``S`` scaled by ``g / S``) together with a soft mask: exactly 1 in the hole it filled,
0 outside its blend support, learned in between. The compositor

1. matches colour: the mean of the rendered pixels in the blend band (0 < mask < 1, where
   the rendered and the real frame show the same skin) is moved onto the mean of the real
   crop there, per channel, by at most ``max_colour_shift``; generated faces drift in tone
   slightly from frame to frame and a seam would show it;
2. warps the crop and its mask into the frame through the inverse of the frame's crop
   transform (one ``cv2.warpAffine`` per image, bilinear, only inside the crop's bounding
   box), feathers the warped mask by a Gaussian of ``feather_px`` so the edge never
   aliases;
3. restores detail: the generator works at a lower resolution than the frame shows its
   crop, so its skin is soft next to the sharp frame around it. The frame's own fine detail
   (the frame minus its Gaussian low-pass at the generator's pixel size) is added back
   where the rendered face still matches the frame's low-pass (cheeks, chin, the skin
   around the mouth), weighted ``clip(1 - |rendered - low-pass| / detail_tolerance)``, and
   left out where the mouth moved (lips, teeth, the opened jaw), so nothing ghosts;
4. blends: ``frame * (1 - m) + crop * m``.

Coordinates follow :func:`engine.face_crop.warp_crop`: matrices map frame to crop in
the corner convention (pixel ``(row, col)`` covers ``[col, col + 1)``); OpenCV samples at
pixel centres, accounted for here.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

FrameDetail = tuple[np.ndarray, np.ndarray, np.ndarray]
"""A frame region (float in [0, 1]), its low-pass and its fine detail (region - low-pass)."""


@dataclass(frozen=True, kw_only=True)
class CompositorConfig:
    feather_px: float = 1.0
    max_colour_shift: float = 0.06  # in [0, 1] intensity units
    band: tuple[float, float] = (0.05, 0.95)  # mask values that count as the blend band
    detail: float = 1.0  # share of the frame's fine detail restored (0: off)
    detail_tolerance: float = 0.08  # rendered vs frame low-pass difference where detail stops

    def __post_init__(self) -> None:
        if self.feather_px < 0 or self.max_colour_shift < 0:
            raise ValueError("feather_px and max_colour_shift must be non-negative")
        if not 0.0 <= self.band[0] < self.band[1] <= 1.0:
            raise ValueError(f"band must satisfy 0 <= low < high <= 1, got {self.band}")
        if self.detail < 0 or self.detail_tolerance <= 0:
            raise ValueError("detail must be >= 0 and detail_tolerance > 0")


def colour_offset(
    rendered: np.ndarray, target: np.ndarray, mask: np.ndarray, config: CompositorConfig
) -> np.ndarray:
    """(3,) offset that moves the rendered crop's mean onto the target's in the blend band;
    rendered/target (g, g, 3) float in [0, 1], mask (g, g)."""
    low, high = config.band
    band = (mask > low) & (mask < high)
    if int(band.sum()) < 16:
        return np.zeros(3, np.float32)
    shift = target[band].mean(axis=0) - rendered[band].mean(axis=0)
    limit = config.max_colour_shift
    return np.clip(shift, -limit, limit).astype(np.float32)


def _opencv_matrix(matrix: np.ndarray) -> np.ndarray:
    """A corner-convention affine map -> the same map between pixel centres."""
    result = np.array(matrix, dtype=np.float64)
    result[:, 2] += result[:, :2] @ np.array([0.5, 0.5]) - 0.5
    return result


def paste(
    frame: np.ndarray,
    rendered: np.ndarray,
    mask: np.ndarray,
    *,
    target: np.ndarray,
    frame_to_crop: np.ndarray,
    crop_size: int,
    config: CompositorConfig | None = None,
    support: tuple[int, int, int, int] | None = None,
    frame_cache: dict[tuple[int, ...], FrameDetail] | None = None,
) -> np.ndarray:
    """A new (H, W, 3) uint8 frame: ``frame`` with ``rendered`` (g, g, 3 float RGB in
    [0, 1]) blended in by ``mask`` (g, g); ``target`` (g, g, 3) is the real crop the
    generator saw (for colour matching); ``frame_to_crop`` maps the frame to the crop of
    size ``crop_size``. ``support`` (top, bottom, left, right in generator pixels): where
    the mask can be non-zero (the whole crop by default); only that part of the frame is
    touched. ``frame_cache``: a dict kept per source frame (same frame, same transform)
    that holds the frame's low-pass and fine detail between calls."""
    config = config or CompositorConfig()
    size = rendered.shape[0]
    if rendered.shape != (size, size, 3) or mask.shape != (size, size):
        raise ValueError(f"expected (g, g, 3) and (g, g), got {rendered.shape}, {mask.shape}")
    if target.shape != rendered.shape:
        raise ValueError(f"target {target.shape} differs from rendered {rendered.shape}")
    if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
        raise ValueError(f"frame must be (H, W, 3) uint8, got {frame.dtype} {frame.shape}")
    rendered = np.clip(rendered + colour_offset(rendered, target, mask, config), 0.0, 1.0)
    # frame -> generator pixels
    to_generator = np.asarray(frame_to_crop, np.float64) * (size / crop_size)
    inverse = cv2.invertAffineTransform(to_generator)
    top_g, bottom_g, left_g, right_g = support if support is not None else (0, size, 0, size)
    corners = np.array(
        [[left_g, top_g], [right_g, top_g], [left_g, bottom_g], [right_g, bottom_g]],
        dtype=np.float64,
    )
    spots = corners @ inverse[:, :2].T + inverse[:, 2]
    height, width = frame.shape[:2]
    margin = int(np.ceil(3 * config.feather_px)) + 2
    left = max(0, int(np.floor(spots[:, 0].min())) - margin)
    top = max(0, int(np.floor(spots[:, 1].min())) - margin)
    right = min(width, int(np.ceil(spots[:, 0].max())) + margin)
    bottom = min(height, int(np.ceil(spots[:, 1].max())) + margin)
    out = frame.copy()
    if right <= left or bottom <= top:
        return out
    # The map from ROI pixels to generator pixels (inverse map for warpAffine).
    shifted = to_generator.copy()
    shifted[:, 2] += to_generator[:, :2] @ np.array([left, top], dtype=np.float64)
    matrix = _opencv_matrix(shifted)
    roi_size = (right - left, bottom - top)
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    colour: np.ndarray = cv2.warpAffine(  # float32, changed in place below
        rendered.astype(np.float32), matrix, roi_size, flags=flags, borderMode=cv2.BORDER_REPLICATE
    )
    alpha = cv2.warpAffine(
        mask.astype(np.float32), matrix, roi_size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
        borderValue=0.0,
    )  # fmt: skip
    if config.feather_px > 0:
        alpha = cv2.GaussianBlur(alpha, (0, 0), config.feather_px)
    alpha = np.clip(alpha, 0.0, 1.0)[..., None]
    # One generator pixel spans this many frame pixels.
    pixel = 1.0 / float(np.sqrt(abs(np.linalg.det(to_generator[:, :2]))))
    key = (top, bottom, left, right)
    cached = None if frame_cache is None else frame_cache.get(key)
    if cached is None:
        region = out[top:bottom, left:right].astype(np.float32) / 255.0
        low = (
            cv2.GaussianBlur(region, (0, 0), max(0.5, 0.8 * pixel)) if config.detail > 0 else region
        )
        cached = (region, low, region - low)
        if frame_cache is not None:
            frame_cache[key] = cached
    region, low, fine = cached
    if config.detail > 0:
        # how far the rendered face is from the frame's low-pass: the largest channel
        difference = cv2.absdiff(colour, low)
        difference = np.maximum(
            np.maximum(difference[..., 0], difference[..., 1]), difference[..., 2]
        )
        weight = np.clip(1.0 - difference / config.detail_tolerance, 0.0, 1.0)
        weight = cv2.GaussianBlur(weight, (0, 0), max(1.0, pixel))[..., None]
        weight *= config.detail
        colour += weight * fine
    # region * (1 - alpha) + colour * alpha, in place
    colour -= region
    colour *= alpha
    colour += region
    colour *= 255.0
    colour += 0.5
    np.clip(colour, 0, 255, out=colour)
    out[top:bottom, left:right] = colour.astype(np.uint8)
    return out
