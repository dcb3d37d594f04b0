"""The espeak-ng voices of the corpus: which voice, rate, pitch and pitch range each clip gets.

Training clips draw from every English accent espeak-ng ships (``espeak-ng --voices=en``,
the MBROLA voices left out: they need separate data) combined with every voice variant
(``espeak-ng --voices=variant``) and with no variant, except the held-out voice and every
voice with its variant (``en-us+f3`` held out: no ``*+f3`` in training). The pool is fixed
here rather than read from the installed espeak-ng, so that a plan means the same clips on
every machine; a variant missing from an installation fails the corpus's source check
before any work.

All variants keep espeak-ng's phone timing: the phone sequence is the variant's base
voice's, and the loudness of the speech follows the phone timings at the same lag as the
base voice's (within one 10 ms mel frame), whisper and whisperf (no voicing) included.

A training clip's settings are a function of the plan's seed, the round and the clip's
index alone: its voice is the next one of a seeded permutation of the pool (every voice once
before any repeats), its rate, pitch and pitch range come from a generator of its own.
Voices given to the plan (``--voices``) are planned as before the pool: in turn, at the
base ranges' rates and pitches.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

ESPEAK_HELDOUT_VOICE = "en-us+f3"
ESPEAK_ACCENTS = (
    "en-us",
    "en-gb",
    "en-gb-scotland",
    "en-gb-x-rp",
    "en-gb-x-gbclan",
    "en-gb-x-gbcwmd",
    "en-029",
    "en-us-nyc",
)
ESPEAK_VARIANTS = (
    *("adam", "Alex", "Alicia", "Andrea", "Andy", "anika", "anikaRobot", "Annie"),
    *("announcer", "antonio", "AnxiousAndy", "aunty", "belinda", "benjamin", "boris"),
    *("caleb", "croak", "david", "Demonic", "Denis", "Diogo", "ed", "edward", "edward2"),
    *("f1", "f2", "f3", "f4", "f5", "fast", "Gene", "Gene2", "grandma", "grandpa"),
    *("gustave", "Henrique", "Hugo", "iven", "iven2", "iven3", "iven4", "Jacky", "john"),
    *("kaukovalta", "klatt", "klatt2", "klatt3", "klatt4", "klatt5", "klatt6", "Lee"),
    *("linda", "m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "marcelo", "Marco", "Mario"),
    *("max", "Michael", "michel", "miguel", "Mike", "Mr serious", "Nguyen", "norbert"),
    *("pablo", "paul", "pedro", "quincy", "RicishayMax", "RicishayMax2", "RicishayMax3"),
    *("rob", "robert", "robosoft", "robosoft2", "robosoft3", "robosoft4", "robosoft5"),
    *("robosoft6", "robosoft7", "robosoft8", "sandro", "shelby", "steph", "steph2"),
    *("steph3", "Storm", "travis", "Tweaky", "UniRobot", "victor", "whisper", "whisperf"),
    "zac",
)
# Training ranges, both ends included (espeak-ng's defaults: 175 wpm, pitch 50, range 50).
TRAIN_RATES_WPM = (130, 220)
TRAIN_PITCHES = (25, 75)
TRAIN_PITCH_RANGES = (20, 80)
# The ranges of corpora planned before the pool, kept by the held-out clips and by given
# voices: the plan's generator draws a rate and a pitch from these for every espeak clip
# (pitch range: espeak-ng's default).
BASE_RATES_WPM = (145, 195)
BASE_PITCHES = (35, 65)


def variant_of(voice: str) -> str:
    """The variant of a voice name (``"en-us+f3"`` -> ``"f3"``; ``""`` when none)."""
    return voice.partition("+")[2]


def training_voices(heldout_voice: str = ESPEAK_HELDOUT_VOICE) -> tuple[str, ...]:
    """Every accent with no variant and with every variant, less ``heldout_voice`` and,
    when it has a variant, every voice with that variant."""
    held = variant_of(heldout_voice)
    voices = (
        f"{accent}+{variant}" if variant else accent
        for accent in ESPEAK_ACCENTS
        for variant in ("", *ESPEAK_VARIANTS)
        if not (held and variant == held)
    )
    return tuple(voice for voice in voices if voice != heldout_voice)


ESPEAK_TRAIN_VOICES = training_voices()


@dataclass(frozen=True, kw_only=True)
class EspeakSettings:
    voice: str
    rate_wpm: int
    pitch: int
    pitch_range: int


def _integer(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    return int(rng.integers(bounds[0], bounds[1] + 1))


def training_settings(voices: tuple[str, ...], *, round_seed: int, index: int) -> EspeakSettings:
    """The settings of training clip ``index`` of a round whose seed is ``round_seed``: the
    ``index``-th voice of the round's permutation of ``voices`` (cycled), a rate, pitch and
    pitch range drawn from the clip's own generator."""
    if not voices:
        raise ValueError("no espeak-ng training voices")
    order = np.random.default_rng(round_seed).permutation(len(voices))
    rng = np.random.default_rng([round_seed, index])
    return EspeakSettings(
        voice=voices[int(order[index % len(voices)])],
        rate_wpm=_integer(rng, TRAIN_RATES_WPM),
        pitch=_integer(rng, TRAIN_PITCHES),
        pitch_range=_integer(rng, TRAIN_PITCH_RANGES),
    )


def espeak_clip_settings(
    rng: np.random.Generator,
    *,
    split: str,
    given_voices: tuple[str, ...] | None,
    heldout_voice: str,
    round_seed: int,
    index: int,
) -> dict[str, Any]:
    """Clip ``index``'s :class:`engine.data.synth.corpus.ClipSpec` voice fields.

    The plan's generator ``rng`` draws a rate and a pitch from the base ranges for
    every espeak clip, as it always has, so that the held-out clips, and the Piper clips
    planned after them, do not depend on the training voices. A held-out clip speaks with
    ``heldout_voice`` at those; a training clip with ``given_voices`` (``--voices``) too,
    the voices taken in turn (as corpora were planned before the voice pool: the six voices
    of the shipped model's corpus give its clips again); a training clip of the default
    plan takes :func:`training_settings` over the pool of :func:`training_voices`."""
    rate = _integer(rng, BASE_RATES_WPM)
    pitch = _integer(rng, BASE_PITCHES)
    if split != "train":
        return {"espeak_voice": heldout_voice, "rate_wpm": rate, "pitch": pitch}
    if given_voices:
        voice = given_voices[index % len(given_voices)]
        return {"espeak_voice": voice, "rate_wpm": rate, "pitch": pitch}
    settings = asdict(
        training_settings(training_voices(heldout_voice), round_seed=round_seed, index=index)
    )
    settings["espeak_voice"] = settings.pop("voice")
    return settings
