"""Meshes for the piecewise-affine warps of the face rig: a fixed triangulation of rig points
and static anchors, with the triangles inside an opening (the mouth, an eye) marked.

:func:`band_mesh` builds one: structured strips over the rings around the opening (the lip
rings, the lid margins), the opening itself as holes, and a Delaunay triangulation of the
points outside. The renderer (:mod:`engine.data.synth.render`) warps the photo over them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import Delaunay

from engine.data.synth.plane_geometry import point_in_polygon, triangle_areas
from engine.errors import EngineError


@dataclass(frozen=True, kw_only=True)
class WarpMesh:
    """A fixed triangulation for a piecewise-affine warp: landmarks plus static anchors.

    Vertex ``v`` is rig point ``point_ids[v]`` (a landmark or a helper vertex), or a static
    point when that is -1 (its position is ``source_points[v]`` in every frame). ``hole``
    marks triangles inside an opening (the mouth, an eye) that the warp leaves to the
    caller. ``side`` marks the ring band's triangles (1 above the opening, 2 below it): the
    warp never samples them from beyond the opening's source edges ``source_edges`` (upper,
    lower: left-to-right polylines), so a rasterised boundary pixel cannot pick up what lies
    inside the opening in the source.
    """

    source_points: np.ndarray  # (V, 2) float64, positions in the source image
    point_ids: np.ndarray  # (V,) int64, -1 for static points
    triangles: np.ndarray  # (T, 3) int32
    hole: np.ndarray  # (T,) bool
    side: np.ndarray  # (T,) int8: 0 elsewhere, 1 upper band, 2 lower band
    source_edges: tuple[np.ndarray, np.ndarray]  # (C, 2) each, in the source image
    roi: tuple[int, int, int, int]  # x0, y0, x1, y1 (exclusive) containing the whole mesh
    source_areas: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "source_areas", triangle_areas(self.source_points, self.triangles))

    def positions(self, points: np.ndarray) -> np.ndarray:
        """Vertex positions (V, 2) for one frame's rig points (static points unchanged)."""
        positions = self.source_points.copy()
        moving = self.point_ids >= 0
        positions[moving] = points[self.point_ids[moving], :2]
        return positions

    def folded(
        self, positions: np.ndarray, *, min_ratio: float = 0.02, sliver_px2: float = 3.0
    ) -> bool:
        """Whether a non-hole triangle is flipped or collapsed at these vertex positions.

        Slivers (source area below ``sliver_px2``, e.g. where the lip rings converge at the
        corners) may flatten or tip over by up to ``sliver_px2 / 3``: that is sub-pixel.
        """
        areas = triangle_areas(positions, self.triangles)[~self.hole]
        source = self.source_areas[~self.hole]
        oriented = areas * np.sign(source)
        sliver = np.abs(source) < sliver_px2
        limit = np.where(sliver, -sliver_px2 / 3.0, min_ratio * np.abs(source))
        return bool(np.any(oriented < limit))


def band_mesh(
    points: np.ndarray, ids: np.ndarray, *, band: np.ndarray, image_size: tuple[int, int]
) -> WarpMesh:
    """Triangulate: structured strips over a ring band, Delaunay outside it.

    ``points`` (V, 2) are the vertices in the source image, ``ids`` their rig point ids (-1
    for static points); the mesh's region of interest is clipped to ``image_size`` (height,
    width). ``band`` (rings, 2 sides, columns) holds rig point ids: ring 0 is the outer contour,
    the last ring the opening's edge; the two sides share their first and last columns.
    Strips join consecutive rings; the opening (between the last rings' two sides) is
    triangulated too and marked as hole; outside ring 0 comes a Delaunay triangulation
    of the remaining points.
    """
    vertex_of = {int(point): vertex for vertex, point in enumerate(ids) if point >= 0}
    grid = np.vectorize(lambda point: vertex_of[int(point)])(band)  # (R, 2, C)
    rings, _, columns = grid.shape
    structured: list[tuple[int, int, int]] = []
    holes: list[bool] = []
    sides: list[int] = []
    for side in range(2):
        for ring in range(rings - 1):
            for col in range(columns - 1):
                a, b = grid[ring, side, col], grid[ring, side, col + 1]
                c, d = grid[ring + 1, side, col + 1], grid[ring + 1, side, col]
                # At the corners, split from the inner ring's corner to the outer ring:
                # the inner points next to the corner meet when the opening closes.
                quad = _quad(b, c, d, a) if col == 0 else _quad(a, b, c, d)
                structured.extend(quad)
                holes.extend([False] * len(quad))
                sides.extend([side + 1] * len(quad))
    for col in range(columns - 1):
        a, b = grid[-1, 0, col], grid[-1, 0, col + 1]
        c, d = grid[-1, 1, col + 1], grid[-1, 1, col]
        quad = _quad(a, b, c, d)
        structured.extend(quad)
        holes.extend([True] * len(quad))
        sides.extend([0] * len(quad))
    contour = np.concatenate([grid[0, 0], grid[0, 1][-2:0:-1]])
    in_band = np.zeros(len(points), bool)
    in_band[np.unique(grid[1:])] = True
    in_band |= point_in_polygon(points, points[contour])
    in_band[contour] = False
    outside = np.flatnonzero(~in_band)
    triangulation = Delaunay(points[outside])
    outer = outside[triangulation.simplices]
    keep = ~point_in_polygon(points[outer].mean(axis=1), points[contour])
    triangles = np.concatenate([np.array(structured, np.int32), outer[keep].astype(np.int32)])
    hole = np.concatenate([np.array(holes), np.zeros(int(keep.sum()), bool)])
    side_of = np.concatenate([np.array(sides, np.int8), np.zeros(int(keep.sum()), np.int8)])
    flip = triangle_areas(points, triangles) < 0.0
    triangles[flip] = triangles[flip][:, [0, 2, 1]]
    _check_contour_edges(triangles, contour)
    used = np.unique(triangles)
    low = np.floor(points[used].min(axis=0)).astype(int) - 2
    high = np.ceil(points[used].max(axis=0)).astype(int) + 3
    height, width = image_size
    roi = (
        max(int(low[0]), 0),
        max(int(low[1]), 0),
        min(int(high[0]), width),
        min(int(high[1]), height),
    )
    return WarpMesh(
        source_points=points, point_ids=ids.astype(np.int64), triangles=triangles,
        hole=hole, side=side_of, source_edges=(points[grid[-1, 0]], points[grid[-1, 1]]),
        roi=roi,
    )  # fmt: skip


def _quad(a: int, b: int, c: int, d: int) -> list[tuple[int, int, int]]:
    """Two triangles for the quad a-b-c-d; one where two corners coincide."""
    if a == d:
        return [(a, b, c)]
    if b == c:
        return [(a, b, d)]
    return [(a, b, c), (a, c, d)]


def _check_contour_edges(triangles: np.ndarray, contour: np.ndarray) -> None:
    """Raise if an edge of the closed contour (vertex ids) is not a triangle edge."""
    edges = set()
    for tri in triangles:
        for k in range(3):
            a, b = int(tri[k]), int(tri[(k + 1) % 3])
            edges.add((min(a, b), max(a, b)))
    loop = [int(v) for v in contour]
    missing = [
        (a, b)
        for a, b in zip(loop, loop[1:] + loop[:1], strict=True)
        if (min(a, b), max(a, b)) not in edges
    ]
    if missing:
        raise EngineError(f"the warp mesh misses contour edges {missing}; unusual landmarks")
