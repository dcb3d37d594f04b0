"""Stored avatars (engine/avatar.py) and the default one made by the rig
(engine/data/synth/default_avatar.py): what is stored loads back bit for bit, so the engine
renders the same pixels from a stored avatar as from the one just made."""

from __future__ import annotations

import dataclasses
import threading
from pathlib import Path

import numpy as np
import pytest

from engine.avatar import (
    AVATAR_FILE,
    DEFAULT_AVATAR,
    MAKE_DEFAULT_AVATAR,
    Avatar,
    avatar_path,
    avatars_dir,
    load_avatar,
    save_avatar,
    stored_avatars,
    stored_crop,
)
from engine.data.synth.default_avatar import make_default_avatar, stored_default_avatar
from engine.errors import EngineError
from engine.face_crop import CropConfig


@pytest.fixture(scope="module")
def short_avatar() -> Avatar:
    return make_default_avatar(seconds=0.4)


def assert_identical(loaded: Avatar, made: Avatar) -> None:
    for field in dataclasses.fields(Avatar):
        mine, theirs = getattr(loaded, field.name), getattr(made, field.name)
        if isinstance(theirs, np.ndarray):
            assert mine.dtype == theirs.dtype and mine.shape == theirs.shape, field.name
            assert np.array_equal(mine, theirs), field.name
        else:
            assert mine == theirs, field.name
    assert np.array_equal(loaded.reference_crop(), made.reference_crop())
    assert not loaded.frames.flags.writeable


def test_make_store_load_is_bit_identical(short_avatar: Avatar, tmp_path: Path) -> None:
    folder = save_avatar(short_avatar, tmp_path / "mine")
    assert folder == tmp_path / "mine" and (folder / AVATAR_FILE).is_file()
    assert len(list((folder / "frames").glob("*.png"))) == short_avatar.num_frames
    assert stored_crop(folder) == short_avatar.crop
    assert_identical(load_avatar(folder, crop=short_avatar.crop), short_avatar)
    assert_identical(load_avatar(str(folder)), short_avatar)  # a string with a folder in it
    assert not [path for path in tmp_path.iterdir() if path.name.startswith(".")]


def test_named_avatars_live_in_presenter_home(
    short_avatar: Avatar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRESENTER_HOME", str(tmp_path))
    assert avatars_dir() == tmp_path / "avatars" and stored_avatars() == []
    assert stored_crop("someone") is None
    save_avatar(short_avatar, "someone")
    assert avatar_path("someone") == tmp_path / "avatars" / "someone"
    assert stored_avatars() == ["someone"]
    assert_identical(load_avatar("someone"), short_avatar)
    with pytest.raises(EngineError, match="available: default, someone"):
        load_avatar("someone-else")
    with pytest.raises(EngineError, match="not an avatar name"):
        avatar_path(".hidden")


def test_a_missing_or_mismatched_avatar_says_what_to_do(
    short_avatar: Avatar, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PRESENTER_HOME", str(tmp_path))
    with pytest.raises(EngineError, match=f"run `{MAKE_DEFAULT_AVATAR}`") as missing:
        load_avatar()
    assert "\n" not in str(missing.value)
    with pytest.raises(EngineError, match="no avatar stored in"):
        load_avatar(tmp_path / "nowhere")
    folder = save_avatar(short_avatar, tmp_path / "cut")
    with pytest.raises(EngineError, match="make the avatar again for this model"):
        load_avatar(folder, crop=CropConfig(size=128))
    (folder / "frames" / "00003.png").unlink()
    with pytest.raises(EngineError, match=r"damaged \(no frame 00003\.png\)"):
        load_avatar(folder)


def test_storing_races_leave_one_whole_avatar(short_avatar: Avatar, tmp_path: Path) -> None:
    target = tmp_path / "raced"
    outcomes: list[str] = []

    def store() -> None:
        try:
            save_avatar(short_avatar, target)
            outcomes.append("stored")
        except FileExistsError:
            outcomes.append("exists")

    threads = [threading.Thread(target=store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["exists"] * 3 + ["stored"]
    assert_identical(load_avatar(target), short_avatar)
    other = make_default_avatar(seconds=0.08, crop=CropConfig(size=128))
    save_avatar(other, target, replace=True)
    assert_identical(load_avatar(target), other)
    assert [path.name for path in tmp_path.iterdir()] == ["raced"]  # no partial folders left


@pytest.mark.slow
def test_the_default_avatar_is_made_once_and_stored(caplog: pytest.LogCaptureFixture) -> None:
    """In the session's PRESENTER_HOME (tests/conftest.py): made on first use, then loaded."""
    crop = CropConfig()
    with caplog.at_level("INFO", logger="engine.data.synth.default_avatar"):
        first = stored_default_avatar(crop=crop)
    assert first.num_frames == 150 and first.name == DEFAULT_AVATAR
    assert stored_crop(DEFAULT_AVATAR) == crop
    assert_identical(load_avatar(crop=crop), first)
    assert_identical(stored_default_avatar(crop=crop), first)
    made = [record for record in caplog.records if "made the default avatar" in record.message]
    assert len(made) <= 1  # none where an earlier test of the session had made it
