"""Canonical lower-face points -> crop pixels -> a rasterised geometry map.

The generator receives the 3D facial dynamics as a small image (ReSyncer's noise-space
input): the lower-face points of a frame, placed in the stabilised face crop and drawn as

- channel 0: the outer and inner lip contours (anti-aliased lines),
- channel 1: the inner mouth (the inner lip ring, filled, anti-aliased edge),
- channel 2: the jaw line from ear to ear through the chin (anti-aliased line).

Canonical points (pose-free head frame, see :mod:`engine.face3d`) reach the crop through a
per-subject :class:`CropProjection`: an affine map of (x, y, z, 1) fitted by least squares
on the subject's tracked frames (:mod:`engine.train.crop_projections`). Because the crops
are stabilised, one map per subject places the points within a pixel or two; it is stored
with the generator as a (2, 4) array.

:class:`GeometryMapper` is the one path from dynamics coefficients to a geometry map, used
by training and by inference alike. Drawing uses OpenCV on uint8 canvases, a small cost next
to the generator's (benchmarks/README.md, "Engine": the geometry stage).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.face3d import LIPS_INNER, LIPS_OUTER, DynamicsBasis

# The jaw contour in order, from the subject's right ear round the chin to the left ear
# (points of MediaPipe's face oval; all of them belong to engine.face3d.LOWER_FACE).
JAW_CONTOUR: tuple[int, ...] = (
    93, 132, 58, 172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397, 288, 361, 323,
)  # fmt: skip

GEOMETRY_CHANNELS = 3
CHANNEL_NAMES: tuple[str, ...] = ("lip_contours", "inner_mouth", "jaw_line")

_SUBPIXEL_BITS = 4
_SUBPIXEL = float(1 << _SUBPIXEL_BITS)


@dataclass(frozen=True, kw_only=True)
class CropProjection:
    """Canonical head-frame points -> normalised crop coordinates.

    ``uv = matrix @ (x, y, z, 1)``, where ``uv`` spans ``[0, 1] x [0, 1]`` over the crop
    (corner convention: pixel ``i`` covers ``[i, i + 1) / size``), so the same map serves
    any crop resolution.
    """

    matrix: np.ndarray  # (2, 4) float64

    def __post_init__(self) -> None:
        if np.asarray(self.matrix).shape != (2, 4):
            raise ValueError(f"projection matrix must be (2, 4), got {np.shape(self.matrix)}")

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(..., N, 3) canonical points -> (..., N, 2) normalised crop coordinates."""
        points = np.asarray(points, dtype=np.float64)
        if points.shape[-1] != 3:
            raise ValueError(f"expected (..., N, 3) points, got {points.shape}")
        linear = self.matrix[:, :3]
        return np.asarray(points @ linear.T + self.matrix[:, 3])

    def to_array(self) -> np.ndarray:
        return np.asarray(self.matrix, dtype=np.float64).copy()

    @classmethod
    def from_array(cls, array: np.ndarray) -> CropProjection:
        return cls(matrix=np.asarray(array, dtype=np.float64).reshape(2, 4))

    @classmethod
    def fit(cls, canonical: np.ndarray, crop_px: np.ndarray, crop_size: int) -> CropProjection:
        """Least-squares fit on (T, N, 3) canonical points and the (T, N, 2) tracked crop
        pixels of the same points in a ``crop_size`` crop."""
        return CropProjectionSums().add(canonical, crop_px, crop_size).solve()

    def residual_px(self, canonical: np.ndarray, crop_px: np.ndarray, crop_size: int) -> float:
        """Root-mean-square distance in crop pixels between projected and tracked points."""
        projected = self.apply(canonical) * float(crop_size)
        difference = projected - np.asarray(crop_px, dtype=np.float64)
        return float(np.sqrt(np.mean(np.sum(difference**2, axis=-1))))


@dataclass(kw_only=True)
class CropProjectionSums:
    """Running sums for the least-squares crop projection, so any number of frames fit in
    constant memory: ``gram = A^T A``, ``moment = A^T b`` with rows ``A = (x, y, z, 1)``
    and ``b`` the normalised crop coordinates."""

    gram: np.ndarray = field(default_factory=lambda: np.zeros((4, 4)))
    moment: np.ndarray = field(default_factory=lambda: np.zeros((4, 2)))
    target_energy: float = 0.0
    count: int = 0

    def add(self, canonical: np.ndarray, crop_px: np.ndarray, crop_size: int) -> CropProjectionSums:
        canonical = np.asarray(canonical, dtype=np.float64)
        crop_px = np.asarray(crop_px, dtype=np.float64)
        if canonical.ndim != 3 or canonical.shape[-1] != 3:
            raise ValueError(f"expected (T, N, 3) canonical points, got {canonical.shape}")
        if crop_px.shape != (*canonical.shape[:2], 2):
            raise ValueError(
                f"expected {(*canonical.shape[:2], 2)} crop points, got {crop_px.shape}"
            )
        rows = canonical.reshape(-1, 3)
        design = np.concatenate([rows, np.ones((rows.shape[0], 1))], axis=1)
        target = crop_px.reshape(-1, 2) / float(crop_size)
        self.gram += design.T @ design
        self.moment += design.T @ target
        self.target_energy += float(np.sum(target**2))
        self.count += rows.shape[0]
        return self

    def solve(self) -> CropProjection:
        if self.count < 4 or np.linalg.matrix_rank(self.gram) < 4:
            raise ValueError("the points do not determine a crop projection (too few or flat)")
        return CropProjection(matrix=np.linalg.solve(self.gram, self.moment).T)

    def residual_px(self, projection: CropProjection, crop_size: int) -> float:
        """RMS distance in crop pixels over every point added, from the running sums."""
        solution = projection.matrix.T  # (4, 2)
        energy = (
            float(np.sum(solution * (self.gram @ solution)))
            - 2.0 * float(np.sum(solution * self.moment))
            + self.target_energy
        )
        return float(np.sqrt(max(energy, 0.0) / max(self.count, 1))) * crop_size


