"""Command line: ``python -m presenter <command> ...``.

Logging is configured here and only here. Errors a user can hit (``USER_ERRORS``) are
printed as one line, without a traceback, and exit with status 2.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from presenter.cli_model_commands import add_model_commands, run_data, run_train
from presenter.errors import USER_ERRORS, PresenterError

if TYPE_CHECKING:
    from engine.frames import StreamEngine
    from engine.speech.voices import VoiceBook
    from presenter.engine_setup import EngineRecipe
    from presenter.live import PresenterConfig

log = logging.getLogger("presenter")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m presenter",
        description="A real-time streaming virtual presenter: audio in, a lip-synced avatar out.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    add_model_commands(commands)

    render = commands.add_parser(
        "render",
        help="lip-sync an audio file into an mp4",
        description="Lip-sync a whole audio file (wav, mp3, ogg, m4a, mp4, ...) into an mp4 "
        "with the sound muxed in.",
    )
    speech = render.add_mutually_exclusive_group(required=True)
    speech.add_argument("--audio", type=Path, help="speech to lip-sync (any audio file)")
    speech.add_argument("--text", help="text to speak with espeak-ng and lip-sync")
    render.add_argument("--voice", default="en-us", help="espeak-ng voice for --text")
    render.add_argument("--out", type=Path, required=True, help="the mp4 to write")
    _add_engine_options(render)
    render.add_argument(
        "--batch", type=int, default=1, help="frames per model call (more helps on a GPU)"
    )
    serve = commands.add_parser(
        "serve",
        help="run the live presenter: a web page with the avatar over WebRTC",
        description="Serve the avatar live: open the printed URL in a browser and click Start. "
        "The avatar idles (blinks, breathes) and speaks, lip-synced, when speech comes in.",
    )
    serve.add_argument(
        "--source",
        default="tts",
        help="where speech comes from: tts (speaks --text to each new viewer), file:PATH "
        "(likewise, any audio file), mic[:DEVICE] (this machine's microphone, live) or "
        "browser-mic (the viewer's own microphone; the avatar mirrors them) or none (it "
        "idles). Default: tts",
    )
    serve.add_argument("--text", default=None, help="what the tts source says")
    serve.add_argument(
        "--barge-in",
        action="store_true",
        help="the pages send their microphones (echo-cancelled) and a viewer who starts "
        "speaking while the presenter speaks interrupts it (tts and none sources)",
    )
    serve.add_argument(
        "--voice",
        default="en-us",
        help="voice of the tts source and of say: an espeak-ng voice (en-us, en-gb+f3, ...) or "
        "piper[:NAME] (the piper extra's neural voice, or one given with --piper-voice)",
    )
    serve.add_argument(
        "--piper-voice",
        action="append",
        type=Path,
        default=[],
        metavar="ONNX",
        help="a Piper voice file (.onnx with its .onnx.json), then known as piper:<file stem> "
        "(repeatable)",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: all)")
    serve.add_argument("--port", type=int, default=8080, help="port (0: any free port)")
    serve.add_argument(
        "--stun",
        action="append",
        default=[],
        metavar="URL",
        help="STUN server for the server and the page, e.g. stun:stun.example.org:3478 "
        "(repeatable; none by default: fine on one machine or a LAN)",
    )
    serve.add_argument("--turn", default=None, metavar="URL", help="TURN server URL")
    serve.add_argument("--turn-user", default=None, help="TURN username")
    serve.add_argument("--turn-password", default=None, help="TURN credential")
    serve.add_argument(
        "--early-start",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="start a ready sentence said while idle in the stream's idle past, about 140 ms "
        "sooner (default on; --no-early-start: from the input position, D after the call)",
    )
    serve.add_argument(
        "--stamp",
        action="store_true",
        help="measurement mode: paint frame numbers into the video and put a 15 kHz click "
        "in the audio every second; the page's stats then show A/V offset and latency",
    )
    serve.add_argument(
        "--bitrate", type=int, default=1500, help="video bitrate in kbit/s (default 1500)"
    )
    serve.add_argument("--max-viewers", type=int, default=16, help="viewers at most (default 16)")
    serve.add_argument(
        "--render-budget",
        default="auto",
        metavar="MS",
        help="time a frame may take to render before it is dropped, in 20 ms steps; the audio "
        "is held back by one frame + the model's look-ahead (100 ms) + this. Default auto: "
        "twice the render time measured at start + 20 ms (serve logs it; docs/live.md)",
    )
    serve.add_argument(
        "--token",
        default=os.environ.get("PRESENTER_TOKEN"),
        help="bearer token of the control API (default: $PRESENTER_TOKEN, else a new one, "
        "printed once)",
    )
    serve.add_argument(
        "--allow-origin",
        action="append",
        default=[],
        metavar="ORIGIN",
        help="a page origin (https://example.org) whose websockets are accepted besides the "
        "server's own (repeatable)",
    )
    serve.add_argument(
        "--engine",
        default="model",
        choices=("model", "prerendered"),
        help="model: the avatar lip-synced live (default); prerendered: the avatar's idle loop "
        "rendered once at start and replayed at no cost, no look-ahead (D = 60 ms): the "
        "transport's own latency, for benchmarks",
    )
    serve.add_argument(
        "--nice",
        type=int,
        default=-5,
        help="CPU priority of the server and its engine process, -20..19 (default: -5; below 0 "
        "needs root or CAP_SYS_NICE, else the normal priority is kept)",
    )
    _add_engine_options(serve, threads_help="threads (default: cores - 1)")
    say = commands.add_parser(
        "say",
        help="have a running presenter say something (or stop)",
        description="Drive a running `serve` through its control API.",
    )
    say.add_argument(
        "text", nargs="?", help="what to say (long text is spoken sentence by sentence)"
    )
    say.add_argument(
        "--voice", default=None, help="espeak-ng voice or piper[:NAME] (default: the server's)"
    )
    say.add_argument("--rate", type=int, default=None, help="words per minute (80-450)")
    say.add_argument("--interrupt", action="store_true", help="stop speaking first")
    style = commands.add_parser(
        "style",
        help="change a running presenter's speaking style",
        description="Set the speaking style of a running `serve` (shows within the stream "
        "delay). No argument: the avatar's own style.",
    )
    choice = style.add_mutually_exclusive_group()
    choice.add_argument("subject", nargs="?", help="a style the model knows, by name")
    choice.add_argument("--code", type=Path, help="a .npy file with a style code (style_dim,)")
    choice.add_argument(
        "--reference", type=Path, help="a .npy file with reference dynamics (frames, K) at 25 fps"
    )
    for command in (say, style):
        command.add_argument(
            "--url", default="http://127.0.0.1:8080/", help="the server (default: local)"
        )
        command.add_argument(
            "--token",
            default=os.environ.get("PRESENTER_TOKEN"),
            help="control token ($PRESENTER_TOKEN)",
        )
    return parser


def _add_engine_options(
    parser: argparse.ArgumentParser, threads_help: str = "threads (default: cores)"
) -> None:
    from engine.backend_registry import BACKEND_NAMES

    parser.add_argument("--avatar", default="default", help="avatar name (default: default)")
    parser.add_argument("--model", default="default", help="model name or folder")
    parser.add_argument(
        "--backend",
        default="auto",
        choices=BACKEND_NAMES,
        help="inference runtime (default: the fastest that works here)",
    )
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--threads", type=int, default=None, help=threads_help)


def _recipe(args: argparse.Namespace, *, spare_cores: int = 0, **fields: Any) -> EngineRecipe:
    """The engine the command line asks for. Without ``--threads`` it uses every core but
    ``spare_cores`` (at least one thread)."""
    from presenter.engine_setup import EngineRecipe

    threads = args.threads or max(1, (os.cpu_count() or 1) - spare_cores)
    return EngineRecipe(
        model=args.model,
        avatar=args.avatar,
        backend=args.backend,
        device=args.device,
        threads=threads,
        **fields,
    )


def _run_render(args: argparse.Namespace) -> int:
    from engine.offline_render import render_audio, render_file

    if args.audio is not None and not args.audio.is_file():
        raise PresenterError(f"audio file {args.audio} does not exist")
    from presenter.engine_setup import build_engine

    engine = build_engine(_recipe(args, batch=args.batch))
    if args.audio is not None:
        render_file(engine, args.audio, args.out)
    else:
        from engine.speech.espeak import EspeakVoice

        utterance = EspeakVoice(voice=args.voice).synthesize(args.text)
        render_audio(engine, utterance.audio, utterance.sample_rate, args.out)
    log.info("wrote %s", args.out)
    return 0


def _run_serve(args: argparse.Namespace) -> int:
    import asyncio

    from presenter.engine_setup import stream_config_for
    from presenter.live import GREETING, IceServer, PresenterConfig, SourceSpec
    from presenter.server import WEB_ROOT

    if not (WEB_ROOT / "index.html").is_file():
        raise PresenterError(f"the viewer page is missing: {WEB_ROOT / 'index.html'}")

    servers = [IceServer((url,)) for url in args.stun]
    if args.turn is not None:
        servers.append(IceServer((args.turn,), args.turn_user, args.turn_password))
    source = SourceSpec.parse(args.source)
    PresenterConfig(source=source, barge_in=args.barge_in)  # fails now, not after the engine
    budget = None if args.render_budget == "auto" else _positive_ms(args.render_budget)
    from engine.speech.voices import VoiceBook

    voices = VoiceBook({path.name.removesuffix(".onnx"): path for path in args.piper_voice})
    speaker = voices.speaker(args.voice)  # a missing espeak-ng or voice fails now, not later
    if voices.is_piper(args.voice):
        speaker.synthesize("Ready.")  # loads the voice now: its first sentence is not late
    from presenter.priority import set_nice

    if not -20 <= args.nice <= 19:
        raise PresenterError(f"--nice takes -20..19, not {args.nice}")
    set_nice(args.nice)  # before the engine process and the threads: they inherit it
    # The engine runs in a process of its own (see presenter.engine_process); one core is
    # left to the event loop: the encoder, the network, the viewers.
    with _serve_engine(args) as (engine, frame_ms):
        config = PresenterConfig(
            source=source,
            text=args.text or GREETING,
            voice=args.voice,
            ice_servers=tuple(servers),
            video_bitrate=args.bitrate * 1000,
            max_viewers=args.max_viewers,
            stream=stream_config_for(
                frame_ms, render_budget=budget, stamp=args.stamp, early_start=args.early_start
            ),
            barge_in=args.barge_in,
        )
        asyncio.run(
            _serve(
                engine,
                config,
                voices,
                args.host,
                args.port,
                token=args.token,
                origins=tuple(args.allow_origin),
            )
        )
    return 0


@contextmanager
def _serve_engine(args: argparse.Namespace) -> Iterator[tuple[StreamEngine, float]]:
    """The engine ``serve --engine`` asks for and what a frame of it takes to render (ms):
    the model in its process, or its idle loop rendered once by it (the process then ends)
    and replayed at no cost."""
    from presenter.engine_setup import start_engine

    engine, frame_ms = start_engine(_recipe(args, spare_cores=1, output="yuv420p"))
    if args.engine == "prerendered":
        from presenter.prerendered import PrerenderedEngine

        try:
            replay = PrerenderedEngine.from_engine(engine, engine.loop_frames)
        finally:
            engine.close()
        log.info("pre-rendered engine: %d frames of the idle loop", len(replay.images))
        engine, frame_ms = replay, replay.frame_ms
    try:
        yield engine, frame_ms
    finally:
        engine.close()


def _control_call(args: argparse.Namespace, path: str, body: dict[str, object]) -> dict[str, Any]:
    """POST ``body`` to a running server's control API; its one-line error on refusal."""
    import json
    import urllib.error
    import urllib.request

    if not args.token:
        raise PresenterError(
            f"{args.command} needs the server's control token: --token or $PRESENTER_TOKEN"
        )
    request = urllib.request.Request(
        args.url.rstrip("/") + path,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {args.token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return dict(json.load(response))
    except urllib.error.HTTPError as exc:
        try:
            reason = json.load(exc).get("error", exc.reason)
        except (ValueError, AttributeError):
            reason = exc.reason
        raise PresenterError(f"{args.url}: {reason}") from exc
    except urllib.error.URLError as exc:
        raise PresenterError(f"cannot reach {args.url}: {exc.reason}") from exc


def _run_say(args: argparse.Namespace) -> int:
    if not args.text and not args.interrupt:
        raise PresenterError("nothing to do: give a text, or --interrupt")
    if args.interrupt:
        _control_call(args, "/api/interrupt", {})
    if args.text:
        body: dict[str, object] = {"text": args.text}
        if args.voice:
            body["voice"] = args.voice
        if args.rate:
            body["rate"] = args.rate
        print(f"utterance {_control_call(args, '/api/say', body)['utterance']}")  # noqa: T201
    return 0


def _run_style(args: argparse.Namespace) -> int:
    import numpy as np

    body: dict[str, object] = {}
    if args.subject:
        body = {"subject": args.subject}
    for key in ("code", "reference"):
        path = getattr(args, key)
        if path is not None:
            try:
                body = {key: np.load(path, allow_pickle=False).tolist()}
            except (OSError, ValueError) as exc:
                raise PresenterError(f"cannot read {path} as a .npy array: {exc}") from exc
    print(f"style {_control_call(args, '/api/style', body)['style']}")  # noqa: T201
    return 0


def _positive_ms(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value <= 0:
        raise PresenterError(f"--render-budget takes auto or a positive number of ms, not {text!r}")
    return value


async def _serve(
    engine: StreamEngine,
    config: PresenterConfig,
    voices: VoiceBook,
    host: str,
    port: int,
    *,
    token: str | None,
    origins: tuple[str, ...],
) -> None:
    import asyncio

    from presenter.live import Presenter
    from presenter.server import PresenterServer

    async with Presenter(engine, config, voices=voices) as presenter:
        server = PresenterServer(
            presenter, host=host, port=port, token=token, allowed_origins=origins
        )
        url = await server.start()
        print(  # noqa: T201 - the command's output: where to look
            f"Presenter live at {url} (source: {config.source}); open it in a browser and "
            "click Start. Ctrl-C stops.",
            flush=True,
        )
        if token is None:
            print(  # noqa: T201 - printed once: the control API's key
                f'Control token: {server.token} (python -m presenter say --token ... "TEXT")',
                flush=True,
            )
        try:
            await asyncio.Event().wait()
        finally:
            await server.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # MediaPipe's native logging: warnings and errors only.
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        if args.command == "data":
            return run_data(args)
        if args.command == "train":
            return run_train(args)
        if args.command == "render":
            return _run_render(args)
        if args.command == "serve":
            return _run_serve(args)
        if args.command == "say":
            return _run_say(args)
        if args.command == "style":
            return _run_style(args)
    except USER_ERRORS as exc:
        print(f"error: {exc}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        return 130
    raise AssertionError(args.command)
