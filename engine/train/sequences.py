"""Sequences of consecutive frames for training the motion model: log-mel and dynamics only.

Every clip of a split is held in memory as its log-mel (M, num_mels), dynamics coefficients
(T, K), valid mask and a per-frame silence flag (the phone at the frame centre is ``SIL``,
or the frame lies past the last aligned phone). A few minutes of data take a few MB, so
batches are cut with numpy slicing, without a DataLoader.

A training sequence of ``L`` frames may start up to ``edge_frames`` before the clip or end
up to ``edge_frames`` after it: those frames get silent audio (the log floor, exactly what
the mel of digital silence is) and the dynamics of the nearest clip frame, and are used only
when that clip frame is itself silence. This shows the model more closed-mouth silence than
the 0.4 s lead and 0.5 s tail of each clip alone would, and teaches it that audio that
stops means a mouth at rest.

With an :class:`engine.train.audio_augment.AugmentConfig` the train clips also get
``versions`` augmented log-mels, computed once when the clips are loaded from each clip's
16 kHz audio (seeded per clip; the other clips' audio is the babble), and every training
sequence takes the clean mel or one of them with equal chances. The silent padding past the
clip stays digital silence.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.articulation import PHONE_CLASSES
from engine.data.prep.dataset import (
    SPLITS,
    TRACK_NAME,
    clip_dir,
    read_header,
    read_track,
    track_array_names,
)
from engine.errors import EngineError
from engine.motion import MotionConfig, slice_mel
from engine.speech.phonemes import SILENCE, phone_per_frame
from engine.train.audio_augment import AugmentConfig, augmented_mels

log = logging.getLogger(__name__)

EMPHASIS_CLASSES = ("bilabial", "open")  # the extremes a hedging model would miss


def emphasis_frames(phones: Sequence[Sequence[Any]], frames: int, fps: int) -> np.ndarray:
    """(frames,) bool: the phone at the centre of each video frame is a closure (/p b m/) or
    an open vowel, where the mouth is at its extremes. All False without an alignment."""
    if not phones:
        return np.zeros(frames, dtype=bool)
    wanted = frozenset().union(*(PHONE_CLASSES[name] for name in EMPHASIS_CLASSES))
    labels = phone_per_frame(phones, frames, fps)
    return np.asarray([label in wanted for label in labels], dtype=bool)


def silence_frames(phones: Sequence[Sequence[Any]], frames: int, fps: int) -> np.ndarray:
    """(frames,) bool: the phone at the centre of each video frame is silence, or the
    centre lies outside every aligned phone. All False when there is no alignment."""
    if not phones:
        return np.zeros(frames, dtype=bool)
    return np.asarray(phone_per_frame(phones, frames, fps) == SILENCE, dtype=bool)


@dataclass(frozen=True, kw_only=True)
class ClipSequence:
    """One clip's arrays."""

    id: str
    subject: str
    voice: str
    source: str
    mel: np.ndarray  # (M, num_mels) float32 raw log-mel
    coefficients: np.ndarray  # (T, K) float32
    valid: np.ndarray  # (T,) bool
    silence: np.ndarray  # (T,) bool
    emphasis: np.ndarray  # (T,) bool: closures and open vowels (:func:`emphasis_frames`)
    augmented: tuple[np.ndarray, ...] = ()  # (M, num_mels) float32 log-mels of augmented audio

    @property
    def frames(self) -> int:
        return int(self.coefficients.shape[0])


@dataclass(frozen=True, kw_only=True)
class MotionBatch:
    """``mel`` (B, W + mel_per_frame * (L - 1), num_mels) raw log-mel covering the windows
    of L frames; ``target`` (B, L, K); ``valid``, ``silence`` and ``emphasis`` (B, L) bool;
    ``reference`` (B, R, K) style reference dynamics with ``reference_mask`` (B, R) bool."""

    mel: torch.Tensor
    target: torch.Tensor
    valid: torch.Tensor
    silence: torch.Tensor
    reference: torch.Tensor
    reference_mask: torch.Tensor
    subjects: tuple[str, ...]
    emphasis: torch.Tensor