@dataclass(frozen=True, kw_only=True)
class GeometryRasteriser:
    """Draws lower-face points (normalised crop coordinates) into a (3, size, size) map.

    ``indices`` are the MediaPipe landmark numbers of the N points given to
    :meth:`__call__` (a dynamics basis's ``indices``); they must include the lip rings and
    the jaw contour.
    """

    indices: tuple[int, ...]
    size: int
    line_width: int = 0  # pixels; 0 picks max(1, round(size / 128))
    _rows: dict[str, np.ndarray] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.size < 8:
            raise ValueError(f"geometry map size must be at least 8, got {self.size}")
        position = {int(index): row for row, index in enumerate(self.indices)}
        rows: dict[str, np.ndarray] = {}
        for name, contour in (
            ("outer", LIPS_OUTER),
            ("inner", LIPS_INNER),
            ("jaw", JAW_CONTOUR),
        ):
            missing = [index for index in contour if index not in position]
            if missing:
                raise ValueError(f"the points lack landmarks {missing} of the {name} contour")
            rows[name] = np.asarray([position[index] for index in contour], dtype=np.int64)
        object.__setattr__(self, "_rows", rows)

    @property
    def thickness(self) -> int:
        return self.line_width if self.line_width > 0 else max(1, round(self.size / 128))

    def _fixed_point(self, points: np.ndarray, name: str) -> np.ndarray:
        # Normalised corner coordinates -> OpenCV pixel-centre coordinates, fixed point.
        pixels = points[self._rows[name]] * self.size - 0.5
        return np.round(pixels * _SUBPIXEL).astype(np.int32).reshape(-1, 1, 2)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) normalised crop coordinates -> (3, size, size) float32 map in [0, 1]."""
        points = np.asarray(points, dtype=np.float64)
        if points.shape != (len(self.indices), 2):
            raise ValueError(f"expected ({len(self.indices)}, 2) points, got {points.shape}")
        canvas = np.zeros((GEOMETRY_CHANNELS, self.size, self.size), dtype=np.uint8)
        outer = self._fixed_point(points, "outer")
        inner = self._fixed_point(points, "inner")
        jaw = self._fixed_point(points, "jaw")
        line = {"lineType": cv2.LINE_AA, "shift": _SUBPIXEL_BITS, "thickness": self.thickness}
        cv2.polylines(canvas[0], [outer, inner], True, 255, **line)
        cv2.fillPoly(canvas[1], [inner], 255, lineType=cv2.LINE_AA, shift=_SUBPIXEL_BITS)
        cv2.polylines(canvas[2], [jaw], False, 255, **line)
        return canvas.astype(np.float32) * np.float32(1.0 / 255.0)


@dataclass(frozen=True, kw_only=True)
class GeometryMapper:
    """Dynamics coefficients of one subject -> geometry maps at one resolution.

    coefficients --(basis + identity shape)--> canonical lower-face points
    --(CropProjection)--> normalised crop coordinates --(GeometryRasteriser)--> map.
    """

    basis: DynamicsBasis
    identity: np.ndarray  # (N, 3) the subject's identity shape
    projection: CropProjection
    size: int
    line_width: int = 0
    _rasteriser: GeometryRasteriser = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        identity = np.asarray(self.identity, dtype=np.float64)
        if identity.shape != (self.basis.num_points, 3):
            raise ValueError(
                f"identity shape must be ({self.basis.num_points}, 3), got {identity.shape}"
            )
        object.__setattr__(self, "identity", identity)
        rasteriser = GeometryRasteriser(
            indices=tuple(int(i) for i in self.basis.indices),
            size=self.size,
            line_width=self.line_width,
        )
        object.__setattr__(self, "_rasteriser", rasteriser)

    def crop_points(self, coefficients: np.ndarray) -> np.ndarray:
        """(..., K) coefficients -> (..., N, 2) normalised crop coordinates."""
        canonical = self.basis.decode(np.asarray(coefficients, dtype=np.float64), self.identity)
        return self.projection.apply(canonical)

    def __call__(self, coefficients: np.ndarray) -> np.ndarray:
        """(K,) -> (3, S, S) or (B, K) -> (B, 3, S, S) float32 geometry maps."""
        coefficients = np.asarray(coefficients, dtype=np.float64)
        if coefficients.shape[-1] != self.basis.num_components or coefficients.ndim > 2:
            raise ValueError(
                f"expected ({self.basis.num_components},) or (B, {self.basis.num_components}) "
                f"coefficients, got {coefficients.shape}"
            )
        points = self.crop_points(coefficients)
        if coefficients.ndim == 1:
            return self._rasteriser(points)
        return np.stack([self._rasteriser(frame) for frame in points])
