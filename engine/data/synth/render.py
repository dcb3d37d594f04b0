"""The frame renderer of the speaking default avatar: mouth controls -> frames + landmarks.

Per frame:

1. the rig turns the controls into landmark positions (lower face, then blinks);
2. piecewise-affine warps move the photo's own pixels: the lower face over the rig's mesh
   (fixed anchors on a ring outside the deformed region, so there is no seam) and, during a
   blink, each eye's upper lid. A warp rasterises triangle ids into an index image, turns
   each triangle's inverse affine into a dense map and samples with ``cv2.remap``, only in
   the mesh's region of interest;
3. the inner mouth is drawn inside the inner lip contour: a dark shaded cavity, the tongue,
   the lower teeth (moving with the jaw) and the photo's own upper teeth (fixed to the
   skull), composited with an anti-aliased, slightly feathered inner-lip mask;
4. a slight seeded idle head motion moves the whole frame and the landmarks together.

Everything is deterministic given the seed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np

from engine.data.synth.idle_motion import BlinkConfig, BlinkSchedule, IdleMotion, IdleMotionConfig
from engine.data.synth.landmark_sets import NUM_LIP_COLUMNS
from engine.data.synth.plane_geometry import apply_affine, smoothstep
from engine.data.synth.rig import FaceRig
from engine.data.synth.visemes import (
    CONTROL_INDEX,
    NUM_CONTROLS,
    ControlTrack,
)
from engine.data.synth.warp_mesh import WarpMesh
from engine.frames import FPS

log = logging.getLogger(__name__)

_SUBPIXEL_BITS = 4  # fixed-point bits for the rasterisers
_SUBPIXEL = 1 << _SUBPIXEL_BITS


@dataclass(frozen=True, kw_only=True)
class RenderConfig:
    """What the renderer adds around the mouth, and how."""

    fps: float = float(FPS)
    idle_motion: bool = True
    blinks: bool = True
    motion: IdleMotionConfig = field(default_factory=IdleMotionConfig)
    blink: BlinkConfig = field(default_factory=BlinkConfig)
    mask_supersample: int = 4  # inner-lip mask rasterised at this factor, then area-averaged
    mask_feather_px: float = 0.45  # Gaussian sigma softening the inner-lip mask
    cavity_colour: tuple[float, float, float] = (28.0, 9.0, 11.0)  # deep in the mouth
    cavity_edge_colour: tuple[float, float, float] = (78.0, 30.0, 32.0)  # just inside the lips
    tongue_colour: tuple[float, float, float] = (160.0, 74.0, 78.0)
    tongue_tip_colour: tuple[float, float, float] = (182.0, 92.0, 96.0)
    gum_colour: tuple[float, float, float] = (150.0, 70.0, 74.0)
    lower_teeth_shade: float = 0.88  # lower teeth are lit less than the upper ones
    lower_teeth_offset_px: float = -3.0  # lower incisal edge vs the upper one, photo's jaw
    lower_teeth_width: float = 0.88  # lower incisors are narrower
    lower_teeth_height: float = 0.14  # visible lower teeth height (x mouth width)
    teeth_jaw_ratio: float = 0.95  # the lower teeth sit slightly behind the lower lip
    upper_teeth_trim_px: float = 0.8  # upper teeth end this far above the photo's lip line
    teeth_shadow: tuple[float, float, float] = (0.42, 0.3, 0.28)  # RGB gain, teeth hidden
    teeth_reveal_px: float = 2.0  # openings narrower than this show less of the teeth
    seam_closing_px: float = 2.0  # lips closer than this show the seam of closed lips
    seam_darkness: float = 0.12
    seam_tint: tuple[float, float, float] = (0.8, 1.0, 1.0)  # the seam darkens red less
    seam_blur_px: float = 0.5
    shadow_offset_px: float = 3.0  # the upper lip's shadow on the lower one, below the seam
    shadow_darkness: float = 0.5
    shadow_blur_px: float = 1.5


class PiecewiseAffineWarp:
    """Warps an image over a fixed triangulation, within the mesh's region of interest."""

    def __init__(self, mesh: WarpMesh, *, extend_px: int = 0) -> None:
        self.mesh = mesh
        x0, y0, x1, y1 = mesh.roi
        self._origin = np.array([x0, y0], np.float64)
        self._shape = (y1 - y0, x1 - x0)
        # Pixel centres in landmark coordinates (pixel i spans [i, i + 1)).
        grid_y, grid_x = np.mgrid[y0:y1, x0:x1].astype(np.float32) + 0.5
        self._grid_x, self._grid_y = grid_x, grid_y
        self._drawn = np.flatnonzero(~mesh.hole)
        self._extend = extend_px
        self._kernel = np.ones((2 * extend_px + 1, 2 * extend_px + 1), np.uint8)

    def apply(self, source: np.ndarray, positions: np.ndarray, out: np.ndarray) -> np.ndarray:
        """Write the warped ``source`` into ``out`` wherever a moved triangle covers.

        ``positions`` are the mesh vertices in the output. Returns the ROI's coverage mask.
        """
        mesh = self.mesh
        x0, y0, x1, y1 = mesh.roi
        moved = np.abs(positions - mesh.source_points).max(axis=1) > 1e-3
        triangles = mesh.triangles[self._drawn]
        drawn = self._drawn[moved[triangles].any(axis=1)]
        index = np.full(self._shape, -1, np.int32)
        if len(drawn) == 0:
            return index >= 0
        corners = positions[mesh.triangles[drawn]]  # (n, 3, 2) output positions
        area = 0.5 * (
            (corners[:, 1, 0] - corners[:, 0, 0]) * (corners[:, 2, 1] - corners[:, 0, 1])
            - (corners[:, 1, 1] - corners[:, 0, 1]) * (corners[:, 2, 0] - corners[:, 0, 0])
        )
        solid = np.abs(area) > 0.02
        drawn, corners = drawn[solid], corners[solid]
        fixed = np.rint((corners - self._origin - 0.5) * _SUBPIXEL).astype(np.int32)
        for slot in range(len(drawn)):
            cv2.fillConvexPoly(index, fixed[slot], slot, cv2.LINE_8, _SUBPIXEL_BITS)
        if self._extend > 0:
            grown = cv2.dilate(index.astype(np.float32), self._kernel)
            index = np.where(index < 0, grown.astype(np.int32), index)
        source_corners = mesh.source_points[mesh.triangles[drawn]]  # (n, 3, 2)
        affine = _inverse_affines(corners, source_corners)
        # Pixels never sample beyond their triangle's source box (plus a pixel): a sliver's
        # steep inverse map or a rasterised boundary pixel cannot reach far-off content.
        low = (source_corners.min(axis=1) - 1.0).astype(np.float32)
        high = (source_corners.max(axis=1) + 1.0).astype(np.float32)
        covered = index >= 0
        slots = index[covered]
        map_x = self._grid_x - 0.5
        map_y = self._grid_y - 0.5
        gx, gy = self._grid_x[covered], self._grid_y[covered]
        coefficients = affine[slots]  # (n, 6)
        # Source landmark coordinates, then OpenCV's pixel-centre convention.
        source_x = coefficients[:, 0] * gx + coefficients[:, 1] * gy + coefficients[:, 2]
        source_y = coefficients[:, 3] * gx + coefficients[:, 4] * gy + coefficients[:, 5]
        source_x = np.clip(source_x, low[slots, 0], high[slots, 0])
        source_y = np.clip(source_y, low[slots, 1], high[slots, 1])
        # Band pixels never sample beyond the opening's edge in the source.
        side = mesh.side[drawn][slots]
        upper_edge, lower_edge = mesh.source_edges
        above = side == 1
        if np.any(above):
            limit = _polyline_y(upper_edge, source_x[above])
            source_y[above] = np.minimum(source_y[above], limit)
        below = side == 2
        if np.any(below):
            limit = _polyline_y(lower_edge, source_x[below])
            source_y[below] = np.maximum(source_y[below], limit)
        # Source landmark coordinates -> OpenCV's pixel-centre convention.
        map_x[covered] = source_x - 0.5
        map_y[covered] = source_y - 0.5
        warped = cv2.remap(
            source, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101
        )
        region = out[y0:y1, x0:x1]
        np.copyto(region, warped, where=covered[..., None])
        return covered


