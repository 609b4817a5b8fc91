"""``GET /ws/{topic}``: WebSocket (RFC 6455), one text frame per message.

The client may send JSON commands (``ping``, ``publish``); a bad one gets an
``error`` frame and the connection stays open. Message frames are written by
the sink from bytes shared with every other WebSocket subscriber, pings by the
gateway's heartbeat loop; aiohttp handles the handshake and the closing
handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from .. import errors
from ..context import CONTEXT, Context
from ..errors import Disconnect, StreamgateError
from ..framing import WS_PONG_OPCODE, Format, control_json, encode_control, ws_frame
from ..hub import Subscriber
from ..responses import error_response
from .common import (
    StreamRequest,
    end_subscription,
    final_control,
    open_stream,
    parse_stream_request,
    run_stream,
    start_response,
    start_subscription,
)
from .sink import DirectSink

__all__ = ["handle_ws"]

log = logging.getLogger(__name__)

FRAME_OVERHEAD = 1024
"""Room for the command envelope around a publish's data."""

_SHARED_WRITER_STATE: tuple[tuple[str, object], ...] = (
    ("get_random_bits", functools.partial(random.getrandbits, 32)),
    ("_background_tasks", set()),
)
"""What aiohttp's ``WebSocketWriter`` makes per connection for features a
server without compression never uses: a ``partial`` for client-side masking
(servers never mask, RFC 6455 section 5.1) and the set that holds compression
tasks. One shared object of each kind serves every connection (about 0.45 KiB
less per idle WebSocket); aiohttp would still work if it ever used them."""


