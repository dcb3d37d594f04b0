"""The live presenter in a real browser: ``python -m presenter serve`` in its own process,
Debian's Chromium as the viewer (Playwright), everything on this machine.

Measured in the page (web/measure.js) from what Chromium actually presents: the server runs
with ``--stamp`` (frame numbers painted into the video, a 15 kHz burst in the audio at each
whole second), so fps, A/V offset and glass-to-glass latency come from the presented frames
and the played audio, not from the server's intentions. The figures of each run are written
to ``test-output/live_browser.json``.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from presenter.testing.live_harness import (
    SPEECH,
    chromium,
    chromium_path,
    click_start,
    fake_microphone_args,
    live_server,
    open_viewer,
    presented_figures,
    stamped_figures,
    wait_connected,
    write_speech,
    write_wav,
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(chromium_path() is None, reason="needs Debian's chromium"),
]

SPEECH_S = 11.0  # the speech file; measured: 10 s of it, after the first second


def _save(test_output: Path, name: str, figures: Any) -> None:
    path = test_output / "live_browser.json"
    saved = json.loads(path.read_text()) if path.exists() else {}
    saved[name] = figures
    path.write_text(json.dumps(saved, indent=2))


def test_one_viewer_sees_the_avatar_speak_in_sync(tmp_path: Path, test_output: Path) -> None:
    """The README's presenter (tts source) with stamps: click, then over 10 s of speech."""
    with (
        live_server(["--stamp", "--text", SPEECH], tmp_path / "serve.log") as server,
        chromium() as browser,
    ):
        page = open_viewer(browser, server.url)
        clicked = time.monotonic()
        click_start(page)
        page.wait_for_function("window.viewer.stats().activity === 'speaking'", timeout=30_000)
        speaking_s = time.monotonic() - clicked
        time.sleep(SPEECH_S + 0.5)
        figures = stamped_figures(page)
        figures["speaking_after_click_s"] = speaking_s
        figures["server"] = server.status()
    _save(test_output, "one_viewer_speech", figures)

    assert not figures["errors"], figures["errors"]
    assert speaking_s < 5, speaking_s  # measured locally well under 2 s; CI machines vary
    # The rate the machine sustains is the benchmarks' figure (benchmarks.live: 25 fps, no
    # freezes, on this idle 2-core machine); here the stream must keep flowing whatever else
    # runs beside it (19.8 fps decoded, 3 freezes, with the load average at 5 on 2 cores).
    assert figures["fps_decoded"] >= 15, figures
    assert figures["fps"] >= 12, figures  # and shown (a frame within one vsync may be skipped)
    assert figures["audio_samples"] > 9 * 48000, figures
    assert figures["concealed_fraction"] < 0.05, figures
    offsets = figures["av_offsets_ms"]
    assert len(offsets) >= 8, figures
    # The browser starts with its audio 40-130 ms late while its jitter buffer settles, and
    # the page's default lip-sync correction (sync=browser, driven by the browser's own
    # estimate; the stamps only measure) takes a few seconds to take that out
    # (benchmarks.latency reports the whole run per correction): settled from the fourth
    # click on.
    settled = statistics.median(offsets[3:])
    assert abs(settled) <= 20, offsets


