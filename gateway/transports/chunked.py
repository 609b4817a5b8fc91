"""``GET /chunked/{topic}``: chunked HTTP, NDJSON (default) or one JSON array."""

from __future__ import annotations

from aiohttp import web

from ..context import CONTEXT
from ..errors import BadRequest, StreamgateError
from ..framing import JSON_CLOSE, JSON_OPEN, NDJSON_HEARTBEAT, Format, encode_control
from ..responses import error_response
from .common import (
    end_http_stream,
    final_control,
    open_stream,
    parse_stream_request,
    run_to_end,
    start_response,
)
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
        req = await parse_stream_request(request, ctx)
        stream = await open_stream(ctx, req) if req.per_connection else None
    except StreamgateError as exc:
        return error_response(exc)

    resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    resp.content_type = _CONTENT_TYPES[fmt]
    resp.charset = "utf-8"
    await start_response(resp, request)
    sink = DirectSink(
        request,
        transport_name="chunked",
        fmt=fmt,
        http_chunked=bool(getattr(request.writer, "chunked", True)),
        max_queue_bytes=settings.max_queue_bytes,
        write_timeout=settings.write_timeout,
    )
    if fmt is Format.JSON_ARRAY:
        sink.write_raw(JSON_OPEN)

    reason, last_id = await run_to_end(ctx, sink, req, stream)

    type, body = final_control(reason, last_id, settings.retry_ms)
    if fmt is Format.NDJSON:
        sink.write_final(encode_control(fmt, type, body))
    else:
        if reason.reconnect:  # the JSON array's end is its own "end" event
            sink.write_final(encode_control(fmt, type, body))
        sink.write_final(JSON_CLOSE)
    await end_http_stream(resp, sink, reason, settings.write_timeout)
    return resp
