"""Making the default avatar with the synthetic rig, and storing it where inference loads it.

The default avatar is the corpus's own portrait animated by the rig with its mouth at rest
(:mod:`engine.data.synth.render`): a 6 s idle loop (blinks, slight head motion). Its
landmarks are known exactly, so no tracking is needed. It is made once and stored as
``$PRESENTER_HOME/avatars/default`` (:mod:`engine.avatar`); the engine only loads it.

``python -m engine.data.synth.default_avatar`` makes and stores it (the presenter does the
same on first use).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from engine.avatar import (
    DEFAULT_AVATAR,
    Avatar,
    avatar_from_frames,
    avatar_path,
    load_avatar,
    save_avatar,
    stored_crop,
)
from engine.data.synth.render import AvatarRenderer, RenderConfig
from engine.data.synth.visemes import control_vector
from engine.errors import EngineError
from engine.face_crop import CropConfig
from engine.frames import FPS

log = logging.getLogger(__name__)

DEFAULT_SUBJECT = "default-avatar"  # the name the shipped model knows this face by


def make_default_avatar(
    *, crop: CropConfig | None = None, seconds: float = 6.0, seed: int = 11, fps: float = float(FPS)
) -> Avatar:
    """The default portrait's idle loop (rest mouth, blinks, head motion) rendered by the
    synthetic rig, ``seconds`` long (played back and forth)."""
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


def stored_default_avatar(*, crop: CropConfig | None = None, remake: bool = False) -> Avatar:
    """The stored default avatar cut as ``crop``; made and stored first where it is not
    stored yet, was cut as another crop layout, or ``remake`` asks for it.

    Safe when processes race: each writes its own copy and renames it into place; the
    first one stays and the others use their own copy of the same avatar.
    """
    crop = crop or CropConfig()
    path = avatar_path(DEFAULT_AVATAR)
    stored = stored_crop(path)
    if stored == crop and not remake:
        return load_avatar(path, crop=crop)
    began = time.perf_counter()
    avatar = make_default_avatar(crop=crop)
    try:
        save_avatar(avatar, path, replace=stored is not None)
    except FileExistsError:  # another process stored it meanwhile: the same avatar
        log.debug("the default avatar was stored meanwhile by another process")
    log.info(
        "made the default avatar (%d frames, %.1f s) in %s",
        avatar.num_frames,
        time.perf_counter() - began,
        path,
    )
    return avatar


def load_or_make_avatar(name_or_path: str | Path, *, crop: CropConfig | None = None) -> Avatar:
    """A stored avatar by name or folder; the default one is made on first use."""
    if name_or_path == DEFAULT_AVATAR:
        return stored_default_avatar(crop=crop)
    return load_avatar(name_or_path, crop=crop)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m engine.data.synth.default_avatar",
        description="Make the default avatar and store it where the engine loads it.",
    )
    parser.add_argument("--model", default="default", help="the model whose crop layout to cut")
    parser.add_argument("--remake", action="store_true", help="make it even if it is stored")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from engine.avatar_model import load_avatar_model

    try:
        crop = load_avatar_model(args.model).crop
        stored_default_avatar(crop=crop, remake=args.remake)
    except EngineError as exc:
        log.error("error: %s", exc)
        return 1
    log.info("the default avatar is stored in %s", avatar_path(DEFAULT_AVATAR))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
