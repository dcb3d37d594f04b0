"""The engine's boundary: rendered frames, the timeline they are on, and what a consumer
needs of an engine.

Everything a consumer of the engine (the live stream, the engine process, the offline
renderer, the plug-ins) needs to know about frames lives here, with numpy only: importing
it does not import torch or the models. An engine is anything that implements
:class:`StreamEngine`: :class:`engine.facade.AvatarEngine` in this process, the engine in a
process of its own, the pre-rendered engine of the transport benchmark, the tests' doubles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

import numpy as np

ENGINE_RATE = 16000  # Hz: the engine's clock (what the mel front end and the models hear)
FPS = 25  # video frames per second
SAMPLES_PER_FRAME = ENGINE_RATE // FPS  # engine samples per video frame (640)
VIDEO_CLOCK = 90000  # Hz: the MPEG / RTP video clock that video pts count on

OutputFormat = Literal["rgb24", "yuv420p"]
OUTPUT_FORMATS: tuple[OutputFormat, ...] = ("rgb24", "yuv420p")

STAGES = ("features", "motion", "geometry", "generator", "compositing", "colour")
"""The engine's pipeline stages, in order, as :attr:`RenderedFrame.stages_ms` names them."""


@dataclass(frozen=True)
class Timeline:
    """A clock counted in samples at ``rate`` Hz, cut into video frames of ``frame_samples``
    samples: frame ``k`` covers samples ``[k * frame_samples, (k + 1) * frame_samples)``.

    The one place where sample counts, frame indices, seconds, other rates and the 90 kHz
    video clock are converted into each other. Conversions that would not be exact raise.
    """

    rate: int
    frame_samples: int

    def __post_init__(self) -> None:
        if self.rate <= 0 or self.frame_samples <= 0:
            raise ValueError(
                f"a timeline needs a positive rate and frame, got {self.rate} Hz, "
                f"{self.frame_samples} samples a frame"
            )

    @property
    def fps(self) -> float:
        return self.rate / self.frame_samples

    def frame_start(self, index: int) -> int:
        """The first sample of frame ``index``."""
        return index * self.frame_samples

    def frame_of(self, sample: int) -> int:
        """The frame that sample ``sample`` belongs to."""
        return sample // self.frame_samples

    def seconds(self, samples: int) -> float:
        return samples / self.rate

    def samples_at(self, samples: int, rate: int) -> int:
        """``samples`` of this clock counted at ``rate`` Hz (exact, else ValueError)."""
        scaled = samples * rate
        if scaled % self.rate:
            raise ValueError(f"{samples} samples at {self.rate} Hz are no whole count at {rate} Hz")
        return scaled // self.rate

    def at_rate(self, rate: int) -> Timeline:
        """The same frames counted at ``rate`` Hz (the frame must be a whole count there)."""
        return Timeline(rate, self.samples_at(self.frame_samples, rate))

    @property
    def pts_per_frame(self) -> int:
        """Ticks of the 90 kHz video clock per frame (exact, else ValueError)."""
        return self.samples_at(self.frame_samples, VIDEO_CLOCK)

    def video_pts(self, index: int) -> int:
        """Frame ``index``'s pts on the 90 kHz video clock."""
        return index * self.pts_per_frame

    def index_of_video_pts(self, pts_90k: int) -> int:
        """The frame whose pts on the 90 kHz video clock is ``pts_90k``."""
        return pts_90k // self.pts_per_frame

    def sample_of_video_pts(self, pts_90k: int) -> int:
        """The first sample (of this clock) of the frame at ``pts_90k``."""
        return self.frame_start(self.index_of_video_pts(pts_90k))


ENGINE_TIMELINE = Timeline(ENGINE_RATE, SAMPLES_PER_FRAME)
"""The engine's own clock: 16 kHz, 640 samples (40 ms) a frame."""


@dataclass(frozen=True)
class RenderedFrame:
    """One finished frame of an engine; its place in time is ``index`` on the engine's
    :class:`Timeline`."""

    index: int  # frame number on the engine clock
    image: np.ndarray  # (H, W, 3) uint8 RGB, or (H * 3 / 2, W) uint8 yuv420p (I420)
    speaking: float  # the silence gate's weight: 0 at rest, 1 speaking
    format: OutputFormat = "rgb24"
    # ms per stage (STAGES) of the pull() that rendered it, shared by that pull's frames
    # (the features of the audio pushed since the pull before included); empty: not measured
    stages_ms: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, eq=False, kw_only=True)
class SpeakingStyle:
    """How the mouth and face move with the same speech: a style the model knows by its
    ``subject``'s name, a style ``code`` (style_dim,), or the style of ``reference``
    dynamics (T, K) of a clip; none of them: the avatar's own."""

    subject: str | None = None
    code: np.ndarray | None = None
    reference: np.ndarray | None = None

    def __post_init__(self) -> None:
        given = [
            name for name in ("subject", "code", "reference") if getattr(self, name) is not None
        ]
        if len(given) > 1:
            raise ValueError(f"a speaking style is one of subject, code or reference, got {given}")


AVATAR_STYLE = SpeakingStyle()
"""The avatar's own speaking style."""


@runtime_checkable
class StreamEngine(Protocol):
    """What a stream needs of an engine: audio in, finished frames out, on the engine's
    :attr:`timeline`.

    Frame ``k`` can be rendered once ``timeline.frame_start(k + 1) + delay_samples`` samples
    have been pushed; :meth:`pull` returns every frame that is ready, oldest first. Frame
    indices go on across :meth:`reset` (the next frame boundary after the last frame handed
    out) and :meth:`drop_ready` (the indices of dropped frames are used up).
    """

    @property
    def kind(self) -> str:
        """What renders the frames: ``model`` (the avatar model) or ``prerendered``."""
        ...

    @property
    def timeline(self) -> Timeline: ...

    @property
    def delay_samples(self) -> int:
        """Samples past the end of a frame's span needed before it can be rendered (for the
        rate audio is coming in at)."""
        ...

    @property
    def frame_size(self) -> tuple[int, int]:
        """(height, width) of the frames, in pixels."""
        ...

    @property
    def loop_frames(self) -> int:
        """Frames after which an idle stream repeats itself."""
        ...

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None: ...

    def pull(self) -> list[RenderedFrame]: ...

    def flush(self) -> None:
        """End of speech: what the look-ahead still holds becomes ready."""
        ...

    def reset(self) -> None:
        """Interruption: pending audio and frames are dropped now."""
        ...

    def drop_ready(self, keep: int = 0) -> int:
        """Skip every ready frame but the newest ``keep``; returns how many were skipped."""
        ...

    def set_style(self, style: SpeakingStyle) -> str:
        """Speak in ``style`` from the next frame rendered; returns what it now is (a subject's
        name, ``code`` or ``reference``)."""
        ...

    def close(self) -> None:
        """Free what the engine holds (a process, sessions); it is not used afterwards."""
        ...


STREAM_ENGINE_PROPERTIES = tuple(
    name for name, member in vars(StreamEngine).items() if isinstance(member, property)
)
"""The :class:`StreamEngine` properties, read from the protocol."""
STREAM_ENGINE_CALLS = tuple(
    name
    for name, member in vars(StreamEngine).items()
    if callable(member) and not name.startswith("_") and name != "close"
)
"""The :class:`StreamEngine` methods that are calls on a running engine (``close`` ends it),
read from the protocol."""
