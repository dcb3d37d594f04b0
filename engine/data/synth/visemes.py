"""Phone timeline -> visemes -> coarticulated mouth controls, one row per video frame.

Each viseme has a target vector of mouth controls. The controls over time come from a
dominance-function coarticulation model (after Cohen & Massaro): every viseme segment pulls
each control towards its target with a dominance that is strongest over the segment's middle
and decays as an exponential of ``(distance / tau) ** shape`` before (anticipation) and after
(carry-over) it. Each viseme has its own dominance strength per control group, so closures
(/p b m/, /f v/) and tongue gestures (/t d n l th/) reach their targets while vowels blend.
The control value at time ``t`` is the dominance-weighted mean of the targets.

Diphthongs are split into two segments gliding from the first to the second viseme. Silences
are split into short pieces so that a long pause returns the mouth to relaxed closed lips
after a short release.

Video frame ``k`` at ``fps`` shows the mean of the control curve over its interval
``[k / fps, (k + 1) / fps)`` (sampled at ``sample_rate`` and box-averaged).
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

import numpy as np

from engine.frames import FPS
from engine.speech.phonemes import DIPHTHONG_GLIDES, PHONE_TO_VISEME, SILENCE, VISEMES
from engine.speech.utterance import TimedSpan

log = logging.getLogger(__name__)

CONTROL_NAMES: Final = (
    "jaw_open",  # jaw rotation: 0 closed (rest), 1 wide open
    "lip_spread",  # corners outward (+) / relaxed inward (-), in [-1, 1]
    "lip_round",  # corners in, lips pushed into an O
    "upper_lip_raise",  # upper lip up, upper teeth shown
    "lower_lip_drop",  # lower lip down from the jaw, lower teeth shown
    "lip_press",  # lips sealed and thinned (/p b m/)
    "lip_tuck",  # lower lip up under the upper teeth (/f v/)
    "tongue_tip",  # tongue tip raised behind the upper teeth (/t d n l/)
    "tongue_protrude",  # tongue tip between the teeth (/th dh/)
    "teeth_visibility",  # how lit the teeth are: 0 hidden in shadow, 1 fully lit
)
NUM_CONTROLS: Final = len(CONTROL_NAMES)
CONTROL_INDEX: Final[dict[str, int]] = {name: index for index, name in enumerate(CONTROL_NAMES)}

# Inclusive value range of every control, in CONTROL_NAMES order.
CONTROL_RANGES: Final[tuple[tuple[float, float], ...]] = tuple(
    (-1.0, 1.0) if name == "lip_spread" else (0.0, 1.0) for name in CONTROL_NAMES
)

# The relaxed closed mouth.
REST_CONTROLS: Final[dict[str, float]] = {"teeth_visibility": 1.0}

# Target of every viseme; controls not named are at their rest value.
VISEME_TARGETS: Final[dict[str, dict[str, float]]] = {
    "sil": {},
    "PP": {"jaw_open": 0.06, "lip_press": 1.0},
    "FF": {"jaw_open": 0.12, "lip_tuck": 1.0, "upper_lip_raise": 0.35, "lip_spread": 0.1},
    "TH": {
        "jaw_open": 0.3, "tongue_protrude": 1.0, "tongue_tip": 0.5,
        "upper_lip_raise": 0.25, "lower_lip_drop": 0.8,
    },
    "DD": {
        "jaw_open": 0.2, "tongue_tip": 1.0, "upper_lip_raise": 0.2, "lower_lip_drop": 0.2,
        "lip_spread": 0.1,
    },
    "kk": {"jaw_open": 0.28, "upper_lip_raise": 0.15, "lower_lip_drop": 0.15},
    "CH": {
        "jaw_open": 0.1, "lip_round": 0.45, "upper_lip_raise": 0.45, "lower_lip_drop": 0.45,
    },
    "SS": {
        "jaw_open": 0.06, "lip_spread": 0.35, "upper_lip_raise": 0.4, "lower_lip_drop": 0.4,
    },
    "nn": {"jaw_open": 0.16, "tongue_tip": 1.0, "upper_lip_raise": 0.12, "lower_lip_drop": 0.1},
    "RR": {"jaw_open": 0.16, "lip_round": 0.35, "upper_lip_raise": 0.25, "lower_lip_drop": 0.1},
    "aa": {"jaw_open": 0.8, "upper_lip_raise": 0.5, "lower_lip_drop": 1.0, "lip_spread": 0.1},
    "E": {"jaw_open": 0.45, "lip_spread": 0.4, "upper_lip_raise": 0.3, "lower_lip_drop": 0.5},
    "ih": {"jaw_open": 0.18, "lip_spread": 0.55, "upper_lip_raise": 0.3, "lower_lip_drop": 0.2},
    "oh": {
        "jaw_open": 0.55, "lip_round": 0.6, "upper_lip_raise": 0.1, "lower_lip_drop": 0.1,
        "teeth_visibility": 0.6,
    },
    "ou": {"jaw_open": 0.15, "lip_round": 1.0, "teeth_visibility": 0.4},
}  # fmt: skip

# Dominance groups: each control belongs to one; each viseme has a strength per group.
DOMINANCE_GROUPS: Final = ("jaw", "closure", "shape", "vertical", "tongue")
CONTROL_GROUP: Final[dict[str, str]] = {
    "jaw_open": "jaw",
    "lip_press": "closure",
    "lip_tuck": "closure",
    "lip_spread": "shape",
    "lip_round": "shape",
    "teeth_visibility": "shape",
    "upper_lip_raise": "vertical",
    "lower_lip_drop": "vertical",
    "tongue_tip": "tongue",
    "tongue_protrude": "tongue",
}
# Strength per viseme and group, in DOMINANCE_GROUPS order (jaw, closure, shape, vertical,
# tongue). Closures and tongue gestures dominate their own group and borrow the others.
VISEME_DOMINANCE: Final[dict[str, tuple[float, float, float, float, float]]] = {
    "sil": (1.0, 1.0, 1.0, 1.0, 1.0),
    "PP": (1.5, 14.0, 0.5, 3.0, 0.3),
    "FF": (1.5, 12.0, 0.7, 4.0, 0.3),
    "TH": (1.5, 1.0, 0.5, 1.5, 10.0),
    "DD": (1.0, 1.0, 0.4, 0.8, 8.0),
    "kk": (0.6, 1.0, 0.3, 0.5, 1.0),
    "CH": (2.0, 1.0, 3.0, 3.0, 2.0),
    "SS": (2.5, 1.0, 2.0, 2.5, 2.0),
    "nn": (0.8, 1.0, 0.4, 0.6, 8.0),
    "RR": (1.0, 1.0, 2.5, 1.5, 1.0),
    "aa": (2.0, 1.0, 1.0, 1.0, 1.0),
    "E": (1.5, 1.0, 1.2, 1.0, 1.0),
    "ih": (1.2, 1.0, 1.2, 1.0, 1.0),
    "oh": (1.5, 1.0, 1.5, 1.0, 1.0),
    "ou": (1.2, 1.0, 2.5, 1.0, 1.0),
}

# Unstressed / lax vowels open the jaw less than their viseme's target.
PHONE_JAW_SCALE: Final[dict[str, float]] = {
    "AH": 0.6, "AE": 0.9, "EH": 0.85, "IH": 0.8, "UH": 0.8, "ER": 0.8, "AO": 1.0,
}  # fmt: skip


_CHUNK: Final = 1024  # samples evaluated at once
_FLOOR: Final = 1e-9  # weight of the rest pose where no segment has any dominance


@dataclass(frozen=True, kw_only=True)
class CoarticulationConfig:
    """Parameters of the dominance model and of the per-frame sampling."""

    fps: float = float(FPS)
    sample_rate: float = 200.0  # Hz of the control curve before box-averaging per frame
    anticipation_s: float = 0.075  # dominance decay constant before a segment
    carryover_s: float = 0.06  # dominance decay constant after a segment
    shape_anticipation_s: float = 0.12  # lip rounding / spreading anticipates further
    dominance_shape: float = 1.5  # exponent of the distance (2 = Gaussian, 1 = exponential)
    plateau: float = 0.3  # fraction of a segment's half-length held at full dominance
    diphthong_split: float = 0.5  # where a diphthong's glide is centred within it
    silence_piece_s: float = 0.18  # silences are split into pieces at most this long
    edge_silence_s: float = 0.6  # virtual silence before 0 and after the end
    articulation: float = 1.0  # scales jaw and lip excursions (hypo < 1 < hyper)


@dataclass(frozen=True, kw_only=True)
class VisemeSegment:
    """One viseme target over [start, end) seconds, with its jaw scaling."""

    viseme: str
    start: float
    end: float
    jaw_scale: float = 1.0

    @property
    def centre(self) -> float:
        return 0.5 * (self.start + self.end)


@dataclass(frozen=True, kw_only=True)
class ControlTrack:
    """Mouth controls per video frame: ``values[k, j]`` is control ``names[j]`` in frame k."""

    values: np.ndarray  # (num_frames, NUM_CONTROLS) float32
    fps: float
    names: tuple[str, ...] = CONTROL_NAMES

    def __post_init__(self) -> None:
        if self.values.ndim != 2 or self.values.shape[1] != len(self.names):
            raise ValueError(
                f"control values must be (frames, {len(self.names)}), got {self.values.shape}"
            )

    @property
    def num_frames(self) -> int:
        return int(self.values.shape[0])

    def column(self, name: str) -> np.ndarray:
        """The per-frame values of one control."""
        return self.values[:, self.names.index(name)]


def control_vector(values: Mapping[str, float] | None = None, **named: float) -> np.ndarray:
    """A (NUM_CONTROLS,) float32 vector: the rest pose with the given controls set."""
    vector = np.zeros(NUM_CONTROLS, np.float32)
    for name, value in {**REST_CONTROLS, **(values or {}), **named}.items():
        if name not in CONTROL_INDEX:
            raise ValueError(f"unknown mouth control {name!r}; known: {CONTROL_NAMES}")
        vector[CONTROL_INDEX[name]] = value
    return clamp_controls(vector)


def viseme_controls(viseme: str) -> np.ndarray:
    """The target control vector of one viseme."""
    if viseme not in VISEME_TARGETS:
        raise ValueError(f"unknown viseme {viseme!r}; known: {VISEMES}")
    return control_vector(VISEME_TARGETS[viseme])


def clamp_controls(values: np.ndarray) -> np.ndarray:
    """Controls clipped to their ranges (works on (C,) and (N, C) arrays)."""
    low = np.array([r[0] for r in CONTROL_RANGES], np.float32)
    high = np.array([r[1] for r in CONTROL_RANGES], np.float32)
    return np.clip(values, low, high).astype(np.float32)


def viseme_segments(
    phones: Sequence[TimedSpan], *, config: CoarticulationConfig | None = None
) -> list[VisemeSegment]:
    """Phones -> viseme segments: diphthongs split into their glide, silences into pieces."""
    config = config or CoarticulationConfig()
    segments: list[VisemeSegment] = []
    for span in phones:
        if span.label not in PHONE_TO_VISEME:
            raise ValueError(f"phone {span.label!r} is not in the project's phone set")
        duration = span.end - span.start
        if duration <= 0.0:
            continue
        jaw_scale = PHONE_JAW_SCALE.get(span.label, 1.0)
        if span.label == SILENCE:
            pieces = max(1, math.ceil(duration / config.silence_piece_s))
            edges = np.linspace(span.start, span.end, pieces + 1)
            segments.extend(
                VisemeSegment(viseme="sil", start=float(a), end=float(b))
                for a, b in itertools.pairwise(edges)
            )
        elif span.label in DIPHTHONG_GLIDES:
            first, second = DIPHTHONG_GLIDES[span.label]
            middle = span.start + config.diphthong_split * duration
            segments.append(
                VisemeSegment(viseme=first, start=span.start, end=middle, jaw_scale=jaw_scale)
            )
            segments.append(
                VisemeSegment(viseme=second, start=middle, end=span.end, jaw_scale=jaw_scale)
            )
        else:
            segments.append(
                VisemeSegment(
                    viseme=PHONE_TO_VISEME[span.label],
                    start=span.start,
                    end=span.end,
                    jaw_scale=jaw_scale,
                )
            )
    return segments


def control_curve(
    segments: Sequence[VisemeSegment],
    times: np.ndarray,
    *,
    config: CoarticulationConfig | None = None,
) -> np.ndarray:
    """Coarticulated controls at the given times (seconds): (len(times), NUM_CONTROLS)."""
    config = config or CoarticulationConfig()
    times = np.asarray(times, np.float64)
    segments = _with_edge_silence(segments, config)
    targets = np.stack([viseme_controls(s.viseme) for s in segments]).astype(np.float64)
    jaw = CONTROL_INDEX["jaw_open"]
    targets[:, jaw] *= [s.jaw_scale for s in segments]
    for name in ("jaw_open", "upper_lip_raise", "lower_lip_drop", "lip_spread", "lip_round"):
        targets[:, CONTROL_INDEX[name]] *= config.articulation
    strength = np.array(
        [
            [VISEME_DOMINANCE[s.viseme][DOMINANCE_GROUPS.index(CONTROL_GROUP[name])]
             for name in CONTROL_NAMES]
            for s in segments
        ]
    )  # fmt: skip  # (segments, controls)
    shape_group = np.array([CONTROL_GROUP[name] == "shape" for name in CONTROL_NAMES])
    neutral = control_vector().astype(np.float64)
    centres = np.array([s.centre for s in segments])
    half = np.array([0.5 * (s.end - s.start) for s in segments])
    curve = np.empty((len(times), NUM_CONTROLS))
    for start in range(0, len(times), _CHUNK):
        chunk = times[start : start + _CHUNK]
        offset = chunk[None, :] - centres[:, None]  # (segments, times)
        distance = np.maximum(np.abs(offset) - config.plateau * half[:, None], 0.0)
        before = offset < 0.0
        falloff = {}
        for is_shape, anticipation in (
            (False, config.anticipation_s),
            (True, config.shape_anticipation_s),
        ):
            decay = np.where(before, anticipation, config.carryover_s)
            falloff[is_shape] = np.exp(-((distance / decay) ** config.dominance_shape))
        for group_is_shape in (False, True):
            columns = np.flatnonzero(shape_group == group_is_shape)
            # (segments, times, controls) weights of this group's controls.
            weight = falloff[group_is_shape][:, :, None] * strength[:, None, columns]
            pulled = (weight * targets[:, None, columns]).sum(axis=0)
            # A vanishing pull towards the rest pose keeps the mean defined far from speech.
            curve[start : start + len(chunk), columns] = (pulled + _FLOOR * neutral[columns]) / (
                weight.sum(axis=0) + _FLOOR
            )
    return clamp_controls(curve)


def controls_for_phones(
    phones: Sequence[TimedSpan],
    num_frames: int | None = None,
    *,
    fps: float | None = None,
    config: CoarticulationConfig | None = None,
) -> ControlTrack:
    """Per-frame mouth controls for a phone timeline (each frame: its interval's mean).

    ``num_frames`` defaults to enough frames to cover the last phone's end; ``fps``
    overrides ``config.fps``.
    """
    config = config or CoarticulationConfig()
    if fps is not None:
        config = replace(config, fps=float(fps))
    segments = viseme_segments(phones, config=config)
    end = max((span.end for span in phones), default=0.0)
    if num_frames is None:
        num_frames = math.ceil(end * config.fps - 1e-9)
    if num_frames <= 0:
        return ControlTrack(values=np.zeros((0, NUM_CONTROLS), np.float32), fps=config.fps)
    per_frame = max(1, math.ceil(config.sample_rate / config.fps))
    frame_starts = np.arange(num_frames) / config.fps
    offsets = (np.arange(per_frame) + 0.5) / (per_frame * config.fps)
    times = (frame_starts[:, None] + offsets[None, :]).ravel()
    curve = control_curve(segments, times, config=config)
    values = curve.reshape(num_frames, per_frame, NUM_CONTROLS).mean(axis=1)
    log.debug("mouth controls: %d phones -> %d frames", len(phones), num_frames)
    return ControlTrack(values=clamp_controls(values), fps=config.fps)


def _with_edge_silence(
    segments: Sequence[VisemeSegment], config: CoarticulationConfig
) -> list[VisemeSegment]:
    """Segments with virtual silence before the first and after the last one."""
    start = min((s.start for s in segments), default=0.0)
    end = max((s.end for s in segments), default=0.0)
    edge = config.edge_silence_s
    pieces = max(1, math.ceil(edge / config.silence_piece_s))
    step = edge / pieces
    first = start - edge
    before = [
        VisemeSegment(viseme="sil", start=first + i * step, end=first + (i + 1) * step)
        for i in range(pieces)
    ]
    after = [
        VisemeSegment(viseme="sil", start=end + i * step, end=end + (i + 1) * step)
        for i in range(pieces)
    ]
    return [*before, *segments, *after]
