"""An avatar worker for LiveKit Agents: the presenter joins a room as a voice agent's avatar.

The agent (a LiveKit Agents ``AgentSession``) sends its speech to this worker instead of
publishing it, as in LiveKit's avatar examples::

    session.output.audio = DataStreamAudioOutput(          # or output.replace_audio_tail(...)
        room,
        destination_identity="presenter-avatar",           # the identity in the worker's token
        wait_remote_track=rtc.TrackKind.KIND_VIDEO,
        wait_playback_start=True,                           # AvatarRunner reports it
    )

and whatever launches the worker gives it the room's URL and a token for that identity
(minted by the agent with ``api.AccessToken().with_identity(...).with_kind("agent")
.with_grants(api.VideoGrants(room_join=True, room=room.name))
.with_attributes({ATTRIBUTE_PUBLISH_ON_BEHALF: <the agent's identity>})``). The worker joins
the room, receives the speech (``DataStreamAudioReceiver``) and publishes the avatar's
lip-synced video with the speech, re-timed, through LiveKit's ``AvatarRunner`` driving
:class:`presenter.plugins.livekit_video.PresenterVideoGenerator`. It leaves when the agent
does. ::

    python examples/livekit_avatar.py --url wss://host --token JWT   # or LIVEKIT_URL/LIVEKIT_TOKEN
    python examples/livekit_avatar.py --offline out.mp4 [--text "Hello there."]

``--offline`` needs no server: the text is said with espeak-ng through the same generator,
pushed as the runner pushes (``rtc.AudioFrame`` s, then ``AudioSegmentEnd``), and what the
generator yields (video frames, the speech's audio frames) is written to an MP4. Either way
the avatar is built first (about 15 s on 2 CPU cores), in a child process unless
``--in-process``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, DataStreamAudioReceiver

from engine.audio import float_to_pcm16
from presenter.media import OUTPUT_RATE
from presenter.plugins.livekit_video import PresenterVideoGenerator

log = logging.getLogger("livekit_avatar")

DEFAULT_TEXT = "Hello! I am the presenter, and I am talking to you through a LiveKit room."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="The presenter as a LiveKit Agents avatar worker (see the module docstring).",
    )
    parser.add_argument(
        "--url", default=os.environ.get("LIVEKIT_URL"), help="LiveKit server URL ($LIVEKIT_URL)"
    )
    parser.add_argument(
        "--token",
        default=os.environ.get("LIVEKIT_TOKEN"),
        help="token to join the room as the avatar ($LIVEKIT_TOKEN)",
    )
    parser.add_argument(
        "--offline",
        type=Path,
        metavar="OUT.mp4",
        help="no room: say --text through the generator and write what it yields to OUT.mp4",
    )
    parser.add_argument("--text", default=DEFAULT_TEXT, help="what --offline says")
    parser.add_argument(
        "--in-process", action="store_true", help="run the engine in this process (no child)"
    )
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )
    args = parser.parse_args(argv)
    if args.offline is None and not (args.url and args.token):
        parser.error("give --url and --token (or $LIVEKIT_URL and $LIVEKIT_TOKEN), or --offline")
    return args


async def make_generator(in_process: bool) -> PresenterVideoGenerator:
    """The shipped avatar as a generator (built on a thread: it takes a while)."""
    log.info("building the avatar")
    return await asyncio.to_thread(PresenterVideoGenerator.create, process=not in_process)


# -- in a room -------------------------------------------------------------------------------


async def serve(url: str, token: str, generator: PresenterVideoGenerator) -> None:
    """Join the room and be the avatar until the agent or the room goes away."""
    room = rtc.Room()
    stop = asyncio.Event()

    def on_participant_disconnected(participant: rtc.RemoteParticipant) -> None:
        if participant.kind == rtc.ParticipantKind.PARTICIPANT_KIND_AGENT:
            log.info("the agent %s left", participant.identity)
            stop.set()

    room.on("participant_disconnected", on_participant_disconnected)
    room.on("disconnected", lambda *_: stop.set())
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(signum, stop.set)

    await room.connect(url, token)
    log.info("joined room %s as %s", room.name, room.local_participant.identity)
    runner = AvatarRunner(
        room,
        audio_recv=DataStreamAudioReceiver(room),  # the first agent participant's speech
        video_gen=generator,
        options=generator.options,
    )
    try:
        await runner.start()  # waits for the agent to be in the room
        await stop.wait()
    finally:
        await runner.aclose()
        await room.disconnect()


# -- offline ---------------------------------------------------------------------------------


def _rgb(frame: rtc.VideoFrame) -> np.ndarray:
    """A video frame as RGB (H, W, 3) uint8."""
    if frame.type != rtc.VideoBufferType.RGB24:
        frame = frame.convert(rtc.VideoBufferType.RGB24)
    pixels = np.frombuffer(frame.data, np.uint8)
    return pixels.reshape(frame.height, frame.width, 3).copy()


async def record(
    generator: PresenterVideoGenerator, text: str, out: Path, *, idle_s: float = 0.4
) -> int:
    """Say ``text`` through ``generator`` (espeak-ng's speech as 20 ms ``rtc.AudioFrame`` s,
    then ``AudioSegmentEnd``, after ``idle_s`` of idle) and write what it yields to ``out``,
    up to ``idle_s`` after the segment's end; returns the number of video frames."""
    from engine.speech.espeak import EspeakVoice
    from engine.video_file import write_mp4

    utterance = EspeakVoice().synthesize(text)
    pcm = float_to_pcm16(utterance.audio)
    rate = utterance.sample_rate
    fps = generator.options.video_fps
    frame_samples = round(OUTPUT_RATE / fps)  # output samples a video frame covers

    async def say() -> None:
        await asyncio.sleep(idle_s)
        step = rate // 50
        for start in range(0, len(pcm), step):
            block = pcm[start : start + step]
            await generator.push_audio(rtc.AudioFrame(block.tobytes(), rate, 1, len(block)))
        await generator.push_audio(AudioSegmentEnd())

    frames: list[np.ndarray] = []
    speech: list[tuple[int, np.ndarray]] = []  # (output sample, int16 PCM)
    first: int | None = None  # output sample of the first video frame
    ended: int | None = None  # where the segment's audio ended
    speaker = asyncio.create_task(say())
    try:
        async with contextlib.aclosing(generator.timed()) as items:
            async for item, pts in items:
                if isinstance(item, rtc.VideoFrame):
                    first = pts if first is None else first
                    image = _rgb(item)
                    index = (pts - first) // frame_samples
                    while len(frames) < index:  # a frame the stream dropped: hold the last
                        frames.append(frames[-1] if frames else image)
                    frames.append(image)
                    if ended is not None and pts >= ended + idle_s * OUTPUT_RATE:
                        break
                elif isinstance(item, rtc.AudioFrame):
                    speech.append((pts, np.frombuffer(item.data, np.int16)))
                else:
                    ended = pts
                    log.info("the segment's audio ended at %.2f s", pts / OUTPUT_RATE)
    finally:
        speaker.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await speaker
    # The audio track: the speech where the generator placed it, silence elsewhere.
    origin = first or 0
    track = np.zeros(len(frames) * frame_samples, np.float32)
    for pts, block in speech:
        start = max(0, pts - origin)
        part = block[: max(0, len(track) - start)]
        track[start : start + len(part)] = part.astype(np.float32) / 32768.0
    write_mp4(out, frames, fps=round(fps), audio=track, sample_rate=OUTPUT_RATE)
    return len(frames)


# -- main ------------------------------------------------------------------------------------


async def run(args: argparse.Namespace) -> None:
    generator = await make_generator(args.in_process)
    try:
        if args.offline is not None:
            count = await record(generator, args.text, args.offline)
            seconds = count / generator.options.video_fps
            log.info("wrote %s: %d frames (%.1f s)", args.offline, count, seconds)
        else:
            await serve(args.url, args.token, generator)
    finally:
        await generator.aclose()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        asyncio.run(run(args))
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
