"""The control API (presenter/bot.py over presenter/server.py): tokens, limits, say and
interrupt with their events, on the real server with the shipped model and espeak-ng."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest

from presenter.bot import BotLimits, split_sentences
from presenter.live import Presenter, PresenterConfig, SourceSpec
from presenter.media import AudioChunk
from presenter.server import PresenterServer
from tests.conftest import ShippedBackends

TOKEN = "test-token"


def test_sentences_are_split_where_the_next_one_starts() -> None:
    text = 'Hello there! Is it 5 p.m. yet? "Yes." It is... 3.14 is pi. (Really.) ok.'
    assert split_sentences(text) == [
        "Hello there!",
        "Is it 5 p.m. yet?",
        '"Yes."',
        "It is...",
        "3.14 is pi.",
        "(Really.) ok.",
    ]
    assert split_sentences("  one line without a stop ") == ["one line without a stop"]
    assert split_sentences("") == []


async def _events_until(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[dict]:
    events: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    while (left := end - loop.time()) > 0:
        try:
            message = json.loads(await asyncio.wait_for(ws.receive_str(), timeout=left))
        except TimeoutError:
            break
        events.append(message)
    return events


async def _until(ws: aiohttp.ClientWebSocketResponse, predicate, seconds: float = 30) -> dict:
    async with asyncio.timeout(seconds):
        while True:
            message = json.loads(await ws.receive_str())
            if predicate(message):
                return message


@contextlib.asynccontextmanager
async def _presenter_served(
    engine: Any, limits: BotLimits | None = None
) -> AsyncIterator[tuple[Presenter, str]]:
    """A presenter (source none) on ``engine`` behind a server with the control token
    ``TOKEN``; yields it and the server's URL."""
    async with Presenter(engine, PresenterConfig(source=SourceSpec("none"))) as presenter:
        if limits is not None:
            presenter.bot.limits = limits
        server = PresenterServer(presenter, port=0, token=TOKEN)
        try:
            yield presenter, await server.start()
        finally:
            await server.close()