def test_four_viewers_share_one_presenter(tmp_path: Path, test_output: Path) -> None:
    """Four pages at once on one presenter, idle (on 2 cores four browsers and the model
    speaking do not fit beside each other; the server's part per viewer is small). Without
    stamps: fps from the frames each page presented (requestVideoFrameCallback)."""
    with (
        live_server(["--source", "none"], tmp_path / "serve.log") as server,
        chromium() as browser,
    ):
        pages = [open_viewer(browser, server.url) for _ in range(4)]
        for page in pages:
            click_start(page)
        for page in pages:
            wait_connected(page)
        time.sleep(13.0)
        viewers = [presented_figures(page, skip_s=2.0, window_s=10.0) for page in pages]
        status = server.status()
    _save(test_output, "four_viewers_idle", {"viewers": viewers, "server": status})

    assert status["viewers"] == 4, status
    # one encoder for all: every frame the stream released was encoded once
    assert status["framesEncoded"] <= status["framesEmitted"], status
    for figures in viewers:
        assert not figures["errors"], figures["errors"]
        assert figures["seconds"] >= 9.0, figures
        # (the rate on an idle machine is benchmarks.live's figure; see the test above)
        assert figures["fps_decoded"] >= 15, figures
        assert figures["fps_presented"] >= 12, figures
        # (freezes are recorded, not asserted: with four browsers the two cores are full and
        # a page may stall once; the speech test above asserts none for one viewer)
        assert figures["concealed_fraction"] < 0.01, figures


def test_the_lip_sync_correction_is_the_pages_choice(tmp_path: Path, test_output: Path) -> None:
    """?sync= picks the correction, stamps or not: `off` never sets a jitterBufferTarget; an
    unknown value is named in the page's stats and console and the default is used."""
    with (
        live_server(["--source", "none", "--stamp"], tmp_path / "serve.log") as server,
        chromium() as browser,
    ):
        pages = {sync: open_viewer(browser, server.url, sync=sync) for sync in ("off", "bogus")}
        warnings: list[str] = []
        pages["bogus"].on("console", lambda message: warnings.append(message.text))
        pages["bogus"].reload()  # the console listener sees the page's start
        pages["bogus"].wait_for_function("window.viewer && window.viewer.ready")
        for page in pages.values():
            click_start(page)
        for page in pages.values():
            wait_connected(page)
        time.sleep(4.0)  # several stats polls: a correction would have had its chances
        stats = {sync: page.evaluate("window.viewer.stats()") for sync, page in pages.items()}
        targets = pages["off"].evaluate(
            "window.viewer.peerConnection().getReceivers().map((r) => r.jitterBufferTarget)"
        )
        measured = pages["off"].evaluate("window.viewer.measurements().syncMode")
        errors = [error for page in pages.values() for error in page.errors]
    _save(test_output, "sync_modes", {"stats": stats, "targets": targets})
    assert not errors, errors
    assert stats["off"]["syncMode"] == measured == "off", stats
    assert stats["off"]["syncWarning"] is None and stats["off"]["syncTrimMs"] == 0, stats
    assert all(target is None for target in targets), targets
    bogus = stats["bogus"]
    assert bogus["syncMode"] == "browser", bogus
    assert "unknown sync=" in bogus["syncWarning"] and "browser" in bogus["syncWarning"], bogus
    assert any("unknown sync=" in text for text in warnings), warnings


def test_the_viewers_microphone_drives_the_avatar(tmp_path: Path, test_output: Path) -> None:
    """browser-mic: Chromium's fake microphone plays speech; it comes back as the avatar's."""
    speech = write_speech(tmp_path / "mic.wav", seconds=6.0)
    with (
        live_server(["--source", "browser-mic"], tmp_path / "serve.log") as server,
        chromium(fake_microphone_args(str(speech))) as browser,
    ):
        page = open_viewer(browser, server.url)
        click_start(page)
        wait_connected(page)
        time.sleep(4.0)
        status = server.status()
        energy = page.evaluate(
            """async () => {
                const report = await window.viewer.peerConnection().getStats();
                let energy = null;
                report.forEach((s) => {
                    if (s.type === 'inbound-rtp' && s.kind === 'audio') energy = s.totalAudioEnergy;
                });
                return energy;
            }"""
        )
        errors = list(page.errors)
    _save(test_output, "browser_microphone", {"server": status, "audio_energy": energy})
    assert not errors, errors
    assert status["source"] == "browser-mic" and status["speaking"], status
    # the viewer hears its own voice back from the avatar: not silence
    assert energy is not None and energy > 1e-3, energy


