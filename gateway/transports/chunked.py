"""``GET /chunked/{topic}``: chunked HTTP, NDJSON (default) or one JSON array."""

from __future__ import annotations

from aiohttp import web

from .. import errors
from ..context import CONTEXT
from ..errors import BadRequest, StreamgateError
from ..framing import JSON_CLOSE, JSON_OPEN, NDJSON_HEARTBEAT, Format, encode_control
from ..responses import error_response
from .common import final_control, open_stream, parse_stream_request, run_stream, run_subscription
from .sink import DirectSink

__all__ = ["HEARTBEAT", "handle_chunked"]

HEARTBEAT = NDJSON_HEARTBEAT
"""Whitespace: a blank NDJSON line, insignificant between JSON array items."""

_CONTENT_TYPES = {Format.NDJSON: "application/x-ndjson", Format.JSON_ARRAY: "application/json"}


def _parse_format(raw: str | None) -> Format:
    if raw in (None, "", "ndjson"):
        return Format.NDJSON
    if raw == "json":
        return Format.JSON_ARRAY
    raise BadRequest(f"format must be ndjson or json, got {raw!r}", code="bad_format")


async def handle_chunked(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    try:
        fmt = _parse_format(request.query.get("format"))
        req = parse_stream_request(request, ctx)
        stream = await open_stream(ctx, req) if req.per_connection else None
    except StreamgateError as exc:
        return error_response(exc)

    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = _CONTENT_TYPES[fmt]
    resp.charset = "utf-8"
    await resp.prepare(request)
    sink = DirectSink(
        request,
        transport_name="chunked",
        fmt=fmt,
        http_chunked=bool(getattr(request.writer, "chunked", True)),
        max_queue_bytes=settings.max_queue_bytes,
        write_timeout=settings.write_timeout,
    )
    if fmt is Format.JSON_ARRAY:
        sink.heartbeat(JSON_OPEN)

    if req.per_connection:
        if stream is None:  # resumed past the end: nothing left
            reason, last_id = errors.STREAM_COMPLETE, None
        else:
            reason, last_id = await run_stream(ctx, sink, req, stream)
    else:
        reason, last_id = await run_subscription(ctx, sink, req)

    type, body = final_control(reason, last_id, settings.retry_ms)
    if fmt is Format.NDJSON:
        sink.write_final(encode_control(fmt, type, body))
    else:
        if reason.reconnect:  # the JSON array's end is its own "end" event
            sink.write_final(encode_control(fmt, type, body))
        sink.write_final(JSON_CLOSE)
    if reason.reconnect:
        resp.force_close()
    try:
        await resp.write_eof()
    except ConnectionError:
        pass
    sink.abort_later(settings.write_timeout)
    return resp
