"""The mic-parity benchmark's clip: held-out speech with known phone timings, and the truth.

Sentences of the sentence generator (``engine/speech/sentences.py``) with a seed of this
benchmark's own, spoken by the corpus's held-out espeak-ng voice (no training clip used
it), one after another with short pauses; lead and tail silence around them. The truth is
the corpus rig's mouth for that phone timeline (``controls_for_phones``,
``FaceRig.mouth_pose``): the inner-lip gap over the eye-corner distance
(``engine.articulation.gap_and_width``), one value per 25 fps frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.articulation import gap_and_width
from engine.data.synth.corpus import ESPEAK_HELDOUT_VOICE
from engine.frames import FPS
from engine.lipsync_metrics import speech_frames
from engine.speech.phonemes import SILENCE

SENTENCE_SEED = 6006  # the sentence generator's seed here (the corpus seeds are 64-bit hashes)
LEAD_S = 3.0  # silence before the clip: the page connects while the microphone plays it
PAUSE_S = 0.6  # between sentences (and before the first, after the last)
TAIL_S = 2.0  # silence after the clip


@dataclass(frozen=True)
class Clip:
    """The WAV's speech and its truth, on the WAV's 25 fps frames."""

    audio: np.ndarray  # mono float32
    rate: int
    sentences: tuple[str, ...]
    phones: tuple[tuple[str, float, float], ...]  # (ARPAbet, start s, end s) over the WAV
    span: tuple[int, int]  # the measured frames: the sentences and the pauses around them
    truth: np.ndarray  # (frames,) the rig's inner-lip gap over the eye-corner distance
    speech: np.ndarray  # (frames,) bool: a phone other than silence at the frame's centre

    @property
    def frames(self) -> int:
        return int(self.truth.size)

    @property
    def seconds(self) -> float:
        return len(self.audio) / self.rate

    def in_span(self) -> np.ndarray:
        mask = np.zeros(self.frames, bool)
        mask[self.span[0] : self.span[1]] = True
        return mask


def _append_phones(
    phones: list[tuple[str, float, float]], label: str, start: float, end: float
) -> None:
    if end <= start:
        return
    if label == SILENCE and phones and phones[-1][0] == SILENCE:
        phones[-1] = (SILENCE, phones[-1][1], end)
    else:
        phones.append((label, start, end))


def make_clip(seconds: float) -> Clip:
    """Sentences of the held-out voice until they and their pauses last ``seconds``, lead
    and tail silence around; the rig's mouth for the phone timeline."""
    from engine.data.synth.rig import FaceRig
    from engine.data.synth.visemes import controls_for_phones
    from engine.speech.sentences import SentenceGenerator
    from engine.speech.utterance import TimedSpan
    from engine.speech.voices import VoiceBook

    speaker = VoiceBook().speaker(ESPEAK_HELDOUT_VOICE)
    generator = SentenceGenerator(seed=SENTENCE_SEED)
    rate = speaker.sample_rate
    frame = rate // FPS  # samples per video frame (22050 Hz: 882)
    pause = round(PAUSE_S * FPS) * frame
    pieces: list[np.ndarray] = [np.zeros(round(LEAD_S * FPS) * frame + pause, np.float32)]
    length = len(pieces[0])
    phones: list[tuple[str, float, float]] = []
    _append_phones(phones, SILENCE, 0.0, length / rate)
    sentences: list[str] = []
    while True:
        text = generator.next_sentence()
        utterance = speaker.synthesize(text)
        speech = len(utterance.audio) + pause
        offset = length / rate
        for span in utterance.phones:
            _append_phones(phones, span.label, offset + span.start, offset + span.end)
        pieces += [utterance.audio, np.zeros(pause, np.float32)]
        length += speech
        _append_phones(phones, SILENCE, phones[-1][2], length / rate)
        sentences.append(text)
        if length - round(LEAD_S * FPS) * frame >= seconds * rate:
            break
    first, last = round(LEAD_S * FPS), -(-length // frame)
    total = last + round(TAIL_S * FPS)
    audio = np.zeros(total * frame, np.float32)
    audio[:length] = np.concatenate(pieces)
    _append_phones(phones, SILENCE, phones[-1][2], total / FPS)
    timeline = tuple(TimedSpan(label=p, start=s, end=e) for p, s, e in phones)
    controls = controls_for_phones(timeline, total, fps=FPS)
    rig = FaceRig()
    landmarks = np.stack([rig.mouth_pose(values).landmarks for values in controls.values])
    truth, _ = gap_and_width(landmarks)
    return Clip(
        audio=audio,
        rate=rate,
        sentences=tuple(sentences),
        phones=tuple(phones),
        span=(first, last),
        truth=truth,
        speech=speech_frames(phones, total, FPS),
    )
