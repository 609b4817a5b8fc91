"""``GET /sse/{topic}``: Server-Sent Events through aiohttp-sse.

aiohttp-sse prepares the response (``text/event-stream``, no caching, no proxy
buffering) and sends the heartbeat comments; message events are written by the
sink from bytes shared with every other SSE subscriber.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp_sse import EventSourceResponse

from ..context import CONTEXT
from ..errors import StreamgateError
from ..framing import Format, encode_control, sse_retry_field
from ..responses import error_response
from .common import end_http_stream, final_control, open_stream, parse_stream_request, run_to_end
from .sink import DirectSink

__all__ = ["handle_sse"]


async def handle_sse(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    settings = ctx.settings
    try:
        req = await parse_stream_request(request, ctx, last_event_id=True)
        stream = await open_stream(ctx, req) if req.per_connection else None
    except StreamgateError as exc:
        return error_response(exc)
    if req.per_connection and stream is None:
        # Resumed past the end of a finished stream. WHATWG: a 204 makes
        # EventSource fail the connection for good instead of reconnecting.
        return web.Response(status=204)

    resp = EventSourceResponse(sep="\n", ping_interval=settings.heartbeat)
    await resp.prepare(request)
    sink = DirectSink(
        request,
        transport_name="sse",
        fmt=Format.SSE,
        http_chunked=bool(getattr(request.writer, "chunked", True)),
        max_queue_bytes=settings.max_queue_bytes,
        write_timeout=settings.write_timeout,
        first_prefix=sse_retry_field(settings.retry_ms),
    )
    try:
        reason, last_id = await run_to_end(ctx, sink, req, stream)
    finally:
        resp.stop_streaming()

    type, body = final_control(reason, last_id, settings.retry_ms)
    retry = settings.retry_ms if reason.reconnect else None
    sink.write_final(encode_control(Format.SSE, type, body, retry=retry))
    await end_http_stream(resp, sink, reason, settings.write_timeout)
    return resp