@pytest.mark.slow
def test_tokens_limits_say_and_interrupt(shipped_backends: ShippedBackends) -> None:
    parts = shipped_backends.parts(avatar_seconds=0.4)

    async def main() -> None:
        async with _presenter_served(
            parts.engine(output="yuv420p"), BotLimits(max_text_chars=300, max_queued_sentences=3)
        ) as (presenter, url):
            good = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession() as http:
                # refused: no token, wrong token, over a limit, malformed
                refusals = [
                    (None, {"text": "Hi."}, 401, "token"),
                    ({"Authorization": "Bearer nope"}, {"text": "Hi."}, 403, "wrong"),
                    (good, {"text": "x" * 301}, 400, "over the limit of 300"),
                    (good, {"text": "Hi.", "rate": 9000}, 400, "rate"),
                    (good, {"text": "Hi.", "voice": "xx-nowhere"}, 400, "voice"),
                    (good, {"text": ""}, 400, "non-empty"),
                    (good, ["Hi."], 400, "JSON object"),
                    (good, {"text": "A. B. C. D."}, 400, "limit of 3"),
                ]
                for headers, body, status, words in refusals:
                    async with http.post(url + "api/say", json=body, headers=headers) as r:
                        assert r.status == status, (body, await r.text())
                        error = (await r.json())["error"]
                        assert words in error and "\n" not in error, error
                async with http.post(url + "api/say", data=b"x" * (300 * 1024), headers=good) as r:
                    assert r.status == 413
                async with http.get(url + "api/status") as r:
                    assert r.status == 401
                stats = presenter.stream.stats
                # the stream went on: audio on time, frames again (the first ones of a cold
                # engine may be dropped, so give it a few seconds)
                for _ in range(50):
                    await asyncio.sleep(0.1)
                    later = presenter.stream.stats
                    if later.frames_emitted > stats.frames_emitted:
                        break
                assert presenter.stream.running
                assert later.frames_emitted > stats.frames_emitted, later
                assert later.audio_chunks > stats.audio_chunks, later
                assert presenter.bot.queued_sentences == 0  # nothing was queued

                async with http.ws_connect(url + "ws") as ws:
                    await ws.send_str(json.dumps({"type": "say", "text": "Hi."}))
                    refused = await _until(ws, lambda m: m["type"] == "error")
                    assert "token" in refused["message"]
                    await ws.send_str(json.dumps({"type": "auth", "token": TOKEN}))
                    await _until(ws, lambda m: m["type"] == "auth")
                    first = "This first sentence is long enough to be cut off halfway."
                    await ws.send_str(
                        json.dumps({"type": "say", "text": f"{first} And a second one."})
                    )
                    said = await _until(ws, lambda m: m["type"] == "said")
                    started = await _until(ws, lambda m: m.get("event") == "speech started")
                    assert started["utterance"] == said["utterance"]
                    assert started["sentence"] == 0
                    words = await _until(ws, lambda m: m.get("event") == "word")
                    assert words["word"] and words["pts"] >= started["pts"]
                    await asyncio.sleep(0.5)
                    await ws.send_str(json.dumps({"type": "interrupt"}))
                    after = await _events_until(ws, 3.0)
                async with http.get(url + "api/status", headers=good) as r:
                    status = await r.json()
        reply = next(m for m in after if m["type"] == "interrupted")
        ends = [m for m in after if m.get("event") == "interrupted"]
        assert [m["sentence"] for m in ends] == [0, 1], after
        # at rest from the next frame boundary: within one frame of the call
        assert all(m["pts"] == reply["restAt"] for m in ends)
        assert reply["restAt"] % 1920 == 0
        # nothing more is spoken: no sentence starts, no word from the rest point on
        assert not [m for m in after if m.get("event") == "speech started"], after
        # a controller gets each start / end once: as an event, not also as a page's segment
        assert not [m for m in after if m["type"] == "segment"], after
        late = [m for m in after if m.get("event") == "word" and m["pts"] >= reply["restAt"]]
        assert not late, after
        assert status["queuedSentences"] == 0 and not status["speaking"]

    asyncio.run(main())


@pytest.mark.slow
def test_set_style_over_the_api(shipped_backends: ShippedBackends) -> None:
    parts = shipped_backends.parts(avatar_seconds=0.4)
    style_dim = parts.model.motion.config.style_dim
    coefficients = parts.model.motion.config.num_coefficients

    async def main() -> None:
        engine = parts.engine(output="yuv420p")
        own_rest = engine.rest
        async with _presenter_served(engine, BotLimits(max_reference_frames=100)) as (
            presenter,
            url,
        ):
            good = {"Authorization": f"Bearer {TOKEN}"}
            async with aiohttp.ClientSession() as http:
                refusals = [
                    (None, {}, 401, "token"),
                    (good, {"subject": "nobody"}, 400, "no style for 'nobody'"),
                    (good, {"code": [0.1, 0.2]}, 400, f"({style_dim},)"),
                    (good, {"code": ["a"] * style_dim}, 400, "list of numbers"),
                    (good, {"code": [1e40] * style_dim}, 400, "finite"),
                    (good, {"reference": [[0.0] * 3] * 10}, 400, f"(T, {coefficients})"),
                    (good, {"reference": [[0.0] * coefficients] * 101}, 400, "limit of 100"),
                    (good, {"code": [0.0] * style_dim, "subject": "x"}, 400, "one of"),
                    (good, {"colour": "red"}, 400, "one of"),
                    (good, ["code"], 400, "JSON object"),
                ]
                for headers, body, status, words in refusals:
                    async with http.post(url + "api/style", json=body, headers=headers) as r:
                        assert r.status == status, (body, await r.text())
                        error = (await r.json())["error"]
                        assert words in error and "\n" not in error, error
                assert np.array_equal(engine.rest, own_rest)  # nothing changed
                code = [0.5] * style_dim
                async with http.post(url + "api/style", json={"code": code}, headers=good) as r:
                    assert r.status == 200 and (await r.json()) == {"style": "code"}
                coded_rest = engine.rest
                assert not np.allclose(coded_rest, own_rest)
                async with http.get(url + "api/status", headers=good) as r:
                    assert (await r.json())["style"] == "code"
                reference = np.tile(own_rest, (50, 1)).tolist()
                async with http.post(
                    url + "api/style", json={"reference": reference}, headers=good
                ) as r:
                    assert r.status == 200 and (await r.json()) == {"style": "reference"}
                async with http.ws_connect(url + "ws", headers=good) as ws:
                    await ws.send_str(json.dumps({"type": "set_style", "style": None}))
                    reply = await _until(ws, lambda m: m["type"] in ("style", "error"))
                assert reply == {"type": "style", "style": "default-avatar"}
                assert np.allclose(engine.rest, own_rest)
                for _ in range(50):  # the stream went on (a cold engine may drop a few)
                    if presenter.stream.stats.frames_emitted:
                        break
                    await asyncio.sleep(0.1)
                assert presenter.stream.running and presenter.stream.stats.frames_emitted

    asyncio.run(main())


