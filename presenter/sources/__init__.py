"""Audio sources: where the presenter's speech comes from.

Every source is an :class:`AudioSource`: an async iterator of :class:`presenter.media.AudioChunk`
(mono float32 at the source's own rate, ``pts`` counted from the source's start) with a
``close()``. Sources deliver as fast as they are asked; pacing is the stream's job
(:class:`presenter.stream.AvatarStream`), except a live source such as the microphone, which
delivers at the rate it captures.
"""

from presenter.sources.array import ArraySource
from presenter.sources.base import AudioSource, WholeSignalSource, chunked
from presenter.sources.file import FileSource
from presenter.sources.microphone import MicrophoneSource
from presenter.sources.tts import TtsSource

__all__ = [
    "ArraySource",
    "AudioSource",
    "FileSource",
    "MicrophoneSource",
    "TtsSource",
    "WholeSignalSource",
    "chunked",
]
