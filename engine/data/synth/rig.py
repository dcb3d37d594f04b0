"""The face rig of the default avatar: mouth controls -> the 478 MediaPipe landmarks.

The rig runs MediaPipe once on the portrait and deforms the lower face from those landmarks:

* the 80 lip landmarks (four rings per lip, eleven columns from corner to corner) are moved
  explicitly by every control (jaw rotation, spreading, rounding, raising, dropping, pressing,
  tucking the lower lip under the upper teeth);
* every other lower-face landmark (chin, jaw line, lower cheeks, nostril base) follows the jaw
  rotation (weighted by how far below the mouth and how far in front of the jaw hinge it is)
  and is dragged by the lip contour with a weight that fades with distance;
* everything fades to zero inside an elliptical region around the mouth, on whose rim the
  warp's fixed anchor points lie, so the deformed image has no seam.

The photograph smiles with the upper teeth showing; the rig's rest pose closes the lips (the
visible inner lip edges meet, the jaw comes up a little) and keeps a mild smile.

The warp follows the visible inner lip edges, which the rig finds in the photo a little
beyond MediaPipe's inner contours (the tracker puts those inside the lip on an open mouth);
the inner landmarks keep the photo's offset from the edges while the lips are apart and
reach them as the lips close, so they sit where a tracker sees them.

Blinks move the upper eyelid down onto the lower one; idle head motion is a smooth seeded
similarity transform of the whole frame. Both come with their landmark updates.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final

import cv2
import numpy as np
from scipy.spatial import Delaunay

from engine.data.synth.visemes import CONTROL_INDEX, NUM_CONTROLS, clamp_controls, control_vector
from engine.errors import EngineError
from engine.tracking import NUM_LANDMARKS

log = logging.getLogger(__name__)

# MediaPipe Face Mesh lip rings, each from the image-left corner to the image-right corner
# (eleven columns; the lower rings share their corner points with the upper ones).
UPPER_LIP_RINGS: Final = (
    (61, 185, 40, 39, 37, 0, 267, 269, 270, 409, 291),  # outer contour
    (76, 184, 74, 73, 72, 11, 302, 303, 304, 408, 306),
    (62, 183, 42, 41, 38, 12, 268, 271, 272, 407, 292),
    (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308),  # inner contour
)
LOWER_LIP_RINGS: Final = (
    (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291),  # outer contour
    (76, 77, 90, 180, 85, 16, 315, 404, 320, 307, 306),
    (62, 96, 89, 179, 86, 15, 316, 403, 319, 325, 292),
    (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308),  # inner contour
)
NUM_LIP_COLUMNS: Final = 11
# The 40 landmarks of the outer and inner lip contours (MediaPipe's "lips" connections).
LIP_OUTER_INDICES: Final = UPPER_LIP_RINGS[0] + LOWER_LIP_RINGS[0][1:-1]
LIP_INNER_INDICES: Final = UPPER_LIP_RINGS[3] + LOWER_LIP_RINGS[3][1:-1]
LIP_CONTOUR_INDICES: Final = LIP_OUTER_INDICES + LIP_INNER_INDICES

# Eyes, each from the outer-left to the right corner in the image: the lid margins (upper and
# lower, sharing the corners), the ring above the margin (lid crease) and the one above that.
EYE_RINGS: Final = (
    {
        "upper": (33, 246, 161, 160, 159, 158, 157, 173, 133),
        "lower": (33, 7, 163, 144, 145, 153, 154, 155, 133),
        "crease": (130, 247, 30, 29, 27, 28, 56, 190, 243),
        "brow": (226, 113, 225, 224, 223, 222, 221, 189, 244),
        "under": (130, 25, 110, 24, 23, 22, 26, 112, 243),
    },
    {
        "upper": (362, 398, 384, 385, 386, 387, 388, 466, 263),
        "lower": (362, 382, 381, 380, 374, 373, 390, 249, 263),
        "crease": (463, 414, 286, 258, 257, 259, 260, 467, 359),
        "brow": (464, 413, 441, 442, 443, 444, 445, 342, 446),
        "under": (463, 341, 256, 252, 253, 254, 339, 255, 359),
    },
)

# Landmarks whose depth marks the jaw hinge (face silhouette beside the ears).
_HINGE_INDICES: Final = (234, 454, 93, 323)
_CHIN_INDEX: Final = 152


@dataclass(frozen=True, kw_only=True)
class RigConfig:
    """Geometry of the rig. Lengths are fractions of the mouth width unless marked ``_px``.

    Per-ring factors run from the outer contour to the visible inner edge.
    """

    # Where the photo's visible inner lip edges lie beyond MediaPipe's inner contours (upper,
    # lower), if they cannot be found in the image; searched up to ``inner_edge_search``.
    inner_edge_inset: tuple[float, float] = (0.035, 0.018)
    inner_edge_search: float = 0.06
    inner_edge_contrast: float = 6.0  # luma per px that counts as the lip-to-teeth edge
    edge_sample_inset_px: float = 1.5  # lip pixels are taken from this far inside the edge
    inset_closing_px: float = 3.0  # the inner landmarks reach the edges as the gap closes
    inset_contact_px: float = 1.5  # ... and the lower one as its lip leaves the upper teeth
    rest_upper_share: float = 0.35  # closing the photo's open smile: the upper lip's share
    rest_upper_rings: tuple[float, float, float, float] = (0.0, 0.3, 0.7, 1.0)
    rest_lower_rings: tuple[float, float, float, float] = (0.6, 0.75, 0.9, 1.0)
    rest_jaw_share: float = 0.2  # how much of the lower lip's closing move the chin follows
    rest_smile_relax: float = 0.0  # the rest pose's corners, as negative lip_spread
    jaw_open_max: float = 0.28  # lower lip drop at the centre when jaw_open = 1
    jaw_corner_in: float = 0.04  # corners move in as the jaw opens wide
    spread_max: float = 0.08  # each corner's outward move at lip_spread = 1
    spread_corner_lift: float = 0.03
    spread_thinning: float = 0.02
    round_pull: float = 0.18  # each corner's inward move at lip_round = 1
    round_opening: float = 0.03  # rounded lips part a little at the centre
    round_oval: float = 0.8  # how far rounding pulls the opening towards an oval
    round_oval_rings: tuple[float, float, float, float] = (0.25, 0.45, 0.7, 1.0)
    upper_raise_max: float = 0.075
    lower_drop_max: float = 0.07
    raise_rings: tuple[float, float, float, float] = (0.4, 0.6, 0.8, 1.0)
    drop_rings: tuple[float, float, float, float] = (0.3, 0.5, 0.75, 1.0)
    press_seam_share: float = 0.5  # where pressed lips meet, from the upper edge
    press_rings: tuple[float, float, float, float] = (0.3, 0.5, 0.8, 1.0)
    press_thinning: float = 0.18  # pressed lips roll in by this fraction of their height
    press_saturation: float = 0.85  # lip_press at which the lips are fully sealed
    tuck_clearance_px: float = 0.6  # the tucked lower lip's edge above the upper teeth edge
    tuck_rings: tuple[float, float, float, float] = (0.55, 0.7, 0.85, 1.0)
    drag_sigma: float = 0.18  # reach of each lip point in the skin drag
    drag_reach: float = 0.32  # distance from the lips over which the skin drag fades
    region_axes: tuple[float, float, float] = (1.55, 0.78, 1.7)  # lateral, up, down
    region_fade: tuple[float, float] = (0.55, 0.93)  # displacements fade out over this radius
    anchor_spacing_px: float = 12.0
    extra_spacing_px: float = 16.0  # spacing of the helper vertices filling the region
    blink_crease_share: float = 0.55  # the lid crease follows the lid margin this much
    blink_brow_share: float = 0.15
    blink_overlap_px: float = 1.8  # the closed upper lid reaches this far past the lower lid
    eye_region_axes: tuple[float, float, float] = (1.45, 2.3, 0.9)  # x eye half-width


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


@dataclass(frozen=True, kw_only=True)
class MouthPose:
    """The lower face for one control vector (before blinks and head motion)."""

    points: np.ndarray  # (P, 2) float64: the 478 landmarks, then the rig's helper vertices
    controls: np.ndarray  # (NUM_CONTROLS,) float32, as applied (clamped for a valid warp)
    jaw_drop_px: float  # jaw displacement at the lips relative to the photograph

    @property
    def landmarks(self) -> np.ndarray:
        """The 478 landmarks (x, y)."""
        return self.points[:NUM_LANDMARKS]


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


class FaceRig:
    """Mouth controls -> 478 landmarks on the portrait, plus the warp meshes for rendering.

    MediaPipe runs once, here; pass ``landmarks`` (478, 3) to skip it.

    The rig's point set is the 478 landmarks, then the visible inner lip edges (9 interior
    columns per lip), then helper vertices filling the region where landmarks are sparse.
    The lips are four rings per side: outer contour, the two MediaPipe rings between, and
    the visible inner edge, where the lip meets the teeth or the mouth's darkness. The
    tracker puts its inner contour a little inside the lip on an open mouth; the rig keeps
    that offset (the photo's) while the lips are apart and slides it to the edge as they
    close, so the inner landmarks sit where a tracker sees them.
    """

    def __init__(
        self,
        image: np.ndarray | None = None,
        *,
        config: RigConfig | None = None,
        landmarks: np.ndarray | None = None,
    ) -> None:
        from engine.data.synth.portrait import default_avatar_image

        self.config = config or RigConfig()
        self.image = default_avatar_image() if image is None else image
        if landmarks is None:
            landmarks = _detect_landmarks(self.image)
        if landmarks.shape[0] != NUM_LANDMARKS or landmarks.shape[1] < 2:
            raise ValueError(f"expected ({NUM_LANDMARKS}, 2|3) landmarks, got {landmarks.shape}")
        self.source_landmarks = np.asarray(landmarks[:, :2], np.float64)
        depth = landmarks[:, 2] if landmarks.shape[1] > 2 else np.zeros(NUM_LANDMARKS)
        self.source_depth = np.asarray(depth, np.float64)
        self._build_frame()
        self._build_points()
        self._build_lips()
        self._build_fields()
        self.rest_controls = control_vector()
        self.lower_face_mesh = self._build_lower_face_mesh()
        self.eye_meshes = tuple(self._build_eye_mesh(rings) for rings in EYE_RINGS)
        rest = self.mouth_pose(self.rest_controls)
        self.rest_points = rest.points
        self.rest_landmarks = rest.landmarks

    # ----------------------------------------------------------------------------- frames
    def _build_frame(self) -> None:
        """The face frame: x along the eye line, y down; origin between the lip corners."""
        points = self.source_landmarks
        across = points[263] - points[33]
        self.axis_x = across / np.linalg.norm(across)
        self.axis_y = np.array([-self.axis_x[1], self.axis_x[0]])
        self.mouth_centre = 0.5 * (points[78] + points[308])
        self.mouth_width = float(np.linalg.norm(points[291] - points[61]))
        self.landmark_local = self.to_local(points)

    def to_local(self, points: np.ndarray) -> np.ndarray:
        """Image points -> face-frame coordinates (a across, b down) around the mouth."""
        offset = np.asarray(points, np.float64)[..., :2] - self.mouth_centre
        return np.stack([offset @ self.axis_x, offset @ self.axis_y], axis=-1)

    def to_image(self, local: np.ndarray) -> np.ndarray:
        """Face-frame coordinates -> image points."""
        return np.asarray(
            self.mouth_centre
            + local[..., 0:1] * self.axis_x[None, :]
            + local[..., 1:2] * self.axis_y[None, :]
        )

    # ----------------------------------------------------------------------------- points
    def _build_points(self) -> None:
        """Landmarks, visible inner edges and helper vertices, in face-frame coordinates."""
        config = self.config
        width = self.mouth_width
        local = self.landmark_local
        inner = local[np.array([UPPER_LIP_RINGS[3], LOWER_LIP_RINGS[3]])]  # (2, 11, 2)
        half = 0.5 * (inner[0, -1, 0] - inner[0, 0, 0])
        middle = 0.5 * (inner[0, -1, 0] + inner[0, 0, 0])
        lateral = np.abs((inner[0, :, 0] - middle) / half)
        taper = np.clip(1.0 - lateral**3, 0.0, 1.0)
        depth = self._inner_edge_depth(inner, central=lateral < 0.7)  # (2,) px into the opening
        inset = (depth * np.array([1.0, -1.0]))[:, None] * taper[None, :]
        gap = np.maximum(inner[1, :, 1] - inner[0, :, 1], 0.0)
        # The two edges never cross: insets shrink where the photo's opening is narrow.
        room = np.clip(gap / np.maximum(np.abs(inset).sum(axis=0), 1e-9), 0.0, 1.0)
        edges = inner.copy()
        edges[..., 1] += inset * room[None, :]
        interior = edges[:, 1:-1].reshape(-1, 2)  # corners stay the landmarks
        first_edge = NUM_LANDMARKS
        edge_ids = np.empty((2, NUM_LIP_COLUMNS), np.int64)
        edge_ids[:, 0] = UPPER_LIP_RINGS[3][0]
        edge_ids[:, -1] = UPPER_LIP_RINGS[3][-1]
        edge_ids[:, 1:-1] = first_edge + np.arange(2 * (NUM_LIP_COLUMNS - 2)).reshape(2, -1)
        self.edge_ids = edge_ids
        self.inner_ids = np.array([UPPER_LIP_RINGS[3], LOWER_LIP_RINGS[3]], np.int64)
        known = np.concatenate([local, interior])
        # Helpers: a grid inside the region, away from every landmark.
        lateral, up, down = config.region_axes
        step = config.extra_spacing_px
        grid_a = np.arange(-lateral * width, lateral * width + 1e-6, step)
        grid_b = np.arange(-up * width, down * width + 1e-6, step)
        grid = np.stack(np.meshgrid(grid_a, grid_b), axis=-1).reshape(-1, 2)
        grid = grid[self.region_radius(grid) < 0.88]
        distance = np.linalg.norm(grid[:, None, :] - local[None, :, :], axis=-1)
        far = distance.min(axis=1) > 0.8 * step
        helpers, distance = grid[far], distance[far]
        self.source_local = np.concatenate([known, helpers])
        self.source_points = self.to_image(self.source_local)
        self.num_points = len(self.source_local)
        # Depth of an edge or helper: that of its nearest landmarks (inverse-distance mean).
        extra = np.concatenate([interior, helpers])
        distance = np.linalg.norm(extra[:, None, :] - local[None, :, :], axis=-1)
        near = np.argsort(distance, axis=1)[:, :4]
        inverse = 1.0 / np.maximum(np.take_along_axis(distance, near, axis=1), 1e-3)
        extra_depth = (self.source_depth[near] * inverse).sum(axis=1) / inverse.sum(axis=1)
        self.point_depth = np.concatenate([self.source_depth, extra_depth])

    def _inner_edge_depth(self, inner: np.ndarray, *, central: np.ndarray) -> np.ndarray:
        """How far the visible inner lip edges lie beyond MediaPipe's inner contours (px).

        Along the face's vertical through each central inner landmark, the strongest
        brightening from lip to teeth (downwards for the upper lip, upwards for the lower)
        marks the edge; per lip the median over the columns, else the configured default.
        """
        config = self.config
        width = self.mouth_width
        luma = cv2.GaussianBlur(
            self.image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32),
            (0, 0),
            0.8,
        )
        steps = np.arange(0.0, config.inner_edge_search * width, 0.25)
        defaults = np.array(config.inner_edge_inset) * width
        depths = defaults.copy()
        for side, direction in ((0, 1.0), (1, -1.0)):
            columns = self.to_image(inner[side][central])  # (n, 2)
            line = columns[:, None, :] + direction * steps[None, :, None] * self.axis_y
            profile = cv2.remap(
                luma,
                (line[..., 0] - 0.5).astype(np.float32),
                (line[..., 1] - 0.5).astype(np.float32),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REPLICATE,
            )
            rise = np.gradient(profile, 0.25, axis=1)
            strongest = np.argmax(rise, axis=1)
            found = rise[np.arange(len(columns)), strongest] > config.inner_edge_contrast
            if np.count_nonzero(found) >= max(2, len(columns) // 2):
                depths[side] = float(np.median(steps[strongest[found]]))
        return np.clip(depths, 0.0, config.inner_edge_search * width)

    # ------------------------------------------------------------------------------- lips
    def _build_lips(self) -> None:
        """Ring ids (side, ring, column), lateral coordinates and the rest closure."""
        config = self.config
        rings = np.array([UPPER_LIP_RINGS, LOWER_LIP_RINGS], np.int64)  # (2, 4, 11)
        rings[:, 3] = self.edge_ids
        self.lip_ids = rings
        local = self.source_local[rings]  # (2, 4, 11, 2)
        left, right = local[:, :, 0:1, 0], local[:, :, -1:, 0]
        middle, half = 0.5 * (left + right), 0.5 * (right - left)
        self.lip_u = np.clip((local[..., 0] - middle) / half, -1.0, 1.0)  # (2, 4, 11)
        self.photo_gap = np.maximum(local[1, 3, :, 1] - local[0, 3, :, 1], 0.0)
        # The photo's upper incisors end at its lower lip's visible edge.
        self.teeth_edge_local = local[1, 3].copy()  # (11, 2)
        # The inner landmarks' offset from the visible edges in the photo.
        self.inner_inset = (self.source_local[self.inner_ids] - local[:, 3])[..., 1]  # (2, 11)
        # Near the corners the upper lip is a thin sliver along the corner line: there the
        # lower lip comes up to it; at the centre the two meet part way.
        share = config.rest_upper_share * (1.0 - np.abs(self.lip_u[0, 3]) ** 3)
        upper_factor = np.asarray(config.rest_upper_rings)[:, None]
        lower_factor = np.asarray(config.rest_lower_rings)[:, None]
        closure = np.zeros((2, 4, NUM_LIP_COLUMNS, 2))
        closure[0, :, :, 1] = (share * self.photo_gap)[None, :] * upper_factor
        closure[1, :, :, 1] = -((1.0 - share) * self.photo_gap)[None, :] * lower_factor
        self.rest_closure = closure
        centre = NUM_LIP_COLUMNS // 2
        centre_gap = float(self.photo_gap[centre])
        self.rest_jaw_px = -(1.0 - float(share[centre])) * centre_gap * config.rest_jaw_share
        # Jaw profile of each lip point: the lower lip follows the jaw fully at the centre and
        # half at the corners, the upper lip only near the corners.
        u = np.abs(self.lip_u)
        self.lip_jaw_profile = np.stack([0.5 * u[0] ** 4, 0.5 + 0.5 * (1.0 - u[1] ** 1.5)])

    # ----------------------------------------------------------------------------- fields
    def _build_fields(self) -> None:
        """Static per-point weights: jaw following, skin drag and the region fade."""
        local = self.source_local
        self.is_lip = np.zeros(self.num_points, bool)
        self.is_lip[self.lip_ids.ravel()] = True
        self.is_lip[self.inner_ids.ravel()] = True
        self.jaw_weight = self._jaw_weights(local, self.point_depth)
        self.region_weight = self.region_fade(local)
        self._drag_sources = np.array(LIP_OUTER_INDICES, np.int64)
        self.drag_matrix, self.drag_fade = self._drag_weights(local, self._drag_sources)
        log.debug(
            "rig: mouth width %.1f px, visible opening %.1f px, rest jaw %.1f px",
            self.mouth_width,
            float(self.photo_gap.max()),
            self.rest_jaw_px,
        )

    def _lowerness(self, local: np.ndarray) -> np.ndarray:
        """1 for skin that moves with the jaw (below the mouth), 0 above; ramps at the sides."""
        width = self.mouth_width
        corners = self.landmark_local[[61, 291]]
        corner_a = 0.5 * (corners[1, 0] - corners[0, 0])
        t = np.clip((local[:, 0] - corners[0, 0]) / (corners[1, 0] - corners[0, 0]), 0.0, 1.0)
        seam_b = corners[0, 1] + t * (corners[1, 1] - corners[0, 1])
        beyond = np.maximum(np.abs(local[:, 0]) - corner_a, 0.0)
        ramp = 0.02 * width + 0.6 * beyond
        centre = seam_b + 0.3 * ramp
        return smoothstep((local[:, 1] - centre + ramp) / (2.0 * ramp))

    def _jaw_weights(self, local: np.ndarray, depth: np.ndarray) -> np.ndarray:
        """How much each point follows the jaw: below the mouth x in front of the hinge."""
        hinge = float(np.mean(self.source_depth[list(_HINGE_INDICES)]))
        chin = float(self.source_depth[_CHIN_INDEX])
        in_front = np.clip((hinge - depth) / max(hinge - chin, 1e-6), 0.0, 1.0)
        return self._lowerness(local) * in_front

    def _drag_weights(
        self, local: np.ndarray, outer_ids: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Skin drag: normalised Gaussian weights to the outer lip contour, and their fade."""
        width = self.mouth_width
        sources = self.source_local[outer_ids]  # (20, 2)
        lower = np.isin(outer_ids, LOWER_LIP_RINGS[0][1:-1])
        upper = np.isin(outer_ids, UPPER_LIP_RINGS[0][1:-1])
        lowerness = self._lowerness(local)[:, None]
        side = np.where(lower[None, :], lowerness, np.where(upper[None, :], 1.0 - lowerness, 1.0))
        distance = np.linalg.norm(local[:, None, :] - sources[None, :, :], axis=-1)
        weights = np.exp(-((distance / (self.config.drag_sigma * width)) ** 2)) * side + 1e-12
        weights /= weights.sum(axis=1, keepdims=True)
        nearest = distance.min(axis=1)
        fade = np.exp(-((nearest / (self.config.drag_reach * width)) ** 2))
        return weights, fade

    def region_fade(self, local: np.ndarray) -> np.ndarray:
        """1 in the middle of the deformable region, 0 from ``region_fade[1]`` outwards."""
        radius = self.region_radius(local)
        inner, outer = self.config.region_fade
        return 1.0 - smoothstep((radius - inner) / (outer - inner))

    def region_radius(self, local: np.ndarray) -> np.ndarray:
        """Elliptical radius in the deformable region (1 on the anchor ring)."""
        lateral, up, down = self.config.region_axes
        width = self.mouth_width
        vertical = np.where(local[..., 1] < 0.0, up, down) * width
        return np.asarray(
            np.sqrt((local[..., 0] / (lateral * width)) ** 2 + (local[..., 1] / vertical) ** 2)
        )

    # ------------------------------------------------------------------------ opening
    def opening_polygon(self, points: np.ndarray) -> np.ndarray:
        """The visible mouth opening (inner lip edges) as a closed (20, 2) polygon."""
        loop = np.concatenate([self.edge_ids[0], self.edge_ids[1][-2:0:-1]])
        return np.asarray(points[loop, :2])

    def opening_edges(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The visible inner lip edges, upper and lower, each (11, 2) left to right."""
        return np.asarray(points[self.edge_ids[0], :2]), np.asarray(points[self.edge_ids[1], :2])

    def source_opening(self) -> tuple[np.ndarray, np.ndarray]:
        """The photo's visible inner lip edges: upper and lower, each (11, 2), left to right."""
        return self.source_points[self.edge_ids[0]], self.source_points[self.edge_ids[1]]

    # ------------------------------------------------------------------------------- pose
    def mouth_pose(self, controls: np.ndarray) -> MouthPose:
        """Rig points for a control vector; controls are scaled back if the warp would fold."""
        controls = clamp_controls(np.asarray(controls, np.float32).reshape(NUM_CONTROLS))
        points, jaw = self._deform(controls)
        mesh = self.lower_face_mesh
        if mesh.folded(mesh.positions(points)):
            low, high = 0.0, 1.0
            for _ in range(10):
                middle = 0.5 * (low + high)
                trial = self.rest_controls + middle * (controls - self.rest_controls)
                trial_points, _ = self._deform(trial)
                if mesh.folded(mesh.positions(trial_points)):
                    high = middle
                else:
                    low = middle
            log.debug("controls scaled by %.3f to keep the warp valid", low)
            controls = (self.rest_controls + low * (controls - self.rest_controls)).astype(
                np.float32
            )
            points, jaw = self._deform(controls)
        return MouthPose(points=points, controls=controls, jaw_drop_px=jaw)

    def _lip_moves(self, c: dict[str, float]) -> tuple[np.ndarray, np.ndarray]:
        """Linear lip moves (face frame): the jaw's part and everything else's."""
        config = self.config
        width = self.mouth_width
        u = self.lip_u
        jaw_px = config.jaw_open_max * width * c["jaw_open"]
        # Jaw: the lower lip with the jaw, corners half way and drawn in slightly. The rest
        # closure already placed the lips for the rest jaw, so only the opening is added.
        jaw_move = np.zeros((2, 4, NUM_LIP_COLUMNS, 2))
        jaw_move[..., 1] = jaw_px * self.lip_jaw_profile
        jaw_move[..., 0] = -config.jaw_corner_in * width * c["jaw_open"] * u * np.abs(u) ** 3
        move = self.rest_closure.copy()
        # Spreading (negative: the relaxed corners of the rest pose).
        spread = c["lip_spread"] - config.rest_smile_relax
        move[..., 0] += spread * config.spread_max * width * u
        move[..., 1] -= spread * config.spread_corner_lift * width * u**2
        thinning = max(spread, 0.0) * config.spread_thinning * width * (1.0 - u[0, 0] ** 2)
        move[0, 0, :, 1] += thinning
        move[1, 0, :, 1] -= thinning
        move[0, 1, :, 1] += 0.5 * thinning
        move[1, 1, :, 1] -= 0.5 * thinning
        # Rounding: the corners come in (every ring alike, so the thin corner region is not
        # sheared) and the centre parts a little; ``_round_opening`` shapes the O.
        rounding = c["lip_round"]
        move[..., 0] -= rounding * config.round_pull * width * u
        bulge = np.clip(1.0 - u**2, 0.0, 1.0)
        opening = rounding * config.round_opening * width * np.sqrt(bulge)
        move[0, 3, :, 1] -= opening[0, 3]
        move[0, 2, :, 1] -= 0.6 * opening[0, 2]
        move[1, 3, :, 1] += opening[1, 3]
        move[1, 2, :, 1] += 0.6 * opening[1, 2]
        # Upper lip raise / lower lip drop, strongest at the centre.
        profile = bulge**0.6
        ring_up = np.asarray(config.raise_rings)[:, None]
        ring_down = np.asarray(config.drop_rings)[:, None]
        raise_px = c["upper_lip_raise"] * config.upper_raise_max * width
        drop_px = c["lower_lip_drop"] * config.lower_drop_max * width
        move[0, ..., 1] -= raise_px * profile[0] * ring_up
        move[1, ..., 1] += drop_px * profile[1] * ring_down
        return jaw_move, move

    def _deform(self, controls: np.ndarray) -> tuple[np.ndarray, float]:
        """Rig points (image coordinates) for clamped controls, and the jaw's displacement."""
        config = self.config
        width = self.mouth_width
        c = {name: float(controls[index]) for name, index in CONTROL_INDEX.items()}
        base = self.source_local[self.lip_ids]  # (2, 4, 11, 2)
        jaw_move, move = self._lip_moves(c)
        lips = base + move + jaw_move
        lips = self._round_opening(lips, c["lip_round"])
        lips = self._tuck(lips, c["lip_tuck"])
        lips = self._press(lips, c["lip_press"])
        lips = _untangle_lips(lips)
        # The inner landmarks: the photo's offset from the edges while the lips are apart, on
        # the edges when closed. The lower one keeps its offset only while the lower lip
        # touches the upper teeth (as in the photo); below them it is on the edge.
        gap = np.maximum(lips[1, 3, :, 1] - lips[0, 3, :, 1], 0.0)
        apart = smoothstep(gap / config.inset_closing_px)
        teeth = np.interp(
            lips[1, 3, :, 0], self.teeth_edge_local[:, 0], self.teeth_edge_local[:, 1]
        )
        below_teeth = lips[1, 3, :, 1] - teeth
        contact = 1.0 - smoothstep((below_teeth - 0.5) / config.inset_contact_px)
        inner = lips[:, 3].copy()  # (2, 11, 2)
        inner[0, :, 1] += self.inner_inset[0] * apart
        inner[1, :, 1] += self.inner_inset[1] * apart * contact
        # Everything else: the jaw field plus skin dragged by the outer lip contour.
        jaw_total = self.rest_jaw_px + config.jaw_open_max * width * c["jaw_open"]
        outer_move = (lips - base)[:, 0]  # (2, 11, 2)
        outer_jaw = np.zeros_like(outer_move)
        outer_jaw[..., 1] = jaw_total * self.lip_jaw_profile[:, 0]  # carried by the jaw field
        dragged = np.zeros((NUM_LANDMARKS, 2))
        dragged[self.lip_ids[:, 0]] = outer_move - outer_jaw
        skin = self.drag_matrix @ dragged[self._drag_sources] * self.drag_fade[:, None]
        skin[:, 1] += jaw_total * self.jaw_weight
        skin *= self.region_weight[:, None]
        local = self.source_local.copy()
        local[~self.is_lip] += skin[~self.is_lip]
        local[self.lip_ids] = lips
        local[self.inner_ids] = inner
        return self.to_image(local), jaw_total

    def _round_opening(self, lips: np.ndarray, rounding: float) -> np.ndarray:
        """Rounded lips: the opening's edges (and, less, the lips) pulled towards an oval.

        The oval keeps the opening's width and its height at the centre; the corners come
        to the centre's height, so the smile's upturned corners flatten out.
        """
        amount = rounding * self.config.round_oval
        if amount <= 0.0:
            return lips
        lips = lips.copy()
        centre = NUM_LIP_COLUMNS // 2
        upper, lower = lips[0, 3, :, 1], lips[1, 3, :, 1]
        middle = 0.5 * (upper[centre] + lower[centre])
        half_height = max(0.5 * (lower[centre] - upper[centre]), 0.0)
        across = lips[0, 3, :, 0]
        half_width = 0.5 * (across[-1] - across[0])
        u = np.clip((across - 0.5 * (across[0] + across[-1])) / max(half_width, 1e-6), -1, 1)
        profile = np.sqrt(1.0 - u**2)
        delta = amount * np.stack(
            [middle - half_height * profile - upper, middle + half_height * profile - lower]
        )  # (2, 11)
        # Rings follow less towards the outer contour, all alike at the corners.
        for ring, share in enumerate(self.config.round_oval_rings):
            follow = share + (1.0 - share) * np.abs(self.lip_u[:, ring]) ** 2
            lips[:, ring, :, 1] += follow * delta
        return lips

    def _tuck(self, lips: np.ndarray, tuck: float) -> np.ndarray:
        """The lower lip's edge up (or down) to just above the upper teeth's edge."""
        if tuck <= 0.0:
            return lips
        edge = self.teeth_edge_local
        target = np.interp(lips[1, 3, :, 0], edge[:, 0], edge[:, 1])
        delta = tuck * (target - self.config.tuck_clearance_px - lips[1, 3, :, 1])
        delta[[0, -1]] = 0.0
        lips = lips.copy()
        for ring, share in enumerate(self.config.tuck_rings):
            lips[1, ring, :, 1] += share * delta
        return lips

    def _press(self, lips: np.ndarray, press: float) -> np.ndarray:
        """Seal the lips: the edges meet at a seam, the lips roll in a little."""
        config = self.config
        amount = float(np.clip(press / config.press_saturation, 0.0, 1.0))
        if amount <= 0.0:
            return lips
        lips = lips.copy()
        upper, lower = lips[0, 3, :, 1], lips[1, 3, :, 1]
        seam = upper + config.press_seam_share * (lower - upper)
        up_delta = amount * (seam - upper)
        down_delta = amount * (seam - lower)
        height_up = lips[0, 3, :, 1] - lips[0, 0, :, 1]
        height_down = lips[1, 0, :, 1] - lips[1, 3, :, 1]
        for ring, share in enumerate(config.press_rings):
            lips[0, ring, :, 1] += share * up_delta
            lips[1, ring, :, 1] += share * down_delta
        roll = amount * config.press_thinning
        lips[0, 0, :, 1] += roll * height_up
        lips[0, 1, :, 1] += 0.5 * roll * height_up
        lips[1, 0, :, 1] -= roll * height_down
        lips[1, 1, :, 1] -= 0.5 * roll * height_down
        return lips

    # ------------------------------------------------------------------------------ blink
    def blink(self, points: np.ndarray, amount: float) -> np.ndarray:
        """Rig points with both upper eyelids lowered by ``amount`` (0 open, 1 closed)."""
        if amount <= 0.0:
            return points
        amount = min(float(amount), 1.0)
        config = self.config
        source = self.source_landmarks
        moved = points.copy()
        for rings in EYE_RINGS:
            upper = np.array(rings["upper"])
            lower = np.array(rings["lower"])
            order = np.argsort(source[lower, 0])
            target = np.interp(source[upper, 0], source[lower[order], 0], source[lower[order], 1])
            drop = amount * (target + config.blink_overlap_px - source[upper, 1])
            drop[[0, -1]] = 0.0
            down = self.axis_y[None, :]
            moved[upper] += drop[:, None] * down
            moved[np.array(rings["crease"])] += (config.blink_crease_share * drop)[:, None] * down
            moved[np.array(rings["brow"])] += (config.blink_brow_share * drop)[:, None] * down
        return moved

    # ------------------------------------------------------------------------------ meshes
    def _build_lower_face_mesh(self) -> WarpMesh:
        """Lip band strips, Delaunay outside them, and the anchor ring on the region's rim."""
        config = self.config
        width = self.mouth_width
        local = self.source_local
        inside = np.flatnonzero(self.region_radius(local) < 0.95)
        riders = np.setdiff1d(self.inner_ids, self.lip_ids)  # inner landmarks ride along
        inside = inside[~np.isin(inside, riders)]
        rim = _egg_rim(width, config.region_axes, samples=2048)
        anchors = _resample_closed(rim, config.anchor_spacing_px)
        ids = np.concatenate([inside, np.full(len(anchors), -1)])
        points_local = np.concatenate([local[inside], anchors])
        # The lips are sampled from just inside their visible edges, so the blurred rim of
        # the teeth never stretches into the lip.
        # (At most half way to the next ring, which is close near the corners.)
        for side, direction in ((0, -1.0), (1, 1.0)):
            for column in range(1, NUM_LIP_COLUMNS - 1):
                vertex = np.flatnonzero(ids == self.edge_ids[side, column])
                edge, inner_ring = local[self.lip_ids[side, 3:1:-1, column], 1]
                room = abs(edge - inner_ring)
                shift = min(config.edge_sample_inset_px, 0.5 * room)
                points_local[vertex, 1] += direction * shift
        band = self.lip_ids.transpose(1, 0, 2)  # (rings, sides, columns)
        return self._mesh(points_local, ids, band=band)

    def _build_eye_mesh(self, rings: Mapping[str, Sequence[int]]) -> WarpMesh:
        """Mesh around one eye: lid margins, crease and brow rings, and an anchor ellipse."""
        config = self.config
        ids = sorted({i for ring in rings.values() for i in ring})
        corners = self.source_landmarks[[rings["upper"][0], rings["upper"][-1]]]
        centre = corners.mean(axis=0)
        half_width = 0.5 * float(np.linalg.norm(corners[1] - corners[0]))
        rim = _egg_rim(half_width, config.eye_region_axes, samples=1024)
        rim = _resample_closed(rim, config.anchor_spacing_px * 0.8)
        anchors = centre + rim[:, 0:1] * self.axis_x[None, :] + rim[:, 1:2] * self.axis_y[None, :]
        all_points = np.concatenate([self.source_landmarks[ids], anchors])
        all_ids = np.concatenate([np.array(ids), np.full(len(anchors), -1)])
        band = np.array([[rings["upper"], rings["lower"]]])
        return self._mesh(self.to_local(all_points), all_ids, band=band)

    def _mesh(self, points_local: np.ndarray, ids: np.ndarray, *, band: np.ndarray) -> WarpMesh:
        """Triangulate: structured strips over a ring band, Delaunay outside it.

        ``band`` (rings, 2 sides, columns) holds rig point ids: ring 0 is the outer contour,
        the last ring the opening's edge; the two sides share their first and last columns.
        Strips join consecutive rings; the opening (between the last rings' two sides) is
        triangulated too and marked as hole; outside ring 0 comes a Delaunay triangulation
        of the remaining points.
        """
        points = self.to_image(points_local)
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
        height, width = self.image.shape[:2]
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


def _egg_rim(half_width: float, axes: tuple[float, float, float], *, samples: int) -> np.ndarray:
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


def lip_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """The 40 outer + inner lip contour landmarks (x, y) of a (478, 2|3) array."""
    return np.asarray(landmarks)[list(LIP_CONTOUR_INDICES), :2]


def _detect_landmarks(image: np.ndarray) -> np.ndarray:
    from engine.tracking import FaceTracker

    with FaceTracker(max_faces=1) as tracker:
        faces = tracker.detect(image)
    if not faces:
        raise EngineError("no face found in the avatar image; the rig needs one frontal face")
    return faces[0].landmarks


def _untangle_lips(lips: np.ndarray) -> np.ndarray:
    """Keep the rings in order: inner lower never above inner upper, rings not crossing."""
    lips = lips.copy()
    upper, lower = lips[0, ..., 1], lips[1, ..., 1]
    crossing = lower[3] < upper[3]
    if np.any(crossing):
        seam = 0.5 * (lower[3] + upper[3])
        upper[3] = np.where(crossing, seam, upper[3])
        lower[3] = np.where(crossing, seam, lower[3])
    for ring in (2, 1, 0):
        upper[ring] = np.minimum(upper[ring], upper[ring + 1])
        lower[ring] = np.maximum(lower[ring], lower[ring + 1])
    return lips


def _resample_closed(curve: np.ndarray, spacing: float) -> np.ndarray:
    """Points evenly spaced (about ``spacing`` apart) along a densely sampled closed curve."""
    closed = np.concatenate([curve, curve[:1]])
    lengths = np.linalg.norm(np.diff(closed, axis=0), axis=1)
    cumulative = np.concatenate([[0.0], np.cumsum(lengths)])
    count = max(8, round(cumulative[-1] / spacing))
    positions = np.linspace(0.0, cumulative[-1], count, endpoint=False)
    return np.stack([np.interp(positions, cumulative, closed[:, k]) for k in range(2)], axis=1)


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


@dataclass(frozen=True, kw_only=True)
class IdleMotionConfig:
    """Amplitude and tempo of the idle head motion."""

    rotation_deg: float = 1.2
    shift_px: float = 3.0
    scale: float = 0.012
    frequency_hz: tuple[float, float] = (0.05, 0.35)
    components: int = 3  # sinusoids per degree of freedom


class IdleMotion:
    """A smooth, seeded similarity transform of the whole frame over time.

    Each degree of freedom (rotation, x and y shift, scale) is a sum of a few sinusoids of
    random frequency and phase whose weights sum to one, so it never exceeds its amplitude.
    """

    def __init__(
        self, seed: int, *, centre: Sequence[float], config: IdleMotionConfig | None = None
    ) -> None:
        self.config = config or IdleMotionConfig()
        rng = np.random.default_rng([int(seed), 0x1D1E])
        count = self.config.components
        low, high = self.config.frequency_hz
        self._frequency = rng.uniform(low, high, size=(4, count))
        self._phase = rng.uniform(0.0, 2.0 * math.pi, size=(4, count))
        weights = rng.uniform(0.3, 1.0, size=(4, count))
        self._weight = weights / weights.sum(axis=1, keepdims=True)
        self._centre = np.asarray(centre, np.float64)

    def matrix(self, time_s: float) -> np.ndarray:
        """The (2, 3) affine matrix (source -> frame) at ``time_s``."""
        config = self.config
        waves = np.sum(
            self._weight * np.sin(2.0 * math.pi * self._frequency * time_s + self._phase), axis=1
        )
        angle = math.radians(config.rotation_deg * waves[0])
        scale = 1.0 + config.scale * waves[3]
        shift = config.shift_px * waves[1:3]
        cos, sin = scale * math.cos(angle), scale * math.sin(angle)
        linear = np.array([[cos, -sin], [sin, cos]])
        offset = self._centre + shift - linear @ self._centre
        return np.concatenate([linear, offset[:, None]], axis=1)


def apply_affine(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """(N, 2) points through a (2, 3) affine matrix."""
    return np.asarray(points[:, :2] @ matrix[:, :2].T + matrix[:, 2])


@dataclass(frozen=True, kw_only=True)
class BlinkConfig:
    """Timing of the blinks."""

    interval_s: tuple[float, float] = (2.0, 6.0)
    duration_s: tuple[float, float] = (0.15, 0.25)
    first_s: tuple[float, float] = (0.4, 3.0)
    closing_share: float = 0.4  # of a blink's duration spent closing


class BlinkSchedule:
    """Seeded blink times; ``amount(t)`` is 0 (open) .. 1 (closed).

    Blinks are drawn in order from the seed as far as asked for, so any query order gives
    the same schedule.
    """

    def __init__(self, seed: int, *, config: BlinkConfig | None = None) -> None:
        self.config = config or BlinkConfig()
        self._rng = np.random.default_rng([int(seed), 0xB11C])
        self._starts: list[float] = []
        self._durations: list[float] = []
        self._next = float(self._rng.uniform(*self.config.first_s))

    def _extend(self, until_s: float) -> None:
        while self._next <= until_s:
            duration = float(self._rng.uniform(*self.config.duration_s))
            self._starts.append(self._next)
            self._durations.append(duration)
            self._next += duration + float(self._rng.uniform(*self.config.interval_s))

    def amount(self, time_s: float) -> float:
        """How closed the eyelids are at ``time_s``."""
        self._extend(time_s)
        index = int(np.searchsorted(self._starts, time_s, side="right")) - 1
        if index < 0:
            return 0.0
        phase = (time_s - self._starts[index]) / self._durations[index]
        if phase >= 1.0:
            return 0.0
        closing = self.config.closing_share
        if phase < closing:
            return float(smoothstep(phase / closing))
        return float(1.0 - smoothstep((phase - closing) / (1.0 - closing)))
