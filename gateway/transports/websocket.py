"""``GET /ws/{topic}``: WebSocket (RFC 6455), one text frame per message.

The client may send JSON commands (``ping``, ``publish``); a bad one gets an
``error`` frame and the connection stays open. Message frames are written by
the stream from bytes shared with every other WebSocket subscriber, pings by
the gateway's heartbeat loop; aiohttp does the opening and closing handshakes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.http import HttpVersion11

from .. import aiohttp_compat, errors, jsonvalue
from ..context import CONTEXT, Context
from ..errors import BadRequest, Disconnect, Forbidden, StreamgateError, Unauthorized
from ..framing import WS_PING, WS_PONG_OPCODE, Format, Wire, control_json, ws_frame
from ..origins import ORIGINS
from ..responses import error_response
from .common import OpenStream, StreamRequest, begin, open_stream, parse_stream_request
from .stream import Stream

__all__ = ["WSStream", "handle_ws"]

log = logging.getLogger(__name__)

WS_WIRE = Wire.of(Format.WS, False)

FRAME_OVERHEAD = 1024
"""Room for the command envelope around a publish's data."""


class _PublishBudget:
    """Token buckets for one client's publishes: ``tokens`` allows ``rate`` a
    second (as a burst too); ``refused`` drains at the same rate, and a client
    whose refusals fill it (more than twice the rate, kept up) is cut off."""

    __slots__ = ("refused", "stamp", "tokens")

    def __init__(self, rate: float, now: float) -> None:
        self.tokens = rate
        self.refused = 0.0
        self.stamp = now

    def take(self, rate: float, now: float) -> bool:
        elapsed = now - self.stamp
        self.stamp = now
        self.tokens = min(rate, self.tokens + elapsed * rate)
        self.refused = max(0.0, self.refused - elapsed * rate)
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        self.refused += 1.0
        return False


