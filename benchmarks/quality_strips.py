"""Pictures of the quality benchmark: real frames above rendered ones.

``quality_strip.png``: one clip, 8 frames spread over its speech. ``quality_visemes.png``:
per viseme class (open vowel, /p b m/, /f v/, /uw/) the lower face at the middle of the
longest phones of that class over all measured clips, the rig's own frames above the model's
rendering.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from engine.speech.phonemes import SILENCE

# Row name -> the phones whose middle frame it shows.
VISEME_ROWS: dict[str, frozenset[str]] = {
    "open vowel": frozenset({"AA", "AE", "AO", "AW", "AY"}),
    "p b m": frozenset({"P", "B", "M"}),
    "f v": frozenset({"F", "V"}),
    "uw": frozenset({"UW"}),
}
PER_ROW = 6
MOUTH_BOX = (0.45, 0.95, 0.2, 0.8)  # top, bottom, left, right: fractions of a face crop


def mouth_region(frame: np.ndarray) -> np.ndarray:
    """The lower face of a face crop (:data:`MOUTH_BOX`)."""
    size_y, size_x = frame.shape[:2]
    top, bottom, left, right = MOUTH_BOX
    return frame[
        round(top * size_y) : round(bottom * size_y), round(left * size_x) : round(right * size_x)
    ]


def speech_span(phones: list[tuple[object, ...]]) -> tuple[float, float]:
    """First spoken phone's start and last spoken phone's end (NaN when none is spoken)."""
    spoken = [phone for phone in phones if phone[0] != SILENCE]
    if not spoken:
        return float("nan"), float("nan")
    return float(spoken[0][1]), float(spoken[-1][2])  # type: ignore[arg-type]


def write_strip(
    real: np.ndarray, rendered: np.ndarray, phones: list[tuple[object, ...]], path: Path
) -> Path:
    """Ground truth above, output below, 8 frames spread over the speech."""
    fps, frames = 25.0, 8
    start_s, end_s = speech_span(phones)
    start = int(start_s * fps) if np.isfinite(start_s) else 0
    end = int(end_s * fps) if np.isfinite(end_s) else len(real)
    picks = np.linspace(start, max(start, min(end, len(real) - 1)), frames).astype(int)
    top = np.concatenate([real[i] for i in picks], axis=1)
    bottom = np.concatenate([rendered[i] for i in picks], axis=1)
    return _save(np.concatenate([top, bottom], axis=0), path)


class VisemeStrips:
    """Keeps, per viseme row, the real and rendered frames of the longest phones seen."""

    def __init__(self, fps: float, per_row: int = PER_ROW) -> None:
        self.fps = fps
        self.per_row = per_row
        self.kept: dict[str, list[tuple[float, np.ndarray, np.ndarray]]] = {
            name: [] for name in VISEME_ROWS
        }

    def add(self, phones: list[tuple[object, ...]], real: np.ndarray, rendered: np.ndarray) -> None:
        """Offer one clip's phones and its (T, S, S, 3) real and rendered frames."""
        for label, start, end in phones:
            duration = float(end) - float(start)  # type: ignore[arg-type]
            frame = int(0.5 * (float(start) + float(end)) * self.fps)  # type: ignore[arg-type]
            if not 0 <= frame < min(len(real), len(rendered)):
                continue
            for name, members in VISEME_ROWS.items():
                if label in members:
                    row = self.kept[name]
                    row.append(
                        (
                            duration,
                            mouth_region(real[frame]).copy(),
                            mouth_region(rendered[frame]).copy(),
                        )
                    )
                    row.sort(key=lambda item: -item[0])
                    del row[self.per_row :]

    def write(self, path: Path) -> Path | None:
        """Rows of real above rendered pairs, one row pair per viseme; None if empty."""
        rows = []
        for name, items in self.kept.items():
            if not items:
                continue
            size = items[0][1].shape[0]
            blank = np.zeros_like(items[0][1])
            real = [item[1] for item in items] + [blank] * (self.per_row - len(items))
            rendered = [item[2] for item in items] + [blank] * (self.per_row - len(items))
            label = np.full((2 * size, 96, 3), 255, np.uint8)
            cv2.putText(label, name, (4, size), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 1)
            pair = np.concatenate([np.concatenate(real, 1), np.concatenate(rendered, 1)], 0)
            rows.append(np.concatenate([label, pair], 1))
        if not rows:
            return None
        return _save(np.concatenate(rows, 0), path)


def _save(image: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return path