async def handle_ws(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    try:  # 400/404 JSON before the upgrade
        req = await parse_stream_request(request, ctx)
        stream = await open_stream(ctx, req) if req.per_connection else None
    except StreamgateError as exc:
        return error_response(exc)

    ws = web.WebSocketResponse(
        # Pings come from the gateway's one heartbeat loop, not two timers per
        # connection; this handler answers the client's pings itself.
        autoping=False,
        heartbeat=None,
        compress=False,  # streams are never compressed (and frames are shared)
        max_msg_size=settings.max_message_bytes + FRAME_OVERHEAD,
    )
    await start_response(ws, request)
    _share_writer_state(ws)
    sink = _WsSink(request, ctx, ws)
    # A shared topic needs no task of its own: the hub writes to the sink, this
    # handler reads commands, and the sink starts the close when the server
    # ends the stream. A per-connection generator runs in a pump task.
    pump: asyncio.Task[tuple[Disconnect, str | None]] | None = None
    if not req.per_connection:
        sink.sub = await start_subscription(ctx, sink, req)
        if sink.reason is not None:  # ended during the replay
            sink.on_closed(sink.reason)
    elif stream is None:
        sink.close(errors.STREAM_COMPLETE)
        sink.say_goodbye(errors.STREAM_COMPLETE, None)
    else:
        pump = asyncio.ensure_future(run_stream(ctx, sink, req, stream))
        pump.add_done_callback(sink.on_pump_done)
    try:
        while True:
            msg = await ws.receive()
            kind = msg.type
            if kind is WSMsgType.TEXT:
                await _on_command(ctx, req, sink, msg.data)
            elif kind is WSMsgType.PONG:
                sink.last_pong = sink.loop.time()
            elif kind is WSMsgType.PING:
                # RFC 6455 section 5.5.3. Through the sink, so that a client that
                # pings without reading cannot grow its queue past the bound.
                sink.write_raw(ws_frame(msg.data, WS_PONG_OPCODE))
            elif kind is WSMsgType.BINARY:
                _reply(
                    sink,
                    None,
                    "error",
                    code="binary_not_supported",
                    message="send commands as JSON text frames",
                )
            else:  # CLOSE, CLOSING, CLOSED, ERROR
                break
    finally:
        sink.close(errors.CLIENT_GONE)
        sink.unsubscribe()
        if pump is not None:
            if not pump.done():
                pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        if sink.closer is not None:
            with contextlib.suppress(Exception):
                await sink.closer
    return ws


def _share_writer_state(ws: web.WebSocketResponse) -> None:
    """See ``_SHARED_WRITER_STATE`` (private aiohttp attributes: checked, never assumed)."""
    writer = getattr(ws, "_writer", None)
    for name, shared in _SHARED_WRITER_STATE:
        if hasattr(writer, name):
            setattr(writer, name, shared)


class _WsSink(DirectSink):
    """A WebSocket stream's sink and the glue of its session, in one slotted
    object: an idle connection stays small (no session object, no future, no
    callback until the stream ends)."""

    __slots__ = ("closer", "ctx", "sub", "ws")

    def __init__(self, request: web.Request, ctx: Context, ws: web.WebSocketResponse) -> None:
        settings = ctx.settings
        super().__init__(
            request,
            transport_name="ws",
            fmt=Format.WS,
            http_chunked=False,
            max_queue_bytes=settings.max_queue_bytes,
            write_timeout=settings.write_timeout,
        )
        self.ctx = ctx
        self.ws = ws
        self.sub: Subscriber | None = None
        self.closer: asyncio.Task[None] | None = None

    def close(self, reason: Disconnect) -> None:
        if self.closed:
            return
        super().close(reason)
        if self.sub is not None:
            # The hub must stop counting this subscriber now, not after a closing
            # handshake that a stalled client may never finish; but not from
            # inside the hub's flush that may have called this.
            self.loop.call_soon(self.on_closed, reason)

    def on_closed(self, reason: Disconnect) -> None:
        last_id = self.unsubscribe()
        self.say_goodbye(reason, last_id)

    def unsubscribe(self) -> str | None:
        """Leave the hub at once (idempotent); returns the last id written."""
        sub = self.sub
        if sub is None:
            return None
        self.sub = None
        return end_subscription(self.ctx, self, sub)[1]

    def say_goodbye(self, reason: Disconnect, last_id: str | None) -> None:
        """The server ends the stream: goodbye/end frame, then the close handshake."""
        if reason is errors.CLIENT_GONE or self.ws.closed or self.closer is not None:
            return
        self.closer = asyncio.ensure_future(
            _close(self.ws, self, reason, last_id, self.ctx.settings.retry_ms)
        )

    def on_pump_done(self, fut: asyncio.Future[tuple[Disconnect, str | None]]) -> None:
        if not fut.cancelled() and fut.exception() is None:
            self.say_goodbye(*fut.result())


async def _close(
    ws: web.WebSocketResponse,
    sink: DirectSink,
    reason: Disconnect,
    last_id: str | None,
    retry_ms: int,
) -> None:
    type, body = final_control(reason, last_id, retry_ms)
    sink.write_final(encode_control(Format.WS, type, body))
    await ws.close(code=reason.ws_code, message=reason.reason.encode())


def _reply(sink: DirectSink, ref: Any, type: str, **fields: Any) -> None:
    if ref is not None:
        fields["ref"] = ref
    sink.write_control(type, control_json(type, **fields))


async def _on_command(ctx: Context, req: StreamRequest, sink: DirectSink, text: str) -> None:
    try:
        command = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        _reply(sink, None, "error", code="bad_json", message=f"command is not valid JSON: {exc}")
        return
    if not isinstance(command, dict):
        _reply(sink, None, "error", code="bad_command", message="a command is a JSON object")
        return
    ref = command.get("ref")
    kind = command.get("type")
    if kind == "ping":
        _reply(sink, ref, "pong")
    elif kind == "publish":
        if "data" not in command:
            _reply(sink, ref, "error", code="bad_command", message="publish needs a 'data' field")
            return
        if req.per_connection:
            _reply(
                sink,
                ref,
                "error",
                code="not_a_topic",
                message=f"{req.topic!r} is a per-connection stream; publish to a topic",
            )
            return
        data = orjson.dumps(command["data"])
        if len(data) > ctx.settings.max_message_bytes:
            _reply(
                sink,
                ref,
                "error",
                code="too_large",
                message=f"data is over {ctx.settings.max_message_bytes} bytes",
            )
            return
        try:
            (message,) = await ctx.broker.publish(req.topic, [data])
        except StreamgateError as exc:
            _reply(sink, ref, "error", code=exc.code, message=exc.message)
            return
        _reply(sink, ref, "published", id=message.id, topic=req.topic)
    else:
        _reply(
            sink,
            ref,
            "error",
            code="bad_command",
            message=f"unknown command type {kind!r}: use ping or publish",
        )
