"""The face rig's geometry: how far each control moves the lips, where the deformable region
ends, how the eyelids close (:class:`RigConfig`)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class RigConfig:
    """Geometry of the rig. Lengths are fractions of the mouth width unless marked ``_px``.

    Per-ring factors run from the outer contour to the visible inner edge.

    The ranges are set so that the rig articulates like a person (figures over the outer
    eye-corner distance, :mod:`engine.articulation`): the inner-lip gap at open vowels about
    0.2 (a person: about 0.15-0.2 on /aa/, with a 95th percentile of 0.42 on real footage),
    about half that at close vowels, sealed lips on /p b m/, and the mouth on rounded sounds
    about 0.7 of its width on spread vowels. ``benchmarks/README.md`` has the measured table.
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
    jaw_open_max: float = 0.5  # lower lip drop at the centre when jaw_open = 1
    jaw_corner_in: float = 0.04  # corners move in as the jaw opens wide
    spread_max: float = 0.08  # each corner's outward move at lip_spread = 1
    spread_corner_lift: float = 0.03
    spread_thinning: float = 0.02
    round_pull: float = 0.24  # each corner's inward move at lip_round = 1
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