def _audio_energy(page: Any) -> float:
    return float(
        page.evaluate(
            """async () => {
                const report = await window.viewer.peerConnection().getStats();
                let energy = 0;
                report.forEach((s) => {
                    if (s.type === 'inbound-rtp' && s.kind === 'audio') energy = s.totalAudioEnergy;
                });
                return energy;
            }"""
        )
    )


def test_say_and_interrupt_through_the_command_line(tmp_path: Path) -> None:
    """`presenter say` drives the running server: speech starts at the browser; after
    `say --interrupt` it stops and nothing more is heard."""
    with (
        live_server(["--source", "none"], tmp_path / "serve.log") as server,
        chromium() as browser,
    ):
        assert server.token, "serve printed no control token"
        page = open_viewer(browser, server.url)
        click_start(page)
        wait_connected(page)

        def say(*args: str) -> subprocess.CompletedProcess[str]:
            command = [sys.executable, "-m", "presenter", "say", "--url", server.url]
            return subprocess.run(
                [*command, *args], capture_output=True, text=True, timeout=30, check=False
            )

        refused = say("--token", "wrong", "Hello.")
        assert refused.returncode == 2 and "wrong control token" in refused.stderr
        text = "This first sentence goes on for a good while, on and on. And a second one."
        said = say("--token", server.token, text)
        assert said.returncode == 0 and said.stdout.startswith("utterance "), said.stderr
        page.wait_for_function("window.viewer.stats().activity === 'speaking'", timeout=10_000)
        time.sleep(1.0)
        assert _audio_energy(page) > 0
        stopped = say("--token", server.token, "--interrupt")
        assert stopped.returncode == 0, stopped.stderr
        page.wait_for_function("window.viewer.stats().activity !== 'speaking'", timeout=5_000)
        time.sleep(0.6)  # what was already on its way: the stream delay and the jitter buffer
        quiet = _audio_energy(page)
        time.sleep(3.0)
        later = _audio_energy(page)
        activity = page.evaluate("window.viewer.stats().activity")
        status = server.status()
    assert activity != "speaking" and not status["speaking"], (activity, status)
    assert later - quiet < 1e-4, (quiet, later)  # silence: the second sentence never came


@contextmanager
def _controller(server: Any) -> Iterator[Any]:
    """A control websocket (the server's token), authorised: it gets the bot's events."""
    from websockets.sync.client import connect

    with connect(server.url.replace("http", "ws", 1) + "ws", open_timeout=10) as ws:
        ws.send(json.dumps({"type": "auth", "token": server.token}))
        _until(ws, lambda m: m.get("type") == "auth", 10.0)
        yield ws


def _until(ws: Any, done: Any, seconds: float) -> list[tuple[float, dict[str, Any]]]:
    """Messages (with their arrival time) until one satisfies ``done`` or ``seconds`` pass."""
    received: list[tuple[float, dict[str, Any]]] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = json.loads(ws.recv(timeout=left))
        except TimeoutError:
            break
        received.append((time.monotonic(), message))
        if done(message):
            break
    return received


