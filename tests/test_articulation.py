"""Articulation figures (engine/articulation.py) on known landmarks, and the corpus rig's own
articulation on a sentence: it closes on /p b m/, opens on open vowels, rounds on /uw/."""

from __future__ import annotations

import numpy as np
import pytest

from engine.articulation import (
    articulation,
    gap_and_width,
    phone_middle_frames,
)
from engine.face3d import INNER_LIP_PAIRS, LEFT_EYE_CORNERS, MOUTH_CORNERS, RIGHT_EYE_CORNERS

FPS = 25.0


def _face(gap: float, width: float, eyes: float = 100.0) -> np.ndarray:
    points = np.zeros((478, 2))
    points[RIGHT_EYE_CORNERS[0]] = (0.0, 0.0)
    points[LEFT_EYE_CORNERS[0]] = (eyes, 0.0)
    for upper, lower in INNER_LIP_PAIRS:
        points[upper] = (50.0, 100.0)
        points[lower] = (50.0, 100.0 + gap)
    points[MOUTH_CORNERS[0]] = (50.0 - width / 2, 100.0)
    points[MOUTH_CORNERS[1]] = (50.0 + width / 2, 100.0)
    return points


def test_gap_and_width_are_over_the_eye_corner_distance() -> None:
    landmarks = np.stack([_face(20.0, 60.0, eyes=100.0), _face(10.0, 30.0, eyes=50.0)])
    gap, width = gap_and_width(landmarks)
    assert gap == pytest.approx([0.2, 0.2])
    assert width == pytest.approx([0.6, 0.6])


def test_middle_half_of_each_phone_and_the_nearest_frame_of_a_short_one() -> None:
    phones = [("SIL", 0.0, 0.2), ("AA", 0.2, 0.6), ("P", 0.6, 0.64), ("IY", 0.64, 1.0)]
    frames = phone_middle_frames(phones, 25, FPS)
    # AA 0.2-0.6: middle half 0.3-0.5 holds the centres of frames 7..11 (0.30 .. 0.46)
    assert frames["open"].tolist() == [7, 8, 9, 10, 11]
    # P 0.60-0.64 holds no centre in its middle half: the frame at its centre (0.62 -> 15)
    assert frames["bilabial"].tolist() == [15]
    assert frames["spread"].tolist() == frames["close"].tolist() == [18, 19, 20, 21, 22]


def test_figures_compare_classes_and_goals_can_fail() -> None:
    phones = [("AA", 0.0, 0.4), ("M", 0.4, 0.8), ("UW", 0.8, 1.2), ("IY", 1.2, 1.6)]
    per_frame = []
    for k in range(40):
        t = (k + 0.5) / FPS
        if t < 0.4:
            per_frame.append(_face(25.0, 60.0))
        elif t < 0.8:
            per_frame.append(_face(0.0, 62.0))
        elif t < 1.2:
            per_frame.append(_face(10.0, 42.0))
        else:
            per_frame.append(_face(8.0, 70.0))
    figures = articulation([(np.stack(per_frame), phones)], fps=FPS)
    assert figures.closure == pytest.approx(0.0)
    assert figures.open_over_close == pytest.approx(0.25 / 0.09)  # close: UW and IY pooled
    assert figures.rounding == pytest.approx(0.42 / 0.70)
    assert figures.goals_met() == {
        "closure": True,
        "open_over_close": True,
        "rounding": True,
        "gap_p05": True,
        "gap_p95": True,
    }
    # A mouth that barely moves fails them.
    mumbling = np.stack([_face(6.0 + (k % 3), 60.0) for k in range(40)])
    flat = articulation([(mumbling, phones)], fps=FPS)
    assert not any(flat.goals_met().values())


def test_the_rig_articulates_like_a_person() -> None:
    """The corpus rig's own landmarks for a sentence's phones meet the goals of the phone
    classes and close fully; its open vowels, short and between closures, open past 0.1 of
    the eye-corner distance (the range's 95th percentile is a figure of whole held-out
    clips: benchmarks.quality)."""
    from engine.data.synth.rig import FaceRig
    from engine.data.synth.visemes import controls_for_phones
    from engine.speech.utterance import TimedSpan

    phones = [
        ("SIL", 0.0, 0.3), ("B", 0.3, 0.38), ("AA", 0.38, 0.56), ("P", 0.56, 0.64),
        ("UW", 0.64, 0.84), ("M", 0.84, 0.92), ("IY", 0.92, 1.08), ("W", 1.08, 1.16),
        ("AE", 1.16, 1.34), ("F", 1.34, 1.44), ("OW", 1.44, 1.64), ("EH", 1.64, 1.78),
        ("M", 1.78, 1.86), ("IH", 1.86, 1.98), ("SIL", 1.98, 2.4),
    ]  # fmt: skip
    track = controls_for_phones([TimedSpan(label=p, start=s, end=e) for p, s, e in phones])
    rig = FaceRig()
    landmarks = np.stack([rig.mouth_pose(row).landmarks for row in track.values])
    figures = articulation([(landmarks, phones)], fps=track.fps)
    met = figures.goals_met()
    assert met["closure"] and met["open_over_close"] and met["rounding"], figures.figures()
    assert met["gap_p05"], figures.figures()
    assert figures.gap["open"] >= 0.1, figures.gap