class MotionSequences:
    """The clips of one split of a prepared dataset, for sequence training and evaluation."""

    def __init__(
        self,
        root: str | Path,
        split: str,
        config: MotionConfig,
        *,
        augment: AugmentConfig | None = None,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        self.root = Path(root)
        self.split = split
        self.config = config
        self.header = read_header(self.root)
        mel_config = self.header.mel
        if mel_config.num_mels != config.num_mels or mel_config.hop_ms != config.mel_hop_ms:
            raise EngineError(
                f"the dataset's mel ({mel_config.num_mels} bins, {mel_config.hop_ms} ms hop) "
                f"does not match the motion config ({config.num_mels}, {config.mel_hop_ms} ms)"
            )
        if self.header.fps != config.fps:
            raise EngineError(f"the dataset is {self.header.fps} fps, the model {config.fps}")
        # The log-mel of digital silence, as the float32 the mel arrays hold.
        self.silence_value = float(np.float32(np.log(mel_config.log_floor)))
        clips: list[ClipSequence] = []
        for entry in self.header.clips_in(split):
            track = read_track(
                clip_dir(self.root, entry.id) / TRACK_NAME, ["mel", "coefficients", "valid"]
            )
            coefficients = np.asarray(track["coefficients"], dtype=np.float32)
            if coefficients.shape[1] != config.num_coefficients:
                raise EngineError(
                    f"clip {entry.id} has {coefficients.shape[1]} dynamics coefficients, the "
                    f"model {config.num_coefficients}; prepare the dataset again"
                )
            meta = entry.meta
            clips.append(
                ClipSequence(
                    id=entry.id,
                    subject=entry.subject,
                    voice=str(meta.get("voice", "")),
                    source=str(meta.get("source", "video")),
                    mel=np.asarray(track["mel"], dtype=np.float32),
                    coefficients=coefficients,
                    valid=np.asarray(track["valid"], dtype=bool),
                    silence=silence_frames(meta.get("phones", []), entry.frames, self.header.fps),
                    emphasis=emphasis_frames(meta.get("phones", []), entry.frames, self.header.fps),
                )
            )
        self.clips = tuple(self._augmented(clips, augment) if augment else clips)
        groups: dict[tuple[str, str], list[int]] = defaultdict(list)
        for number, clip in enumerate(self.clips):
            groups[(clip.subject, clip.voice)].append(number)
        self._style_groups = {key: tuple(value) for key, value in groups.items()}

    def _augmented(self, clips: list[ClipSequence], augment: AugmentConfig) -> list[ClipSequence]:
        """``clips`` with their augmented mels (see the module docstring)."""
        audio = []
        for clip in clips:
            path = clip_dir(self.root, clip.id) / TRACK_NAME
            if "audio" not in track_array_names(path):
                raise EngineError(
                    f"{self.root}: clip {clip.id} has no audio (prepared before clips kept "
                    "their audio); prepare the dataset again to train with augmentation, "
                    "or train without it (--no-augment)"
                )
            audio.append(read_track(path, ["audio"])["audio"])
        started = time.monotonic()
        result = []
        for number, clip in enumerate(clips):
            others = [pcm for index, pcm in enumerate(audio) if index != number]
            mels = augmented_mels(audio[number], clip.id, augment, self.header.mel, others)
            for mel in mels:
                if mel.shape != clip.mel.shape:
                    raise EngineError(
                        f"clip {clip.id}: its audio gives {mel.shape[0]} mel frames, its "
                        f"track {clip.mel.shape[0]}; prepare the dataset again"
                    )
            result.append(replace(clip, augmented=tuple(mels)))
        log.info(
            "%d augmented versions of %d %s clips in %.1f s",
            augment.versions,
            len(clips),
            self.split,
            time.monotonic() - started,
        )
        return result

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def total_frames(self) -> int:
        return sum(clip.frames for clip in self.clips)

    def minutes_by_source(self) -> dict[str, float]:
        minutes: dict[str, float] = defaultdict(float)
        for clip in self.clips:
            minutes[clip.source] += clip.frames / self.header.fps / 60.0
        return {source: round(value, 3) for source, value in sorted(minutes.items())}

    def coefficient_statistics(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation (K,) of the coefficients over the valid frames."""
        stacked = np.concatenate([clip.coefficients[clip.valid] for clip in self.clips])
        if stacked.shape[0] < 2:
            raise EngineError(f"the {self.split} split has fewer than two valid frames")
        return stacked.mean(axis=0), np.maximum(stacked.std(axis=0), 1e-6)

    def sequence(
        self, clip_number: int, first: int, frames: int, *, version: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Mel span, targets (frames, K), valid and silence (frames,) of ``frames`` frames
        from ``first`` (which may reach past either end of the clip, see the module doc);
        ``version`` 0: the clean mel, ``v`` > 0: the clip's ``v``-th augmented mel."""
        clip = self.clips[clip_number]
        start, stop = self.config.mel_range(first, frames)
        source = clip.augmented[version - 1] if version else clip.mel
        mel = slice_mel(source, start, stop, silence=self.silence_value)
        wanted = np.arange(first, first + frames)
        nearest = np.clip(wanted, 0, clip.frames - 1)
        outside = (wanted < 0) | (wanted >= clip.frames)
        valid = clip.valid[nearest] & (~outside | clip.silence[nearest])
        silence = clip.silence[nearest] | outside
        return mel, clip.coefficients[nearest], valid, silence

    def reference(self, clip_number: int, start: int, frames: int) -> tuple[np.ndarray, np.ndarray]:
        """(frames, K) coefficients and (frames,) mask of a reference segment, zero-padded
        (mask False) past the end of the clip."""
        clip = self.clips[clip_number]
        coefficients = np.zeros((frames, self.config.num_coefficients), dtype=np.float32)
        mask = np.zeros(frames, dtype=bool)
        stop = min(start + frames, clip.frames)
        coefficients[: stop - start] = clip.coefficients[start:stop]
        mask[: stop - start] = clip.valid[start:stop]
        return coefficients, mask

    def sample(
        self,
        rng: np.random.Generator,
        *,
        batch_size: int,
        frames: int,
        edge_frames: int,
        style_frames: tuple[int, int],
    ) -> MotionBatch:
        """A random batch: sequence starts uniform over every start within ``edge_frames``
        of the clips; the style reference is a segment of ``style_frames`` (min, max) frames
        of a clip with the same subject and voice, outside the target sequence when the
        clip is long enough."""
        if not self.clips:
            raise EngineError(f"the {self.split} split has no clips")
        starts_per_clip = np.array(
            [max(clip.frames - frames, 0) + 1 + 2 * edge_frames for clip in self.clips]
        )
        clip_probability = starts_per_clip / starts_per_clip.sum()
        style_min, style_max = style_frames
        mels, targets, valids, silences, references, masks, subjects = [], [], [], [], [], [], []
        emphases = []
        for _ in range(batch_size):
            clip_number = int(rng.choice(len(self.clips), p=clip_probability))
            clip = self.clips[clip_number]
            first = int(rng.integers(starts_per_clip[clip_number])) - edge_frames
            # Drawn only for augmented clips: without augmentation the batches stay as they were.
            version = int(rng.integers(len(clip.augmented) + 1)) if clip.augmented else 0
            mel, target, valid, silence = self.sequence(clip_number, first, frames, version=version)
            wanted = np.arange(first, first + frames)
            inside = (wanted >= 0) & (wanted < clip.frames)
            emphases.append(clip.emphasis[np.clip(wanted, 0, clip.frames - 1)] & inside)
            group = self._style_groups[(clip.subject, clip.voice)]
            reference_number = int(group[rng.integers(len(group))])
            length = int(rng.integers(style_min, style_max + 1))
            start = self._reference_start(
                rng, reference_number, clip_number, target=(first, frames), length=length
            )
            reference, mask = self.reference(reference_number, start, style_max)
            mask[length:] = False
            mels.append(mel)
            targets.append(target)
            valids.append(valid)
            silences.append(silence)
            references.append(reference)
            masks.append(mask)
            subjects.append(clip.subject)
        return MotionBatch(
            mel=torch.from_numpy(np.stack(mels)),
            target=torch.from_numpy(np.stack(targets)),
            valid=torch.from_numpy(np.stack(valids)),
            silence=torch.from_numpy(np.stack(silences)),
            reference=torch.from_numpy(np.stack(references)),
            reference_mask=torch.from_numpy(np.stack(masks)),
            subjects=tuple(subjects),
            emphasis=torch.from_numpy(np.stack(emphases)),
        )

    def _reference_start(
        self,
        rng: np.random.Generator,
        reference_number: int,
        clip_number: int,
        *,
        target: tuple[int, int],
        length: int,
    ) -> int:
        first, frames = target
        total = self.clips[reference_number].frames
        latest = max(total - length, 0)
        if reference_number != clip_number:
            return int(rng.integers(latest + 1))
        # Same clip: prefer a segment that does not overlap the target frames.
        starts = np.arange(latest + 1)
        apart = starts[(starts + length <= first) | (starts >= first + frames)]
        pool = apart if apart.size else starts
        return int(pool[rng.integers(pool.size)])
