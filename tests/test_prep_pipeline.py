"""Video -> dataset preparation on real encoded videos of a real photograph, and the loader.

The videos are built here with PyAV from ``skimage.data.astronaut()`` (the default avatar's
photograph) under a small per-frame similarity jitter, with a synthetic voiced-speech track,
so MediaPipe tracks a real face and the crop stabiliser has real motion to cancel.
"""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import torch
from safetensors.numpy import save_file
from skimage.data import astronaut

from engine.audio import MelConfig
from engine.data.prep.dataset import (
    BASIS_NAME,
    CROPS_NAME,
    TRACK_NAME,
    TalkingHeadDataset,
    clip_dir,
    mel_centre_index,
    read_basis,
    read_crop_video,
    read_header,
    read_track,
)
from engine.data.prep.pipeline import fill_tracking_gaps, heldout_by_name, prepare
from engine.data.prep.video import FrameRateSummary, decode_audio, iter_frames, probe_video
from engine.errors import EngineError
from engine.face3d import (
    LIPS,
    LIPS_INNER,
    LIPS_OUTER,
    LOWER_FACE,
    STABLE,
    DynamicsBasis,
    canonical_template,
    canonicalise,
    fit_similarity,
    identity_shape,
    inter_ocular_distance,
    mouth_opening,
)
from engine.face_crop import CropConfig, crop_layout, crop_transforms, transform_points
from engine.tracking import FaceTracker

FACE_CENTRE = (225.0, 125.0)  # of the astronaut photograph, in pixels
SPEECH_STARTS = 0.6  # seconds of silence before the synthetic speech


def _speech_like(seconds: float, rate: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    times = np.arange(round(seconds * rate)) / rate
    pitch = 120.0 + 30.0 * np.sin(2 * np.pi * 0.9 * times)
    phase = 2 * np.pi * np.cumsum(pitch) / rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 15))
    syllables = 0.5 * (1 - np.cos(2 * np.pi * 4.0 * times))
    audio = 0.25 * voiced * syllables + rng.normal(0.0, 0.02, times.shape)
    audio[times < SPEECH_STARTS] = 0.0
    return audio.astype(np.float32)


def _jitters(count: int, seed: int, fps: int = 25) -> np.ndarray:
    """(count, 2, 3) similarity transforms about the face (pixel-centre convention): a
    hand-held camera's shake, up to 2 degrees, 3 % of scale and 6 pixels, at 0.5-1.5 Hz."""
    phases = np.random.default_rng(seed).uniform(0.0, 2 * np.pi, 4)
    times = np.arange(count) / fps
    angle = 2.0 * np.sin(2 * np.pi * 0.6 * times + phases[0])
    scale = 1.0 + 0.03 * np.sin(2 * np.pi * 0.9 * times + phases[1])
    shift_x = 6.0 * np.sin(2 * np.pi * 1.5 * times + phases[2])
    shift_y = 6.0 * np.sin(2 * np.pi * 1.1 * times + phases[3])
    matrices = []
    for index in range(count):
        matrix = cv2.getRotationMatrix2D(FACE_CENTRE, angle[index], scale[index])
        matrix[:, 2] += (shift_x[index], shift_y[index])
        matrices.append(matrix)
    return np.asarray(matrices)


