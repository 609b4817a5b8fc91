"""A small real aiohttp server that speaks the gateway's access-control contract.

The clients in clients/ are tested against it over loopback while the gateway's
own access control is being built; it answers what the gateway will:

* a stream request needs a token: ``Authorization: Bearer <token>``, a cookie
  ``streamgate_token``, or ``?token=``. Missing or unknown: **401**
  ``{"error":"unauthorized",...}`` with ``WWW-Authenticate: Bearer``; a topic in
  ``forbidden_topics``: **403** ``{"error":"forbidden",...}``; a WebSocket
  handshake is refused with the same status;
* each topic holds ``total`` messages with ids ``1-0``, ``2-0``, ... and data
  ``{"n": i}``; ``since=`` (or ``Last-Event-ID`` for SSE) resumes after an id;
* a connection's token "expires" after ``per_token`` messages: the stream ends
  with ``goodbye`` ``token_expired`` (WebSocket: that frame, then close 4003)
  and, with ``revoke_on_expiry``, the token is refused from then on, so a
  client must come back with a fresh one. Once every message is out the stream
  ends with ``end`` (WebSocket close 1000).

Every request is recorded in :attr:`TokenServer.seen` (transport, token and how
it came, the resume point, the status answered).

With ``page=True`` it also serves the gateway's page (``gateway/static``), the
topic's history (``GET /topics/{topic}/messages``) and a stand-in for
publishing (``POST /topics/{topic}``: recorded, answered 201, not streamed),
and lists the topic as empty, so the page's columns all start from ``0-0``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiohttp import WSCloseCode, web

__all__ = ["Seen", "TokenServer", "token_server"]

STATIC = Path(__file__).resolve().parent.parent / "gateway" / "static"


@dataclass
class Seen:
    """One request as the server saw it."""

    transport: str  # chunked, sse, ws, topics, messages or publish
    topic: str
    token: str | None
    via: str | None  # header, cookie or query
    since: str | None  # since= or Last-Event-ID
    status: int


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


class TokenServer:
    """The contract above; change :attr:`valid` at any time."""

    def __init__(
        self,
        *,
        total: int = 6,
        per_token: int | None = None,
        valid: Iterable[str] = (),
        forbidden_topics: Iterable[str] = ("secret",),
        reconnect_ms: int = 0,
        sse_retry_ms: int = 5000,
        revoke_on_expiry: bool = True,
        ws_goodbye_frame: bool = True,
        page: bool = False,
    ) -> None:
        self.total = total
        self.per_token = per_token
        self.valid = set(valid)
        self.forbidden_topics = set(forbidden_topics)
        self.reconnect_ms = reconnect_ms
        self.sse_retry_ms = sse_retry_ms
        self.revoke_on_expiry = revoke_on_expiry
        self.ws_goodbye_frame = ws_goodbye_frame
        self.page = page
        # While set to an unset Event, stream requests wait for it before anything is checked.
        self.gate: asyncio.Event | None = None
        self.seen: list[Seen] = []
        self.url = ""
        self.ws_url = ""

    def tokens(self, transport: str | None = None) -> list[str | None]:
        """The token of every stream request (of one transport), in order."""
        streams = ("chunked", "sse", "ws")
        return [
            s.token
            for s in self.seen
            if s.transport in streams and transport in (None, s.transport)
        ]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/chunked/{topic}", self.chunked)
        app.router.add_get("/sse/{topic}", self.sse)
        app.router.add_get("/ws/{topic}", self.ws)
        app.router.add_get("/topics", self.topics)
        if self.page:
            app.router.add_get("/", self.index)
            app.router.add_static("/static/", STATIC)
            app.router.add_get("/topics/{topic}/messages", self.messages)
            app.router.add_post("/topics/{topic}", self.publish)
        return app

    # -- the contract ---------------------------------------------------------------

    def _check(
        self, request: web.Request, transport: str, since: str | None
    ) -> tuple[web.Response | None, str | None, int]:
        """(error response or None, the token, where to start)."""
        topic = request.match_info.get("topic", "")
        token, via = None, None
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token, via = auth[len("Bearer ") :], "header"
        elif "streamgate_token" in request.cookies:
            token, via = request.cookies["streamgate_token"], "cookie"
        elif "token" in request.query:
            token, via = request.query["token"], "query"
        status, error = 200, None
        if token is None or token not in self.valid:
            status = 401
            error = web.json_response(
                {"error": "unauthorized", "message": "missing, invalid or expired token"},
                status=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        elif topic in self.forbidden_topics:
            status = 403
            error = web.json_response(
                {"error": "forbidden", "message": f"this token may not read {topic!r}"},
                status=403,
            )
        start = 0
        if error is None and since:
            try:
                start = int(since.partition("-")[0])
            except ValueError:
                status = 400
                error = web.json_response(
                    {"error": "bad_id", "message": f"bad id {since!r}"}, status=400
                )
        self.seen.append(Seen(transport, topic, token, via, since, status))
        return error, token, start

    def _message(self, topic: str, i: int) -> str:
        return _dumps(
            {"id": f"{i}-0", "topic": topic, "ts": time.time() * 1000.0, "data": {"n": i}}
        )

    def _plan(self, topic: str, start: int, token: str | None) -> tuple[list[str], str, str]:
        """The messages one connection gets, then its last control event: (type, JSON)."""
        stop = self.total if self.per_token is None else min(self.total, start + self.per_token)
        msgs = [self._message(topic, i) for i in range(start + 1, stop + 1)]
        last_id = f"{stop}-0" if stop > 0 else None
        if stop >= self.total:
            return msgs, "end", _dumps({"type": "end", "reason": "limit", "last_id": last_id})
        if self.revoke_on_expiry and token is not None:
            self.valid.discard(token)
        goodbye = {
            "type": "goodbye",
            "reason": "token_expired",
            "reconnect_ms": self.reconnect_ms,
            "last_id": last_id,
        }
        return msgs, "goodbye", _dumps(goodbye)

    # -- transports -------------------------------------------------------------------

    async def _wait_at_gate(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def chunked(self, request: web.Request) -> web.StreamResponse:
        await self._wait_at_gate()
        error, token, start = self._check(request, "chunked", request.query.get("since"))
        if error is not None:
            return error
        topic = request.match_info["topic"]
        msgs, kind, last = self._plan(topic, start, token)
        as_array = request.query.get("format") == "json"
        resp = web.StreamResponse()
        resp.content_type = "application/json" if as_array else "application/x-ndjson"
        await resp.prepare(request)
        if as_array:
            # The array has no end event: the closing ] is the end.
            items = msgs if kind == "end" else [*msgs, last]
            await resp.write(("[" + ",\n".join(items) + "]\n").encode())
        else:
            await resp.write("".join(line + "\n" for line in [*msgs, last]).encode())
        await resp.write_eof()
        return resp

    async def sse(self, request: web.Request) -> web.StreamResponse:
        await self._wait_at_gate()
        since = request.headers.get("Last-Event-ID") or request.query.get("since")
        error, token, start = self._check(request, "sse", since)
        if error is not None:
            return error
        topic = request.match_info["topic"]
        msgs, kind, last = self._plan(topic, start, token)
        resp = web.StreamResponse()
        resp.content_type = "text/event-stream"
        await resp.prepare(request)
        # A long retry: a client that waited for it after token_expired would be slow.
        out = [f"retry: {self.sse_retry_ms}\n"]
        for raw in msgs:
            out.append(f"id: {json.loads(raw)['id']}\ndata: {raw}\n\n")
        out.append(f"event: {kind}\ndata: {last}\n\n")
        await resp.write("".join(out).encode())
        await resp.write_eof()
        return resp

    async def ws(self, request: web.Request) -> web.StreamResponse:
        await self._wait_at_gate()
        error, token, start = self._check(request, "ws", request.query.get("since"))
        if error is not None:
            return error
        topic = request.match_info["topic"]
        msgs, kind, last = self._plan(topic, start, token)
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        for raw in msgs:
            await ws.send_str(raw)
        if kind == "end":
            await ws.send_str(last)
            await ws.close(code=WSCloseCode.OK, message=b"complete")
        else:
            if self.ws_goodbye_frame:
                await ws.send_str(last)
            await ws.close(code=4003, message=b"token expired")
        return ws

    async def topics(self, request: web.Request) -> web.StreamResponse:
        error, _, _ = self._check(request, "topics", None)
        if error is not None:
            return error
        last_id = f"{self.total}-0" if self.total and not self.page else None
        topic = {
            "name": "news",
            "kind": "shared",
            "first_id": None,
            "last_id": last_id,
            "length": 0,
            "subscribers": {"chunked": 0, "sse": 0, "ws": 0},
        }
        return web.json_response({"topics": [topic], "streams": []})

    # -- for the page ------------------------------------------------------------------

    async def index(self, request: web.Request) -> web.StreamResponse:
        return web.FileResponse(STATIC / "index.html")

    async def messages(self, request: web.Request) -> web.StreamResponse:
        error, _, start = self._check(request, "messages", request.query.get("since"))
        if error is not None:
            return error
        topic = request.match_info["topic"]
        stop = min(self.total, start + int(request.query.get("limit", "100")))
        msgs = [json.loads(self._message(topic, i)) for i in range(start + 1, stop + 1)]
        return web.json_response(
            {
                "topic": topic,
                "gap": False,
                "first_id": "1-0" if self.total else None,
                "last_id": f"{self.total}-0" if self.total else None,
                "messages": msgs,
            }
        )

    async def publish(self, request: web.Request) -> web.StreamResponse:
        error, _, _ = self._check(request, "publish", None)
        if error is not None:
            return error
        await request.read()
        return web.json_response(
            {"id": f"{self.total + 1000}-0", "topic": request.match_info["topic"]}, status=201
        )


@contextlib.asynccontextmanager
async def token_server(**kw: Any) -> AsyncIterator[TokenServer]:
    """``async with token_server(per_token=2, valid={"t1"}) as srv:`` on 127.0.0.1."""
    srv = TokenServer(**kw)
    runner = web.AppRunner(srv.app(), handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    srv.url = f"http://127.0.0.1:{port}"
    srv.ws_url = f"ws://127.0.0.1:{port}"
    try:
        yield srv
    finally:
        await runner.cleanup()
