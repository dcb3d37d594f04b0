"""A pipecat pipeline with the presenter's avatar, headless and offline: text -> TTS -> avatar
-> an MP4 file.

    .venv/bin/python examples/pipecat_avatar.py --out out.mp4

* ``EspeakTTSService``: a pipecat ``TTSService`` on espeak-ng (the project's wrapper, no
  network): ``TTSSpeakFrame`` s in; ``TTSStartedFrame``, 100 ms ``TTSAudioRawFrame`` s and
  ``TTSStoppedFrame`` out, as any pipecat TTS service sends them.
* :class:`~presenter.plugins.pipecat_processor.PresenterAvatarProcessor`: builds the shipped
  avatar when the pipeline starts (in a child process; about 15 s on 2 cores) and turns the
  TTS audio into the lip-synced avatar: 25 fps ``OutputImageRawFrame`` s and the audio, re-timed,
  as 48 kHz ``SpeechOutputAudioRawFrame`` s.
* ``Mp4Writer``: stands where the output transport would be; writes what reaches it (H.264
  and AAC, with PyAV, on a thread of its own) and counts it.

The script says its sentences, lets the avatar idle a moment and ends the pipeline with an
``EndFrame``, which the avatar lets play out: the run ends on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import queue
import sys
import threading
import time
from collections.abc import AsyncGenerator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from loguru import logger
from pipecat.frames.frames import (
    EndFrame,
    Frame,
    OutputAudioRawFrame,
    OutputImageRawFrame,
    TTSAudioRawFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import TTSSettings
from pipecat.services.tts_service import TTSService
from pipecat.workers.runner import WorkerRunner

from engine.audio import float_to_pcm16
from engine.frames import FPS
from engine.speech.espeak import EspeakVoice
from presenter.plugins.pipecat_processor import STREAM_SAMPLE, PresenterAvatarProcessor

SENTENCES = (
    "Hello! I am the presenter, an avatar that speaks whatever a pipecat pipeline says.",
    "My lips follow the speech, and between sentences I wait, and blink.",
)
ESPEAK_RATE = 22050  # espeak-ng's sample rate
AUDIO_RATE = 48000
FRAME_SAMPLES = AUDIO_RATE // FPS  # audio samples a video frame lasts


class EspeakTTSService(TTSService):
    """Text to speech with espeak-ng, offline. Synthesis runs on a worker thread."""

    def __init__(self, *, voice: str = "en-us+f3", **kwargs: Any) -> None:
        super().__init__(
            sample_rate=ESPEAK_RATE,
            push_start_frame=True,
            push_stop_frames=True,
            settings=TTSSettings(model=None, voice=voice, language=None),
            **kwargs,
        )
        self._voice = EspeakVoice(voice=voice)

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str) -> AsyncGenerator[Frame | None, None]:
        utterance = await asyncio.to_thread(self._voice.synthesize, text)
        pcm = float_to_pcm16(utterance.audio)
        step = utterance.sample_rate // 10  # 100 ms a frame, as a streaming TTS sends them
        for start in range(0, len(pcm), step):
            block = pcm[start : start + step].tobytes()
            yield TTSAudioRawFrame(block, utterance.sample_rate, 1, context_id=context_id)


class Mp4Writer(FrameProcessor):
    """The pipeline's end: writes the avatar's frames and audio to ``path`` and counts them.

    Encoding runs on a thread (the event loop keeps the avatar's pace); the file is
    finished when the ``EndFrame`` comes."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.path = path
        self.frames = 0
        self.audio_seconds = 0.0
        self.utterances = 0  # TTSStoppedFrames seen: utterances heard to their end
        self.stopped = asyncio.Event()  # set at each of them
        self._work: queue.Queue[OutputImageRawFrame | OutputAudioRawFrame | None] = queue.Queue()
        self._thread = threading.Thread(target=self._encode, name="mp4-writer", daemon=True)
        self._started = False

    async def process_frame(self, frame: Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, OutputImageRawFrame):
            self.frames += 1
            self._put(frame)
        elif isinstance(frame, OutputAudioRawFrame):
            self.audio_seconds += frame.num_frames / frame.sample_rate
            self._put(frame)
        elif isinstance(frame, TTSStoppedFrame):
            self.utterances += 1
            self.stopped.set()
        elif isinstance(frame, EndFrame):
            await self.finish()
        await self.push_frame(frame, direction)

    def _put(self, frame: OutputImageRawFrame | OutputAudioRawFrame) -> None:
        if not self._started:
            self._started = True
            self._thread.start()
        self._work.put(frame)

    async def finish(self) -> None:
        if self._started:
            self._work.put(None)
            await asyncio.to_thread(self._thread.join)

    def _encode(self) -> None:
        with av.open(str(self.path), mode="w") as container:
            video: av.VideoStream | None = None
            sound = container.add_stream("aac", rate=AUDIO_RATE)
            sound.layout = "mono"
            origin: int | None = None  # the stream sample at the file's time 0
            while (item := self._work.get()) is not None:
                # Everything goes where the avatar's stream has it: a video frame the avatar
                # dropped (a busy machine) leaves a gap, and sound and picture stay in sync.
                sample = int(item.metadata.get(STREAM_SAMPLE, 0))
                if origin is None:
                    origin = sample // FRAME_SAMPLES * FRAME_SAMPLES
                if isinstance(item, OutputImageRawFrame):
                    width, height = item.size
                    if video is None:
                        video = container.add_stream("libx264", rate=FPS)
                        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
                        video.options = {"preset": "veryfast", "crf": "20"}
                        video.codec_context.time_base = Fraction(1, FPS)
                        video.thread_count = 1  # leave the cores to the avatar
                    rgb = np.frombuffer(item.image, np.uint8).reshape(height, width, 3)
                    picture = av.VideoFrame.from_ndarray(rgb, format="rgb24")
                    picture.pts = (sample - origin) // FRAME_SAMPLES
                    picture.time_base = Fraction(1, FPS)
                    container.mux(video.encode(picture))
                else:
                    pcm = np.frombuffer(item.audio, np.int16)[None, :]
                    chunk = av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
                    chunk.sample_rate = item.sample_rate
                    chunk.pts, chunk.time_base = sample - origin, Fraction(1, item.sample_rate)
                    container.mux(sound.encode(chunk))
            if video is not None:
                container.mux(video.encode(None))
            container.mux(sound.encode(None))


async def run(out: Path, idle_seconds: float) -> Mp4Writer:
    writer = Mp4Writer(out)
    pipeline = Pipeline([EspeakTTSService(), PresenterAvatarProcessor(), writer])
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(audio_out_sample_rate=AUDIO_RATE),
        enable_rtvi=False,
        idle_timeout_secs=None,
    )

    @worker.event_handler("on_pipeline_started")
    async def on_started(worker: PipelineWorker, _frame: Frame) -> None:
        await worker.queue_frames([TTSSpeakFrame(text) for text in SENTENCES])

        async def end_later() -> None:
            # The avatar starts once its engine is built; the sentences play (their
            # TTSStoppedFrames come out after their audio), the avatar idles a moment, then
            # the EndFrame closes the pipeline.
            while writer.utterances < len(SENTENCES):
                writer.stopped.clear()
                await writer.stopped.wait()
            await asyncio.sleep(idle_seconds)
            await worker.queue_frame(EndFrame())

        worker.create_task(end_later(), "end-later")

    runner = WorkerRunner(handle_sigint=True)
    await runner.add_workers(worker)
    await runner.run()
    return writer


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("pipecat-avatar.mp4"))
    parser.add_argument(
        "--idle", type=float, default=1.0, help="seconds of idle avatar before the end"
    )
    args = parser.parse_args()
    logger.remove()
    logger.add(sys.stderr, level="INFO")  # pipecat's log
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    began = time.perf_counter()
    writer = asyncio.run(run(args.out, args.idle))
    logger.info(
        f"wrote {args.out}: {writer.frames} video frames ({writer.frames / FPS:.1f} s at {FPS} fps)"
        f" and {writer.audio_seconds:.1f} s of audio in {time.perf_counter() - began:.1f} s"
    )
    return 0 if writer.frames else 1


if __name__ == "__main__":  # the avatar's engine runs in a spawned child process
    sys.exit(main())
