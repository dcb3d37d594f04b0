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

Blinks move the upper eyelid down onto the lower one (their timing, and the idle head
motion, are :mod:`engine.data.synth.idle_motion`'s).

The landmark numbers are :mod:`engine.data.synth.landmark_sets`'s, how the controls move the
lips :mod:`engine.data.synth.lip_articulation`'s (with the settings of
:mod:`engine.data.synth.rig_config`); the warp meshes are built by
:mod:`engine.data.synth.warp_mesh`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from engine.data.synth.landmark_sets import (
    CHIN_INDEX,
    EYE_RINGS,
    JAW_HINGE_INDICES,
    LIP_OUTER_INDICES,
    LOWER_LIP_RINGS,
    NUM_LIP_COLUMNS,
    UPPER_LIP_RINGS,
)
from engine.data.synth.lip_articulation import (
    lip_moves,
    press_lips,
    round_opening,
    tuck_lower_lip,
    untangle_lips,
)
from engine.data.synth.plane_geometry import egg_rim, resample_closed, smoothstep
from engine.data.synth.rig_config import RigConfig
from engine.data.synth.visemes import CONTROL_INDEX, NUM_CONTROLS, clamp_controls, control_vector
from engine.data.synth.warp_mesh import WarpMesh, band_mesh
from engine.errors import EngineError
from engine.tracking import NUM_LANDMARKS

log = logging.getLogger(__name__)


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
        hinge = float(np.mean(self.source_depth[list(JAW_HINGE_INDICES)]))
        chin = float(self.source_depth[CHIN_INDEX])
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

    def _deform(self, controls: np.ndarray) -> tuple[np.ndarray, float]:
        """Rig points (image coordinates) for clamped controls, and the jaw's displacement."""
        config = self.config
        width = self.mouth_width
        c = {name: float(controls[index]) for name, index in CONTROL_INDEX.items()}
        base = self.source_local[self.lip_ids]  # (2, 4, 11, 2)
        jaw_move, move = lip_moves(
            c,
            config=config,
            mouth_width=width,
            lip_u=self.lip_u,
            jaw_profile=self.lip_jaw_profile,
            rest_closure=self.rest_closure,
        )
        lips = base + move + jaw_move
        lips = round_opening(lips, c["lip_round"], config=config, lip_u=self.lip_u)
        lips = tuck_lower_lip(lips, c["lip_tuck"], config=config, teeth_edge=self.teeth_edge_local)
        lips = press_lips(lips, c["lip_press"], config=config)
        lips = untangle_lips(lips)
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
        rim = egg_rim(width, config.region_axes, samples=2048)
        anchors = resample_closed(rim, config.anchor_spacing_px)
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
        rim = egg_rim(half_width, config.eye_region_axes, samples=1024)
        rim = resample_closed(rim, config.anchor_spacing_px * 0.8)
        anchors = centre + rim[:, 0:1] * self.axis_x[None, :] + rim[:, 1:2] * self.axis_y[None, :]
        all_points = np.concatenate([self.source_landmarks[ids], anchors])
        all_ids = np.concatenate([np.array(ids), np.full(len(anchors), -1)])
        band = np.array([[rings["upper"], rings["lower"]]])
        return self._mesh(self.to_local(all_points), all_ids, band=band)

    def _mesh(self, points_local: np.ndarray, ids: np.ndarray, *, band: np.ndarray) -> WarpMesh:
        """The warp mesh over face-frame points (see :func:`band_mesh`)."""
        image_size = (int(self.image.shape[0]), int(self.image.shape[1]))
        return band_mesh(self.to_image(points_local), ids, band=band, image_size=image_size)


def _detect_landmarks(image: np.ndarray) -> np.ndarray:
    from engine.tracking import FaceTracker

    with FaceTracker(max_faces=1) as tracker:
        faces = tracker.detect(image)
    if not faces:
        raise EngineError("no face found in the avatar image; the rig needs one frontal face")
    return faces[0].landmarks
