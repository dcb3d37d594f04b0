"""The fixed avatar: its frames, their face-crop transforms and its reference crop.

An avatar is what the engine speaks *through*: a short idle loop of full frames (blinks,
a slight head motion, mouth closed) played back and forth, so that the picture stays alive
through speech and silence alike, and for every loop frame the similarity transform that
cuts the stabilised face crop the generator was trained on (:mod:`engine.face_crop`,
the layout of the model's training data). The generator re-renders the lower face inside
that crop; :mod:`engine.compositor` pastes it back.

The default avatar is the corpus's own portrait, animated by the synthetic rig with its
mouth at rest (:mod:`engine.data.synth.render`): its landmarks are known exactly, so no
tracking is needed and building it takes a few seconds. Ping-pong playback needs no seamless
loop: frame ``k`` of the stream shows loop frame ``k mod (2 N - 2)`` mirrored.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.errors import EngineError
from engine.face_crop import CropConfig, crop_transforms, warp_crop
from engine.frames import FPS

DEFAULT_AVATAR = "default"
DEFAULT_SUBJECT = "default-avatar"


@dataclass(frozen=True, kw_only=True)
class Avatar:
    """An avatar's loop and crop geometry; arrays are read-only."""

    name: str
    subject: str  # the subject name the model knows this face by
    frames: np.ndarray  # (N, H, W, 3) uint8 RGB idle loop
    crop_matrices: np.ndarray  # (N, 2, 3) float64 frame -> crop (MediaPipe corner convention)
    crop: CropConfig
    reference_index: int = 0  # the loop frame whose crop is the generator's reference
    fps: float = float(FPS)

    def __post_init__(self) -> None:
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3 or self.frames.dtype != np.uint8:
            raise ValueError(f"frames must be (N, H, W, 3) uint8, got {self.frames.shape}")
        if self.crop_matrices.shape != (len(self.frames), 2, 3):
            raise ValueError("need one (2, 3) crop matrix per frame")
        if not 0 <= self.reference_index < len(self.frames):
            raise ValueError("reference_index is outside the loop")
        for array in (self.frames, self.crop_matrices):
            array.flags.writeable = False

    @property
    def num_frames(self) -> int:
        return int(self.frames.shape[0])

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the full frames."""
        return int(self.frames.shape[1]), int(self.frames.shape[2])

    def loop_index(self, frame: int) -> int:
        """The loop frame shown at stream frame ``frame`` (>= 0): forth, then back."""
        if frame < 0:
            raise ValueError(f"frame must be >= 0, got {frame}")
        count = self.num_frames
        if count == 1:
            return 0
        period = 2 * count - 2
        phase = frame % period
        return phase if phase < count else period - phase

    def crop_of(self, index: int) -> np.ndarray:
        """(S, S, 3) uint8 face crop of loop frame ``index``."""
        return warp_crop(self.frames[index], self.crop_matrices[index], self.crop.size)

    def reference_crop(self) -> np.ndarray:
        return self.crop_of(self.reference_index)


def avatar_from_frames(
    frames: np.ndarray,
    landmarks: np.ndarray,
    *,
    name: str,
    subject: str,
    crop: CropConfig,
    fps: float = float(FPS),
) -> Avatar:
    """An avatar from a loop of frames and their (N, 478, >=2) landmarks in pixels."""
    if len(frames) != len(landmarks) or len(frames) == 0:
        raise EngineError("an avatar needs at least one frame and landmarks for each")
    matrices = crop_transforms(landmarks, np.ones(len(frames), dtype=bool), crop)
    return Avatar(
        name=name,
        subject=subject,
        frames=np.ascontiguousarray(frames),
        crop_matrices=matrices,
        crop=crop,
        fps=fps,
    )


def default_avatar(
    *, crop: CropConfig | None = None, seconds: float = 6.0, seed: int = 11, fps: float = float(FPS)
) -> Avatar:
    """The shipped avatar: the default portrait's idle loop (rest mouth, blinks, head motion)
    rendered by the synthetic rig, ``seconds`` long (played back and forth)."""
    from engine.data.synth.render import AvatarRenderer, RenderConfig
    from engine.data.synth.visemes import control_vector

    count = max(1, round(seconds * fps))
    renderer = AvatarRenderer(seed, config=RenderConfig(fps=fps))
    rest = control_vector()
    rendered = [renderer.render_frame(rest, index) for index in range(count)]
    frames = np.stack([frame for frame, _ in rendered])
    landmarks = np.stack([points for _, points in rendered])
    return avatar_from_frames(
        frames,
        landmarks,
        name=DEFAULT_AVATAR,
        subject=DEFAULT_SUBJECT,
        crop=crop or CropConfig(),
        fps=fps,
    )


def load_avatar(name: str = DEFAULT_AVATAR, *, crop: CropConfig | None = None) -> Avatar:
    """An avatar by name (``default``: the shipped portrait's idle loop)."""
    if name == DEFAULT_AVATAR:
        return default_avatar(crop=crop)
    raise EngineError(f"no avatar {name!r}; available: {DEFAULT_AVATAR}")