def _write_video(
    path: Path,
    frames: list[np.ndarray],
    *,
    times: list[float] | None = None,
    fps: int = 25,
    audio: np.ndarray | None = None,
    audio_rate: int = 22050,
) -> None:
    height, width = frames[0].shape[:2]
    with av.open(str(path), mode="w") as container:
        video = container.add_stream("libx264", rate=fps, options={"crf": "18"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if times is not None:
            video.codec_context.time_base = Fraction(1, 1000)
            video.time_base = Fraction(1, 1000)
        sound = None
        if audio is not None:
            sound = container.add_stream("aac", rate=audio_rate)
            sound.layout = "mono"
        for index, rgb in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = index if times is None else round(times[index] * 1000)
            if times is not None:
                frame.time_base = Fraction(1, 1000)
            for packet in video.encode(frame):
                container.mux(packet)
        for packet in video.encode(None):
            container.mux(packet)
        if sound is not None and audio is not None:
            chunk = 1024
            for start in range(0, len(audio), chunk):
                piece = audio[start : start + chunk][None, :]
                audio_frame = av.AudioFrame.from_ndarray(piece, format="fltp", layout="mono")
                audio_frame.sample_rate = audio_rate
                audio_frame.pts = start
                for packet in sound.encode(audio_frame):
                    container.mux(packet)
            for packet in sound.encode(None):
                container.mux(packet)


def _jittered_frames(count: int, seed: int, fps: int = 25) -> tuple[list[np.ndarray], np.ndarray]:
    photo = astronaut()
    jitters = _jitters(count, seed, fps)
    frames = [
        cv2.warpAffine(photo, matrix, (512, 512), borderMode=cv2.BORDER_REFLECT)
        for matrix in jitters
    ]
    return frames, jitters


class Corpus:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.out = root / "dataset"
        # 25 fps, 2 s, sidecar metadata and rig landmarks; frames 20 and 21 blank (a short gap).
        self.talking = root / "talking.mp4"
        frames, self.jitters = _jittered_frames(50, seed=1)
        self.blank_frames = (20, 21)
        for index in self.blank_frames:
            frames[index] = np.full_like(frames[index], 128)
        _write_video(self.talking, frames, audio=_speech_like(2.0, 22050, 1), audio_rate=22050)
        self.sidecar = {
            "split": "train",
            "subject": "astronaut",
            "source": "test",
            "text": "hello there",
            "phones": [["SIL", 0.0, 0.6], ["HH", 0.6, 0.7]],
        }
        self.talking.with_suffix(".json").write_text(json.dumps(self.sidecar))
        with FaceTracker(video=False) as tracker:
            still = tracker.detect(astronaut())[0].landmarks[:, :2].astype(np.float64)
        corner_to_centre = still - 0.5
        self.rig = (
            np.einsum("tij,nj->tni", self.jitters[:, :, :2], corner_to_centre)
            + self.jitters[:, None, :, 2]
            + 0.5
        ).astype(np.float32)
        save_file({"landmarks": self.rig}, str(self.talking.with_suffix(".landmarks.safetensors")))

        # 30 fps, 2 s, no sidecar, 16 kHz audio.
        self.talking30 = root / "talking30.mp4"
        frames30, _ = _jittered_frames(60, seed=2, fps=30)
        _write_video(
            self.talking30, frames30, fps=30, audio=_speech_like(2.0, 16000, 2), audio_rate=16000
        )

        # 25 fps with 10 of 50 frames blank: 20 % without a face.
        self.blanks = root / "blanks.mp4"
        frames_b, _ = _jittered_frames(50, seed=3)
        for index in range(30, 40):
            frames_b[index] = np.zeros_like(frames_b[index])
        _write_video(self.blanks, frames_b, audio=_speech_like(2.0, 22050, 3))

        self.report = prepare(
            [self.talking, self.talking30, self.blanks],
            self.out,
            max_skipped_fraction=0.1,
            workers=1,
        )


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Corpus:
    return Corpus(tmp_path_factory.mktemp("prep"))


def _stable_std(points: np.ndarray) -> np.ndarray:
    """Per-point standard deviation (pixels) over frames of (T, N, 2) points: the larger
    of the x and y deviations."""
    return points.std(axis=0).max(axis=1)


# ---------------------------------------------------------------------------- pipeline


def test_prepare_keeps_usable_clips_and_rejects_the_blank_one(corpus: Corpus) -> None:
    report = corpus.report
    assert report.kept == ["talking", "talking30"]
    assert list(report.rejected) == [str(corpus.blanks)]
    reason = report.rejected[str(corpus.blanks)]
    assert "10 of 50 frames" in reason and "exactly one face" in reason and "10%" in reason
    assert "\n" not in reason
    assert not clip_dir(corpus.out, "blanks").exists()
    assert report.frames == 150 and report.frames_per_second > 0
    header = read_header(corpus.out)
    assert header.rejected == [{"source": str(corpus.blanks), "reason": reason}]


def test_dataset_layout_and_arrays(corpus: Corpus) -> None:
    header = read_header(corpus.out)
    assert header.fps == 25 and header.sample_rate == 16000
    assert header.mel == MelConfig() and header.crop == CropConfig(size=256)
    assert len(header.mel_mean) == len(header.mel_std) == 80
    assert all(value > 0 for value in header.mel_std)
    basis, template, identities = read_basis(corpus.out)
    assert (corpus.out / BASIS_NAME).is_file()
    assert template.shape == (468, 3)
    np.testing.assert_allclose(template, canonical_template())
    assert set(identities) == {"astronaut", "talking30"}
    assert header.dynamics["num_components"] == basis.num_components
    assert basis.indices.tolist() == list(LOWER_FACE)
    for clip in header.clips:
        folder = clip_dir(corpus.out, clip.id)
        track = read_track(folder / TRACK_NAME)
        frames = clip.frames
        assert frames == 50
        assert read_crop_video(folder / CROPS_NAME).shape == (frames, 256, 256, 3)
        assert track["landmarks2d"].shape == (frames, 478, 2)
        assert track["lower_face"].shape == (frames, len(LOWER_FACE), 3)
        assert track["crop_transforms"].shape == (frames, 2, 3)
        assert track["valid"].dtype == np.bool_ and track["valid"].shape == (frames,)
        assert track["blendshapes"].shape == (frames, 52)
        assert track["pose"].shape == (frames, 4, 4)
        assert track["coefficients"].shape == (frames, basis.num_components)
        assert track["mel"].shape == (clip.mel_frames, 80)
        assert clip.mel_frames >= 200  # 2 s of audio
        # The coefficients reproduce the canonical lower face (98 % of the variance kept).
        decoded = basis.decode(track["coefficients"], identities[clip.subject])
        error = np.abs(decoded - track["lower_face"]).mean()
        spread = np.abs(track["lower_face"] - track["lower_face"].mean(axis=0)).mean()
        assert error < 0.35 * spread


def test_sidecar_metadata_split_and_subject(corpus: Corpus) -> None:
    clips = {clip.id: clip for clip in read_header(corpus.out).clips}
    talking = clips["talking"]
    assert talking.meta == corpus.sidecar
    assert talking.split == "train" and talking.subject == "astronaut"
    assert talking.has_ground_truth
    other = clips["talking30"]
    assert other.meta == {} and other.subject == "talking30" and not other.has_ground_truth
    assert other.split == ("heldout" if heldout_by_name(corpus.talking30) else "train")


def test_short_tracking_gap_is_interpolated(corpus: Corpus) -> None:
    talking = next(clip for clip in read_header(corpus.out).clips if clip.id == "talking")
    assert talking.skipped["no_face"] == 2 and talking.skipped["interpolated"] == 2
    assert talking.skipped["invalid"] == 0 and talking.valid_frames == 50
    track = read_track(clip_dir(corpus.out, "talking") / TRACK_NAME)
    assert np.flatnonzero(track["interpolated"]).tolist() == list(corpus.blank_frames)


def test_thirty_fps_video_becomes_25_fps(corpus: Corpus) -> None:
    talking30 = next(clip for clip in read_header(corpus.out).clips if clip.id == "talking30")
    assert talking30.frames == 50 and talking30.skipped["source_frames"] == 60
    track = read_track(clip_dir(corpus.out, "talking30") / TRACK_NAME)
    # Frame k (at k / 25 s) shows the latest 30 fps frame at or before it: floor(1.2 k).
    assert track["source_frame"].tolist() == [(6 * k) // 5 for k in range(50)]


def test_crop_is_stable_under_camera_shake(corpus: Corpus) -> None:
    track = read_track(clip_dir(corpus.out, "talking") / TRACK_NAME)
    tracked = track["valid"] & ~track["interpolated"]
    stable = list(STABLE)
    # The shake moves the face by several pixels in the source video...
    assert _stable_std(corpus.rig[tracked][:, stable]).mean() > 3.0
    # ...while in the crop the true face (rig landmarks) stays within a pixel,
    rig_in_crop = track["ground_truth_landmarks2d"][tracked][:, stable]
    assert _stable_std(rig_in_crop).max() < 1.0
    # and so do the tracked stable landmarks.
    assert _stable_std(track["landmarks2d"][tracked][:, stable]).mean() < 1.0
    # The face sits where the layout puts it.
    layout = crop_layout(CropConfig(size=256))
    assert np.abs(rig_in_crop.mean(axis=0) - layout).mean() < 6.0


def test_rig_landmarks_map_onto_tracked_landmarks(corpus: Corpus) -> None:
    track = read_track(clip_dir(corpus.out, "talking") / TRACK_NAME)
    tracked = track["valid"] & ~track["interpolated"]
    distance = np.linalg.norm(
        track["ground_truth_landmarks2d"][tracked] - track["landmarks2d"][tracked], axis=-1
    )
    assert distance.mean() < 2.0
    lips = distance[:, list(LIPS)]
    assert lips.mean() < 3.0


def test_audio_is_aligned_with_video(corpus: Corpus) -> None:
    track = read_track(clip_dir(corpus.out, "talking") / TRACK_NAME)
    loudness = track["mel"].mean(axis=1)
    silence = np.log(MelConfig().log_floor)
    onset = round(SPEECH_STARTS * 100)  # mel frames at 10 ms
    assert np.all(loudness[: onset - 2] < silence + 0.5)
    assert np.all(loudness[onset + 3 : onset + 20] > silence + 3.0)


def test_video_without_audio_is_a_clear_error(tmp_path: Path) -> None:
    silent = tmp_path / "silent.mp4"
    frames, _ = _jittered_frames(5, seed=4)
    _write_video(silent, frames, audio=None)
    with pytest.raises(EngineError, match=r"silent\.mp4 has no audio track; "):
        decode_audio(silent)
    with pytest.raises(EngineError, match=r"no usable clip.*has no audio track"):
        prepare([silent], tmp_path / "out", workers=1)


def test_unreadable_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"this is not a video" * 100)
    with pytest.raises(EngineError, match="cannot read video"):
        probe_video(garbage)
    with pytest.raises(EngineError, match="does not exist"):
        decode_audio(tmp_path / "missing.mp4")


def test_variable_frame_rate_is_resampled_by_timestamp(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    durations = [0.02, 0.05, 0.03, 0.06, 0.04, 0.025] * 5
    times = np.concatenate([[0.0], np.cumsum(durations)[:-1]]).tolist()
    frames = [np.full((64, 64, 3), 4 * index, np.uint8) for index in range(len(times))]
    path = tmp_path / "vfr.mp4"
    _write_video(path, frames, times=times, audio=None)
    summary = FrameRateSummary()
    with caplog.at_level(logging.INFO, logger="engine.data.prep.video"):
        decoded = list(iter_frames(path, summary=summary))
    end = times[-1] + durations[-1]
    expected = [
        max(i for i, start in enumerate(times) if start <= k / 25 + 1e-3)
        for k in range(int(np.ceil(end * 25 - 1e-6)))
    ]
    assert [frame.source_index for frame in decoded] == expected
    assert summary.variable and summary.source_frames == 30
    assert [record.message for record in caplog.records if "variable frame rate" in record.message]
    # The pixels are those of the chosen source frame (encoded grey level 4 * index).
    for frame in decoded:
        assert abs(float(frame.rgb.mean()) - 4 * frame.source_index) < 3


def test_constant_25_fps_maps_one_to_one(corpus: Corpus, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="engine.data.prep.video"):
        indices = [frame.source_index for frame in iter_frames(corpus.talking)]
    assert indices == list(range(50))
    assert not caplog.records


# ------------------------------------------------------------------------------ loader


def test_loader_returns_aligned_samples(corpus: Corpus) -> None:
    header = read_header(corpus.out)
    train = TalkingHeadDataset(corpus.out, "train", mel_past_ms=200, mel_future_ms=100)
    expected = sum(clip.valid_frames for clip in header.clips_in("train"))
    assert len(train) == expected >= 50
    sample = train[10]
    assert sample["clip_id"] == "talking" and sample["frame"] == 10
    assert sample["mel"].shape == (20 + 1 + 10, 80)
    assert sample["dynamics"].shape == (header.dynamics["num_components"],)
    assert sample["crop"].shape == sample["reference"].shape == (3, 256, 256)
    assert sample["crop"].dtype == torch.float32
    assert float(sample["crop"].min()) >= 0.0 and float(sample["crop"].max()) <= 1.0
    assert sample["landmarks"].shape == (478, 2)

    track = read_track(clip_dir(corpus.out, "talking") / TRACK_NAME)
    mean, std = np.asarray(header.mel_mean), np.asarray(header.mel_std)
    centre = mel_centre_index(10)
    assert centre == 42  # (10 + 0.5) * 40 ms / 10 ms
    window = sample["mel"].numpy()
    np.testing.assert_allclose(window[20], (track["mel"][centre] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(window[0], (track["mel"][centre - 20] - mean) / std, rtol=1e-5)
    np.testing.assert_allclose(sample["dynamics"].numpy(), track["coefficients"][10])
    crops = read_crop_video(clip_dir(corpus.out, "talking") / CROPS_NAME)
    np.testing.assert_allclose(
        sample["crop"].numpy(), crops[10].transpose(2, 0, 1) / 255.0, atol=1e-6
    )

    # Frame 0 reaches 20 mel frames before the clip starts: silence, normalised.
    first = train[0]["mel"].numpy()
    silence = (np.log(MelConfig().log_floor) - mean) / std
    np.testing.assert_allclose(first[:18], np.broadcast_to(silence, (18, 80)), rtol=1e-5)


def test_loader_reference_resize_and_cache(corpus: Corpus) -> None:
    train = TalkingHeadDataset(corpus.out, "train", image_size=128, cache_clips=1)
    sample = train[10]
    assert sample["crop"].shape == (3, 128, 128)
    assert not torch.equal(sample["crop"], sample["reference"])
    full = TalkingHeadDataset(corpus.out, "train")
    scale = 128 / 256
    np.testing.assert_allclose(sample["landmarks"].numpy(), full[10]["landmarks"].numpy() * scale)
    for item in range(len(train)):
        train[item]
    assert len(train._cache) == 1
    batch = next(iter(torch.utils.data.DataLoader(train, batch_size=4, shuffle=False)))
    assert batch["crop"].shape == (4, 3, 128, 128)
    assert batch["mel"].shape == (4, 41, 80)
    assert list(batch["clip_id"]) == ["talking"] * 4


def test_loader_refuses_a_missing_dataset(tmp_path: Path) -> None:
    with pytest.raises(EngineError, match="not found"):
        TalkingHeadDataset(tmp_path, "train")


# ---------------------------------------------------------------------- pieces on their own


def test_fill_tracking_gaps() -> None:
    detected = np.array([False, True, False, False, True, False, False, False, False, True])
    values = np.arange(10, dtype=np.float64)[:, None] * np.where(detected, 1.0, 0.0)[:, None]
    valid, interpolated = fill_tracking_gaps(detected, [values], max_gap=2)
    assert valid.tolist() == [False, True, True, True, True, False, False, False, False, True]
    assert interpolated.tolist() == [False, False, True, True] + [False] * 6
    np.testing.assert_allclose(values[:, 0], [1, 1, 2, 3, 4, 4, 4, 9, 9, 9])


def test_heldout_split_by_name_is_deterministic_and_about_ten_percent() -> None:
    names = [f"clip_{index:05d}.mp4" for index in range(3000)]
    share = np.mean([heldout_by_name(name) for name in names])
    assert 0.08 < share < 0.12
    assert [heldout_by_name(name) for name in names[:50]] == [
        heldout_by_name(Path("/elsewhere") / name) for name in names[:50]
    ]


def test_lip_indices_are_mediapipe_lips() -> None:
    from mediapipe.tasks.python.vision import FaceLandmarksConnections

    lips = set()
    for connection in FaceLandmarksConnections.FACE_LANDMARKS_LIPS:
        lips |= {connection.start, connection.end}
    assert len(LIPS_OUTER) == len(LIPS_INNER) == 20
    assert set(LIPS) == lips
    assert LOWER_FACE[:40] == LIPS and len(set(LOWER_FACE)) == len(LOWER_FACE)
    assert not set(STABLE) & set(LOWER_FACE)
    template = canonical_template()
    # Every lower-face point is below the eyes; every stable point above the nose tip.
    assert np.all(template[list(LOWER_FACE), 1] > 0.5)
    assert np.all(template[list(STABLE), 1] < template[1, 1])


def test_canonicalise_removes_pose_and_scale() -> None:
    template = canonical_template()
    assert inter_ocular_distance(template) == pytest.approx(1.0)
    rng = np.random.default_rng(0)
    face = np.concatenate([template, rng.normal(0, 0.1, (10, 3))])  # 478 points
    face[list(LIPS)] += rng.normal(0, 0.05, (len(LIPS), 3))
    rotation, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    rotation *= np.sign(np.linalg.det(rotation))
    posed = 37.0 * face @ rotation.T + np.array([200.0, 150.0, 3.0])
    canonical = canonicalise(posed[None])[0]
    np.testing.assert_allclose(canonical, face, atol=1e-9)
    transform = fit_similarity(posed[list(STABLE)], template[list(STABLE)])
    assert float(transform.scale) == pytest.approx(1 / 37.0)
    assert mouth_opening(posed) == pytest.approx(mouth_opening(face))


def test_dynamics_basis_round_trip_and_identity() -> None:
    rng = np.random.default_rng(1)
    points = len(LOWER_FACE)
    modes = rng.normal(size=(3, points * 3))
    weights = rng.normal(size=(200, 3)) * np.array([1.0, 0.5, 0.2])
    offsets = (weights @ modes).reshape(200, points, 3) + rng.normal(0, 1e-4, (200, points, 3))
    basis = DynamicsBasis.fit(offsets, variance=0.999)
    assert basis.num_components == 3
    np.testing.assert_allclose(basis.decode(basis.encode(offsets)), offsets, atol=1e-3)
    restored = DynamicsBasis.from_arrays(basis.to_arrays())
    np.testing.assert_allclose(restored.encode(offsets), basis.encode(offsets), atol=1e-4)
    assert DynamicsBasis.fit(offsets, num_components=2).num_components == 2

    shapes = rng.normal(size=(10, points, 3))
    openings = np.array([0.5, 0.1, 0.4, 0.05, 0.3, 0.6, 0.7, 0.8, 0.9, 1.0])
    np.testing.assert_allclose(identity_shape(shapes, openings), shapes[[3, 1]].mean(axis=0))


def test_crop_transforms_follow_a_moving_face() -> None:
    template = canonical_template()
    face = np.concatenate([template, np.zeros((10, 3))]) * 40.0 + np.array([300.0, 200.0, 0.0])
    frames = 30
    shifts = np.stack([np.linspace(0, 30, frames), np.linspace(0, -10, frames)], axis=1)
    landmarks = face[None] + np.concatenate([shifts, np.zeros((frames, 1))], axis=1)[:, None]
    config = CropConfig(size=128)
    matrices = crop_transforms(landmarks, np.ones(frames, bool), config)
    in_crop = transform_points(matrices, landmarks[:, list(STABLE)])
    layout = crop_layout(config)
    np.testing.assert_allclose(in_crop, np.broadcast_to(layout, in_crop.shape), atol=1e-6)
