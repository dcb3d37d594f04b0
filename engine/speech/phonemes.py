"""The phoneme set every speech source is mapped to, and phoneme -> viseme.

All sources (espeak-ng, Piper, forced alignment of real speech) report phones in this one
set: the 39 ARPAbet phonemes of the CMU dictionary without stress marks, plus ``SIL``.
Visemes are the 15 standard ones (sil, PP, FF, TH, DD, kk, CH, SS, nn, RR, aa, E, ih, oh, ou).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

import numpy as np

SILENCE: Final = "SIL"

VOWELS: Final = (
    "AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW",
)  # fmt: skip
CONSONANTS: Final = (
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N", "NG", "P", "R", "S", "SH",
    "T", "TH", "V", "W", "Y", "Z", "ZH",
)  # fmt: skip
ENGLISH_PHONEMES: Final = VOWELS + CONSONANTS
ALL_PHONES: Final = (SILENCE, *ENGLISH_PHONEMES)

VISEMES: Final = (
    "sil", "PP", "FF", "TH", "DD", "kk", "CH", "SS", "nn", "RR", "aa", "E", "ih", "oh", "ou",
)  # fmt: skip

PHONE_TO_VISEME: Final[dict[str, str]] = {
    SILENCE: "sil",
    "P": "PP", "B": "PP", "M": "PP",
    "F": "FF", "V": "FF",
    "TH": "TH", "DH": "TH",
    "T": "DD", "D": "DD",
    "K": "kk", "G": "kk", "NG": "kk", "HH": "kk",
    "CH": "CH", "JH": "CH", "SH": "CH", "ZH": "CH",
    "S": "SS", "Z": "SS",
    "N": "nn", "L": "nn",
    "R": "RR", "ER": "RR",
    "AA": "aa", "AE": "aa", "AH": "aa", "AW": "aa", "AY": "aa",
    "EH": "E", "EY": "E",
    "IH": "ih", "IY": "ih", "Y": "ih",
    "AO": "oh", "OW": "oh", "OY": "oh",
    "UH": "ou", "UW": "ou", "W": "ou",
}  # fmt: skip

# Diphthongs glide from one mouth shape to another: (first viseme, second viseme).
DIPHTHONG_GLIDES: Final[dict[str, tuple[str, str]]] = {
    "AW": ("aa", "ou"),
    "AY": ("aa", "ih"),
    "EY": ("E", "ih"),
    "OW": ("oh", "ou"),
    "OY": ("oh", "ih"),
}


def normalise_arpabet(phone: str) -> str:
    """``'AH0'`` -> ``'AH'``; ``'sil'``/``'SIL'``/``'+NSN+'``-style fillers -> ``'SIL'``.

    Raises ``ValueError`` for anything that is not an ARPAbet phoneme or a silence marker.
    """
    base = phone.strip().upper().rstrip("012")
    if base in ENGLISH_PHONEMES:
        return base
    if base in {"SIL", "SP", "PAU", ""} or (base.startswith("+") and base.endswith("+")):
        return SILENCE
    raise ValueError(f"not an ARPAbet phoneme: {phone!r}")


def viseme_of(phone: str) -> str:
    """The viseme of a phone of this set (``normalise_arpabet`` first if it has stress)."""
    return PHONE_TO_VISEME[phone]


def phone_per_frame(phones: Sequence[Sequence[object]], frames: int, fps: float) -> np.ndarray:
    """(frames,) str array: the phone at the centre time (k + 0.5) / fps of each video frame.

    ``phones`` are (label, start_s, end_s) triples; frames whose centre lies outside every
    phone are ``SIL``.
    """
    centres = (np.arange(frames) + 0.5) / fps
    labels = np.full(frames, SILENCE, dtype=object)
    for label, start, end in phones:
        labels[(centres >= float(start)) & (centres < float(end))] = str(label)  # type: ignore[arg-type]
    return labels
