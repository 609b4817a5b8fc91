"""``GET /sse/{topic}``: Server-Sent Events through aiohttp-sse.

aiohttp-sse prepares the response (``text/event-stream``, no caching, no proxy
buffering; since aiohttp-sse 3.0 also ``TCP_USER_TIMEOUT``); message events are
written by the stream from bytes shared with every other SSE subscriber, and the
heartbeat comments by the gateway's one heartbeat loop
(:func:`gateway.app._heartbeats`), so nothing runs per idle SSE connection.
"""

from __future__ import annotations

from types import TracebackType

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from .. import aiohttp_compat
from ..context import CONTEXT, Context
from ..errors import Disconnect, StreamgateError
from ..framing import SSE_HEARTBEAT, Format, encode_control, sse_retry_field
from ..responses import error_response
from .common import HttpStream, open_stream, parse_stream_request, start_response
from .stream import final_control

__all__ = ["QuietEventSourceResponse", "SSEStream", "handle_sse"]


class QuietEventSourceResponse(EventSourceResponse):
    """An ``EventSourceResponse`` without aiohttp-sse's ping task.

    aiohttp-sse starts one sleeping task per connection to send ``: ping``
    comments (about 1.5 KiB each while idle); the gateway's heartbeat loop
    writes the same comment to every SSE stream instead. Without the task,
    "streaming" means prepared and the socket open; ``stop_streaming`` has
    nothing to stop, and ``wait`` is not supported (the stream's ``done`` future
    says when a stream ends).
    """

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        if self.prepared:
            return await super().prepare(request)  # aiohttp-sse's "still connected?" check
        if not aiohttp_compat.sse_allows_method(self, request.method):
            raise web.HTTPMethodNotAllowed(request.method, ("GET",))
        aiohttp_compat.sse_set_tcp_user_timeout(self, request)
        writer = await web.StreamResponse.prepare(self, request)
        self.enable_chunked_encoding()
        return writer

    def is_connected(self) -> bool:
        if not self.prepared:
            return False
        transport = aiohttp_compat.sse_request_transport(self)
        return transport is not None and not transport.is_closing()

    def stop_streaming(self) -> None:
        if not self.prepared:
            raise RuntimeError("Response is not started")

    async def wait(self) -> None:
        raise NotImplementedError("no ping task to wait for: wait on the stream's end")

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop_streaming()


class SSEStream(HttpStream):
    """Server-Sent Events: the first event carries ``retry:``, and so does a
    goodbye; a ``: ping`` comment as heartbeat."""

    transport_name = "sse"
    fmt = Format.SSE
    __slots__ = ()

    def __init__(self, request: web.Request, response: web.StreamResponse, ctx: Context) -> None:
        super().__init__(request, response, ctx)
        self._first = sse_retry_field(ctx.settings.retry_ms)

    def heartbeat(self, now: float) -> None:
        self.write_raw(SSE_HEARTBEAT)

    def final_bytes(self, reason: Disconnect, last_id: str | None) -> bytes:
        retry_ms = self.ctx.settings.retry_ms
        type, body = final_control(reason, last_id, retry_ms)
        return encode_control(Format.SSE, type, body, retry=retry_ms if reason.reconnect else None)


async def handle_sse(request: web.Request) -> web.StreamResponse:
    ctx = request.app[CONTEXT]
    head = request.method == "HEAD"  # headers only: no subscription, no generator run
    try:
        req = await parse_stream_request(request, ctx, last_event_id=True)
        if not head:
            ctx.auth.quota.enter(request)  # 429 past --max-connections-per-ip
    except StreamgateError as exc:
        return error_response(exc)
    if head:
        head_resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
        head_resp.content_type = "text/event-stream"
        return head_resp

    try:
        try:
            opened = await open_stream(ctx, req) if req.per_connection else None
        except StreamgateError as exc:
            return error_response(exc)
        if req.per_connection and opened is None:
            # Resumed past the end of a finished stream. WHATWG: a 204 makes
            # EventSource fail the connection for good instead of reconnecting.
            return web.Response(status=204)
        resp = QuietEventSourceResponse(sep="\n")
        await start_response(resp, request)
        await SSEStream(request, resp, ctx).serve(req, opened)
        return resp
    finally:
        ctx.auth.quota.leave(request)
