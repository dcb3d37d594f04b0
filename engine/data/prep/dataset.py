"""The prepared talking-head dataset: on-disk format, readers/writers and the torch loader.

Layout of a dataset folder ``OUT``::

    OUT/dataset.json                  header: format version, fps, sample rate, MelConfig,
                                      crop layout, clips (id, frames, split, subject, source,
                                      sidecar metadata, skipped-frame counts), rejected videos,
                                      mel mean/std over the train split, dynamics PCA summary
    OUT/dynamics_basis.safetensors    PCA basis ("mean", "components", "variances",
                                      "total_variance", "indices"), the canonical template
                                      ("template", (468, 3)) and one identity shape per
                                      subject ("identity/<subject>", (N, 3))
    OUT/clips/<id>/crops.mp4          stabilised crops, H.264, 25 fps, one per video frame
    OUT/clips/<id>/track.safetensors  per-frame arrays, see TRACK_ARRAYS

Every array is stored with safetensors; the header is plain JSON.
Video frame ``t`` spans ``[t, t + 1) / 25`` s; its centre ``(t + 0.5) * 40 ms`` is mel frame
``(t + 0.5) * 40 / hop_ms`` (``4 t + 2`` at the 10 ms hop), see :mod:`engine.audio`.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Self

import av
import cv2
import numpy as np
import torch
from safetensors import safe_open
from safetensors.numpy import load_file, save_file
from torch.utils.data import Dataset

from engine.audio import MelConfig
from engine.errors import EngineError
from engine.face3d import DynamicsBasis
from engine.face_crop import CropConfig
from engine.frames import FPS

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
HEADER_NAME = "dataset.json"
BASIS_NAME = "dynamics_basis.safetensors"
CLIPS_DIR = "clips"
CROPS_NAME = "crops.mp4"
TRACK_NAME = "track.safetensors"
SPLITS = ("train", "heldout")

# Per-clip arrays in track.safetensors (T video frames, M mel frames, N lower-face points).
TRACK_ARRAYS: Mapping[str, str] = MappingProxyType(
    {
        "landmarks2d": "(T, 478, 2) float32 tracked landmarks in crop pixels",
        "lower_face": "(T, N, 3) float32 canonical (pose-free) lower-face points",
        "crop_transforms": "(T, 2, 3) float32 image -> crop affine matrices",
        "valid": "(T,) bool: exactly one face tracked, or a short gap interpolated",
        "interpolated": "(T,) bool: landmarks interpolated over a short tracking gap",
        "blendshapes": "(T, 52) float32 MediaPipe blendshape scores",
        "pose": "(T, 4, 4) float32 MediaPipe facial transformation matrix",
        "mouth_opening": "(T,) float32 inner-lip gap / inter-ocular distance",
        "source_frame": "(T,) int64 index of the decoded source frame shown",
        "coefficients": "(T, K) float32 dynamics PCA coefficients",
        "mel": "(M, 80) float32 log-mel of the 16 kHz audio (not normalised)",
        "audio": "(N,) int16 the clip's 16 kHz mono audio, the mel's input (older datasets: none)",
        "ground_truth_landmarks2d": "(T, 478, 2) float32 rig landmarks in crop pixels (optional)",
    }
)

_IDENTITY_PREFIX = "identity/"


@dataclass(kw_only=True)
class ClipEntry:
    id: str
    frames: int
    mel_frames: int
    split: str
    subject: str
    source: str
    meta: dict[str, Any] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)
    valid_frames: int = 0
    has_ground_truth: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> ClipEntry:
        return cls(
            id=str(values["id"]),
            frames=int(values["frames"]),
            mel_frames=int(values["mel_frames"]),
            split=str(values["split"]),
            subject=str(values["subject"]),
            source=str(values["source"]),
            meta=dict(values.get("meta", {})),
            skipped={str(k): int(v) for k, v in values.get("skipped", {}).items()},
            valid_frames=int(values.get("valid_frames", 0)),
            has_ground_truth=bool(values.get("has_ground_truth", False)),
        )


@dataclass(kw_only=True)
class DatasetHeader:
    mel: MelConfig
    crop: CropConfig
    clips: list[ClipEntry]
    mel_mean: list[float]
    mel_std: list[float]
    dynamics: dict[str, Any]
    rejected: list[dict[str, str]] = field(default_factory=list)
    format_version: int = FORMAT_VERSION
    fps: int = FPS

    @property
    def sample_rate(self) -> int:
        return self.mel.sample_rate

    def clips_in(self, split: str) -> list[ClipEntry]:
        return [clip for clip in self.clips if clip.split == split]

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "fps": self.fps,
            "sample_rate": self.sample_rate,
            "mel": self.mel.to_dict(),
            "crop": asdict(self.crop),
            "mel_mean": [float(value) for value in self.mel_mean],
            "mel_std": [float(value) for value in self.mel_std],
            "dynamics": self.dynamics,
            "track_arrays": dict(TRACK_ARRAYS),
            "clips": [clip.to_json() for clip in self.clips],
            "rejected": self.rejected,
        }

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> DatasetHeader:
        version = int(values.get("format_version", -1))
        if version != FORMAT_VERSION:
            raise EngineError(
                f"dataset format version {version} is not {FORMAT_VERSION}; prepare it again"
            )
        crop = values["crop"]
        return cls(
            format_version=version,
            fps=int(values["fps"]),
            mel=MelConfig.from_dict(values["mel"]),
            crop=CropConfig(
                size=int(crop["size"]),
                face_fraction=float(crop["face_fraction"]),
                face_centre=float(crop["face_centre"]),
                smoothing_window=int(crop["smoothing_window"]),
                smoothing_order=int(crop["smoothing_order"]),
            ),
            clips=[ClipEntry.from_json(clip) for clip in values["clips"]],
            mel_mean=[float(value) for value in values["mel_mean"]],
            mel_std=[float(value) for value in values["mel_std"]],
            dynamics=dict(values["dynamics"]),
            rejected=list(values.get("rejected", [])),
        )


def clip_dir(root: str | Path, clip_id: str) -> Path:
    return Path(root) / CLIPS_DIR / clip_id


def write_header(root: str | Path, header: DatasetHeader) -> Path:
    """Write ``dataset.json`` atomically (temporary file, then rename)."""
    path = Path(root) / HEADER_NAME
    partial = path.with_suffix(".json.partial")
    partial.write_text(json.dumps(header.to_json(), indent=1, sort_keys=False) + "\n")
    os.replace(partial, path)
    return path


def read_header(root: str | Path) -> DatasetHeader:
    path = Path(root) / HEADER_NAME
    if not path.is_file():
        raise EngineError(f"{path} not found; run the dataset preparation into {root} first")
    try:
        values = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise EngineError(f"{path} is not valid JSON ({exc}); prepare the dataset again") from exc
    return DatasetHeader.from_json(values)


def write_track(path: str | Path, arrays: dict[str, np.ndarray]) -> None:
    unknown = set(arrays) - set(TRACK_ARRAYS)
    if unknown:
        raise ValueError(f"unknown track arrays {sorted(unknown)}")
    save_file({name: np.ascontiguousarray(value) for name, value in arrays.items()}, str(path))


def read_track(path: str | Path, names: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """All arrays of a track file, or only ``names`` (read without loading the rest)."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path} not found; the dataset is incomplete, prepare it again")
    if names is None:
        return load_file(str(path))
    with safe_open(str(path), framework="numpy") as handle:
        return {name: handle.get_tensor(name) for name in names}


