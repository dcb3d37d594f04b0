"""Real human speech: Debian's English Asterisk prompts with phone timings by forced alignment.

The prompts of ``asterisk-core-sounds-en-g722`` are one US female speaker (G.722, 16 kHz),
and ``asterisk-core-sounds-en`` ships their transcripts (``core-sounds-en.txt.gz``, lines
``name: transcript``). Prompts whose transcript is not speech (tones, beeps, "(1 second
of silence)", "<beep ascending>") are skipped; bracketed notes inside a transcript
("at [@]") are removed. Prompts that cannot be aligned to their transcript are skipped
(and logged) when iterating over utterances.
"""

from __future__ import annotations

import gzip
import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Final

import numpy as np

from engine.audio import resample
from engine.errors import EngineError
from engine.speech.alignment import ALIGNMENT_SAMPLE_RATE, ForcedAligner
from engine.speech.utterance import TimedSpan, Utterance

logger = logging.getLogger(__name__)

SOUNDS_PACKAGE: Final = "asterisk-core-sounds-en-g722"
TRANSCRIPTS_PACKAGE: Final = "asterisk-core-sounds-en"
SPEAKER_ID: Final = "asterisk-en-f1"
SOUND_SUFFIX: Final = ".g722"
G722_BYTES_PER_SECOND: Final = 8000
SOUND_DIR_CANDIDATES: Final = (
    Path("/usr/share/asterisk/sounds/en_US_f_Allison"),
    Path("/usr/share/asterisk/sounds/en_US"),
    Path("/usr/share/asterisk/sounds/en"),
)
TRANSCRIPTS_PATH: Final = Path("/usr/share/doc/asterisk-core-sounds-en/core-sounds-en.txt.gz")

