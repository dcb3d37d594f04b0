"""Making an engine ready for a stream, in one place: build it (in this process or in one of
its own), warm it up, and size the stream's render budget from what a frame took.

Every way the application starts an avatar (``serve``, ``render``, the pushed-audio session
that the plug-ins build on) goes through :func:`start_engine` and
:func:`stream_config_for`.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from engine.frames import OutputFormat, StreamEngine
from presenter.stream import StreamConfig

if TYPE_CHECKING:
    from engine.facade import AvatarEngine

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EngineRecipe:
    """What to build an :class:`~engine.facade.AvatarEngine` from (picklable: it is sent to
    the engine process)."""

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
    from engine.facade import AvatarEngine, EngineConfig

    torch.set_num_threads(recipe.threads)
    model = load_avatar_model(recipe.model)
    return AvatarEngine(
        model=model,
        avatar=load_or_make_avatar(recipe.avatar, crop=model.crop),
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


def start_engine(recipe: EngineRecipe, *, process: bool = True) -> tuple[StreamEngine, float]:
    """The engine of ``recipe``, built and warmed up, and what a frame took to render (ms).
    ``process``: in a process of its own (:class:`~presenter.engine_process.EngineProcess`:
    the caller's event loop keeps its core), else in this one."""
    if process:
        from presenter.engine_process import EngineProcess

        child = EngineProcess(recipe)
        return child, child.frame_ms
    local = build_engine(recipe)
    return local, warm_up(local)


def render_budget_ms(frame_ms: float) -> float:
    """The stream's render budget for a measured render cost per frame: a frame may have to
    wait for the one before it (2 x the cost) and still absorb a 20 ms hiccup of the
    machine; in 20 ms steps (benchmarks/README.md, "Render budget": what it dropped)."""
    steps = math.ceil((2.0 * max(0.0, frame_ms) + 20.0) / 20.0)
    return 20.0 * steps


def stream_config_for(
    frame_ms: float, *, render_budget: float | None = None, **options: Any
) -> StreamConfig:
    """The stream configuration for an engine whose frame took ``frame_ms`` to render: the
    render budget ``render_budget`` (ms) when given, else sized from ``frame_ms``;
    ``options``: the other :class:`~presenter.stream.StreamConfig` fields."""
    budget = render_budget
    if budget is None:
        budget = render_budget_ms(frame_ms)
        log.info("render budget %.0f ms (a frame took %.1f ms)", budget, frame_ms)
    return StreamConfig(render_budget_ms=budget, **options)