@pytest.mark.slow
def test_piper_voice_with_word_and_phone_events(shipped_backends: ShippedBackends) -> None:
    pytest.importorskip("piper", reason="Piper is the optional 'piper' extra")
    parts = shipped_backends.parts(avatar_seconds=0.4)

    async def main() -> list[dict[str, Any]]:
        async with _presenter_served(parts.engine(output="yuv420p")) as (presenter, url):
            audio = presenter.stream.subscribe(video=False)
            heard: list[AudioChunk] = []

            async def listen() -> None:
                async for chunk in audio.audio():
                    heard.append(chunk)

            listener = asyncio.get_running_loop().create_task(listen())
            try:
                async with aiohttp.ClientSession() as http, http.ws_connect(url + "ws") as ws:
                    await ws.send_str(json.dumps({"type": "auth", "token": TOKEN}))
                    await _until(ws, lambda m: m["type"] == "auth")
                    unknown = {"type": "say", "text": "Hi.", "voice": "piper:nobody"}
                    await ws.send_str(json.dumps(unknown))
                    refused = await _until(ws, lambda m: m["type"] == "error")
                    assert "unknown Piper voice 'nobody'" in refused["message"]
                    text = "Hello there, nice to meet you."
                    await ws.send_str(json.dumps({"type": "say", "text": text, "voice": "piper"}))
                    events = [await _until(ws, lambda m: m.get("event") == "speech started")]
                    while events[-1].get("event") != "speech ended":
                        events.append(await _until(ws, lambda m: m["type"] == "event"))
            finally:
                audio.close()
                await asyncio.gather(listener, return_exceptions=True)
            pcm = np.concatenate([chunk.pcm for chunk in heard])
            first = heard[0].pts  # contiguous from there (the stream's audio has no gaps)
            started, ended = events[0], events[-1]
            # the speech is in the stream's audio between its start and end samples
            lo, hi = started["pts"] - first, ended["pts"] - first
            inside = float(np.sqrt(np.mean(pcm[max(lo, 0) : hi] ** 2)))
            assert inside > 0.02, inside
            return events

    events = asyncio.run(main())
    started, ended = events[0], events[-1]
    words = [e for e in events if e["event"] == "word"]
    assert [w["word"] for w in words] == ["Hello", "there", "nice", "to", "meet", "you"]
    assert all(started["pts"] <= w["pts"] < ended["pts"] for w in words)
    phones = started["phones"]
    assert phones[0][1] == started["pts"] and abs(phones[-1][2] - ended["pts"]) <= 960
    labels = [label for label, _, _ in phones if label != "SIL"]
    assert labels[:4] == ["HH", "AH", "L", "OW"], labels
