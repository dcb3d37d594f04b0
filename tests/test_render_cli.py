"""`presenter render`: an audio file in, an mp4 out that plays in Chromium with its sound."""

from __future__ import annotations

from fractions import Fraction

import av
import numpy as np
import pytest

from engine.speech.espeak import EspeakVoice
from presenter.cli import main
from presenter.testing.live_harness import chromium_page, chromium_path


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("render")
    utterance = EspeakVoice(voice="en-us", rate_wpm=170).synthesize(
        "The quick brown fox jumps over the lazy dog."
    )
    audio = np.asarray(utterance.audio, np.float32)
    source = root / "speech.wav"
    with av.open(str(source), mode="w") as container:
        stream = container.add_stream("pcm_s16le", rate=utterance.sample_rate)
        stream.layout = "mono"
        frame = av.AudioFrame.from_ndarray(
            (np.clip(audio, -1, 1) * 32767).astype(np.int16)[None], format="s16", layout="mono"
        )
        frame.sample_rate = utterance.sample_rate
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    out = root / "speech.mp4"
    code = main(
        ["render", "--audio", str(source), "--out", str(out), "--backend", "onnxrt",
         "--threads", "1", "--batch", "1"]
    )  # fmt: skip
    assert code == 0
    return source, out, len(audio) / utterance.sample_rate


def test_render_writes_aligned_video_and_sound(rendered) -> None:
    _, out, seconds = rendered
    with av.open(str(out)) as container:
        video = container.streams.video[0]
        sound = container.streams.audio[0]
        assert (video.width, video.height) == (512, 512)
        assert video.average_rate == Fraction(25)
        frames = list(container.decode(video))
    assert len(frames) == int(np.ceil(seconds * 25 - 1e-9))
    assert frames[0].pts * frames[0].time_base == 0
    with av.open(str(out)) as container:
        first_audio = next(container.decode(container.streams.audio[0]))
        assert first_audio.pts == 0
    assert sound is not None


def test_render_refuses_a_missing_or_bad_file(tmp_path, capsys) -> None:
    assert main(["render", "--audio", str(tmp_path / "none.wav"), "--out", "x.mp4"]) == 2
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"not audio at all")
    assert main(["render", "--audio", str(bad), "--out", str(tmp_path / "y.mp4")]) == 2
    assert capsys.readouterr().err.startswith("error: ")


@pytest.mark.skipif(chromium_path() is None, reason="Debian chromium is not installed")
def test_rendered_mp4_plays_in_chromium_with_sound(rendered) -> None:
    _, out, seconds = rendered
    page_file = out.parent / "play.html"
    page_file.write_text(f'<video id="v" src="{out.name}" autoplay playsinline></video>')
    with chromium_page() as page:
        page.goto(page_file.as_uri())
        page.wait_for_function(
            "() => { const v = document.getElementById('v'); return v.ended || "
            f"v.currentTime > {min(seconds - 0.3, 1.5)}; }}",
            timeout=20_000,
        )
        state = page.evaluate(
            "() => { const v = document.getElementById('v'); return {"
            "w: v.videoWidth, h: v.videoHeight, d: v.duration, error: v.error && v.error.code,"
            "audio: v.webkitAudioDecodedByteCount, video: v.webkitVideoDecodedByteCount,"
            "frames: v.getVideoPlaybackQuality().totalVideoFrames}; }"
        )
    assert state["error"] is None
    assert (state["w"], state["h"]) == (512, 512)
    assert abs(state["d"] - seconds) < 0.1
    assert state["audio"] > 0 and state["video"] > 0
    assert state["frames"] > 20


def test_render_speaks_text_with_espeak(tmp_path) -> None:
    out = tmp_path / "hello.mp4"
    code = main(
        ["render", "--text", "Hello there.", "--out", str(out), "--backend", "onnxrt",
         "--threads", "1"]
    )  # fmt: skip
    assert code == 0
    with av.open(str(out)) as container:
        assert container.streams.video[0].frames > 10
        assert container.streams.audio[0].frames > 0
