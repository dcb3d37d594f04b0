"""The avatar engine in a process of its own, behind the stream's engine interface.

Why a process: the live server's event loop runs aiortc, which is Python per RTP packet. In
one process the engine's thread and the event loop take turns on the interpreter lock and
frames render far slower than the model allows (benchmarks/README.md, "Engine in a process
of its own"); in its own process the engine has its own interpreter and the loop keeps the
other core. Before it reports ready, the child builds and warms up the engine
(:func:`presenter.engine_setup.warm_up`): idle costs nothing from the first viewer on, and
the time a frame took (``frame_ms``) is this machine's render cost, from which the render
budget is sized.

:class:`EngineProcess` starts the child (``spawn``), which then answers calls over a pipe:
exactly the calls and properties of :class:`engine.frames.StreamEngine`. Frames come back as
they were rendered, their stage times (``RenderedFrame.stages_ms``, measured in the child)
included. The caller's thread waits on the pipe without holding the interpreter lock. An
exception in the child is raised in the caller; a child that dies raises
``PresenterError``.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.frames import (
    STREAM_ENGINE_CALLS,
    STREAM_ENGINE_PROPERTIES,
    RenderedFrame,
    SpeakingStyle,
    Timeline,
)
from presenter.errors import PresenterError

if TYPE_CHECKING:
    from presenter.engine_setup import EngineRecipe

log = logging.getLogger(__name__)


def _picklable(exc: BaseException) -> BaseException:
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc


def _child(recipe: EngineRecipe, conn: Connection, level: int) -> None:
    """The engine process: build, report, then answer calls until told to stop."""
    os.environ.setdefault("GLOG_minloglevel", "2")
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s [engine]: %(message)s",
        datefmt="%H:%M:%S",
    )
    from presenter.engine_setup import build_engine, warm_up

    try:
        engine = build_engine(recipe)
        frame_ms = warm_up(engine)
        conn.send(("ready", engine.kind, engine.timeline, frame_ms))
    except BaseException as exc:
        conn.send(("error", _picklable(exc)))
        return
    while True:
        try:
            request = conn.recv()
        except (EOFError, OSError, KeyboardInterrupt):
            return
        kind, name, args = request
        if kind == "close":
            return
        try:
            if kind == "call" and name in STREAM_ENGINE_CALLS:
                result = getattr(engine, name)(*args)
            elif kind == "get" and name in STREAM_ENGINE_PROPERTIES:
                result = getattr(engine, name)
            else:
                raise PresenterError(f"the engine process does not answer {kind} {name!r}")
        except Exception as exc:
            conn.send(("error", _picklable(exc)))
        else:
            conn.send(("ok", result))


class EngineProcess:
    """An :class:`~engine.facade.AvatarEngine` running in a child process (a
    :class:`~engine.frames.StreamEngine`).

    Made (and blocks) until the child has built the engine or failed to. ``close()`` ends
    the child. Calls may come from any one thread at a time (a lock orders them).
    """

    def __init__(self, recipe: EngineRecipe, *, start_timeout_s: float = 600.0) -> None:
        context = multiprocessing.get_context("spawn")
        self.recipe = recipe
        self._conn, child_end = context.Pipe()
        self._process = context.Process(
            target=_child,
            args=(recipe, child_end, logging.getLogger().getEffectiveLevel()),
            name="avatar-engine",
            daemon=True,
        )
        self._process.start()
        child_end.close()
        self._lock = threading.Lock()
        self._closed = False
        if not self._conn.poll(start_timeout_s):
            self.close()
            raise PresenterError(f"the engine process did not start in {start_timeout_s:.0f} s")
        reply = self._receive()
        if reply[0] != "ready":
            self.close()
            raise reply[1]
        self._kind = str(reply[1])
        self._timeline: Timeline = reply[2]
        # what one frame took to render (generator + compositing) while warming the idle loop
        self.frame_ms = float(reply[3])

    # -- the engine interface (engine.frames.StreamEngine) -------------------------------
    @property
    def kind(self) -> str:
        return self._kind

    @property
    def timeline(self) -> Timeline:
        return self._timeline

    @property
    def delay_samples(self) -> int:
        return int(self._request("get", "delay_samples"))

    @property
    def frame_size(self) -> tuple[int, int]:
        height, width = self._request("get", "frame_size")
        return int(height), int(width)

    @property
    def loop_frames(self) -> int:
        return int(self._request("get", "loop_frames"))

    def push_audio(self, pcm: np.ndarray, sample_rate: int) -> None:
        self._request("call", "push_audio", np.ascontiguousarray(pcm), sample_rate)

    def pull(self) -> list[RenderedFrame]:
        return list(self._request("call", "pull"))

    def reset(self) -> None:
        self._request("call", "reset")

    def drop_ready(self, keep: int = 0) -> int:
        return int(self._request("call", "drop_ready", keep))

    def flush(self) -> None:
        self._request("call", "flush")

    def set_style(self, style: SpeakingStyle) -> str:
        return str(self._request("call", "set_style", style))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            with self._lock:
                self._conn.send(("close", "", ()))
        except (OSError, ValueError):
            pass
        self._process.join(timeout=10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join(timeout=5)
        self._conn.close()

    def __enter__(self) -> EngineProcess:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the pipe -------------------------------------------------------------------------
    def _request(self, kind: str, name: str, *args: Any) -> Any:
        if self._closed:
            raise PresenterError("the engine process is closed")
        with self._lock:
            try:
                self._conn.send((kind, name, args))
            except (OSError, ValueError) as exc:
                raise PresenterError(f"the engine process is gone ({exc})") from exc
            reply = self._receive()
        if reply[0] == "error":
            raise reply[1]
        return reply[1]

    def _receive(self) -> tuple[Any, ...]:
        try:
            reply: tuple[Any, ...] = self._conn.recv()
        except (EOFError, OSError) as exc:
            code = self._process.exitcode
            raise PresenterError(f"the engine process died (exit code {code})") from exc
        return reply
