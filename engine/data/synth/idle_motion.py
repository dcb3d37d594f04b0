"""The default avatar's life between words: idle head motion and blinks, seeded.

Idle head motion is a smooth similarity transform of the whole frame over time; blinks
follow a seeded schedule of times and durations. Both are deterministic given the seed and
give the same answer in any query order. How a blink moves the eyelids is the rig's
(:meth:`engine.data.synth.rig.FaceRig.blink`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from engine.data.synth.plane_geometry import smoothstep


@dataclass(frozen=True, kw_only=True)
class IdleMotionConfig:
    """Amplitude and tempo of the idle head motion."""

    rotation_deg: float = 1.2
    shift_px: float = 3.0
    scale: float = 0.012
    frequency_hz: tuple[float, float] = (0.05, 0.35)
    components: int = 3  # sinusoids per degree of freedom


class IdleMotion:
    """A smooth, seeded similarity transform of the whole frame over time.

    Each degree of freedom (rotation, x and y shift, scale) is a sum of a few sinusoids of
    random frequency and phase whose weights sum to one, so it never exceeds its amplitude.
    """

    def __init__(
        self, seed: int, *, centre: Sequence[float], config: IdleMotionConfig | None = None
    ) -> None:
        self.config = config or IdleMotionConfig()
        rng = np.random.default_rng([int(seed), 0x1D1E])
        count = self.config.components
        low, high = self.config.frequency_hz
        self._frequency = rng.uniform(low, high, size=(4, count))
        self._phase = rng.uniform(0.0, 2.0 * math.pi, size=(4, count))
        weights = rng.uniform(0.3, 1.0, size=(4, count))
        self._weight = weights / weights.sum(axis=1, keepdims=True)
        self._centre = np.asarray(centre, np.float64)

    def matrix(self, time_s: float) -> np.ndarray:
        """The (2, 3) affine matrix (source -> frame) at ``time_s``."""
        config = self.config
        waves = np.sum(
            self._weight * np.sin(2.0 * math.pi * self._frequency * time_s + self._phase), axis=1
        )
        angle = math.radians(config.rotation_deg * waves[0])
        scale = 1.0 + config.scale * waves[3]
        shift = config.shift_px * waves[1:3]
        cos, sin = scale * math.cos(angle), scale * math.sin(angle)
        linear = np.array([[cos, -sin], [sin, cos]])
        offset = self._centre + shift - linear @ self._centre
        return np.concatenate([linear, offset[:, None]], axis=1)


@dataclass(frozen=True, kw_only=True)
class BlinkConfig:
    """Timing of the blinks."""

    interval_s: tuple[float, float] = (2.0, 6.0)
    duration_s: tuple[float, float] = (0.15, 0.25)
    first_s: tuple[float, float] = (0.4, 3.0)
    closing_share: float = 0.4  # of a blink's duration spent closing


class BlinkSchedule:
    """Seeded blink times; ``amount(t)`` is 0 (open) .. 1 (closed).

    Blinks are drawn in order from the seed as far as asked for, so any query order gives
    the same schedule.
    """

    def __init__(self, seed: int, *, config: BlinkConfig | None = None) -> None:
        self.config = config or BlinkConfig()
        self._rng = np.random.default_rng([int(seed), 0xB11C])
        self._starts: list[float] = []
        self._durations: list[float] = []
        self._next = float(self._rng.uniform(*self.config.first_s))

    def _extend(self, until_s: float) -> None:
        while self._next <= until_s:
            duration = float(self._rng.uniform(*self.config.duration_s))
            self._starts.append(self._next)
            self._durations.append(duration)
            self._next += duration + float(self._rng.uniform(*self.config.interval_s))

    def amount(self, time_s: float) -> float:
        """How closed the eyelids are at ``time_s``."""
        self._extend(time_s)
        index = int(np.searchsorted(self._starts, time_s, side="right")) - 1
        if index < 0:
            return 0.0
        phase = (time_s - self._starts[index]) / self._durations[index]
        if phase >= 1.0:
            return 0.0
        closing = self.config.closing_share
        if phase < closing:
            return float(smoothstep(phase / closing))
        return float(1.0 - smoothstep((phase - closing) / (1.0 - closing)))
