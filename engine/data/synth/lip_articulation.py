"""How the face rig moves the lips: its mouth controls -> the lip rings' positions.

The lips are arrays (side, ring, column, xy) in the rig's face frame (x across, y down,
around the mouth): two sides (upper, lower), four rings from the outer contour to the
visible inner edge, eleven columns from corner to corner. :func:`lip_moves` gives the
linear moves (jaw opening, spreading, rounding, raising, dropping); the shaping functions
then round the opening, tuck the lower lip, press the lips together and keep the rings in
order. :class:`engine.data.synth.rig.FaceRig` applies them in that order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from engine.data.synth.landmark_sets import NUM_LIP_COLUMNS
from engine.data.synth.rig_config import RigConfig


def lip_moves(
    c: Mapping[str, float],
    *,
    config: RigConfig,
    mouth_width: float,
    lip_u: np.ndarray,
    jaw_profile: np.ndarray,
    rest_closure: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Linear lip moves (face frame) for the controls ``c`` (by name): the jaw's part and
    everything else's, each (2, 4, 11, 2) for the lips' (side, ring, column).

    ``lip_u`` (2, 4, 11): each lip point's position across the mouth (-1 .. 1);
    ``jaw_profile`` (2, 4, 11): how far it follows the jaw; ``rest_closure``: its move from
    the photo to the rest pose.
    """
    width = mouth_width
    u = lip_u
    jaw_px = config.jaw_open_max * width * c["jaw_open"]
    # Jaw: the lower lip with the jaw, corners half way and drawn in slightly. The rest
    # closure already placed the lips for the rest jaw, so only the opening is added.
    jaw_move = np.zeros((2, 4, NUM_LIP_COLUMNS, 2))
    jaw_move[..., 1] = jaw_px * jaw_profile
    jaw_move[..., 0] = -config.jaw_corner_in * width * c["jaw_open"] * u * np.abs(u) ** 3
    move = rest_closure.copy()
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
    # sheared) and the centre parts a little; :func:`round_opening` shapes the O.
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


def round_opening(
    lips: np.ndarray, rounding: float, *, config: RigConfig, lip_u: np.ndarray
) -> np.ndarray:
    """Rounded lips: the opening's edges (and, less, the lips) pulled towards an oval.

    The oval keeps the opening's width and its height at the centre; the corners come
    to the centre's height, so the smile's upturned corners flatten out.
    """
    amount = rounding * config.round_oval
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
    for ring, share in enumerate(config.round_oval_rings):
        follow = share + (1.0 - share) * np.abs(lip_u[:, ring]) ** 2
        lips[:, ring, :, 1] += follow * delta
    return lips


def tuck_lower_lip(
    lips: np.ndarray, tuck: float, *, config: RigConfig, teeth_edge: np.ndarray
) -> np.ndarray:
    """The lower lip's edge up (or down) to just above the upper teeth's edge (``teeth_edge``
    (11, 2), face frame, left to right)."""
    if tuck <= 0.0:
        return lips
    edge = teeth_edge
    target = np.interp(lips[1, 3, :, 0], edge[:, 0], edge[:, 1])
    delta = tuck * (target - config.tuck_clearance_px - lips[1, 3, :, 1])
    delta[[0, -1]] = 0.0
    lips = lips.copy()
    for ring, share in enumerate(config.tuck_rings):
        lips[1, ring, :, 1] += share * delta
    return lips


def press_lips(lips: np.ndarray, press: float, *, config: RigConfig) -> np.ndarray:
    """Seal the lips: the edges meet at a seam, the lips roll in a little."""
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


def untangle_lips(lips: np.ndarray) -> np.ndarray:
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
