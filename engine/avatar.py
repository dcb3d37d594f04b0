"""The avatar: its frames, their face-crop transforms and its reference crop; stored avatars.

An avatar is what the engine speaks *through*: a short idle loop of full frames (blinks,
a slight head motion, mouth closed) played back and forth, so that the picture stays alive
through speech and silence alike, and for every loop frame the similarity transform that
cuts the stabilised face crop the generator was trained on (:mod:`engine.face_crop`,
the layout of the model's training data). The generator re-renders the lower face inside
that crop; :mod:`engine.compositor` pastes it back. Ping-pong playback needs no seamless
loop: frame ``k`` of the stream shows loop frame ``k mod (2 N - 2)`` mirrored.

Avatars are made once and stored in a folder, ``$PRESENTER_HOME/avatars/NAME`` for a named
one (:func:`avatar_path`): every frame a lossless PNG under ``frames/``, the crop transforms
in ``avatar.safetensors`` whose JSON header holds the name, the subject, the crop layout,
the reference frame and the frame rate. Inference only loads them (:func:`load_avatar`);
making one is elsewhere: the default avatar, the corpus's portrait animated by the
synthetic rig, by :mod:`engine.data.synth.default_avatar` (the presenter makes it on first
use).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from engine.errors import EngineError
from engine.face_crop import CropConfig, crop_transforms, warp_crop
from engine.frames import FPS
from engine.weights import load_checkpoint, presenter_home, save_checkpoint

DEFAULT_AVATAR = "default"
MAKE_DEFAULT_AVATAR = "python -m engine.data.synth.default_avatar"
"""What makes and stores the default avatar (the presenter does it on first use)."""

AVATAR_FILE = "avatar.safetensors"  # crop transforms; the JSON header describes the avatar
FRAMES_DIR = "frames"  # one lossless PNG per loop frame, 00000.png, 00001.png, ...
_AVATAR_KIND = "avatar"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


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


# -- the avatar store -----------------------------------------------------------------------
def avatars_dir() -> Path:
    """Where named avatars are stored: ``$PRESENTER_HOME/avatars``."""
    return presenter_home() / "avatars"


def avatar_path(name_or_path: str | Path) -> Path:
    """The folder of an avatar: a bare name is one under :func:`avatars_dir`, anything else
    (a :class:`~pathlib.Path`, or a string with a ``/`` in it) is a folder of its own."""
    if isinstance(name_or_path, Path) or "/" in name_or_path or os.sep in name_or_path:
        return Path(name_or_path).expanduser()
    if not _NAME.fullmatch(name_or_path):
        raise EngineError(
            f"{name_or_path!r} is not an avatar name (letters, digits, '.', '_', '-'; "
            "not starting with '.'); give a folder as a path"
        )
    return avatars_dir() / name_or_path


def stored_avatars() -> list[str]:
    """The names of the avatars stored under :func:`avatars_dir`, sorted."""
    directory = avatars_dir()
    if not directory.is_dir():
        return []
    return sorted(
        entry.name
        for entry in directory.iterdir()
        if _NAME.fullmatch(entry.name) and (entry / AVATAR_FILE).is_file()
    )


def stored_crop(name_or_path: str | Path) -> CropConfig | None:
    """The crop layout a stored avatar was cut as; None when none is stored there."""
    path = avatar_path(name_or_path)
    if not (path / AVATAR_FILE).is_file():
        return None
    _, header = _read_header(path)
    return _crop_of(header, path)


def save_avatar(avatar: Avatar, name_or_path: str | Path, *, replace: bool = False) -> Path:
    """Store ``avatar`` (see the module docstring) and return its folder.

    The avatar is written to a temporary folder beside the target and renamed into place,
    so a reader never sees half an avatar and two processes storing at once leave one
    whole one. With an avatar already there, raises :class:`FileExistsError` (the one
    written here is discarded), or with ``replace`` puts this one in its place.
    """
    path = avatar_path(name_or_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        _write(avatar, partial)
        if replace:
            _replace_folder(partial, path)
        else:
            try:
                partial.rename(path)
            except OSError as exc:  # a folder that is not empty is there: another avatar
                if not path.exists():
                    raise
                raise FileExistsError(f"an avatar is already stored at {path}") from exc
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return path


def load_avatar(
    name_or_path: str | Path = DEFAULT_AVATAR, *, crop: CropConfig | None = None
) -> Avatar:
    """A stored avatar, by name (a folder under :func:`avatars_dir`) or by folder.

    ``crop``: the crop layout the model needs; an avatar cut as another is an error.
    """
    path = avatar_path(name_or_path)
    if not (path / AVATAR_FILE).is_file():
        raise EngineError(_missing(name_or_path, path))
    tensors, header = _read_header(path)
    stored = _crop_of(header, path)
    if crop is not None and stored != crop:
        remake = f" (`{MAKE_DEFAULT_AVATAR} --model NAME`)" if path == _default_path() else ""
        raise EngineError(
            f"avatar {header['name']!r} ({path}) is cut as {stored}, the model needs crops cut "
            f"as {crop}; make the avatar again for this model{remake}"
        )
    try:
        count = int(header["frames"])
        matrices = tensors["crop_matrices"].numpy()
        return Avatar(
            name=str(header["name"]),
            subject=str(header["subject"]),
            frames=_read_frames(path / FRAMES_DIR, count),
            crop_matrices=np.ascontiguousarray(matrices, np.float64),
            crop=stored,
            reference_index=int(header["reference_index"]),
            fps=float(header["fps"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise EngineError(_damaged(path, f"{type(exc).__name__}: {exc}")) from exc


def _default_path() -> Path:
    return avatars_dir() / DEFAULT_AVATAR


def _missing(name_or_path: str | Path, path: Path) -> str:
    if path == _default_path():
        return (
            f"the default avatar is not made yet ({path}); run `{MAKE_DEFAULT_AVATAR}` "
            "(the presenter makes it on first use)"
        )
    if isinstance(name_or_path, str) and path == avatars_dir() / name_or_path:
        available = ", ".join(sorted({DEFAULT_AVATAR, *stored_avatars()}))
        return f"no avatar {name_or_path!r} in {avatars_dir()}; available: {available}"
    return f"no avatar stored in {path} (no {AVATAR_FILE} there)"


def _damaged(path: Path, what: str) -> str:
    return f"the avatar in {path} is damaged ({what}); delete the folder and make it again"


def _read_header(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors, header = load_checkpoint(path / AVATAR_FILE)
    if header.get("kind") != _AVATAR_KIND:
        raise EngineError(_damaged(path, f"{AVATAR_FILE} is not an avatar's"))
    return tensors, header


def _crop_of(header: dict[str, Any], path: Path) -> CropConfig:
    values = header.get("crop")
    if not isinstance(values, dict):
        raise EngineError(_damaged(path, "no crop layout in its header"))
    try:
        return CropConfig(**values)
    except (TypeError, ValueError) as exc:
        raise EngineError(_damaged(path, f"crop layout: {exc}")) from exc


def _write(avatar: Avatar, folder: Path) -> None:
    frames = folder / FRAMES_DIR
    frames.mkdir(parents=True)
    for index, frame in enumerate(avatar.frames):
        ok, encoded = cv2.imencode(".png", np.ascontiguousarray(frame[..., ::-1]))  # RGB->BGR
        if not ok:
            raise EngineError(f"could not encode frame {index} of avatar {avatar.name!r}")
        (frames / _frame_name(index)).write_bytes(encoded.tobytes())
    header = {
        "kind": _AVATAR_KIND,
        "name": avatar.name,
        "subject": avatar.subject,
        "frames": avatar.num_frames,
        "frame_size": list(avatar.frame_size),
        "reference_index": avatar.reference_index,
        "fps": avatar.fps,
        "crop": dataclasses.asdict(avatar.crop),
    }
    matrices = torch.from_numpy(np.array(avatar.crop_matrices, np.float64))
    save_checkpoint(folder / AVATAR_FILE, {"crop_matrices": matrices}, header)


def _read_frames(folder: Path, count: int) -> np.ndarray:
    frames: list[np.ndarray] = []
    for index in range(count):
        file = folder / _frame_name(index)
        if not file.is_file():
            raise EngineError(_damaged(folder.parent, f"no frame {file.name}"))
        image = cv2.imdecode(np.fromfile(file, np.uint8), cv2.IMREAD_UNCHANGED)
        if image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise EngineError(_damaged(folder.parent, f"{file.name} is not an 8-bit RGB PNG"))
        if frames and image.shape != frames[0].shape:
            raise EngineError(_damaged(folder.parent, f"{file.name} differs in size"))
        frames.append(image[..., ::-1])  # BGR -> RGB
    if not frames:
        raise EngineError(_damaged(folder.parent, "no frames"))
    return np.ascontiguousarray(np.stack(frames))


def _frame_name(index: int) -> str:
    return f"{index:05d}.png"


def _replace_folder(new: Path, path: Path) -> None:
    """Put folder ``new`` at ``path``, moving what is there aside first and then deleting
    it. Another process storing there at the same moment may win: its avatar stays."""
    old = path.with_name(f".{path.name}.{uuid.uuid4().hex}.old")
    try:
        with contextlib.suppress(FileNotFoundError):
            os.rename(path, old)
        try:
            new.rename(path)
        except OSError:
            if not (path / AVATAR_FILE).is_file():
                raise
    finally:
        shutil.rmtree(old, ignore_errors=True)