class WSStream(Stream):
    """A WebSocket stream and its session: the subscription or the generator's
    pump, the commands the client sends, and the ending.

    The handler's task reads the client's frames for the whole session; nothing
    else runs for an idle WebSocket on a shared topic. When the server ends the
    stream, the ending (final frame, close handshake, deadline) runs in a task
    of its own, which the close handshake lets the reader see.
    """

    transport_name = "ws"
    fmt = Format.WS
    __slots__ = ("_budget", "_reading", "closer", "last_pong", "pinged_at")

    def __init__(self, request: web.Request, ws: web.WebSocketResponse, ctx: Context) -> None:
        super().__init__(request, ws, ctx, WS_WIRE)
        self.pinged_at = 0.0
        self.last_pong = 0.0
        self.closer: asyncio.Task[None] | None = None
        self._budget: _PublishBudget | None = None
        self._reading = False

    def beat(self, now: float) -> None:
        """A client that has not answered a ping within an interval is dead,
        busy stream or not; an idle stream then gets a new ping."""
        if self.closed:
            return
        pinged = self.pinged_at
        if pinged and self.last_pong < pinged:
            # Visits come every half interval: the one a whole interval after the ping.
            if now - pinged > 0.75 * self.ctx.settings.heartbeat:
                self.close(errors.HEARTBEAT_TIMEOUT)
            return
        super().beat(now)

    def heartbeat(self, now: float) -> None:
        self.pinged_at = now
        self.write_raw(WS_PING)

    def close(self, reason: Disconnect) -> None:
        if self.closed:
            return
        super().close(reason)
        if reason is not errors.CLIENT_GONE and self._reading:
            # Not from inside the hub's sweep that may have called this.
            self.loop.call_soon(self._start_ending)

    def _start_ending(self) -> None:
        if self.closer is None:
            self.closer = asyncio.ensure_future(self.finish())

    async def terminate(self, reason: Disconnect) -> None:
        ws = self.response
        assert isinstance(ws, web.WebSocketResponse)
        await ws.close(code=reason.ws_code, message=reason.reason.encode())

    async def serve(
        self, request: web.Request, req: StreamRequest, opened: OpenStream | None
    ) -> None:
        """The session: ``request`` is the handshake, whose credentials each
        ``publish`` command is checked with."""
        ws = self.response
        assert isinstance(ws, web.WebSocketResponse)
        try:
            try:
                await begin(self, req, opened)
            except Exception:
                log.exception("stream of %r failed", req.topic)
                self.close(errors.INTERNAL_ERROR)
            # The close handshake needs this task in receive() to see the reply:
            # an ending decided before the reads start begins now.
            self._reading = True
            if self.closed:
                self._start_ending()
            while True:
                msg = await ws.receive()
                kind = msg.type
                if kind is WSMsgType.TEXT:
                    await self._on_command(request, req, msg.data)
                    await asyncio.sleep(0)  # one client's flood of commands starves no one
                elif kind is WSMsgType.PONG:
                    self.last_pong = self.loop.time()
                elif kind is WSMsgType.PING:
                    # RFC 6455 section 5.5.3. Through the stream, so that a client that
                    # pings without reading cannot grow its queue past the bound.
                    self.write_raw(ws_frame(msg.data, WS_PONG_OPCODE))
                elif kind is WSMsgType.BINARY:
                    self._reply(
                        None,
                        "error",
                        code="binary_not_supported",
                        message="send commands as JSON text frames",
                    )
                else:  # CLOSE, CLOSING (the server's close handshake), CLOSED, ERROR
                    break
        finally:
            self.close(errors.CLIENT_GONE)  # no-op when the server ended the stream
            if self.closer is None:
                self.closer = asyncio.ensure_future(self.finish())
            await asyncio.shield(self.closer)

    # -- commands ------------------------------------------------------------------------------

    def _reply(self, ref: Any, type: str, **fields: Any) -> None:
        if ref is not None:
            fields["ref"] = ref
        self.write_control(type, control_json(type, **fields))

    async def _on_command(self, request: web.Request, req: StreamRequest, text: str) -> None:
        try:
            command = jsonvalue.loads(text, what="command")
        except BadRequest as exc:
            self._reply(None, "error", code=exc.code, message=exc.message)
            return
        if not isinstance(command, dict):
            self._reply(None, "error", code="bad_command", message="a command is a JSON object")
            return
        ref = command.get("ref")
        kind = command.get("type")
        if kind == "ping":
            self._reply(ref, "pong")
        elif kind == "publish":
            await self._publish(request, req, ref, command)
        else:
            self._reply(
                ref,
                "error",
                code="bad_command",
                message=f"unknown command type {kind!r}: use ping or publish",
            )

    async def _publish(
        self, request: web.Request, req: StreamRequest, ref: Any, command: dict[str, Any]
    ) -> None:
        ctx = self.ctx
        settings = ctx.settings
        if "data" not in command:
            self._reply(ref, "error", code="bad_command", message="publish needs a 'data' field")
            return
        if req.per_connection:
            self._reply(
                ref,
                "error",
                code="not_a_topic",
                message=f"{req.topic!r} is a per-connection stream; publish to a topic",
            )
            return
        rate = settings.ws_publish_rate
        if rate:
            now = self.loop.time()
            budget = self._budget
            if budget is None:
                budget = self._budget = _PublishBudget(rate, now)
            if not budget.take(rate, now):
                if budget.refused > rate:
                    self.close(errors.RATE_LIMITED)
                    return
                self._reply(
                    ref,
                    "error",
                    code="rate_limited",
                    message=f"over {rate:g} publishes a second (--ws-publish-rate); "
                    "this one was not published",
                )
                return
        try:  # the handshake's credentials (a cached token), and the publisher's budget
            grant = await ctx.auth.check(request, req.topic, "publish")
            ctx.auth.quota.take(request, grant)
        except (Unauthorized, Forbidden) as exc:  # answered, and the stream goes on
            self._reply(ref, "error", code="forbidden", message=exc.message)
            return
        except StreamgateError as exc:  # auth_unavailable, rate_limited
            self._reply(ref, "error", code=exc.code, message=exc.message)
            return
        try:
            data = jsonvalue.dumps(command["data"])
        except BadRequest as exc:
            self._reply(ref, "error", code=exc.code, message=exc.message)
            return
        if len(data) > settings.max_message_bytes:
            self._reply(
                ref,
                "error",
                code="too_large",
                message=f"data is over {settings.max_message_bytes} bytes",
            )
            return
        try:
            (message,) = await ctx.publish(req.topic, [data])
        except StreamgateError as exc:
            self._reply(ref, "error", code=exc.code, message=exc.message)
            return
        self._reply(ref, "published", id=message.id, topic=req.topic)


async def handle_ws(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    ws = web.WebSocketResponse(
        # Pings come from the gateway's one heartbeat loop, not two timers per
        # connection; this handler answers the client's pings itself.
        autoping=False,
        heartbeat=None,
        compress=False,  # streams are never compressed (and frames are shared)
        max_msg_size=settings.max_message_bytes + FRAME_OVERHEAD,
    )
    try:  # 400/401/403/409/429 JSON before the upgrade
        # Browsers open a WebSocket to any origin: refuse pages of foreign ones.
        request.app[ORIGINS].check_websocket(request)
        req = await parse_stream_request(request, ctx)
        if request.version < HttpVersion11:
            raise BadRequest("a WebSocket handshake needs HTTP/1.1 (RFC 6455 section 4.1)")
        if not ws.can_prepare(request).ok:
            raise BadRequest(
                "this is a WebSocket endpoint: send a WebSocket handshake (RFC 6455)",
                code="not_websocket",
            )
        ctx.auth.quota.enter(request)  # 429 past --max-connections-per-ip
    except StreamgateError as exc:
        return error_response(exc)

    try:
        try:
            opened = await open_stream(ctx, req) if req.per_connection else None
        except StreamgateError as exc:
            return error_response(exc)
        await ws.prepare(request)
        ws.headers.clear()  # sent; an idle stream need not keep them
        aiohttp_compat.share_ws_writer_state(ws)
        await WSStream(request, ws, ctx).serve(request, req, opened)
        return ws
    finally:
        ctx.auth.quota.leave(request)