def _area_blur(fine: np.ndarray, size: tuple[int, int], sigma: float) -> np.ndarray:
    """A supersampled drawing averaged down to ``size`` (w, h) and softened."""
    coarse = cv2.resize(fine, size, interpolation=cv2.INTER_AREA)
    return np.asarray(cv2.GaussianBlur(coarse, (0, 0), sigma), np.float32)


def _polyline_y(curve: np.ndarray, x: np.ndarray) -> np.ndarray:
    """y of a left-to-right polyline at x (held flat beyond its ends)."""
    xs = np.maximum.accumulate(curve[:, 0]) + np.arange(len(curve)) * 1e-6
    return np.asarray(np.interp(x, xs, curve[:, 1]), np.float32)


def _inverse_affines(output: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Per triangle, the affine (6,) taking output (x, y) to source: (n, 6) float32."""
    count = len(output)
    homogeneous = np.concatenate([output, np.ones((count, 3, 1))], axis=2)  # (n, 3, 3)
    solved = np.linalg.solve(homogeneous, source)  # (n, 3, 2): rows x, y, 1 -> columns
    return np.ascontiguousarray(solved.transpose(0, 2, 1).reshape(count, 6), dtype=np.float32)


@dataclass(frozen=True, kw_only=True)
class _Layer:
    """An RGB + alpha image placed at ``origin`` (x, y) in source coordinates."""

    colour: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32
    origin: tuple[int, int]


class MouthInterior:
    """Draws the inside of the mouth within the inner lip contour."""

    def __init__(self, rig: FaceRig, config: RenderConfig) -> None:
        self.rig = rig
        self.config = config
        source = rig.image.astype(np.float32)
        width = rig.mouth_width
        centre = rig.mouth_centre
        x0 = math.floor(centre[0] - 0.75 * width)
        x1 = math.ceil(centre[0] + 0.75 * width)
        y0 = math.floor(centre[1] - 0.35 * width)
        y1 = math.ceil(centre[1] + 0.75 * width)
        self.box = (max(x0, 0), max(y0, 0), min(x1, source.shape[1]), min(y1, source.shape[0]))
        # The photo's teeth lie between its visible inner lip edges.
        self._teeth_top, self._teeth_edge = rig.source_opening()
        self.teeth_centre_x = float(self._teeth_edge[NUM_LIP_COLUMNS // 2, 0])
        self.upper_teeth = self._upper_teeth_layer(source)
        self.lower_teeth = self._lower_teeth_layer(source)

    # ------------------------------------------------------------------------- textures
    def _columns(self, x: np.ndarray, curve: np.ndarray) -> np.ndarray:
        order = np.argsort(curve[:, 0])
        return np.interp(x, curve[order, 0], curve[order, 1])

    def _upper_teeth_layer(self, source: np.ndarray) -> _Layer:
        """The photo's upper teeth, fixed to the skull, extended upwards into the gum."""
        config = self.config
        x0, y0, x1, y1 = self.box
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5  # pixel centres
        ys = np.arange(y0, y1, dtype=np.float32) + 0.5
        left = float(self._teeth_top[0, 0])
        right = float(self._teeth_top[-1, 0])
        clamped_x = np.clip(xs, left + 1.0, right - 1.0)
        top = self._columns(clamped_x, self._teeth_top)
        bottom = self._columns(clamped_x, self._teeth_edge) - config.upper_teeth_trim_px
        grid_y = ys[:, None].repeat(len(xs), axis=1)
        visible_top = top + 1.0
        map_y = np.maximum(grid_y, visible_top[None, :]).astype(np.float32) - 0.5
        map_x = np.broadcast_to(clamped_x[None, :], map_y.shape).astype(np.float32) - 0.5
        colour = cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        # Above the photo's lip line: a little more tooth, then gum in the lip's shadow.
        above = visible_top[None, :] - grid_y
        gum = smoothstep((above - 3.0) / 4.0)[..., None]
        colour = colour * (1.0 - gum) + np.asarray(config.gum_colour, np.float32) * gum
        shade = 1.0 - 0.25 * smoothstep(above / 8.0)[..., None]
        colour = colour * shade
        alpha = np.clip(bottom[None, :] + 0.5 - grid_y, 0.0, 1.0)
        return _Layer(
            colour=colour.astype(np.float32), alpha=alpha.astype(np.float32), origin=(x0, y0)
        )

    def _lower_teeth_layer(self, source: np.ndarray) -> _Layer:
        """Lower incisors: the upper ones mirrored, narrower and darker; at the photo's jaw."""
        config = self.config
        x0, y0, x1, y1 = self.box
        width = self.rig.mouth_width
        xs = np.arange(x0, x1, dtype=np.float32) + 0.5
        ys = np.arange(y0, y1, dtype=np.float32) + 0.5
        centre = self.teeth_centre_x
        left = float(self._teeth_top[0, 0])
        right = float(self._teeth_top[-1, 0])
        sample_x = np.clip(
            centre + (xs - centre) / config.lower_teeth_width, left + 1.0, right - 1.0
        )
        edge_source = self._columns(sample_x, self._teeth_edge) - config.upper_teeth_trim_px
        top_source = self._columns(sample_x, self._teeth_top) + 2.0
        edge = self._columns(np.clip(xs, left, right), self._teeth_edge) + (
            config.lower_teeth_offset_px
        )
        grid_y = ys[:, None].repeat(len(xs), axis=1)
        depth = grid_y - edge[None, :]  # rows below the lower incisal edge
        map_y = np.clip(edge_source[None, :] - 2.5 - depth, top_source[None, :], None)
        map_x = np.broadcast_to(sample_x[None, :], map_y.shape)
        colour = cv2.remap(
            source, map_x.astype(np.float32) - 0.5, map_y.astype(np.float32) - 0.5,
            cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT,
        )  # fmt: skip
        height = config.lower_teeth_height * width
        fade = 1.0 - 0.55 * smoothstep(depth / height)
        half = 0.5 * (right - left) * config.lower_teeth_width
        lateral = 1.0 - 0.6 * smoothstep((np.abs(xs - centre) - 0.45 * half) / (0.55 * half))
        colour = colour * (config.lower_teeth_shade * fade * lateral[None, :])[..., None]
        alpha = np.clip(depth + 0.5, 0.0, 1.0)
        alpha *= 1.0 - smoothstep((np.abs(xs - centre) - 0.9 * half) / (0.1 * half + 1.0))[None, :]
        return _Layer(
            colour=colour.astype(np.float32), alpha=alpha.astype(np.float32), origin=(x0, y0)
        )

    # ---------------------------------------------------------------------------- drawing
    def composite(
        self, frame: np.ndarray, points: np.ndarray, controls: np.ndarray, jaw_drop_px: float
    ) -> None:
        """Draw the inner mouth into ``frame`` (pre head motion) inside the inner lip edges.

        Where the lips meet, a thin dark seam and the upper lip's soft shadow on the lower
        one are drawn instead.
        """
        config = self.config
        polygon = self.rig.opening_polygon(points)
        upper, lower = self.rig.opening_edges(points)
        height, width = frame.shape[:2]
        low = np.floor(polygon.min(axis=0)).astype(int) - 6
        high = np.ceil(polygon.max(axis=0)).astype(int) + 8
        bx0, by0 = max(int(low[0]), self.box[0]), max(int(low[1]), self.box[1])
        bx1, by1 = min(int(high[0]), self.box[2], width), min(int(high[1]), self.box[3], height)
        if bx1 <= bx0 or by1 <= by0:
            return
        box = (bx0, by0, bx1, by1)
        region = frame[by0:by1, bx0:bx1].astype(np.float32)
        seam = self._seam_shade(upper, lower, box)[..., None]
        region *= 1.0 - seam * np.asarray(config.seam_tint, np.float32)
        alpha, opening = self._mask(upper, lower, box)
        if float(alpha.max()) >= 1e-3:
            interior = self._interior(box, alpha, opening, controls, jaw_drop_px)
            a = alpha[..., None]
            region = region * (1.0 - a) + interior * a
        frame[by0:by1, bx0:bx1] = np.clip(region + 0.5, 0, 255).astype(np.uint8)

    def _seam_shade(
        self, upper: np.ndarray, lower: np.ndarray, box: tuple[int, int, int, int]
    ) -> np.ndarray:
        """Darkening (0..1) along the seam of closed lips and just below it."""
        config = self.config
        bx0, by0, bx1, by1 = box
        gap = lower[:, 1] - upper[:, 1]
        closed = 1.0 - smoothstep(gap / config.seam_closing_px)
        if float(closed.max()) < 1e-3:
            return np.zeros((by1 - by0, bx1 - bx0), np.float32)
        factor = config.mask_supersample
        size = (bx1 - bx0, by1 - by0)
        seam = (0.5 * (upper + lower) - (bx0, by0)) * factor
        shade = np.zeros((size[1], size[0]), np.float32)
        for offset, thickness, sigma, darkness in (
            (0.0, 1.0, config.seam_blur_px, config.seam_darkness),
            (config.shadow_offset_px, 3.0, config.shadow_blur_px, config.shadow_darkness),
        ):
            # Drawn at the supersampled scale, area-averaged, then softened.
            weighted_fine = np.zeros((size[1] * factor, size[0] * factor), np.float32)
            unit_fine = np.zeros_like(weighted_fine)
            shifted = seam + np.array([0.0, offset * factor])
            line = np.rint((shifted - 0.5) * _SUBPIXEL).astype(np.int32)
            width = max(1, round(thickness * factor))
            for index in range(len(line) - 1):
                segment = line[index : index + 2]
                weight = 0.5 * float(closed[index] + closed[index + 1])
                cv2.polylines(weighted_fine, [segment], False, weight, width, cv2.LINE_8, 4)
                cv2.polylines(unit_fine, [segment], False, 1.0, width, cv2.LINE_8, 4)
            weighted = _area_blur(weighted_fine, size, sigma)
            unit = _area_blur(unit_fine, size, sigma)
            shade += darkness * weighted / max(float(unit.max()), 1e-6)
        return np.clip(shade, 0.0, 0.9)

    def _mask(
        self, upper: np.ndarray, lower: np.ndarray, box: tuple[int, int, int, int]
    ) -> tuple[np.ndarray, np.ndarray]:
        """Anti-aliased coverage of the opening between the two edge curves, feathered, and
        the opening's height per pixel column.

        The opening is a vertical span per column: exact coverage in y, supersampled in x.
        Where the edges meet it is empty (no rasteriser line along a closed seam).
        """
        config = self.config
        bx0, by0, bx1, by1 = box
        factor = config.mask_supersample
        columns = bx0 + (np.arange((bx1 - bx0) * factor) + 0.5) / factor
        top = _polyline_y(upper, columns) - by0
        bottom = _polyline_y(lower, columns) - by0
        inside = (columns >= upper[0, 0]) & (columns <= upper[-1, 0])
        bottom = np.where(inside, np.maximum(bottom, top), top)
        rows = np.arange(by1 - by0, dtype=np.float64)[:, None]
        coverage = np.clip(np.minimum(bottom[None, :], rows + 1.0) - np.maximum(top, rows), 0, 1)
        coverage = coverage.reshape(by1 - by0, bx1 - bx0, factor).mean(axis=2).astype(np.float32)
        if config.mask_feather_px > 0:
            coverage = cv2.GaussianBlur(coverage, (0, 0), config.mask_feather_px)
        opening = (bottom - top).reshape(bx1 - bx0, factor).mean(axis=1)
        return coverage, opening.astype(np.float32)

    def _slice(self, layer: _Layer, box: tuple[int, int, int, int], dy: float = 0.0) -> _Layer:
        """The part of a layer inside the box, shifted down by ``dy`` pixels."""
        bx0, by0, bx1, by1 = box
        ox, oy = layer.origin
        matrix = np.array([[1.0, 0.0, ox - bx0], [0.0, 1.0, oy - by0 + dy]], np.float32)
        size = (bx1 - bx0, by1 - by0)
        colour = cv2.warpAffine(
            layer.colour, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
        alpha = cv2.warpAffine(
            layer.alpha, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
            borderValue=0.0,
        )  # fmt: skip
        return _Layer(colour=colour, alpha=alpha, origin=(bx0, by0))

    def _interior(
        self,
        box: tuple[int, int, int, int],
        mask: np.ndarray,
        opening_px: np.ndarray,
        controls: np.ndarray,
        jaw_drop_px: float,
    ) -> np.ndarray:
        config = self.config
        bx0, by0, bx1, by1 = box
        mouth_width = self.rig.mouth_width
        # Cavity: lighter just inside the lips, dark deeper in.
        depth = cv2.GaussianBlur(mask, (0, 0), 0.05 * mouth_width)
        deep = smoothstep((depth - 0.35) / 0.5)[..., None]
        edge_colour = np.asarray(config.cavity_edge_colour, np.float32)
        deep_colour = np.asarray(config.cavity_colour, np.float32)
        image = edge_colour * (1.0 - deep) + deep_colour * deep
        # Teeth in the shadow of rounded lips: darker and warmer.
        visibility = float(controls[CONTROL_INDEX["teeth_visibility"]])
        shade = np.asarray(config.teeth_shadow, np.float32)
        teeth_light = shade + (1.0 - shade) * visibility
        lower_shift = config.teeth_jaw_ratio * jaw_drop_px
        lower = self._slice(self.lower_teeth, box, lower_shift)
        upper = self._slice(self.upper_teeth, box)
        # A hairline gap between the lips shows darkness, not teeth.
        reveal = smoothstep(opening_px / config.teeth_reveal_px)[None, :]
        # Box coordinates: landmark coordinates less the box origin (pixel i: [i, i + 1)).
        centre_x = self.teeth_centre_x - bx0
        upper_edge_y = float(self._columns(np.array([self.teeth_centre_x]), self._teeth_edge)[0])
        upper_edge_y -= by0 + config.upper_teeth_trim_px
        lower_edge_y = upper_edge_y + config.upper_teeth_trim_px + config.lower_teeth_offset_px
        lower_edge_y += lower_shift
        opening = max(lower_edge_y - upper_edge_y, 0.0)
        # Tongue body: lies behind the lower teeth, its back rising into the open mouth.
        tongue_top = lower_edge_y - 0.3 * opening - 1.0
        body_rx = 0.3 * mouth_width
        body_ry = 0.16 * mouth_width
        tongue = self._ellipse_alpha(
            (bx1 - bx0, by1 - by0), (centre_x, tongue_top + body_ry), (body_rx, body_ry)
        )
        rows = np.arange(by1 - by0, dtype=np.float32)[:, None] + 0.5
        tongue_shade = 0.65 + 0.35 * smoothstep((rows - tongue_top) / (0.12 * mouth_width))
        tongue_colour = np.asarray(config.tongue_colour, np.float32) * tongue_shade[..., None]
        image = _over(image, tongue_colour, tongue)
        tip = float(controls[CONTROL_INDEX["tongue_tip"]])
        if tip > 0.01:
            tip_top = tongue_top + tip * (upper_edge_y - 4.0 - tongue_top)
            tip_alpha = self._capsule_alpha(
                (bx1 - bx0, by1 - by0), centre_x, tip_top, tongue_top + body_ry,
                0.11 * mouth_width,
            )  # fmt: skip
            tip_shade = 0.8 + 0.2 * smoothstep((rows - tip_top) / (0.1 * mouth_width))
            tip_colour = np.asarray(config.tongue_tip_colour, np.float32) * tip_shade[..., None]
            image = _over(image, tip_colour, tip_alpha)
        image = _over(image, lower.colour * teeth_light, lower.alpha * reveal)
        protrude = float(controls[CONTROL_INDEX["tongue_protrude"]])
        if protrude > 0.01:
            # The tip between the teeth: in front of the lower ones, lit from the front.
            blob_y = upper_edge_y + 0.5 * opening + 1.5
            blob_ry = 0.05 * mouth_width + 1.5
            blob = self._ellipse_alpha(
                (bx1 - bx0, by1 - by0), (centre_x, blob_y), (0.1 * mouth_width, blob_ry)
            ) * protrude  # fmt: skip
            blob_shade = 1.0 - 0.3 * smoothstep((rows - (blob_y - blob_ry)) / (2.0 * blob_ry))
            blob_colour = np.asarray(config.tongue_tip_colour, np.float32) * blob_shade[..., None]
            image = _over(image, np.broadcast_to(blob_colour, image.shape), blob)
        image = _over(image, upper.colour * teeth_light, upper.alpha * reveal)
        return image

    def _ellipse_alpha(
        self, size: tuple[int, int], centre: tuple[float, float], axes: tuple[float, float]
    ) -> np.ndarray:
        canvas = np.zeros((size[1], size[0]), np.uint8)
        if axes[0] <= 0.5 or axes[1] <= 0.5:
            return canvas.astype(np.float32)
        cv2.ellipse(
            canvas,
            (round((centre[0] - 0.5) * _SUBPIXEL), round((centre[1] - 0.5) * _SUBPIXEL)),
            (round(axes[0] * _SUBPIXEL), round(axes[1] * _SUBPIXEL)),
            0.0, 0.0, 360.0, 255, -1, cv2.LINE_AA, _SUBPIXEL_BITS,
        )  # fmt: skip
        return canvas.astype(np.float32) / 255.0

    def _capsule_alpha(
        self, size: tuple[int, int], centre_x: float, top: float, bottom: float, radius: float
    ) -> np.ndarray:
        """A vertical rounded bar from ``top`` to ``bottom`` (box coordinates)."""
        canvas = np.zeros((size[1], size[0]), np.uint8)
        x = round((centre_x - 0.5) * _SUBPIXEL)
        start = (x, round((top + radius - 0.5) * _SUBPIXEL))
        end = (x, round((max(bottom, top + radius) - 0.5) * _SUBPIXEL))
        thickness = max(1, round(2.0 * radius))
        cv2.line(canvas, start, end, 255, thickness, cv2.LINE_AA, _SUBPIXEL_BITS)
        return canvas.astype(np.float32) / 255.0


def _over(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    a = alpha[..., None]
    return np.asarray(base * (1.0 - a) + colour * a, np.float32)


class AvatarRenderer:
    """Frames and ground-truth landmarks of the speaking default avatar.

    ``render(controls)`` yields ``(frame, landmarks)``: (512, 512, 3) uint8 RGB and (478, 2)
    float32 pixel positions. Blinks and the idle head motion come from ``seed`` (the
    renderer's, or the one given per call). The rig (one MediaPipe run) is built once.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        config: RenderConfig | None = None,
        rig: FaceRig | None = None,
    ) -> None:
        self.seed = int(seed)
        self.config = config or RenderConfig()
        self.rig = rig or FaceRig()
        self.source = np.ascontiguousarray(self.rig.image)
        self._lower_face = PiecewiseAffineWarp(self.rig.lower_face_mesh, extend_px=1)
        self._eyes = tuple(PiecewiseAffineWarp(mesh) for mesh in self.rig.eye_meshes)
        self.mouth = MouthInterior(self.rig, self.config)
        self._timing_seed: int | None = None
        self._motion: IdleMotion | None = None
        self._blinks: BlinkSchedule | None = None

    def _timing(self, seed: int) -> tuple[IdleMotion, BlinkSchedule]:
        if self._timing_seed != seed or self._motion is None or self._blinks is None:
            centre = self.rig.source_landmarks[[33, 263, 152]].mean(axis=0)
            self._motion = IdleMotion(seed, centre=centre, config=self.config.motion)
            self._blinks = BlinkSchedule(seed, config=self.config.blink)
            self._timing_seed = seed
        return self._motion, self._blinks

    def blink_amount(self, frame_index: int, *, seed: int | None = None) -> float:
        """How closed the eyelids are in a frame (0 open, 1 closed)."""
        if not self.config.blinks:
            return 0.0
        _, blinks = self._timing(self.seed if seed is None else int(seed))
        return blinks.amount((frame_index + 0.5) / self.config.fps)

    def render(
        self, controls: np.ndarray | ControlTrack, *, seed: int | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One (frame, landmarks) per row of ``controls`` ((frames, NUM_CONTROLS))."""
        if isinstance(controls, ControlTrack):
            if abs(controls.fps - self.config.fps) > 1e-6:
                raise ValueError(
                    f"controls are at {controls.fps} fps, the renderer at {self.config.fps}"
                )
            values = controls.values
        else:
            values = np.asarray(controls)
        if values.ndim != 2 or values.shape[1] != NUM_CONTROLS:
            raise ValueError(f"controls must be (frames, {NUM_CONTROLS}), got {values.shape}")
        for index, row in enumerate(values):
            yield self.render_frame(row, index, seed=seed)

    def render_frame(
        self, controls: np.ndarray, frame_index: int, *, seed: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Frame ``frame_index`` (its time: (index + 0.5) / fps) for one control vector."""
        config = self.config
        motion, _ = self._timing(self.seed if seed is None else int(seed))
        time_s = (frame_index + 0.5) / config.fps
        pose = self.rig.mouth_pose(controls)
        points = pose.points
        blink = self.blink_amount(frame_index, seed=seed)
        frame = self.source.copy()
        if blink > 0.0:
            points = self.rig.blink(points, blink)
            for warp in self._eyes:
                warp.apply(self.source, warp.mesh.positions(points), frame)
        self._lower_face.apply(self.source, self._lower_face.mesh.positions(points), frame)
        self.mouth.composite(frame, points, pose.controls, pose.jaw_drop_px)
        landmarks = points[: len(self.rig.source_landmarks)]
        if config.idle_motion:
            matrix = motion.matrix(time_s)
            # The same map in OpenCV's pixel-centre convention.
            pixel_matrix = matrix.copy()
            pixel_matrix[:, 2] += matrix[:, :2] @ np.array([0.5, 0.5]) - 0.5
            frame = cv2.warpAffine(
                frame, pixel_matrix, (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT_101,
            )  # fmt: skip
            landmarks = apply_affine(landmarks, matrix)
        return frame, landmarks.astype(np.float32)
