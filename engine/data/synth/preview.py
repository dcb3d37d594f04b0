"""Something to look at and listen to: a short mp4 of a corpus and frames of key mouth shapes."""

from __future__ import annotations

import json
from pathlib import Path

import av
import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file

from engine.data.prep.video import decode_audio, iter_frames
from engine.errors import EngineError
from engine.frames import FPS
from engine.speech.phonemes import PHONE_TO_VISEME, phone_per_frame
from engine.video_file import write_mp4

PREVIEW_RATE = 22050
# (name, viseme to look in, control that should be at its largest there)
KEY_SHAPES = (
    ("open-vowel", "aa", "jaw_open"),
    ("f", "FF", "lip_tuck"),
    ("closed", "PP", "lip_press"),
)


def _clip_names(corpus_dir: Path) -> list[Path]:
    sidecars = sorted((corpus_dir / "clips").glob("*.json"))
    if not sidecars:
        raise EngineError(f"no clips in {corpus_dir}/clips; run `data synth` first")
    return [s.with_suffix("") for s in sidecars]


def write_preview(
    corpus_dir: Path, out_path: Path, *, seconds: float = 10.0, fps: int = FPS
) -> float:
    """Clips one after another (sources mixed) up to ``seconds``; returns the length written."""
    names = _clip_names(Path(corpus_dir))
    by_source: dict[str, list[Path]] = {}
    for name in names:
        source = json.loads(name.with_suffix(".json").read_text())["source"]
        by_source.setdefault(source, []).append(name)
    order = [n for group in zip(*by_source.values(), strict=False) for n in group]
    order += [n for n in names if n not in order]
    frames: list[np.ndarray] = []
    audio: list[np.ndarray] = []
    wanted = round(seconds * fps)
    for name in order:
        if len(frames) >= wanted:
            break
        video = name.with_suffix(".mp4")
        clip_frames = [frame.rgb for frame in iter_frames(video, fps=fps, quiet=True)]
        clip_audio = decode_audio(video, sample_rate=PREVIEW_RATE)
        take = min(len(clip_frames), wanted - len(frames))
        frames += clip_frames[:take]
        samples = round(take * PREVIEW_RATE / fps)
        audio.append(np.pad(clip_audio[:samples], (0, max(0, samples - len(clip_audio)))))
    write_mp4(out_path, frames, fps=fps, audio=np.concatenate(audio), sample_rate=PREVIEW_RATE)
    return len(frames) / fps


def key_shape_frames(corpus_dir: Path) -> dict[str, tuple[np.ndarray, str]]:
    """For each key shape: the corpus frame where its control peaks inside its viseme.

    Returns name -> (frame RGB, description of where it came from).
    """
    best: dict[str, tuple[float, Path, int]] = {}
    for name in _clip_names(Path(corpus_dir)):
        meta = json.loads(name.with_suffix(".json").read_text())
        rig_path = name.with_suffix(".landmarks.safetensors")
        with safe_open(str(rig_path), framework="numpy") as handle:
            control_names = json.loads((handle.metadata() or {})["controls"])
        controls = load_file(str(rig_path))["controls"]
        phones = phone_per_frame(meta["phones"], meta["frames"], meta["fps"])
        visemes = np.array([PHONE_TO_VISEME[p] for p in phones])
        for shape, viseme, control in KEY_SHAPES:
            column = controls[:, control_names.index(control)].astype(np.float64)
            column[visemes != viseme] = -np.inf
            index = int(np.argmax(column))
            if np.isfinite(column[index]) and column[index] > best.get(shape, (-np.inf,))[0]:
                best[shape] = (float(column[index]), name, index)
    if not best:
        raise EngineError(f"no phones found in the clips of {corpus_dir}")
    result: dict[str, tuple[np.ndarray, str]] = {}
    for shape, (_, name, index) in best.items():
        with av.open(str(name.with_suffix(".mp4"))) as container:
            for frame_index, frame in enumerate(container.decode(video=0)):
                if frame_index == index:
                    result[shape] = (frame.to_ndarray(format="rgb24"), f"{name.name} frame {index}")
                    break
    return result


def write_key_shapes(corpus_dir: Path, out_dir: Path) -> list[Path]:
    """PNGs of the key mouth shapes (open vowel, /f/, closed); returns their paths."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for shape, (frame, origin) in key_shape_frames(corpus_dir).items():
        path = out_dir / f"mouth-{shape}.png"
        Image.fromarray(frame).save(path, pnginfo=_origin_info(origin))
        written.append(path)
    return written


def _origin_info(origin: str):  # type: ignore[no-untyped-def]
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("source", origin)
    return info
