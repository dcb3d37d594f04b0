"""presenter/engine_process.py: the engine in a child process gives the frames the engine
gives in this one; its errors come back; a dead child is a clear error."""

from __future__ import annotations

import numpy as np
import pytest

from engine.errors import EngineError
from engine.frames import ENGINE_TIMELINE, StreamEngine
from engine.speech.espeak import EspeakVoice
from presenter.engine_process import EngineProcess
from presenter.engine_setup import EngineRecipe, build_engine, render_budget_ms
from presenter.errors import PresenterError


def test_render_budget_follows_the_measured_render_time() -> None:
    assert render_budget_ms(25.0) == render_budget_ms(30.0) == 80.0  # 2 CPU cores
    assert render_budget_ms(8.0) == 40.0  # a GPU
    assert render_budget_ms(0.0) == 20.0
    assert render_budget_ms(45.0) == 120.0


@pytest.mark.slow
def test_the_child_engine_equals_the_local_one() -> None:
    recipe = EngineRecipe(backend="onnxrt", threads=1, output="yuv420p")
    utterance = EspeakVoice(voice="en-us").synthesize("One, two.")
    speech = np.asarray(utterance.audio, np.float32)
    local = build_engine(recipe)
    delay = local.delay_samples  # before any audio: without a resampler's delay
    local.push_audio(speech, utterance.sample_rate)
    expected = local.pull()
    with EngineProcess(recipe) as child:
        assert isinstance(child, StreamEngine) and isinstance(local, StreamEngine)
        assert child.frame_ms > 0  # the idle loop was rendered at start
        assert child.timeline == local.timeline == ENGINE_TIMELINE
        assert child.kind == local.kind == "model"
        assert child.loop_frames == local.loop_frames
        assert child.delay_samples == delay
        assert child.frame_size == local.frame_size
        child.push_audio(speech, utterance.sample_rate)
        frames = child.pull()
        assert [f.index for f in frames] == [f.index for f in expected]
        for mine, theirs in zip(frames, expected, strict=True):
            difference = np.abs(mine.image.astype(int) - theirs.image.astype(int)).max()
            assert difference <= 1 and mine.format == "yuv420p"
        with pytest.raises(EngineError, match="mono"):  # raised in the child, raised here
            child.push_audio(np.zeros((2, 2), np.float32), 16000)
        child.reset()  # still answering after an error
        child._process.kill()
        child._process.join()
        with pytest.raises(PresenterError, match="engine process"):
            child.pull()
