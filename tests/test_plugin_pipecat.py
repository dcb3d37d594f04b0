"""presenter/plugins/pipecat_processor.py: the avatar as a pipecat processor, in a real pipecat
pipeline (``Pipeline`` + ``PipelineWorker`` + ``WorkerRunner``, real time), driven with
pipecat's own frames.

* Real espeak speech goes in the way a TTS service sends it (``TTSStartedFrame``, 100 ms
  ``TTSAudioRawFrame`` s at 22050 Hz, ``TTSStoppedFrame``); out come ``OutputImageRawFrame`` s
  of the avatar's size at 25 fps, idle ones before and after, and the speech, re-timed, as
  48 kHz mono ``SpeechOutputAudioRawFrame`` s: the same samples (resampled) and as long as
  the input, silence around it. The TTS frames are consumed; the frames that came with the
  speech leave at their point of it; other frames pass unchanged. While the avatar speaks its
  mouth moves; at rest it shows the idle loop.
* An ``InterruptionFrame`` mid-utterance: the speech stops within a video frame, the avatar
  is at rest again, the frames held with the speech are dropped and what comes after passes.
* An avatar that cannot be built: one ``ErrorFrame`` upstream that says why, and the TTS
  frames pass through unchanged (the bot speaks on, without video).

Real time on 2 busy cores: the stream may drop video frames it cannot render in time; the
tests hold the processor to passing on every frame the stream released, where it belongs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import numpy as np
import pytest
import torch

pytest.importorskip("pipecat")

from pipecat.frames.frames import (
    EndFrame,
    ErrorFrame,
    Frame,
    InputTransportMessageFrame,
    InterruptionFrame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    SpeechOutputAudioRawFrame,
    TextFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from engine.streaming_resample import StreamingResampler
from presenter.avatar_session import AvatarSession
from presenter.engine_setup import EngineRecipe
from presenter.plugins.pipecat_processor import (
    STREAM_SAMPLE,
    PresenterAvatarProcessor,
)
from presenter.stream import StreamConfig
from tests.conftest import EngineParts, ShippedBackends, espeak_pcm16

RATE = 48000
CHUNK = 960  # output samples per audio frame (20 ms)
F = 1920  # output samples per video frame
MOUTH = (slice(250, 400), slice(180, 330))  # rows, columns of the mouth in the 512 x 512 frame


@pytest.fixture(scope="module")
def parts(shipped_backends: ShippedBackends) -> EngineParts:
    """The shipped model on ONNX Runtime (built once), a short idle loop of the avatar."""
    return shipped_backends.parts(avatar_seconds=0.4)


def _session(parts: EngineParts) -> AvatarSession:
    """A session of the shipped avatar, its render budget as for this machine (2 cores)."""
    engine = parts.engine()
    engine.warm_idle()
    return AvatarSession(engine, config=StreamConfig(render_budget_ms=80), owns_engine=True)


def _tts_audio(pcm: np.ndarray, rate: int) -> list[Frame]:
    """``pcm`` as a TTS service sends it: 100 ms ``TTSAudioRawFrame`` s."""
    step = rate // 10
    return [
        TTSAudioRawFrame(pcm[i : i + step].tobytes(), rate, 1) for i in range(0, len(pcm), step)
    ]


def _at_48k(pcm: np.ndarray, rate: int) -> np.ndarray:
    resampler = StreamingResampler(rate, RATE)
    audio = pcm.astype(np.float32) / 32768.0
    return np.concatenate([resampler.push(audio), resampler.flush()])


class Recorder(FrameProcessor):
    """The pipeline's last processor: keeps every downstream frame, in the order they were
    pushed (direct mode: no queue of its own), with the time it came."""

    def __init__(self) -> None:
        super().__init__(enable_direct_mode=True)
        self.frames: list[tuple[float, Frame]] = []
        self.errors: list[ErrorFrame] = []  # that reached the pipeline's start
        self.changed = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction is FrameDirection.DOWNSTREAM:
            self.frames.append((asyncio.get_running_loop().time(), frame))
            self.changed.set()
        await self.push_frame(frame, direction)

    def of(self, kind: type[Frame]) -> list[Frame]:
        return [frame for _, frame in self.frames if isinstance(frame, kind)]

    def audio(self) -> list[OutputAudioRawFrame]:
        return [f for f in self.of(OutputAudioRawFrame) if isinstance(f, OutputAudioRawFrame)]

    def images(self) -> list[OutputImageRawFrame]:
        return [f for f in self.of(OutputImageRawFrame) if isinstance(f, OutputImageRawFrame)]

    def pcm(self) -> np.ndarray:
        """The output audio, float in [-1, 1]."""
        chunks = [np.frombuffer(frame.audio, np.int16) for frame in self.audio()]
        return np.concatenate(chunks).astype(np.float32) / 32768.0 if chunks else np.zeros(0)

    def heard_at(self, frame: Frame) -> int:
        """Output sample the audio had reached when ``frame`` came (the end of the audio
        frames before it)."""
        heard = 0
        for _, other in self.frames:
            if other is frame:
                return heard
            if isinstance(other, OutputAudioRawFrame):
                heard = other.metadata[STREAM_SAMPLE] + len(other.audio) // 2
        raise AssertionError(f"{frame} did not come out")

    def index(self, frame: Frame) -> int:
        return next(i for i, (_, other) in enumerate(self.frames) if other is frame)

    async def until(self, done: Callable[[Recorder], bool]) -> None:
        async with asyncio.timeout(20):
            while not done(self):
                self.changed.clear()
                await self.changed.wait()


def _run(
    processor: PresenterAvatarProcessor,
    script: Callable[[PipelineWorker, Recorder], Awaitable[None]],
) -> Recorder:
    """Run ``Pipeline([processor, recorder])`` until ``script`` is done, then end it."""
    recorder = Recorder()

    async def main() -> None:
        worker = PipelineWorker(
            Pipeline([processor, recorder]),
            params=PipelineParams(audio_out_sample_rate=RATE),
            cancel_on_idle_timeout=False,
            enable_rtvi=False,
        )
        started = asyncio.Event()

        @worker.event_handler("on_pipeline_started")
        async def on_started(_worker: PipelineWorker, _frame: Frame) -> None:
            started.set()

        @worker.event_handler("on_pipeline_error")
        async def on_error(_worker: PipelineWorker, frame: ErrorFrame) -> None:
            recorder.errors.append(frame)

        async def drive() -> None:
            await asyncio.wait_for(started.wait(), 20)
            await script(worker, recorder)
            await worker.queue_frame(EndFrame())

        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await asyncio.wait_for(asyncio.gather(runner.run(), drive()), 60)

    asyncio.run(main())
    assert isinstance(recorder.frames[-1][1], EndFrame)
    assert processor.session is None  # closed at the end
    return recorder


def _mouths(images: list[OutputImageRawFrame]) -> np.ndarray:
    """The mouth region of each frame, grey, float."""
    out = []
    for frame in images:
        width, height = frame.size
        rgb = np.frombuffer(frame.image, np.uint8).reshape(height, width, 3)
        out.append(rgb[MOUTH].astype(np.float32).mean(axis=2))
    return np.stack(out)


def _away_from(mouths: np.ndarray, references: np.ndarray) -> np.ndarray:
    """How far each mouth is from the nearest of ``references`` (mean absolute grey)."""
    return np.array([np.abs(references - mouth).mean(axis=(1, 2)).min() for mouth in mouths])


def test_speech_comes_out_lip_synced_and_on_time(parts: EngineParts) -> None:
    pcm, rate = espeak_pcm16("Hello there. This is the avatar, speaking through pipecat.")
    half = len(pcm) // 2 // (rate // 10) * (rate // 10)
    before, during, halfway, after = (
        TextFrame("before"),
        InputTransportMessageFrame(message={"during": True}),
        TextFrame("halfway"),
        TextFrame("after"),
    )
    started, stopped = TTSStartedFrame(), TTSStoppedFrame()

    async def script(worker: PipelineWorker, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.images()) >= 25)  # a second of idle first
        first, second = _tts_audio(pcm[:half], rate), _tts_audio(pcm[half:], rate)
        await worker.queue_frames([before, started, *first, halfway, *second, stopped, after])
        await worker.queue_frame(during)
        await recorder.until(lambda r: after in r.of(TextFrame))
        await recorder.until(lambda r: len(r.images()) >= r.index(after) // 3 + 15)
        await asyncio.sleep(0.6)  # idle again

    session = _session(parts)
    recorder = _run(PresenterAvatarProcessor(session), script)
    stats = session.stream.stats
    assert not recorder.errors

    # The TTS audio is consumed; the audio out is 48 kHz mono in 20 ms frames, never a gap.
    assert not recorder.of(TTSAudioRawFrame)
    audio = recorder.audio()
    assert all(isinstance(f, SpeechOutputAudioRawFrame) for f in audio)
    assert all(f.sample_rate == RATE and f.num_channels == 1 for f in audio)
    assert all(len(f.audio) == 2 * CHUNK for f in audio)
    assert [f.metadata[STREAM_SAMPLE] for f in audio] == list(
        range(audio[0].metadata[STREAM_SAMPLE], audio[-1].metadata[STREAM_SAMPLE] + 1, CHUNK)
    )

    # Video: RGB frames of the avatar's size, 25 a second of the stream and of the wall clock.
    images = recorder.images()
    height, width = parts.avatar.frame_size
    assert all(f.size == (width, height) and f.format == "RGB" for f in images)
    assert all(len(f.image) == width * height * 3 for f in images)
    starts = [f.metadata[STREAM_SAMPLE] for f in images]
    assert all(s % F == 0 for s in starts) and starts == sorted(set(starts))
    # Every frame the stream released came out (on a busy machine the stream drops some it
    # cannot render in time: they leave gaps), each when its time came: real-time 25 fps.
    assert stats.frames_emitted - 2 <= len(images) <= stats.frames_emitted
    assert len(images) >= 0.5 * ((starts[-1] - starts[0]) // F + 1)
    times = np.array([t for t, f in recorder.frames if isinstance(f, OutputImageRawFrame)])
    stream_seconds = (starts[-1] - starts[0]) / RATE
    assert stream_seconds > 4.0
    if stats.reanchors == 0:  # (unless the machine stalled the event loop for 250 ms)
        assert stream_seconds / (times[-1] - times[0]) == pytest.approx(1.0, abs=0.05)
        assert np.ptp(times - np.array(starts) / RATE) < 0.25

    # The speech, re-timed: the same samples (resampled to 48 kHz, to int16's precision), as
    # long as they went in, silence around them.
    out = recorder.pcm()
    first = audio[0].metadata[STREAM_SAMPLE]
    spoken = _at_48k(pcm, rate)
    loud = np.flatnonzero(np.abs(out) > 1e-3)
    loud_in = np.flatnonzero(np.abs(spoken) > 1e-3)
    assert abs((loud[-1] - loud[0]) - (loud_in[-1] - loud_in[0])) <= 2
    near = int(loud[0] - loud_in[0])  # where the speech begins in the output, to a sample
    onset = min(
        range(near - 2, near + 3),
        key=lambda at: np.abs(out[at : at + len(spoken)] - spoken).max(),
    )
    heard = out[onset : onset + len(spoken)]
    assert len(heard) == len(spoken) and np.abs(heard - spoken).max() < 1e-4
    assert np.sqrt(np.mean(heard**2)) > 0.05  # speech, not silence
    assert not np.any(out[:onset]) and not np.any(out[onset + len(spoken) :])

    # The frames that came with the speech leave at their point of it; others pass at once.
    onset += first  # stream samples from here on
    assert recorder.heard_at(before) <= onset and recorder.heard_at(during) <= onset
    assert abs(recorder.heard_at(started) - onset) <= CHUNK
    halfway_at = onset + round(half * RATE / rate)
    assert abs(recorder.heard_at(halfway) - halfway_at) <= 2 * CHUNK
    assert 0 <= recorder.heard_at(stopped) - (onset + len(spoken)) <= 2 * CHUNK
    order = [recorder.index(f) for f in (before, started, halfway, stopped, after)]
    assert order == sorted(order)

    # The mouth moves while the avatar speaks; before and after it is at rest.
    mouths = _mouths(images)
    starts_arr = np.array(starts)
    idle_before = mouths[starts_arr + F <= onset - RATE // 5]
    speaking = [
        i
        for i, s in enumerate(starts)
        if np.abs(out[s - first : s - first + F]).max(initial=0.0) > 0.1
    ]
    rest_after = mouths[starts_arr >= onset + len(spoken) + RATE // 2]
    assert len(idle_before) >= 10 and len(speaking) >= 10 and len(rest_after) >= 5
    moved = _away_from(mouths[speaking], idle_before)
    still = _away_from(rest_after, idle_before)
    assert np.median(moved) > 5 * max(still.max(), 0.5)


def test_interruption_stops_the_speech_within_a_frame(parts: EngineParts) -> None:
    pcm, rate = espeak_pcm16(
        "This is a long sentence that the user interrupts well before the avatar gets to its end."
    )
    held, passed = TextFrame("held with the speech"), TextFrame("after the interruption")
    interruption = InterruptionFrame()
    stopped = TTSStoppedFrame()

    def loud_chunks(recorder: Recorder) -> int:
        return sum(np.abs(np.frombuffer(f.audio, np.int16)).max() > 300 for f in recorder.audio())

    async def script(worker: PipelineWorker, recorder: Recorder) -> None:
        await recorder.until(lambda r: len(r.images()) >= 10)
        await worker.queue_frames([TTSStartedFrame(), *_tts_audio(pcm, rate), stopped, held])
        await recorder.until(lambda r: loud_chunks(r) >= 25)  # half a second into the speech
        await worker.queue_frames([interruption, passed])
        await asyncio.sleep(0.8)

    recorder = _run(PresenterAvatarProcessor(_session(parts)), script)
    assert not recorder.errors

    at = recorder.index(interruption)
    after = [(t, f) for t, f in recorder.frames[at + 1 :] if isinstance(f, OutputAudioRawFrame)]
    loud_after = [
        i for i, (_, f) in enumerate(after) if np.abs(np.frombuffer(f.audio, np.int16)).max() > 0
    ]
    assert len(after) >= 25
    assert not loud_after or loud_after[-1] < 2  # silent from the next video frame on
    time_at = recorder.frames[at][0]
    if loud_after:
        assert after[loud_after[-1]][0] - time_at < 0.06
    out = recorder.pcm()
    assert np.count_nonzero(out) < 0.5 * len(_at_48k(pcm, rate))  # it was cut short
    # The frames held with the speech went with it; what came after passes.
    assert held not in recorder.of(TextFrame) and stopped not in recorder.of(TTSStoppedFrame)
    assert passed in recorder.of(TextFrame)
    # The avatar is at rest again: its mouth shows the idle loop.
    images = recorder.images()
    mouths = _mouths(images)
    later = [i for i, f in enumerate(images) if recorder.index(f) > at][2:]
    still = _away_from(mouths[later], mouths[:10])
    assert len(later) >= 10 and still.max() < 1.0


def test_an_avatar_that_cannot_start_lets_the_speech_through() -> None:
    pcm, rate = espeak_pcm16("Hello.")
    sent = [TTSStartedFrame(), *_tts_audio(pcm, rate), TTSStoppedFrame(), TextFrame("after")]
    # No such model: building the session fails (in this process, on a worker thread).
    processor = PresenterAvatarProcessor(recipe=EngineRecipe(model="no-such-model"), process=False)

    async def script(worker: PipelineWorker, recorder: Recorder) -> None:
        await worker.queue_frames(sent)
        await recorder.until(lambda r: sent[-1] in r.of(TextFrame))

    threads = torch.get_num_threads()  # building an engine sets torch's threads
    try:
        recorder = _run(processor, script)
    finally:
        torch.set_num_threads(threads)
    # One error, upstream, that says what happened; the speech passes unchanged, in order.
    assert len(recorder.errors) == 1
    assert "the avatar stopped" in recorder.errors[0].error
    assert "no-such-model" in recorder.errors[0].error
    passed = [frame for _, frame in recorder.frames if any(frame is s for s in sent)]
    assert passed == sent
    assert not recorder.images() and not recorder.of(SpeechOutputAudioRawFrame)
