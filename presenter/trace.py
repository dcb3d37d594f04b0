"""``FrameTrace``: when each video frame of the stream passed each stage, for latency work.

For stream frame ``k`` (its index on the stream's clock) the trace keeps the wall-clock time
(epoch milliseconds, ``time.time() * 1000``, the clock the page and a benchmark share) of:

- ``input``: the input chunk that completes what the frame needs (the input position reaching
  ``(k + 1) F + E``, see :mod:`presenter.stream`) entered the stream (its tick's scheduled
  time);
- ``submitted``: the engine call that rendered it was handed to the engine's worker;
- ``rendered``: that call returned (the frame is in the stream, waiting for its release);
- ``released``: the stream released it to its subscribers;
- ``encoded``: the shared H.264 encoder had encoded it (the first encoder to, if several);
- ``sent_first`` / ``sent_last``: the first / the latest viewer's track handed its packet to
  aiortc's sender, which packetizes and sends it at once;

and per frame, the engine's stage times in ms (``features``, ``motion``, ``generator`` (the
geometry map included), ``composite``, ``colour``: those of the engine call that rendered it,
divided by the frames it rendered), and whether the face was moving (``speaking``). A frame not
there at its release is ``dropped`` (``rendered`` null).

It is a ring of ``capacity`` frames in a few preallocated arrays: recording is a few array
writes per frame, and nothing is built until somebody reads (:meth:`FrameTrace.frames`).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from engine.frames import Timeline

EVENTS = ("input", "submitted", "rendered", "released", "encoded", "sent_first", "sent_last")
STAGES = ("features", "motion", "generator", "composite", "colour")
# the engine's stage names (engine.frames.STAGES) -> the trace's
ENGINE_STAGES = {
    "features": "features",
    "motion": "motion",
    "geometry": "generator",
    "generator": "generator",
    "compositing": "composite",
    "colour": "colour",
}
_COLUMN = {name: column for column, name in enumerate(EVENTS)}
_STAGE_COLUMN = {name: STAGES.index(trace) for name, trace in ENGINE_STAGES.items()}
_INPUT, _SUBMITTED, _RENDERED, _RELEASED, _ENCODED, _SENT_FIRST, _SENT_LAST = range(len(EVENTS))


def wall_ms() -> float:
    """Now, in milliseconds since the epoch."""
    return time.time() * 1000.0


def _named(names: tuple[str, ...], values: list[float]) -> dict[str, float | None]:
    return {
        name: None if math.isnan(value) else value
        for name, value in zip(names, values, strict=True)
    }


@dataclass(frozen=True)
class TraceRows:
    """A copy of some frames of a :class:`FrameTrace`, in index order, to turn into JSON at
    leisure (a piece at a time: :meth:`frames`)."""

    index: np.ndarray  # (N,) frame indices
    times: np.ndarray  # (N, len(EVENTS)) epoch ms, NaN: not reached
    stages: np.ndarray  # (N, len(STAGES)) ms, NaN: not measured
    speaking: np.ndarray  # (N,) bool
    dropped: np.ndarray  # (N,) bool

    def __len__(self) -> int:
        return len(self.index)

    def frames(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """Rows ``start:stop`` as JSON-ready dictionaries (times to the µs, null where
        not reached)."""
        part = slice(start, stop)
        times = np.round(self.times[part], 3).tolist()
        stages = np.round(self.stages[part], 3).tolist()
        return [
            {
                "index": index,
                "t": _named(EVENTS, row_times),
                "stages_ms": _named(STAGES, row_stages),
                "speaking": int(speaking),
                "dropped": dropped,
            }
            for index, row_times, row_stages, speaking, dropped in zip(
                self.index[part].tolist(),
                times,
                stages,
                self.speaking[part].tolist(),
                self.dropped[part].tolist(),
                strict=True,
            )
        ]


class FrameTrace:
    """The per-frame timeline of the last ``capacity`` frames (see the module docstring).

    ``timeline``: the stream's frames (packets are traced by their pts on the 90 kHz video
    clock). ``settle_ms``: :meth:`frames` returns a frame once it was released at least this long
    ago, so its encoded and sent times are in when it is read (a reader that asks for the
    frames after the last one it saw gets each frame once, complete). ``now_ms``: the clock.
    """

    def __init__(
        self,
        capacity: int = 3000,
        *,
        timeline: Timeline,
        settle_ms: float = 300.0,
        now_ms: Callable[[], float] = wall_ms,
    ) -> None:
        if capacity <= 0 or settle_ms < 0:
            raise ValueError("capacity must be positive, settle_ms >= 0")
        self.capacity = capacity
        self.timeline = timeline
        self.settle_ms = settle_ms
        self.now_ms = now_ms
        self._index = np.full(capacity, -1, np.int64)  # the frame each slot holds
        self._times = np.full((capacity, len(EVENTS)), np.nan)
        self._stages = np.full((capacity, len(STAGES)), np.nan)
        self._speaking = np.zeros(capacity, np.bool_)
        self._dropped = np.zeros(capacity, np.bool_)

    # -- recording ----------------------------------------------------------------------------
    def input(self, index: int, at_ms: float) -> None:
        slot = self._slot(index)
        if slot is not None:
            self._times[slot, _INPUT] = at_ms

    def rendered(
        self,
        index: int,
        *,
        submitted_ms: float,
        stages_ms: Mapping[str, float],
        speaking: bool,
        at_ms: float | None = None,
    ) -> None:
        """Frame ``index`` came out of an engine call handed over at ``submitted_ms``, with
        that call's stage times per frame (the engine's stage names or the trace's)."""
        slot = self._slot(index)
        if slot is None:
            return
        times = self._times[slot]
        times[_SUBMITTED] = submitted_ms
        times[_RENDERED] = self.now_ms() if at_ms is None else at_ms
        stages = self._stages[slot]
        stages[:] = np.nan if not stages_ms else 0.0
        for name, ms in stages_ms.items():
            column = _STAGE_COLUMN.get(name)
            if column is not None:
                stages[column] += ms
        self._speaking[slot] = speaking

    def released(self, index: int, *, dropped: bool = False, at_ms: float | None = None) -> None:
        """Frame ``index`` left the stream (``dropped``: it was not there; a rendering that was
        recorded for it did not make it)."""
        slot = self._slot(index)
        if slot is None:
            return
        self._times[slot, _RELEASED] = self.now_ms() if at_ms is None else at_ms
        if dropped:
            self._dropped[slot] = True
            self._times[slot, _SUBMITTED : _RENDERED + 1] = np.nan
            self._stages[slot] = np.nan
            self._speaking[slot] = False

    def encoded(self, pts_90k: int) -> None:
        """The frame with this pts came out of a video encoder (the first time counts)."""
        slot = self._slot(self.timeline.index_of_video_pts(pts_90k))
        if slot is not None and math.isnan(self._times[slot, _ENCODED]):
            self._times[slot, _ENCODED] = self.now_ms()

    def sent(self, pts_90k: int) -> None:
        """A viewer's track handed the packet of the frame with this pts to its sender."""
        slot = self._slot(self.timeline.index_of_video_pts(pts_90k))
        if slot is None:
            return
        now = self.now_ms()
        times = self._times[slot]
        if math.isnan(times[_SENT_FIRST]):
            times[_SENT_FIRST] = now
        times[_SENT_LAST] = now

    # -- reading ------------------------------------------------------------------------------
    def select(self, since: int = -1) -> TraceRows:
        """A copy of the frames after index ``since`` that were released at least
        ``settle_ms`` ago, in index order."""
        released = self._times[:, _RELEASED]
        with np.errstate(invalid="ignore"):
            settled = released <= self.now_ms() - self.settle_ms
        slots = np.flatnonzero((self._index > since) & settled)
        slots = slots[np.argsort(self._index[slots], kind="stable")]
        return TraceRows(
            index=self._index[slots],
            times=self._times[slots],
            stages=self._stages[slots],
            speaking=self._speaking[slots],
            dropped=self._dropped[slots],
        )

    def frames(self, since: int = -1) -> list[dict[str, Any]]:
        """The frames of :meth:`select` as JSON-ready dictionaries: ``index``, ``t`` (epoch ms
        per event of ``EVENTS``, null where not reached), ``stages_ms`` (per ``STAGES``, null
        where not measured), ``speaking`` (0 or 1) and ``dropped``."""
        return self.select(since).frames()

    def __len__(self) -> int:
        return int(np.count_nonzero(self._index >= 0))

    # -- internals ----------------------------------------------------------------------------
    def _slot(self, index: int) -> int | None:
        """The slot of frame ``index`` (made fresh for a new frame); None for a negative index
        or one older than the slot's frame (it has left the ring)."""
        if index < 0:
            return None
        slot = index % self.capacity
        held = int(self._index[slot])
        if held == index:
            return slot
        if held > index:
            return None
        self._index[slot] = index
        self._times[slot] = np.nan
        self._stages[slot] = np.nan
        self._speaking[slot] = False
        self._dropped[slot] = False
        return slot