_NOTE = re.compile(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>")
_SPOKEN = re.compile(r"[A-Za-z0-9]")
_TRANSCRIPT_LINE = re.compile(r"^([A-Za-z0-9_/.-]+):\s*(.*)$")


def _missing_packages(detail: str) -> EngineError:
    return EngineError(
        f"The Asterisk English prompts are not available ({detail}). Install the Debian "
        f"packages '{SOUNDS_PACKAGE}' and '{TRANSCRIPTS_PACKAGE}' "
        f"(sudo apt-get install {SOUNDS_PACKAGE} {TRANSCRIPTS_PACKAGE})."
    )


def decode_audio(path: Path | BinaryIO) -> tuple[np.ndarray, int]:
    """Decode an audio file (a path or an open binary file) with PyAV (FFmpeg) to float32
    mono at its native sample rate."""
    import av

    try:
        with av.open(str(path) if isinstance(path, Path) else path, mode="r") as container:
            stream = container.streams.audio[0]
            rate = int(stream.codec_context.sample_rate or stream.rate)
            resampler = av.AudioResampler(format="flt", layout="mono", rate=rate)
            pieces = [
                converted.to_ndarray()[0]
                for frame in container.decode(stream)
                for converted in resampler.resample(frame)
            ]
            pieces.extend(converted.to_ndarray()[0] for converted in resampler.resample(None))
    except (av.FFmpegError, IndexError, OSError) as error:
        raise EngineError(f"could not decode audio file {path}: {error}") from error
    audio = np.concatenate(pieces).astype(np.float32) if pieces else np.zeros(0, np.float32)
    return audio, rate


@dataclass(frozen=True, kw_only=True)
class Prompt:
    """One recorded prompt: ``name`` like ``"digits/5"``, its file and spoken transcript."""

    name: str
    path: Path
    transcript: str

    @property
    def seconds(self) -> float:
        """Duration from the file size: headerless G.722 is 64 kbit/s (8000 bytes a second)."""
        return self.path.stat().st_size / G722_BYTES_PER_SECOND


def spoken_text(transcript: str) -> str:
    """The transcript without bracketed notes; empty when nothing spoken is left."""
    text = " ".join(_NOTE.sub(" ", transcript).split())
    return text if _SPOKEN.search(text) else ""


class AsteriskCorpus:
    """The prompts of the installed Asterisk English sounds, with their transcripts."""

    def __init__(
        self,
        *,
        sounds_dir: Path | None = None,
        transcripts_path: Path = TRANSCRIPTS_PATH,
    ) -> None:
        if sounds_dir is None:
            sounds_dir = next(
                (
                    candidate
                    for candidate in SOUND_DIR_CANDIDATES
                    if candidate.is_dir() and any(candidate.rglob(f"*{SOUND_SUFFIX}"))
                ),
                None,
            )
            if sounds_dir is None:
                raise _missing_packages(f"no *{SOUND_SUFFIX} prompts under /usr/share/asterisk")
        if not sounds_dir.is_dir():
            raise _missing_packages(f"{sounds_dir} does not exist")
        if not transcripts_path.is_file():
            raise _missing_packages(f"transcripts {transcripts_path} not found")
        self.sounds_dir = sounds_dir
        self.transcripts_path = transcripts_path

    def transcripts(self) -> dict[str, str]:
        """All transcript lines: prompt name -> transcript as written."""
        opener = gzip.open if self.transcripts_path.suffix == ".gz" else open
        entries: dict[str, str] = {}
        with opener(self.transcripts_path, "rt", encoding="utf-8", errors="replace") as lines:
            for line in lines:
                match = _TRANSCRIPT_LINE.match(line.strip())
                if match and not line.startswith(";"):
                    entries[match.group(1)] = match.group(2).strip()
        return entries

    def prompts(self) -> list[Prompt]:
        """Prompts with a recording and a spoken transcript, sorted by name."""
        transcripts = self.transcripts()
        prompts: list[Prompt] = []
        no_transcript = 0
        not_speech = 0
        for path in sorted(self.sounds_dir.rglob(f"*{SOUND_SUFFIX}")):
            name = path.relative_to(self.sounds_dir).as_posix().removesuffix(SOUND_SUFFIX)
            transcript = transcripts.get(name)
            if transcript is None:
                no_transcript += 1
                continue
            text = spoken_text(transcript)
            if not text:
                not_speech += 1
                continue
            prompts.append(Prompt(name=name, path=path, transcript=text))
        logger.info(
            "%d Asterisk prompts with spoken transcripts; skipped %d without a transcript "
            "and %d that are not speech",
            len(prompts),
            no_transcript,
            not_speech,
        )
        return prompts

    def prompt(self, name: str) -> Prompt:
        """The prompt called ``name`` (e.g. ``"auth-thankyou"``)."""
        for prompt in self.prompts():
            if prompt.name == name:
                return prompt
        raise EngineError(f"no spoken Asterisk prompt named {name!r} in {self.sounds_dir}")

    def utterance(self, prompt: Prompt, *, aligner: ForcedAligner | None = None) -> Utterance:
        """The prompt's audio (native rate) with phone and word timings from alignment."""
        audio, rate = decode_audio(prompt.path)
        return aligned_recording(
            audio, rate, prompt.transcript, voice=SPEAKER_ID, prompt=prompt.name, aligner=aligner
        )

    def utterances(
        self, *, limit: int | None = None, aligner: ForcedAligner | None = None
    ) -> Iterator[Utterance]:
        """Aligned utterances of the spoken prompts; prompts that fail to align are skipped."""
        aligner = aligner if aligner is not None else ForcedAligner()
        produced = 0
        failed = 0
        for prompt in self.prompts():
            if limit is not None and produced >= limit:
                break
            try:
                utterance = self.utterance(prompt, aligner=aligner)
            except EngineError as error:
                failed += 1
                logger.info("skipping prompt %s: %s", prompt.name, error)
                continue
            produced += 1
            yield utterance
        if failed:
            logger.info("%d Asterisk prompts could not be aligned", failed)


def aligned_recording(
    audio: np.ndarray,
    rate: int,
    transcript: str,
    *,
    voice: str,
    prompt: str,
    aligner: ForcedAligner | None = None,
) -> Utterance:
    """A recording (float32 mono at its native ``rate``) with phone and word timings from
    aligning it to ``transcript``; raises ``EngineError`` when it cannot be aligned."""
    aligner = aligner if aligner is not None else ForcedAligner()
    words, phones = aligner.align(resample(audio, rate, ALIGNMENT_SAMPLE_RATE), transcript)
    if rate != ALIGNMENT_SAMPLE_RATE:
        # Spans are in seconds; only the very end may need stretching to the native length.
        last = phones[-1]
        native_end = TimedSpan(label=last.label, start=last.start, end=len(audio) / rate)
        phones = (*phones[:-1], native_end)
    return Utterance(
        audio=audio,
        sample_rate=rate,
        text=transcript,
        phones=phones,
        words=words,
        source="human",
        voice=voice,
        extra={"prompt": prompt},
    )


def list_prompts(*, corpus: AsteriskCorpus | None = None) -> list[Prompt]:
    """The spoken prompts of the installed Asterisk English sounds."""
    return (corpus if corpus is not None else AsteriskCorpus()).prompts()


def load_prompt_utterance(
    name: str,
    *,
    corpus: AsteriskCorpus | None = None,
    aligner: ForcedAligner | None = None,
) -> Utterance:
    """The aligned utterance of prompt ``name``; pass ``aligner`` to reuse its decoder."""
    source = corpus if corpus is not None else AsteriskCorpus()
    return source.utterance(source.prompt(name), aligner=aligner)
