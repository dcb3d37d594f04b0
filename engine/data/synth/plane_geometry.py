"""Plane geometry the face rig and its renderer share: signed triangle areas, the even-odd
point-in-polygon test, affine maps of points, closed rims, and the smoothstep ramp."""

from __future__ import annotations

import math

import numpy as np


def triangle_areas(points: np.ndarray, triangles: np.ndarray) -> np.ndarray:
    """Signed areas of triangles (positive for counter-clockwise in x-right, y-down)."""
    a, b, c = (points[triangles[:, k], :2] for k in range(3))
    return 0.5 * (
        (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (b[:, 1] - a[:, 1]) * (c[:, 0] - a[:, 0])
    )


def smoothstep(values: np.ndarray | float) -> np.ndarray:
    """Cubic smoothstep of values clipped to [0, 1]."""
    t = np.clip(values, 0.0, 1.0)
    return np.asarray(t * t * (3.0 - 2.0 * t))


def point_in_polygon(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Even-odd test of (N, 2) points against a closed (M, 2) polygon."""
    x, y = points[:, 0:1], points[:, 1:2]
    x0, y0 = polygon[:, 0][None, :], polygon[:, 1][None, :]
    x1, y1 = np.roll(polygon[:, 0], -1)[None, :], np.roll(polygon[:, 1], -1)[None, :]
    crosses = (y0 > y) != (y1 > y)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_at = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
    return np.asarray(np.sum(crosses & (x < x_at), axis=1) % 2 == 1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine matrix."""
    return np.asarray(points[:, :2] @ matrix[:, :2].T + matrix[:, 2])


def egg_rim(half_width: float, axes: tuple[float, float, float], *, samples: int) -> np.ndarray:
    """(samples, 2) points of a closed rim around the origin: ``axes`` = (lateral, up, down)
    radii in units of ``half_width`` (image y grows downwards, so "up" is negative y)."""
    lateral, up, down = axes
    angles = np.linspace(0.0, 2.0 * math.pi, samples, endpoint=False)
    return np.stack(
        [
            lateral * half_width * np.cos(angles),
            np.where(np.sin(angles) < 0.0, up, down) * half_width * np.sin(angles),
        ],
        axis=1,
    )


def resample_closed(curve: np.ndarray, spacing: float) -> np.ndarray:
    """Points evenly spaced (about ``spacing`` apart) along a densely sampled closed curve."""
    closed = np.concatenate([curve, curve[:1]])
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    count = max(8, round(cumulative[-1] / spacing))
    positions = np.linspace(0.0, cumulative[-1], count, endpoint=False)
    return np.stack([np.interp(positions, cumulative, closed[:, k]) for k in range(2)], axis=1)
