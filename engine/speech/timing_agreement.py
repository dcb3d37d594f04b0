"""How far two phone timelines of the same speech disagree (a synthesiser's own timings
against a forced alignment, say): the boundaries of the phones both have, matched in order.

Silences are left out and the two phone sequences are matched with ``difflib`` (a phone
that one side has and the other does not, e.g. a different pronunciation, breaks the
match there). Each matched phone gives its start boundary; the last phone of each matched
run gives its end boundary too, so no boundary is counted twice.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence

import numpy as np

from engine.speech.phonemes import SILENCE
from engine.speech.utterance import TimedSpan


def matched_boundaries(
    reference: Sequence[TimedSpan], other: Sequence[TimedSpan]
) -> list[tuple[float, float]]:
    """(reference time, other time) of each boundary of the phones both timelines share."""
    ours = [span for span in reference if span.label != SILENCE]
    theirs = [span for span in other if span.label != SILENCE]
    matcher = difflib.SequenceMatcher(
        None, [span.label for span in ours], [span.label for span in theirs], autojunk=False
    )
    pairs: list[tuple[float, float]] = []
    for first, second, size in matcher.get_matching_blocks():
        for offset in range(size):
            pairs.append((ours[first + offset].start, theirs[second + offset].start))
        if size:
            pairs.append((ours[first + size - 1].end, theirs[second + size - 1].end))
    return pairs


def boundary_differences(reference: Sequence[TimedSpan], other: Sequence[TimedSpan]) -> np.ndarray:
    """Absolute differences in seconds between the matched boundaries (see the module)."""
    pairs = matched_boundaries(reference, other)
    return np.array([abs(a - b) for a, b in pairs], dtype=np.float64)


def matched_share(reference: Sequence[TimedSpan], other: Sequence[TimedSpan]) -> float:
    """The share of the reference's phones (silences left out) that are matched."""
    ours = [span.label for span in reference if span.label != SILENCE]
    theirs = [span.label for span in other if span.label != SILENCE]
    if not ours:
        return 0.0
    matcher = difflib.SequenceMatcher(None, ours, theirs, autojunk=False)
    return sum(block.size for block in matcher.get_matching_blocks()) / len(ours)
