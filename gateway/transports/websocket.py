"""``GET /ws/{topic}``: WebSocket (RFC 6455), one text frame per message.

The client may send JSON commands (``ping``, ``publish``); a bad one gets an
``error`` frame and the connection stays open. Message frames are written by
the stream from bytes shared with every other WebSocket subscriber, pings by
the gateway's heartbeat loop. aiohttp routes the handshake and writes the 101;
from there the stream owns the connection, and websockets' sans-I/O protocol
reads the client's frames.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from aiohttp import web
from aiohttp.http import HttpVersion11
from websockets.frames import CloseCode, Frame, Opcode
from websockets.protocol import Protocol, Side, State
from websockets.utils import accept_key

from .. import errors, jsonvalue
from ..context import CONTEXT, Context
from ..errors import BadRequest, Disconnect, Forbidden, StreamgateError, Unauthorized
from ..framing import WS_PING, Format, Wire, control_json
from ..origins import ORIGINS
from ..responses import error_response
from .common import StreamRequest, begin, open_stream, parse_stream_request
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
    """A WebSocket session, from the moment its 101 is on the wire: the
    subscription or the generator's pump, the commands the client sends, and
    the ending.

    The stream is the connection's protocol: :func:`handle_ws` takes the
    connection over from aiohttp once the handshake is answered, so aiohttp's
    request, parser and handler task end there, and nothing runs for an idle
    WebSocket on a shared topic. websockets' sans-I/O ``Protocol`` reads the
    client's frames (RFC 6455: masking, fragments, control frames, the close
    handshake, the size bound); the gateway writes its own frames, shared with
    every other WebSocket subscriber.
    """

    transport_name = "ws"
    fmt = Format.WS
    status = 101
    __slots__ = (
        "_budget",
        "_closing",
        "_commander",
        "_commands",
        "_fragments",
        "_held",
        "credentials",
        "last_pong",
        "pinged_at",
        "req",
        "websocket",
    )

    def __init__(
        self, request: web.Request, ctx: Context, req: StreamRequest, quota_key: str | None
    ) -> None:
        super().__init__(request, ctx, WS_WIRE, quota_key)
        self.req = req
        self.credentials = ctx.auth.credentials(request)
        """What each ``publish`` command is checked with: the handshake's
        token and address (the request only for an application's own check)."""
        self.websocket = Protocol(
            Side.SERVER, max_size=ctx.settings.max_message_bytes + FRAME_OVERHEAD, logger=log
        )
        self.pinged_at = 0.0
        self.last_pong = 0.0
        self._commands: deque[str] | None = None
        """Commands waiting for the one running (a publish awaits the broker)."""
        self._commander: asyncio.Task[None] | None = None
        self._held: list[bytes] | None = None
        """What websockets has to send, waiting for the commands before it to be answered."""
        self._fragments: list[bytes] | None = None
        """The frames so far of a fragmented text message (``[]`` for a binary one)."""
        self._budget: _PublishBudget | None = None
        self._closing: asyncio.Future[None] | None = None

    # -- the connection ------------------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        websocket = self.websocket
        websocket.receive_data(data)
        for frame in websocket.events_received():
            self._on_frame(frame)  # type: ignore[arg-type]  # frames, once open
        self._send_pending()

    def eof_received(self) -> bool:
        self.websocket.receive_eof()
        self._send_pending()
        return False  # asyncio closes the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        closing = self._closing
        if closing is not None and not closing.done():
            closing.set_result(None)
        super().connection_lost(exc)

    def _on_frame(self, frame: Frame) -> None:
        opcode = frame.opcode
        if opcode is Opcode.PONG:
            self.last_pong = self.loop.time()
        elif opcode is Opcode.TEXT or opcode is Opcode.BINARY or opcode is Opcode.CONT:
            fragments = self._fragments
            if opcode is not Opcode.CONT:  # websockets checked the order of fragments
                fragments = self._fragments = [] if opcode is Opcode.BINARY else [bytes(frame.data)]
            elif fragments:  # a text message's continuation
                fragments.append(bytes(frame.data))
            if frame.fin:
                self._fragments = None
                if fragments:
                    self._on_text(fragments[0] if len(fragments) == 1 else b"".join(fragments))
                else:
                    self._reply(
                        None,
                        "error",
                        code="binary_not_supported",
                        message="send commands as JSON text frames",
                    )
        # PING: websockets queued the pong; CLOSE: the echo and the end of the stream.

    def _send_pending(self) -> None:
        """Write what websockets has to send: pongs, the echo of the client's
        close frame, a close frame of its own for a client that broke the
        protocol; its end of the stream ends the session. While the client's
        commands are answered these wait, so that they follow the answers."""
        pending = self.websocket.data_to_send()
        held = self._held
        if held is not None and not self.closed:
            held += pending
        else:
            self._write_protocol(pending)

    def _write_protocol(self, pending: list[bytes]) -> None:
        for data in pending:
            if data:
                # Bounded like every byte of the stream (a client that pings without
                # reading cannot grow its queue); dropped once the stream has ended.
                self.write(data)
            else:  # the connection is to be closed: the close handshake is done
                closing = self._closing
                if closing is not None and not closing.done():
                    closing.set_result(None)
                self.close(errors.CLIENT_GONE)  # no-op when the server ended it

    # -- heartbeats and the ending -------------------------------------------------------------

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

    async def terminate(self, reason: Disconnect) -> None:
        """The close handshake: the server's close frame, then the client's."""
        websocket = self.websocket
        if websocket.state is not State.OPEN:
            return
        self._closing = self.loop.create_future()
        websocket.send_close(reason.ws_code, reason.reason)
        transport = self.transport
        for data in websocket.data_to_send():  # the close frame
            transport.write(data)
            self.sent += len(data)
        if not transport.is_reading():  # the client's commands are being answered
            transport.resume_reading()
        await self._closing

    async def finish(self) -> None:
        try:
            await super().finish()
        finally:
            self.credentials = None

    # -- commands ------------------------------------------------------------------------------

    def _on_text(self, data: bytes) -> None:
        if self.closed:  # the server ended the session: no more commands
            return
        try:
            text = data.decode()
        except UnicodeDecodeError as exc:  # RFC 6455 section 8.1
            self.websocket.fail(CloseCode.INVALID_DATA, f"{exc.reason} at position {exc.start}")
            return
        commands = self._commands
        if commands is None:
            # One at a time, in order, each answered before what follows it goes
            # out; the client's next frames wait in the kernel meanwhile.
            commands = self._commands = deque()
            self._held = []
            self.transport.pause_reading()
            self._commander = asyncio.ensure_future(self._run_commands(commands))
        commands.append(text)

    async def _run_commands(self, commands: deque[str]) -> None:
        """The client's commands (a publish awaits the broker); every one
        received is carried out, even if the client closes right after."""
        try:
            while commands:
                await self._on_command(commands.popleft())
                await asyncio.sleep(0)  # one client's flood of commands starves no one
        except Exception:
            log.exception("a command on %r failed", self.req.topic)
            self.close(errors.INTERNAL_ERROR)
        finally:
            held = self._held or []
            self._commands = self._commander = self._held = None
            transport = self.transport
            if not transport.is_reading() and not transport.is_closing():
                transport.resume_reading()
            self._write_protocol(held)

    def _reply(self, ref: Any, type: str, **fields: Any) -> None:
        if ref is not None:
            fields["ref"] = ref
        self.write_control(type, control_json(type, **fields))

    async def _on_command(self, text: str) -> None:
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
            await self._publish(ref, command)
        else:
            self._reply(
                ref,
                "error",
                code="bad_command",
                message=f"unknown command type {kind!r}: use ping or publish",
            )

    async def _publish(self, ref: Any, command: dict[str, Any]) -> None:
        ctx = self.ctx
        settings = ctx.settings
        req = self.req
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
        credentials = self.credentials
        if credentials is not None:  # else access control and --publish-rate are off
            try:  # the handshake's credentials (a cached token), and the publisher's budget
                await ctx.auth.check_publish(credentials, req.topic)
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


_HANDSHAKE = web.WebSocketResponse(autoping=False, heartbeat=None, compress=False)
"""Checks a request's handshake (``can_prepare``); never prepared."""


async def handle_ws(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    try:  # 400/401/403/409/429 JSON before the upgrade
        # Browsers open a WebSocket to any origin: refuse pages of foreign ones.
        request.app[ORIGINS].check_websocket(request)
        req = await parse_stream_request(request, ctx)
        if request.version < HttpVersion11:
            raise BadRequest("a WebSocket handshake needs HTTP/1.1 (RFC 6455 section 4.1)")
        if not _HANDSHAKE.can_prepare(request).ok:
            raise BadRequest(
                "this is a WebSocket endpoint: send a WebSocket handshake (RFC 6455)",
                code="not_websocket",
            )
        quota_key = ctx.auth.quota.enter(request)  # 429 past --max-connections-per-ip
    except StreamgateError as exc:
        return error_response(exc)

    stream = None
    try:
        try:
            opened = await open_stream(ctx, req) if req.per_connection else None
        except StreamgateError as exc:
            return error_response(exc)
        # No subprotocol and no extension is offered: the answer is the accept key.
        resp = web.StreamResponse(
            status=101,
            headers={
                "Upgrade": "websocket",
                "Connection": "Upgrade",
                "Sec-WebSocket-Accept": accept_key(request.headers["Sec-WebSocket-Key"]),
            },
        )
        await resp.prepare(request)
        stream = WSStream(request, ctx, req, quota_key)  # it owns the connection from here
    finally:
        if stream is None:
            ctx.auth.quota.leave(quota_key)
    stream.start(begin(stream, req, opened))
    return resp
