"""``GET /sse/{topic}``: Server-Sent Events through aiohttp-sse.

aiohttp-sse prepares the response (``text/event-stream``, no caching, no proxy
buffering; since aiohttp-sse 3.0 also ``TCP_USER_TIMEOUT``); message events are
written by the sink from bytes shared with every other SSE subscriber, and the
heartbeat comments by the gateway's one heartbeat loop
(:func:`gateway.app._heartbeats`), so nothing runs per idle SSE connection.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from ..context import CONTEXT
from ..errors import StreamgateError
from ..framing import Format, encode_control, sse_retry_field
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

__all__ = ["QuietEventSourceResponse", "handle_sse"]


class QuietEventSourceResponse(EventSourceResponse):
    """An ``EventSourceResponse`` without aiohttp-sse's ping task.

    aiohttp-sse starts one sleeping task per connection to send ``: ping``
    comments (about 1.5 KiB each while idle); the gateway's heartbeat loop
    writes the same comment to every SSE stream instead. Without the task,
    "streaming" means prepared and the socket open; ``stop_streaming`` has
    nothing to stop, and ``wait`` is not supported (the sink's ``done`` future
    says when a stream ends).
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)  # aiohttp-sse's "still connected?" check
        if not self._allow_all_methods and request.method != "GET":
            raise web.HTTPMethodNotAllowed(request.method, ("GET",))
        set_user_timeout = getattr(self, "_set_tcp_user_timeout", None)  # aiohttp-sse >= 3.0
        if set_user_timeout is not None:
            set_user_timeout(request)
        writer = await web.StreamResponse.prepare(self, request)
        self.enable_chunked_encoding()
        return writer

    def is_connected(self) -> bool:
        req = self._req
        if not self.prepared or req is None:
            return False
        transport = req.transport
        return transport is not None and not transport.is_closing()

    def stop_streaming(self) -> None:
        if not self.prepared:
            raise RuntimeError("Response is not started")

    async def wait(self) -> None:
        raise NotImplementedError("no ping task to wait for: wait on the stream's sink")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_streaming()


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

    resp = QuietEventSourceResponse(sep="\n")
    await start_response(resp, request)
    sink = DirectSink(
        request,
        transport_name="sse",
        fmt=Format.SSE,
        http_chunked=bool(getattr(request.writer, "chunked", True)),
        max_queue_bytes=settings.max_queue_bytes,
        write_timeout=settings.write_timeout,
        first_prefix=sse_retry_field(settings.retry_ms),
    )
    reason, last_id = await run_to_end(ctx, sink, req, stream)

    type, body = final_control(reason, last_id, settings.retry_ms)
    retry = settings.retry_ms if reason.reconnect else None
    sink.write_final(encode_control(Format.SSE, type, body, retry=retry))
    await end_http_stream(resp, sink, reason, settings.write_timeout)
    return resp