def track_array_names(path: str | Path) -> set[str]:
    """The names of the arrays a track file holds (none read)."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path} not found; the dataset is incomplete, prepare it again")
    with safe_open(str(path), framework="numpy") as handle:
        return set(handle.keys())


def write_basis(
    root: str | Path,
    basis: DynamicsBasis,
    *,
    template: np.ndarray,
    identities: dict[str, np.ndarray],
) -> Path:
    arrays = basis.to_arrays()
    arrays["template"] = np.asarray(template, dtype=np.float64)
    for subject, shape in identities.items():
        arrays[_IDENTITY_PREFIX + subject] = np.asarray(shape, dtype=np.float32)
    path = Path(root) / BASIS_NAME
    save_file(arrays, str(path))
    return path


def read_basis(root: str | Path) -> tuple[DynamicsBasis, np.ndarray, dict[str, np.ndarray]]:
    """(basis, canonical template (468, 3), identity shape per subject)."""
    path = Path(root) / BASIS_NAME
    if not path.is_file():
        raise EngineError(f"{path} not found; the dataset is incomplete, prepare it again")
    arrays = load_file(str(path))
    identities = {
        name[len(_IDENTITY_PREFIX) :]: value
        for name, value in arrays.items()
        if name.startswith(_IDENTITY_PREFIX)
    }
    return DynamicsBasis.from_arrays(arrays), arrays["template"], identities


class CropVideoWriter:
    """Writes (S, S, 3) uint8 RGB crops as a high-quality H.264 mp4 at 25 fps."""

    def __init__(self, path: str | Path, size: int, *, crf: int = 12) -> None:
        self.path = Path(path)
        self._container: av.container.OutputContainer | None = av.open(str(self.path), mode="w")
        self._stream = self._container.add_stream(
            "libx264", rate=FPS, options={"crf": str(crf), "preset": "medium"}
        )
        self._stream.width = size
        self._stream.height = size
        self._stream.pix_fmt = "yuv420p"
        self._size = size
        self.frames = 0

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def write(self, rgb: np.ndarray) -> None:
        if rgb.shape != (self._size, self._size, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"expected ({self._size}, {self._size}, 3) uint8, got {rgb.shape}")
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.frames
        if self._container is None:
            raise ValueError(f"{self.path} is already closed")
        for packet in self._stream.encode(frame):
            self._container.mux(packet)
        self.frames += 1

    def close(self) -> None:
        if self._container is None:
            return
        for packet in self._stream.encode(None):
            self._container.mux(packet)
        self._container.close()
        self._container = None


def read_crop_video(path: str | Path) -> np.ndarray:
    """(T, S, S, 3) uint8 RGB frames of a clip's crops.mp4."""
    path = Path(path)
    if not path.is_file():
        raise EngineError(f"{path} not found; the dataset is incomplete, prepare it again")
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
    if not frames:
        raise EngineError(f"{path} has no frames; prepare the dataset again")
    return np.stack(frames)


