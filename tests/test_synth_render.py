"""Real renders of the speaking default avatar: rig, warp, inner mouth, tracker agreement.

PNGs of the rest pose and of /aa/, /f/ and /p/ frames (full and mouth close-ups) are written
to ``$SYNTH_RENDER_PNG_DIR`` when set, else to the test's temporary directory.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from engine.data.synth.landmark_sets import LIP_CONTOUR_INDICES, LOWER_LIP_RINGS, UPPER_LIP_RINGS
from engine.data.synth.plane_geometry import point_in_polygon
from engine.data.synth.portrait import AVATAR_SIZE, default_avatar_image
from engine.data.synth.render import AvatarRenderer, RenderConfig
from engine.data.synth.rig import FaceRig
from engine.data.synth.visemes import (
    CONTROL_NAMES,
    VISEMES,
    control_vector,
    controls_for_phones,
    viseme_controls,
)
from engine.speech.utterance import TimedSpan
from engine.tracking import FaceTracker

STILL = RenderConfig(idle_motion=False, blinks=False)


@pytest.fixture(scope="module")
def rig() -> FaceRig:
    return FaceRig()


@pytest.fixture(scope="module")
def still(rig: FaceRig) -> AvatarRenderer:
    return AvatarRenderer(seed=0, config=STILL, rig=rig)


@pytest.fixture(scope="module")
def png_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = os.environ.get("SYNTH_RENDER_PNG_DIR")
    path = Path(folder) if folder else tmp_path_factory.mktemp("synth_render")
    path.mkdir(parents=True, exist_ok=True)
    return path


def _inner_gaps(landmarks: np.ndarray) -> np.ndarray:
    """Vertical distance between paired inner lip landmarks (upper -> lower), 9 columns."""
    upper = landmarks[list(UPPER_LIP_RINGS[3][1:-1])]
    lower = landmarks[list(LOWER_LIP_RINGS[3][1:-1])]
    return np.asarray(lower[:, 1] - upper[:, 1])


def _outside_ring(rig: FaceRig) -> np.ndarray:
    """Pixels outside the lower-face warp's anchor ring (and away from the eyes)."""
    mesh = rig.lower_face_mesh
    static = mesh.source_points[mesh.point_ids < 0]
    ys, xs = np.mgrid[0:AVATAR_SIZE, 0:AVATAR_SIZE]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], axis=1)
    inside = point_in_polygon(centres, static).reshape(AVATAR_SIZE, AVATAR_SIZE)
    grown = cv2.dilate(inside.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
    return np.asarray(~grown)


def _save(folder: Path, name: str, frame: np.ndarray, landmarks: np.ndarray) -> None:
    cv2.imwrite(str(folder / f"{name}.png"), frame[:, :, ::-1])
    centre = landmarks[[13, 14]].mean(axis=0)
    x0, y0 = int(centre[0]) - 60, int(centre[1]) - 35
    crop = frame[y0 : y0 + 70, x0 : x0 + 120]
    zoom = cv2.resize(crop, None, fx=5, fy=5, interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(folder / f"{name}_mouth.png"), zoom[:, :, ::-1])


def test_portrait_frames_the_face(rig: FaceRig) -> None:
    image = default_avatar_image()
    assert image.shape == (AVATAR_SIZE, AVATAR_SIZE, 3)
    assert image.dtype == np.uint8
    points = rig.source_landmarks
    face_width = points[454, 0] - points[234, 0]
    assert 150.0 < face_width < 220.0
    assert abs(0.5 * (points[454, 0] + points[234, 0]) - AVATAR_SIZE / 2) < 20.0
    eyes_y = points[[468, 473], 1].mean() / AVATAR_SIZE
    assert 0.35 < eyes_y < 0.45


def test_rest_pose_has_closed_lips(rig: FaceRig, still: AvatarRenderer) -> None:
    frame, landmarks = still.render_frame(control_vector(), 0)
    assert np.all(np.abs(_inner_gaps(landmarks)) <= 1.0)
    upper, lower = rig.opening_edges(rig.rest_points)
    assert np.all(lower[:, 1] - upper[:, 1] <= 0.75)
    # The photo's teeth are gone: no bright, unsaturated pixels between the lips.
    centre = landmarks[[13, 14]].mean(axis=0).astype(int)
    mouth = frame[centre[1] - 3 : centre[1] + 4, centre[0] - 25 : centre[0] + 26].astype(int)
    whiteness = mouth.min(axis=2) - (mouth.max(axis=2) - mouth.min(axis=2))
    assert np.count_nonzero(whiteness > 150) == 0


def test_open_vowel_opens_the_mouth_in_the_lower_face_only(
    rig: FaceRig, still: AvatarRenderer
) -> None:
    rest, _ = still.render_frame(control_vector(), 0)
    open_frame, landmarks = still.render_frame(viseme_controls("aa"), 0)
    assert np.median(_inner_gaps(landmarks)) > 8.0
    # The mouth is dark inside and the chin has come down.
    centre = landmarks[[13, 14]].mean(axis=0).astype(int)
    inside = open_frame[centre[1] - 2 : centre[1] + 3, centre[0] - 10 : centre[0] + 11]
    assert inside.mean() < 80.0
    assert landmarks[152, 1] - rig.rest_landmarks[152, 1] > 8.0
    # Nothing outside the lower-face region changes.
    outside = _outside_ring(rig)
    assert np.array_equal(open_frame[outside], rest[outside])
    changed = np.any(open_frame != rest, axis=2)
    assert changed[~outside].any()


@pytest.mark.parametrize(
    "controls",
    [
        {"jaw_open": 1.0, "lower_lip_drop": 1.0, "upper_lip_raise": 1.0},
        {"lip_round": 1.0, "jaw_open": 0.4},
        {"lip_spread": 1.0, "lip_tuck": 1.0, "upper_lip_raise": 1.0},
        {"lip_spread": -1.0, "lip_press": 1.0, "jaw_open": 0.5},
    ],
)
def test_warp_is_seamless_and_never_folds(
    rig: FaceRig, still: AvatarRenderer, controls: dict[str, float]
) -> None:
    frame, _ = still.render_frame(control_vector(controls), 0)
    source = rig.image
    outside = _outside_ring(rig)
    assert np.array_equal(frame[outside], source[outside])
    # Just inside the ring the picture still matches the photo: no seam at the border.
    mesh = rig.lower_face_mesh
    static = mesh.source_points[mesh.point_ids < 0]
    ring = np.zeros(source.shape[:2], np.uint8)
    cv2.polylines(ring, [np.rint(static - 0.5).astype(np.int32)], True, 1, 9)
    band = (ring > 0) & ~outside
    difference = np.abs(frame[band].astype(int) - source[band].astype(int))
    assert difference.mean() < 1.0
    assert difference.max() <= 24
    pose = rig.mouth_pose(control_vector(controls))
    assert not mesh.folded(mesh.positions(pose.points))


def test_every_viseme_is_reached_without_clamping(rig: FaceRig) -> None:
    for viseme in VISEMES:
        requested = viseme_controls(viseme)
        pose = rig.mouth_pose(requested)
        assert np.allclose(pose.controls, requested), viseme


def test_render_is_deterministic_for_a_seed(rig: FaceRig) -> None:
    phones = [
        TimedSpan(label="SIL", start=0.0, end=0.2),
        TimedSpan(label="M", start=0.2, end=0.3),
        TimedSpan(label="AY", start=0.3, end=0.55),
        TimedSpan(label="SIL", start=0.55, end=0.8),
    ]
    track = controls_for_phones(phones)
    first = list(AvatarRenderer(seed=11, rig=rig).render(track))
    second = list(AvatarRenderer(seed=11, rig=rig).render(track.values))
    other = list(AvatarRenderer(seed=12, rig=rig).render(track))
    assert len(first) == track.num_frames == 20
    for (frame_a, points_a), (frame_b, points_b) in zip(first, second, strict=True):
        assert np.array_equal(frame_a, frame_b)
        assert np.array_equal(points_a, points_b)
        assert frame_a.shape == (AVATAR_SIZE, AVATAR_SIZE, 3)
        assert points_a.shape == (478, 2) and points_a.dtype == np.float32
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    # Idle motion keeps the borders filled: each edge looks like the photo's, no black wedge.
    source = rig.image.astype(float)
    for frame, _ in first:
        shown = frame.astype(float)
        for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
            assert abs(shown[edge].mean() - source[edge].mean()) < 15.0


def test_blink_lowers_the_upper_eyelids(rig: FaceRig, still: AvatarRenderer) -> None:
    points = rig.blink(rig.rest_points, 1.0)
    for upper, lower in ((159, 145), (386, 374)):
        assert abs(points[upper, 1] - points[lower, 1]) < 2.5
        assert rig.rest_points[lower, 1] - rig.rest_points[upper, 1] > 6.0
    blinking = AvatarRenderer(seed=3, config=RenderConfig(idle_motion=False), rig=rig)
    amounts = [blinking.blink_amount(k) for k in range(200)]
    closed = int(np.argmax(amounts))
    assert amounts[closed] > 0.6
    assert sum(a > 0.0 for a in amounts) < 0.1 * len(amounts)
    frame, landmarks = blinking.render_frame(control_vector(), closed)
    open_frame, _ = still.render_frame(control_vector(), closed)
    eye = landmarks[[159, 145]].mean(axis=0).astype(int)
    patch = (slice(eye[1] - 4, eye[1] + 5), slice(eye[0] - 6, eye[0] + 7))
    assert np.abs(frame[patch].astype(int) - open_frame[patch].astype(int)).mean() > 10.0


def test_coarticulation_reaches_closures_and_returns_to_rest() -> None:
    phones = [
        TimedSpan(label="SIL", start=0.0, end=0.3),
        TimedSpan(label="AA", start=0.3, end=0.5),
        TimedSpan(label="B", start=0.5, end=0.58),
        TimedSpan(label="AA", start=0.58, end=0.78),
        TimedSpan(label="F", start=0.78, end=0.9),
        TimedSpan(label="AY", start=0.9, end=1.2),
        TimedSpan(label="SIL", start=1.2, end=2.0),
    ]
    track = controls_for_phones(phones, fps=25.0)
    assert track.values.shape == (50, len(CONTROL_NAMES))
    frame_at = lambda t: int(t * 25.0)  # noqa: E731
    assert track.column("lip_press")[frame_at(0.54)] > 0.85
    assert track.column("lip_tuck")[frame_at(0.84)] > 0.8
    assert track.column("jaw_open")[frame_at(0.4)] > 0.5
    # The diphthong glides from open /a/ to spread /i/.
    assert track.column("jaw_open")[frame_at(0.95)] > track.column("jaw_open")[frame_at(1.16)]
    assert track.column("lip_spread")[frame_at(0.95)] < track.column("lip_spread")[frame_at(1.16)]
    rest = control_vector()
    assert np.allclose(track.values[frame_at(1.7) :], rest, atol=0.02)
    assert np.allclose(track.values[:2], rest, atol=0.02)


def test_tracker_agrees_with_ground_truth(rig: FaceRig, png_dir: Path) -> None:
    renderer = AvatarRenderer(seed=5, rig=rig)
    shapes = {
        "rest": control_vector(),
        "aa": viseme_controls("aa"),
        "FF": viseme_controls("FF"),
        "PP": viseme_controls("PP"),
        "E": viseme_controls("E"),
        "ou": viseme_controls("ou"),
        "SS": viseme_controls("SS"),
    }
    lips = list(LIP_CONTOUR_INDICES)
    errors = {}
    with FaceTracker(max_faces=1) as tracker:
        for index, (name, controls) in enumerate(shapes.items()):
            frame, landmarks = renderer.render_frame(controls, 7 * index + 3)
            faces = tracker.detect(frame)
            assert len(faces) == 1
            tracked = faces[0].landmarks[:, :2]
            errors[name] = float(np.linalg.norm(tracked[lips] - landmarks[lips], axis=1).mean())
            if name in {"rest", "aa", "FF", "PP"}:
                _save(png_dir, name, frame, landmarks)
    # 2 px at a 256-px face crop is about 2.8 px in the 512 portrait.
    assert max(errors.values()) < 2.8, errors
    assert np.mean(list(errors.values())) < 2.0, errors
