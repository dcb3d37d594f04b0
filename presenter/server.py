"""The presenter's HTTP and websocket server (aiohttp): the viewer page, signaling, status.

Routes
------
- ``GET /``: the viewer (``web/index.html``); ``GET /web/<file>``: its scripts and styles.
- ``GET /ws``: a websocket per page. The server sends ``hello`` (ICE servers, source,
  ``bargeIn`` (the page then sends its microphone), timing constants, the stamp layout
  when stamping), then a ``clock`` message every second (stream samples -> wall clock,
  for glass-to-glass measurement) and ``segment`` events
  (speech started / ended, with the stream sample at which they are heard). The page sends
  ``offer`` (SDP, non-trickle) and gets ``answer``; a new offer replaces the page's viewer.
  A malformed or unknown message gets one ``error`` line back; the page, the other pages
  and the stream go on.
- ``GET /status``: JSON: viewers, source, whether barge-in is on (barge-ins so far,
  microphones listened to), frames emitted, dropped and encoded, the engine (``model`` or
  ``prerendered``).
- Control (``presenter.bot``), every call with ``Authorization: Bearer TOKEN``:
  ``POST /api/say`` ``{"text", "voice"?, "rate"?}`` -> ``{"utterance": id}``,
  ``POST /api/interrupt`` -> ``{"restAt": sample}``, ``POST /api/style`` ``{}`` |
  ``{"subject"}`` | ``{"code"}`` | ``{"reference"}`` -> ``{"style": name}``,
  ``GET /api/status``, ``GET /api/trace?since=K`` (the frames after ``K`` of the stream's
  per-frame trace, :mod:`presenter.trace`, with ``delayMs``, ``renderBudgetMs`` and
  ``engine``). On the websocket the same as messages (``say``, ``interrupt``,
  ``set_style`` with ``"style"``, ``status``) once the page sent
  ``{"type": "auth", "token": ...}`` (or its upgrade request carried the header); an
  authorised websocket gets the speech events (``{"type": "event", ...}``: started, word,
  ended, interrupted, with utterance and sentence) instead of ``segment`` messages, and with
  ``serve --barge-in`` each barge-in (``"event": "barge-in"``, the viewer, the ``pts`` the
  avatar is at rest from). A call
  without the token gets 401, with a wrong one 403, over a limit 400 (or 413 for a body over
  256 kB), each with a one-line ``error``; the stream goes on.
- Websockets from another origin than the page's (``Origin`` header) are refused (403)
  unless listed in ``allowed_origins``.

aiohttp rather than the ``websockets`` package: one server on one port serves the page, the
websocket and plain HTTP endpoints (``websockets`` answers only the upgrade GET), and it is
already what aiortc's own examples are written against.

No module-level mutable state: a :class:`PresenterServer` holds its presenter and runner.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from aiohttp import WSMsgType, web

from presenter.errors import USER_ERRORS, PresenterError
from presenter.live import Presenter, Viewer
from presenter.media import SegmentEnd, SegmentEvent, SegmentStart
from presenter.subscription import StreamClosed

log = logging.getLogger(__name__)

WEB_ROOT = Path(__file__).resolve().parent.parent / "web"
MAX_MESSAGE_BYTES = 256 * 1024  # an SDP offer is a few kB
CLOCK_INTERVAL_S = 1.0
TRACE_PIECE = 50  # frames of /api/trace written out at a time


def _segment_message(event: SegmentEvent) -> dict[str, Any]:
    if isinstance(event, SegmentStart):
        return {"type": "segment", "event": "start", "name": event.name, "pts": event.pts}
    assert isinstance(event, SegmentEnd)
    message: dict[str, Any] = {
        "type": "segment",
        "event": "end",
        "name": event.name,
        "pts": event.pts,
        "interrupted": event.interrupted,
    }
    if event.error is not None:
        message["error"] = event.error
    return message


class PresenterServer:
    """Serves one :class:`Presenter` on ``host:port`` (``port=0``: any free port)."""

    def __init__(
        self,
        presenter: Presenter,
        *,
        host: str = "127.0.0.1",
        port: int = 8080,
        web_root: Path = WEB_ROOT,
        token: str | None = None,
        allowed_origins: tuple[str, ...] = (),
    ) -> None:
        if not (web_root / "index.html").is_file():
            raise PresenterError(f"the viewer page is missing: {web_root / 'index.html'}")
        self.presenter = presenter
        self.token = token or secrets.token_urlsafe(24)  # control calls need it
        self.allowed_origins = tuple(origin.rstrip("/") for origin in allowed_origins)
        self.host = host
        self.port = port
        self.web_root = web_root
        self._runner: web.AppRunner | None = None
        self._pages: set[web.WebSocketResponse] = set()

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "") else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def app(self) -> web.Application:
        app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
        app.router.add_get("/", self._index)
        app.router.add_get("/ws", self._websocket)
        app.router.add_get("/status", self._status)
        app.router.add_post("/api/say", self._api_say)
        app.router.add_post("/api/interrupt", self._api_interrupt)
        app.router.add_post("/api/style", self._api_style)
        app.router.add_get("/api/status", self._api_status)
        app.router.add_get("/api/trace", self._api_trace)
        app.router.add_static("/web", self.web_root, show_index=False)
        return app

    async def start(self) -> str:
        """Listen; returns the page's URL."""
        runner = web.AppRunner(self.app(), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            raise PresenterError(f"cannot listen on {self.host}:{self.port}: {exc}") from exc
        self._runner = runner
        server = getattr(site, "_server", None)
        sockets = getattr(server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        return self.url

    async def close(self) -> None:
        for page in list(self._pages):
            with contextlib.suppress(Exception):
                await page.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # -- handlers ---------------------------------------------------------------------------
    async def _index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(self.web_root / "index.html", headers={"Cache-Control": "no-cache"})

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.presenter.status())

    # -- control over HTTP ----------------------------------------------------------------
    def token_matches(self, token: object) -> bool:
        """Whether ``token`` is the control token (compared in constant time, as bytes: any
        text a client sends is compared, not only ASCII)."""
        return isinstance(token, str) and secrets.compare_digest(
            token.encode(), self.token.encode()
        )

    def authorised(self, request: web.Request) -> None:
        """Raises 401 without an ``Authorization: Bearer`` header, 403 with a wrong token."""
        token = _bearer(request)
        if token is None:
            raise _refuse(401, "this call needs the control token: Authorization: Bearer TOKEN")
        if not self.token_matches(token):
            raise _refuse(403, "wrong control token")

    async def _api_say(self, request: web.Request) -> web.Response:
        self.authorised(request)
        body = await _json_object(request, "a JSON object with 'text'")
        try:
            utterance = self.presenter.bot.say(
                body.get("text"), voice=body.get("voice"), rate=body.get("rate")
            )
        except USER_ERRORS as exc:
            raise _refuse(400, str(exc)) from exc
        return web.json_response({"utterance": utterance})

    async def _api_interrupt(self, request: web.Request) -> web.Response:
        self.authorised(request)
        return web.json_response({"restAt": self.presenter.bot.interrupt()})

    async def _api_style(self, request: web.Request) -> web.Response:
        self.authorised(request)
        body = await _json_object(
            request, "a JSON object: {}, {'subject'}, {'code'}, {'reference'}"
        )
        try:
            style = await self.presenter.bot.set_style(body)
        except USER_ERRORS as exc:
            raise _refuse(400, str(exc)) from exc
        return web.json_response({"style": style})

    async def _api_status(self, request: web.Request) -> web.Response:
        self.authorised(request)
        return web.json_response({**self.presenter.status(), **self.presenter.bot.status()})

    async def _api_trace(self, request: web.Request) -> web.StreamResponse:
        self.authorised(request)
        text = request.query.get("since", "-1")
        try:
            since = int(text)
        except ValueError:
            raise _refuse(400, f"since must be a frame index (an integer), not {text!r}") from None
        # Up to 3000 frames take tens of ms to write out: a piece at a time, so that the event
        # loop (the stream's clock, the encoders, the viewers) is never held up for long.
        trace = self.presenter.stream.trace
        rows = trace.select(since) if trace is not None else None
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        await response.write(b'{"frames": [')
        if rows is not None:
            for start in range(0, len(rows), TRACE_PIECE):
                piece = json.dumps(rows.frames(start, start + TRACE_PIECE))[1:-1]
                await response.write(("," if start else "").encode() + piece.encode())
                await asyncio.sleep(0)
        await response.write(b"], " + json.dumps(self.presenter.trace_timing())[1:].encode())
        await response.write_eof()
        return response

    def _same_origin(self, request: web.Request) -> bool:
        origin = request.headers.get("Origin")
        if origin is None:  # not a browser: the token guards control
            return True
        origin = origin.rstrip("/")
        if origin in self.allowed_origins:
            return True
        return urlsplit(origin).netloc == request.host

    async def _websocket(self, request: web.Request) -> web.WebSocketResponse:
        if not self._same_origin(request):
            raise _refuse(403, f"websocket from origin {request.headers.get('Origin')} refused")
        page = web.WebSocketResponse(heartbeat=20.0, max_msg_size=MAX_MESSAGE_BYTES)
        await page.prepare(request)
        self._pages.add(page)
        session = _PageSession(self, page, request.remote or "?")
        session.controller = self.token_matches(_bearer(request))
        try:
            await session.run()
        finally:
            self._pages.discard(page)
            await session.close()
        return page


async def _json_object(request: web.Request, what: str) -> dict[str, Any]:
    """The request's body, which must be a JSON object (else 400 saying it must be ``what``)."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _refuse(400, f"the body must be JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _refuse(400, f"the body must be {what}")
    return body


def _bearer(request: web.Request) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, if there is one."""
    header = request.headers.get("Authorization", "")
    return header[len("Bearer ") :].strip() if header.startswith("Bearer ") else None


def _refuse(status: int, message: str) -> web.HTTPException:
    """An HTTP error with a one-line JSON ``error``."""
    kinds: dict[int, type[web.HTTPException]] = {
        400: web.HTTPBadRequest,
        401: web.HTTPUnauthorized,
        403: web.HTTPForbidden,
    }
    return kinds[status](text=json.dumps({"error": message}), content_type="application/json")


class _PageSession:
    """One page's websocket: its viewer, its clock and event forwarding; control calls once
    authorised."""

    def __init__(self, server: PresenterServer, page: web.WebSocketResponse, peer: str) -> None:
        self.presenter = presenter = server.presenter
        self.page = page
        self.peer = peer
        self.server = server
        self.controller = False  # sent the control token
        self._control_events: asyncio.Task[None] | None = None
        self.viewer: Viewer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._events = presenter.stream.subscribe(audio=False, video=False)

    async def run(self) -> None:
        await self._send(self.presenter.hello())
        await self._send(self.presenter.clock_message())
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._clock(), name="page-clock"),
            loop.create_task(self._forward_events(), name="page-events"),
        ]
        async for message in self.page:
            if message.type == WSMsgType.TEXT:
                await self._handle(message.data)
            elif message.type == WSMsgType.ERROR:
                log.debug("page %s: websocket error %s", self.peer, self.page.exception())
                break
            else:
                await self._error("send JSON text messages")

    async def close(self) -> None:
        if self._control_events is not None:
            self._tasks.append(self._control_events)
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._events.close("page closed")
        if self.viewer is not None:
            await self.presenter.disconnect(self.viewer)
            self.viewer = None

    async def _handle(self, text: str) -> None:
        try:
            message = json.loads(text)
        except json.JSONDecodeError as exc:
            await self._error(f"not JSON: {exc.msg}")
            return
        if not isinstance(message, dict):
            await self._error("a message is a JSON object with a 'type'")
            return
        kind = message.get("type")
        try:
            if kind == "offer":
                await self._offer(message)
            elif kind == "status":
                status = self.presenter.status()
                if self.controller:
                    status.update(self.presenter.bot.status())
                await self._send({"type": "status", **status})
            elif kind == "auth":
                await self._auth(message)
            elif kind in ("say", "interrupt", "set_style"):
                await self._control(kind, message)
            else:
                await self._error(f"unknown message type {kind!r}")
        except USER_ERRORS as exc:
            await self._error(str(exc))

    async def _auth(self, message: dict[str, Any]) -> None:
        token = message.get("token")
        if not self.server.token_matches(token):
            await self._error("wrong control token")
            return
        self.controller = True
        await self._send({"type": "auth", "ok": True})
        self._start_control_events()

    async def _control(self, kind: str, message: dict[str, Any]) -> None:
        if not self.controller:
            raise PresenterError(f"{kind} needs the control token: send {{'type': 'auth'}} first")
        self._start_control_events()
        bot = self.presenter.bot
        if kind == "say":
            utterance = bot.say(
                message.get("text"), voice=message.get("voice"), rate=message.get("rate")
            )
            await self._send({"type": "said", "utterance": utterance})
        elif kind == "set_style":
            style = await bot.set_style(message.get("style"))
            await self._send({"type": "style", "style": style})
        else:
            await self._send({"type": "interrupted", "restAt": bot.interrupt()})

    def _start_control_events(self) -> None:
        if self._control_events is None:
            loop = asyncio.get_running_loop()
            self._control_events = loop.create_task(self._forward_control_events())

    async def _forward_control_events(self) -> None:
        async def forward(events: AsyncIterator[dict[str, Any]]) -> None:
            async for event in events:
                await self._send(event)

        streams = [self.presenter.bot.events()]
        if self.presenter.barge_in is not None:
            streams.append(self.presenter.barge_in.events())
        await asyncio.gather(*(forward(events) for events in streams))

    async def _offer(self, message: dict[str, Any]) -> None:
        sdp = message.get("sdp")
        if not isinstance(sdp, str) or not sdp.startswith("v=0"):
            raise PresenterError("an offer needs 'sdp': the session description text")
        if self.viewer is not None:  # a reconnect on the same page: the old one goes
            await self.presenter.disconnect(self.viewer)
            self.viewer = None
        viewer, answer = await self.presenter.connect(
            sdp, microphone=bool(message.get("microphone", False))
        )
        self.viewer = viewer
        await self._send({"type": "answer", "sdp": answer})

    async def _clock(self) -> None:
        while True:
            await asyncio.sleep(CLOCK_INTERVAL_S)
            await self._send(self.presenter.clock_message())

    async def _forward_events(self) -> None:
        with contextlib.suppress(StreamClosed):
            while True:
                event = await self._events.next_event()
                if not self.controller:  # a controller gets the bot's events instead
                    await self._send(_segment_message(event))

    async def _error(self, text: str) -> None:
        log.info("page %s: %s", self.peer, text)
        await self._send({"type": "error", "message": text})

    async def _send(self, message: dict[str, Any]) -> None:
        if self.page.closed:
            return
        with contextlib.suppress(ConnectionError, RuntimeError):
            await self.page.send_str(json.dumps(message))
