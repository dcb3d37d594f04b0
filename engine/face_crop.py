"""Stabilised face crops: a per-frame similarity transform from the STABLE landmarks.

The crop layout puts MediaPipe's canonical face (see :func:`engine.face3d.canonical_template`)
upright and centred: the eye line to the chin spans ``face_fraction`` of the crop height and
the middle of that span sits at ``face_centre`` of the height. Each frame's transform is the
2D least-squares similarity taking that frame's STABLE landmarks (eye corners, nose bridge,
forehead, temples) onto the layout, so lip and jaw motion never moves the crop. The four
parameters (centre, log scale, angle) are then smoothed over time with a zero-phase
Savitzky-Golay filter (local quadratic fit over +-3 frames): it removes frame-to-frame
tracking jitter while following real head motion without lag or the amplitude loss a
Gaussian of the same width has.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.signal import savgol_filter

from engine.face3d import CHIN_TIP, STABLE, canonical_template, fit_similarity


@dataclass(frozen=True, kw_only=True)
class CropConfig:
    size: int = 256
    face_fraction: float = 0.5  # eye line to chin, as a fraction of the crop height
    face_centre: float = 0.55  # vertical position of the middle of eyes-to-chin
    smoothing_window: int = 7  # frames (odd); 1 turns smoothing off
    smoothing_order: int = 2  # polynomial order of the Savitzky-Golay fit

    def __post_init__(self) -> None:
        if self.size < 16:
            raise ValueError(f"crop size {self.size} is too small")
        if not 0.1 <= self.face_fraction <= 0.9:
            raise ValueError(f"face_fraction must be in [0.1, 0.9], got {self.face_fraction}")
        if self.smoothing_window < 1 or self.smoothing_window % 2 == 0:
            raise ValueError(f"smoothing_window must be odd, got {self.smoothing_window}")
        if self.smoothing_order < 0:
            raise ValueError("smoothing_order must be non-negative")


def crop_layout(config: CropConfig, template: np.ndarray | None = None) -> np.ndarray:
    """(len(STABLE), 2) target positions of the STABLE points in crop pixels."""
    face = canonical_template() if template is None else np.asarray(template, np.float64)
    chin_y = float(face[CHIN_TIP, 1])  # eye line is y = 0 in the template
    scale = config.face_fraction * config.size / chin_y
    offset = np.array([config.size / 2.0, config.face_centre * config.size - scale * chin_y / 2])
    return np.asarray(face[list(STABLE), :2] * scale + offset)


def _parameters_from_matrices(matrices: np.ndarray, size: int) -> np.ndarray:
    """(T, 2, 3) image->crop -> (T, 4): image x, y of the crop centre, log scale, angle."""
    linear = matrices[:, :, :2]
    scale = np.sqrt(np.abs(np.linalg.det(linear)))
    angle = np.arctan2(linear[:, 1, 0], linear[:, 0, 0])
    half = np.full((len(matrices), 2), size / 2.0)
    centre = np.linalg.solve(linear, (half - matrices[:, :, 2])[..., None])[..., 0]
    return np.stack([centre[:, 0], centre[:, 1], np.log(scale), np.unwrap(angle)], axis=1)


def _matrices_from_parameters(parameters: np.ndarray, size: int) -> np.ndarray:
    """Inverse of :func:`_parameters_from_matrices`."""
    scale = np.exp(parameters[:, 2])
    cos, sin = scale * np.cos(parameters[:, 3]), scale * np.sin(parameters[:, 3])
    linear = np.stack([np.stack([cos, -sin], axis=1), np.stack([sin, cos], axis=1)], axis=1)
    translation = size / 2.0 - np.einsum("tij,tj->ti", linear, parameters[:, :2])
    return np.concatenate([linear, translation[:, :, None]], axis=2)


def _fill_invalid(values: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """Linear interpolation over invalid rows, holding the nearest valid row at the ends."""
    frames = np.arange(len(values))
    filled = values.copy()
    for column in range(values.shape[1]):
        filled[:, column] = np.interp(frames, frames[valid], values[valid, column])
    return filled


def crop_transforms(
    landmarks: np.ndarray,
    valid: np.ndarray,
    config: CropConfig,
    template: np.ndarray | None = None,
) -> np.ndarray:
    """(T, 2, 3) float64 image->crop affine matrices from (T, 478, >=2) landmarks in image
    pixels; frames where ``valid`` is False get parameters interpolated from valid ones."""
    landmarks = np.asarray(landmarks, dtype=np.float64)
    valid = np.asarray(valid, dtype=bool)
    if not valid.any():
        raise ValueError("no valid frame to place the crop")
    target = crop_layout(config, template)
    similarity = fit_similarity(landmarks[:, list(STABLE), :2], target)
    raw = np.concatenate(
        [similarity.scale[:, None, None] * similarity.rotation, similarity.translation[..., None]],
        axis=2,
    )
    parameters = _parameters_from_matrices(raw, config.size)
    parameters = _fill_invalid(parameters, valid)
    parameters[:, 3] = np.unwrap(parameters[:, 3])
    window = min(config.smoothing_window, len(parameters) - (1 - len(parameters) % 2))
    if window > config.smoothing_order + 1:
        parameters = savgol_filter(
            parameters, window, config.smoothing_order, axis=0, mode="interp"
        )
    return _matrices_from_parameters(parameters, config.size)


def transform_points(matrices: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply (..., 2, 3) affine matrices to (..., N, 2) points."""
    matrices = np.asarray(matrices, dtype=np.float64)
    points = np.asarray(points, dtype=np.float64)[..., :2]
    return np.einsum("...ij,...nj->...ni", matrices[..., :, :2], points) + matrices[..., None, :, 2]


def warp_crop(rgb: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """(size, size, 3) uint8 crop of an RGB frame.

    ``matrix`` maps image to crop coordinates with MediaPipe's convention (the top-left
    corner of the image is (0, 0), pixel ``(row, col)`` covers ``[col, col + 1)``); OpenCV
    samples at pixel centres, which is accounted for here. Only the region the crop sees is
    touched; when the crop shrinks the image, that region is low-pass filtered first so
    fine texture does not alias."""
    matrix = np.asarray(matrix, dtype=np.float64)
    scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
    inverse = cv2.invertAffineTransform(matrix)
    corners = np.array([[0, 0], [size, 0], [0, size], [size, size]], dtype=np.float64)
    source = corners @ inverse[:, :2].T + inverse[:, 2]
    margin = 4 + (3.0 / scale if scale < 1.0 else 0.0)
    height, width = rgb.shape[:2]
    left = int(np.clip(np.floor(source[:, 0].min() - margin), 0, width - 1))
    top = int(np.clip(np.floor(source[:, 1].min() - margin), 0, height - 1))
    right = int(np.clip(np.ceil(source[:, 0].max() + margin), left + 1, width))
    bottom = int(np.clip(np.ceil(source[:, 1].max() + margin), top + 1, height))
    region = rgb[top:bottom, left:right]
    if scale < 0.8:
        sigma = 0.5 * np.sqrt(1.0 / scale**2 - 1.0)
        region = cv2.GaussianBlur(region, (0, 0), sigmaX=sigma, borderType=cv2.BORDER_REPLICATE)
    shifted = matrix.copy()  # pixel-centre convention, relative to the region's corner
    shifted[:, 2] += matrix[:, :2] @ np.array([left + 0.5, top + 0.5]) - 0.5
    return cv2.warpAffine(
        np.ascontiguousarray(region),
        shifted,
        (size, size),
        flags=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
