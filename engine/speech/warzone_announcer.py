"""A second real speaker, kept for evaluation: the announcer of the game Warzone 2100,
with phone timings by forced alignment.

Debian's ``warzone2100-data`` (GPL-2+) ships the game's data as ``base.wz``, a zip. Its
voice lines are Ogg Vorbis files (11.025 kHz mono) and ``audio/audio.cfg`` names each one
with what it says, in a comment: ``audio "pcv357.ogg" oneshot 100 1800 /*Research
Completed*/``. The ``pcv`` lines under ``audio/memressp/`` and ``audio/extra/`` are one
female voice, the game's announcer ("Structure Under Attack", "Reinforcements are
available", "10 Minutes Remaining": short phrases of one to three seconds); the other
speakers' lines (pilots, soldiers) are left out. A line that cannot be aligned to its
comment is skipped by the corpus (the aligner raises ``EngineError`` for it).
"""

from __future__ import annotations

import io
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from engine.errors import EngineError
from engine.speech.alignment import ForcedAligner
from engine.speech.recordings import aligned_recording, decode_audio
from engine.speech.utterance import Utterance

DEBIAN_PACKAGE: Final = "warzone2100-data"
ARCHIVE_PATH: Final = Path("/usr/share/games/warzone2100/base.wz")
SPEAKER_ID: Final = "warzone2100-en-f1"
CONFIG_MEMBER: Final = "audio/audio.cfg"
ANNOUNCER_FOLDERS: Final = ("audio/memressp/", "audio/extra/")

_CONFIG_LINE = re.compile(r'^\s*audio\s+"([A-Za-z0-9_.-]+)\.ogg"[^\n]*?/\*(.*?)\*/', re.MULTILINE)
_ANNOUNCER_NAME = re.compile(r"pcv\d+")


@dataclass(frozen=True, kw_only=True)
class AnnouncerLine:
    """One line: ``name`` like ``"pcv357"``, its member of the archive, what it says."""

    name: str
    member: str
    transcript: str


def _missing(detail: str) -> EngineError:
    return EngineError(
        f"The Warzone 2100 voice lines are not available ({detail}). Install the Debian "
        f"package '{DEBIAN_PACKAGE}' (sudo apt-get install {DEBIAN_PACKAGE})."
    )


class WarzoneAnnouncer:
    """The announcer's lines in the installed game data (``archive``: its ``base.wz``)."""

    def __init__(self, *, archive: Path = ARCHIVE_PATH) -> None:
        if not archive.is_file():
            raise _missing(f"{archive} not found")
        self.archive = archive

    def lines(self) -> list[AnnouncerLine]:
        """The announcer's lines with a spoken comment, sorted by name."""
        try:
            with zipfile.ZipFile(self.archive) as data:
                config = data.read(CONFIG_MEMBER).decode("utf-8", errors="replace")
                members = {
                    Path(member).stem: member
                    for member in data.namelist()
                    if member.endswith(".ogg") and member.startswith(ANNOUNCER_FOLDERS)
                }
        except (OSError, KeyError, zipfile.BadZipFile) as error:
            raise _missing(f"cannot read {CONFIG_MEMBER} in {self.archive}: {error}") from error
        lines: dict[str, AnnouncerLine] = {}
        for name, comment in _CONFIG_LINE.findall(config):
            transcript = " ".join(comment.split())
            member = members.get(name)
            if member and _ANNOUNCER_NAME.fullmatch(name) and transcript and name not in lines:
                lines[name] = AnnouncerLine(name=name, member=member, transcript=transcript)
        if not lines:
            raise _missing(f"no announcer lines listed in {CONFIG_MEMBER} of {self.archive}")
        return sorted(lines.values(), key=lambda line: line.name)

    def line(self, name: str) -> AnnouncerLine:
        """The line called ``name`` (e.g. ``"pcv357"``)."""
        for line in self.lines():
            if line.name == name:
                return line
        raise EngineError(f"no Warzone 2100 announcer line named {name!r} in {self.archive}")

    def utterance(self, line: AnnouncerLine, *, aligner: ForcedAligner | None = None) -> Utterance:
        """The line's audio (native rate) with phone and word timings from alignment."""
        with zipfile.ZipFile(self.archive) as data:
            audio, rate = decode_audio(io.BytesIO(data.read(line.member)))
        return aligned_recording(
            audio, rate, line.transcript, voice=SPEAKER_ID, prompt=line.name, aligner=aligner
        )