def mel_centre_index(frame: int, *, fps: int = FPS, hop_ms: float = 10.0) -> int:
    """Mel frame whose centre is the centre of video frame ``frame``."""
    return math.floor((frame + 0.5) * 1000.0 / fps / hop_ms + 0.5)


@dataclass
class _LoadedClip:
    crops: np.ndarray  # (T, S, S, 3) uint8
    track: dict[str, np.ndarray]


class TalkingHeadDataset(Dataset[dict[str, Any]]):
    """Aligned samples of one split of a prepared dataset.

    A sample is one valid video frame ``t`` of a clip:

    - ``mel`` (past + 1 + future, num_mels) float32: mel frames ``c - past .. c + future``
      around ``c = mel_centre_index(t)``, normalised with the dataset's train mean/std;
      frames outside the clip are silence (the log floor) before normalisation;
    - ``dynamics`` (K,) float32 PCA coefficients of frame ``t``;
    - ``crop`` and ``reference`` (3, H, W) float32 in [0, 1]: frame ``t`` and another valid
      frame of the same clip (at least ``reference_min_gap`` frames away when possible);
    - ``landmarks`` (478, 2) float32 in output pixels (corner convention: the image spans
      ``[0, H] x [0, W]``);
    - ``frame`` (int) and ``clip_id`` (str).

    Crops of a clip are decoded once and kept in an LRU cache of ``cache_clips`` clips (one
    cache per process, so per DataLoader worker).
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        mel_past_ms: float = 200.0,
        mel_future_ms: float = 200.0,
        image_size: int | None = None,
        cache_clips: int = 4,
        reference_min_gap: int = 5,
        seed: int = 0,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.header = read_header(self.root)
        self.split = split
        self.clips = self.header.clips_in(split)
        mel = self.header.mel
        self.mel_past = round(mel_past_ms / mel.hop_ms)
        self.mel_future = round(mel_future_ms / mel.hop_ms)
        self.image_size = image_size
        self.cache_clips = max(1, cache_clips)
        self.reference_min_gap = reference_min_gap
        self.seed = seed
        self.epoch = 0
        self._mel_mean = np.asarray(self.header.mel_mean, dtype=np.float32)
        self._mel_std = np.asarray(self.header.mel_std, dtype=np.float32)
        self._silence = np.float32(np.log(mel.log_floor))
        self._cache: OrderedDict[str, _LoadedClip] = OrderedDict()
        self._valid_frames: list[np.ndarray] = []
        index: list[tuple[int, int]] = []
        for clip_number, clip in enumerate(self.clips):
            track_path = clip_dir(self.root, clip.id) / TRACK_NAME
            valid = np.flatnonzero(read_track(track_path, ["valid"])["valid"])
            self._valid_frames.append(valid)
            index.extend((clip_number, int(frame)) for frame in valid)
        self._index = np.asarray(index, dtype=np.int64).reshape(-1, 2)

    def __len__(self) -> int:
        return int(self._index.shape[0])

    @property
    def sample_clips(self) -> np.ndarray:
        """(len,) int: the clip number (index into ``clips``) of every sample."""
        return self._index[:, 0]

    def set_epoch(self, epoch: int) -> None:
        """Changes which reference frames are drawn (deterministic per epoch)."""
        self.epoch = epoch

    @property
    def mel_window(self) -> int:
        return self.mel_past + 1 + self.mel_future

    def _load(self, clip: ClipEntry) -> _LoadedClip:
        cached = self._cache.get(clip.id)
        if cached is not None:
            self._cache.move_to_end(clip.id)
            return cached
        folder = clip_dir(self.root, clip.id)
        loaded = _LoadedClip(
            crops=read_crop_video(folder / CROPS_NAME), track=read_track(folder / TRACK_NAME)
        )
        if loaded.crops.shape[0] != clip.frames:
            raise EngineError(
                f"{folder / CROPS_NAME} has {loaded.crops.shape[0]} frames, the header says "
                f"{clip.frames}; prepare the dataset again"
            )
        self._cache[clip.id] = loaded
        while len(self._cache) > self.cache_clips:
            self._cache.popitem(last=False)
        return loaded

    def mel_window_for(self, mel: np.ndarray, frame: int) -> np.ndarray:
        """Normalised (mel_window, num_mels) window for video frame ``frame``."""
        centre = mel_centre_index(frame, fps=self.header.fps, hop_ms=self.header.mel.hop_ms)
        start, stop = centre - self.mel_past, centre + self.mel_future + 1
        window = np.full((stop - start, mel.shape[1]), self._silence, dtype=np.float32)
        source_start, source_stop = max(start, 0), min(stop, mel.shape[0])
        if source_stop > source_start:
            window[source_start - start : source_stop - start] = mel[source_start:source_stop]
        return (window - self._mel_mean) / self._mel_std

    def _image(self, rgb: np.ndarray) -> torch.Tensor:
        if self.image_size is not None and rgb.shape[0] != self.image_size:
            interpolation = cv2.INTER_AREA if rgb.shape[0] > self.image_size else cv2.INTER_CUBIC
            rgb = cv2.resize(rgb, (self.image_size, self.image_size), interpolation=interpolation)
        return torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0

    def _reference_frame(self, clip_number: int, frame: int, item: int) -> int:
        candidates = self._valid_frames[clip_number]
        far = candidates[np.abs(candidates - frame) >= self.reference_min_gap]
        pool = far if far.size else candidates[candidates != frame]
        if pool.size == 0:
            return frame
        rng = np.random.default_rng([self.seed, self.epoch, item])
        return int(pool[rng.integers(pool.size)])

    def __getitem__(self, item: int) -> dict[str, Any]:
        clip_number, frame = (int(value) for value in self._index[item])
        clip = self.clips[clip_number]
        loaded = self._load(clip)
        reference = self._reference_frame(clip_number, frame, item)
        scale = 1.0 if self.image_size is None else self.image_size / loaded.crops.shape[1]
        return {
            "mel": torch.from_numpy(self.mel_window_for(loaded.track["mel"], frame)),
            "dynamics": torch.from_numpy(loaded.track["coefficients"][frame].copy()),
            "crop": self._image(loaded.crops[frame]),
            "reference": self._image(loaded.crops[reference]),
            "landmarks": torch.from_numpy(
                (loaded.track["landmarks2d"][frame] * np.float32(scale)).astype(np.float32)
            ),
            "frame": frame,
            "clip_id": clip.id,
        }
