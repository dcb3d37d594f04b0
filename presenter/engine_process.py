"""The avatar engine in a process of its own, behind the interface the stream uses.

Why a process: the live server's event loop runs aiortc, which is Python per RTP packet (a
few hundred packets a second per viewer). In one process the engine's thread and the event
loop take turns on the interpreter lock, and with four viewers a 30 ms frame took 60-130
ms to render on 2 cores although a core sat idle. In its own process the engine has its
own interpreter and the loop keeps the other core. Before it reports ready, the child
encodes the avatar's loop frames (``AvatarEngine.encode_loop``) and renders the idle loop at
rest once (``AvatarEngine.warm_idle``): idle costs nothing from the
first viewer on, and the time it took per frame (``frame_ms``) is this machine's render cost,
from which the server sizes its render budget (:func:`render_budget_ms`).

:class:`EngineProcess` starts the child (``spawn``), which builds the engine from an
:class:`EngineRecipe` and then answers calls over a pipe: ``push_audio``, ``pull``,
``reset``, ``drop_ready``, ``flush``, ``set_style`` and the ``delay_samples`` /
``frame_size`` / ``loop_frames`` properties. Frames come back as they were rendered, their
stage times (``RenderedFrame.stages_ms``, measured in the child) included.
A call is one round trip (tens of microseconds; a 512x512 I420 frame is 393 kB through the
pipe). The caller's thread waits on the pipe without holding the interpreter lock. An
exception in the child is raised in the caller; a child that dies raises
``PresenterError``.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import threading
import time
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING, Any

import numpy as np

from presenter.errors import PresenterError

if TYPE_CHECKING:
    from engine.facade import AvatarEngine
    from engine.frames import OutputFormat, RenderedFrame

log = logging.getLogger(__name__)

# what the child answers: the engine methods and properties the stream and server use
_ANSWERS = {
    *(
        ("call", name)
        for name in ("push_audio", "pull", "reset", "drop_ready", "flush", "set_style")
    ),
    *(("get", name) for name in ("delay_samples", "frame_size", "loop_frames")),
}


@dataclass(frozen=True, kw_only=True)
class EngineRecipe:
    """What to build an :class:`~engine.facade.AvatarEngine` from (picklable)."""

    model: str = "default"
    avatar: str = "default"
    backend: str = "auto"
    device: str = "cpu"
    threads: int = 1
    batch: int = 1
    output: OutputFormat = "rgb24"


def build_engine(recipe: EngineRecipe) -> AvatarEngine:
    """The engine of ``recipe``, in this process (torch's threads set to ``recipe.threads``)."""
    import torch

    from engine.avatar_model import load_avatar_model
    from engine.data.synth.default_avatar import load_or_make_avatar
    from engine.facade import AvatarEngine, EngineConfig, model_crop

    torch.set_num_threads(recipe.threads)
    model = load_avatar_model(recipe.model)
    return AvatarEngine(
        model=model,
        avatar=load_or_make_avatar(recipe.avatar, crop=model_crop(model)),
        config=EngineConfig(
            backend=recipe.backend,
            device=recipe.device,
            threads=recipe.threads,
            batch=recipe.batch,
            output=recipe.output,
        ),
    )


def warm_up(engine: AvatarEngine) -> float:
    """Encode the avatar's loop frames and render its idle loop at rest once (idle frames
    then cost nothing); returns what a frame took to render (ms), the encoding left out: it
    is done once per loop frame, not per frame."""
    engine.encode_loop()
    began = time.perf_counter()
    rendered = engine.warm_idle()
    seconds = time.perf_counter() - began
    frame_ms = 1000 * seconds / max(rendered, 1)
    log.info("idle loop: %d frames at rest in %.1f s (%.1f ms each)", rendered, seconds, frame_ms)
    return frame_ms


def render_budget_ms(frame_ms: float) -> float:
    """The stream's render budget for a measured render cost per frame: a frame may have to
    wait for the one before it (2 x the cost) and still absorb a 20 ms hiccup of the machine;
    in 20 ms steps. 2 CPU cores, 25-30 ms a frame: 80 ms (under 1 % of frames dropped with a
    browser on the same machine, where 60 ms dropped 2-8 %); a GPU, 8 ms a frame: 40 ms."""
    steps = math.ceil((2.0 * max(0.0, frame_ms) + 20.0) / 20.0)
    return 20.0 * steps


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
    try:
        engine = build_engine(recipe)
        frame_ms = warm_up(engine)
        conn.send(("ready", engine.timeline.rate, engine.timeline.frame_samples, frame_ms))
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
            if (kind, name) not in _ANSWERS:
                raise PresenterError(f"the engine process does not answer {kind} {name!r}")
            result = getattr(engine, name)(*args) if kind == "call" else getattr(engine, name)
        except Exception as exc:
            conn.send(("error", _picklable(exc)))
        else:
            conn.send(("ok", result))


class EngineProcess:
    """An :class:`~engine.facade.AvatarEngine` running in a child process.

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
        self._sample_rate = int(reply[1])
        self._samples_per_frame = int(reply[2])
        # what one frame took to render (generator + compositing) while warming the idle loop
        self.frame_ms = float(reply[3])

    # -- the engine interface ------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self._sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self._samples_per_frame

    @property
    def delay_samples(self) -> int:
        return int(self._request("get", "delay_samples"))

    @property
    def frame_size(self) -> tuple[int, int]:
        height, width = self._request("get", "frame_size")
        return int(height), int(width)

    @property
    def loop_frames(self) -> int:
        """See :attr:`engine.facade.AvatarEngine.loop_frames`."""
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

    def set_style(
        self,
        reference: np.ndarray | None = None,
        code: np.ndarray | None = None,
        subject: str | None = None,
    ) -> str:
        """See :meth:`engine.facade.AvatarEngine.set_style`."""
        return str(self._request("call", "set_style", reference, code, subject))

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