def test_the_viewer_barges_in_on_the_presenter(tmp_path: Path, test_output: Path) -> None:
    """serve --barge-in: the bot says a long text; the viewer's microphone (Chromium's fake
    one: silence, then speech) interrupts it, the page goes quiet and idle. Then a viewer
    whose microphone is silent hears a short text to its natural end.

    The silence is 9 s: the page's echo canceller (Chromium's AEC3) mutes the microphone
    while the far end speaks until it has decided that there is no echo to cancel (the fake
    microphone has none). Measured: nothing got through for the first ~6.3 s of the bot's
    speech (with echoCancellation off, speech 3 s in did)."""
    import numpy as np

    from engine.speech.espeak import EspeakVoice

    utterance = EspeakVoice().synthesize("Excuse me, can I ask you something about that?")
    rate = utterance.sample_rate
    silence_s = 9.0
    speech = np.concatenate([np.zeros(int(silence_s * rate)), utterance.audio])
    speaking_mic = write_wav(tmp_path / "speaking.wav", speech, rate)
    silent_mic = write_wav(tmp_path / "silent.wav", np.zeros(6 * rate), rate)
    long_text = f"{SPEECH} {SPEECH}"  # six sentences, about 22 s
    short_text = "Here is a short one. It ends by itself."

    def events(received: list[tuple[float, dict[str, Any]]]) -> list[tuple[float, dict]]:
        return [(t, m) for t, m in received if m.get("type") == "event"]

    with live_server(["--source", "none", "--barge-in"], tmp_path / "serve.log") as server:
        assert server.status()["bargeIn"] is True
        # 1: the viewer speaks over the bot
        with (
            chromium(fake_microphone_args(str(speaking_mic))) as browser,
            _controller(server) as ws,
        ):
            page = open_viewer(browser, server.url)
            clicked = time.monotonic()  # the fake microphone starts after this
            click_start(page)
            wait_connected(page)
            ws.send(json.dumps({"type": "say", "text": long_text}))
            said = time.monotonic()
            received = _until(ws, lambda m: m.get("event") == "interrupted", 25.0)
            listening = server.status()["bargeInMicrophones"]
            page.wait_for_function("window.viewer.stats().activity !== 'speaking'", timeout=5000)
            time.sleep(0.6)  # what was already on its way: the stream delay, the jitter buffer
            quiet = _audio_energy(page)
            time.sleep(2.0)
            later = _audio_energy(page)
            activity = page.evaluate("window.viewer.stats().activity")
            errors = list(page.errors)
        first = events(received)
        status = server.status()
        # 2: a silent microphone: the bot says its text to the end
        with chromium(fake_microphone_args(str(silent_mic))) as browser, _controller(server) as ws:
            page = open_viewer(browser, server.url)
            click_start(page)
            wait_connected(page)
            ws.send(json.dumps({"type": "say", "text": short_text}))
            control = events(
                _until(
                    ws,
                    lambda m: (
                        m.get("event") in ("interrupted", "barge-in")
                        or (m.get("event") == "speech ended" and m.get("sentence") == 1)
                    ),
                    20.0,
                )
            )
            control_listening = server.status()["bargeInMicrophones"]
            errors += list(page.errors)
        final = server.status()

    names = [m["event"] for _, m in first]
    barge = next(((t, m) for t, m in first if m["event"] == "barge-in"), None)
    figures = {
        "events": [[round(t - clicked, 2), m["event"], m.get("pts")] for t, m in first],
        "said_after_click_s": round(said - clicked, 2),
        "barge_in_after_click_s": None if barge is None else round(barge[0] - clicked, 2),
        "control_events": [m["event"] for _, m in control],
        "server": final,
    }
    _save(test_output, "barge_in", figures)
    assert not errors, errors
    assert barge is not None, figures
    barge_at, message = barge
    assert message["viewer"] >= 1 and 200 <= message["latencyMs"] <= 320, message
    # after the microphone's speech started (the microphone starts after the click), at its
    # first utterance (not the next time round the file), while the bot spoke: it had
    # started, and was far from its natural end (about 22 s)
    assert silence_s <= barge_at - clicked <= silence_s + 4.0, figures
    assert names.index("speech started") < names.index("barge-in"), names
    interrupted = [m for _, m in first if m["event"] == "interrupted"]
    assert interrupted and interrupted[0]["pts"] == message["pts"], figures
    assert names.count("speech started") < 6, names
    assert listening == 1 and status["bargeIns"] == 1 and not status["speaking"], status
    assert activity != "speaking", activity
    assert later - quiet < 1e-4, (quiet, later)  # nothing stale was spoken afterwards
    # the control: the silent microphone was listened to, and the text ended by itself
    assert control_listening == 1, final
    control_names = [m["event"] for _, m in control]
    assert "barge-in" not in control_names and "interrupted" not in control_names, control_names
    assert control_names.count("speech ended") == 2, control_names
    assert final["bargeIns"] == 1, final
