"""``GET /ws/{topic}``: WebSocket (RFC 6455), one text frame per message.

The client may send JSON commands (``ping``, ``publish``); a bad one gets an
``error`` frame and the connection stays open. Message frames are written by
the sink from bytes shared with every other WebSocket subscriber; aiohttp
handles the handshake, pings (the heartbeat), and the closing handshake.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import orjson
from aiohttp import WSMsgType, web

from .. import errors
from ..context import CONTEXT, Context
from ..errors import Disconnect, StreamgateError
from ..framing import Format, control_json, encode_control
from .common import (
    StreamRequest,
    final_control,
    open_stream,
    parse_stream_request,
    run_stream,
    run_subscription,
)
from .sink import DirectSink

__all__ = ["handle_ws"]

log = logging.getLogger(__name__)

FRAME_OVERHEAD = 1024
"""Room for the command envelope around a publish's data."""


async def handle_ws(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    req = parse_stream_request(request, ctx)  # 400/404 JSON before the upgrade
    stream = await open_stream(ctx, req) if req.per_connection else None

    ws = web.WebSocketResponse(
        heartbeat=settings.heartbeat,
        compress=False,  # streams are never compressed (and frames are shared)
        max_msg_size=settings.max_message_bytes + FRAME_OVERHEAD,
    )
    await ws.prepare(request)
    sink = DirectSink(
        request,
        transport_name="ws",
        fmt=Format.WS,
        http_chunked=False,
        max_queue_bytes=settings.max_queue_bytes,
        write_timeout=settings.write_timeout,
    )

    if req.per_connection and stream is None:
        pump: asyncio.Future[tuple[Disconnect, str | None]] = (
            asyncio.get_running_loop().create_future()
        )
        pump.set_result((errors.STREAM_COMPLETE, None))
        sink.close(errors.STREAM_COMPLETE)
    elif stream is not None:
        pump = asyncio.ensure_future(run_stream(ctx, sink, req, stream))
    else:
        pump = asyncio.ensure_future(run_subscription(ctx, sink, req))

    closer: asyncio.Task[None] | None = None

    def on_pump_done(fut: asyncio.Future[tuple[Disconnect, str | None]]) -> None:
        nonlocal closer
        if fut.cancelled() or fut.exception() is not None:
            return
        reason, last_id = fut.result()
        if reason is not errors.CLIENT_GONE and not ws.closed:
            closer = asyncio.ensure_future(_close(ws, sink, reason, last_id, settings.retry_ms))

    pump.add_done_callback(on_pump_done)
    try:
        async for msg in ws:
            if msg.type is WSMsgType.TEXT:
                await _on_command(ctx, req, sink, msg.data)
            elif msg.type is WSMsgType.BINARY:
                _reply(
                    sink,
                    None,
                    "error",
                    code="binary_not_supported",
                    message="send commands as JSON text frames",
                )
    finally:
        sink.close(errors.CLIENT_GONE)
        if not pump.done():
            pump.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await pump
        if closer is not None:
            with contextlib.suppress(Exception):
                await closer
    return ws


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
