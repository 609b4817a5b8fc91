"""``GET /sse/{topic}``: Server-Sent Events through aiohttp-sse.

aiohttp-sse prepares the response (``text/event-stream``, no caching, no proxy
buffering; since aiohttp-sse 3.0 also ``TCP_USER_TIMEOUT``); message events are
written by the stream from bytes shared with every other SSE subscriber, and the
heartbeat comments by the gateway's one heartbeat loop
(:func:`gateway.app._heartbeats`), so nothing runs per idle SSE connection.
"""

from __future__ import annotations

import functools
from types import TracebackType

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp_sse import EventSourceResponse

from .. import aiohttp_compat
from ..context import Context
from ..errors import Disconnect
from ..framing import SSE_HEARTBEAT, Format, encode_control, sse_retry_field
from .common import HttpStream, handle_http_stream
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
    reads_last_event_id = True
    __slots__ = ()

    def __init__(
        self, request: web.Request, ctx: Context, fmt: Format, quota_key: str | None
    ) -> None:
        super().__init__(request, ctx, fmt, quota_key)
        self.first_bytes(sse_retry_field(ctx.settings.retry_ms))

    @classmethod
    def new_response(cls, fmt: Format, *, head: bool) -> web.StreamResponse:
        if head:
            resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
            resp.content_type = "text/event-stream"
            return resp
        resp = QuietEventSourceResponse(sep="\n")
        # aiohttp-sse says keep-alive; the stream closes its connection at its end.
        resp.headers["Connection"] = "close"
        return resp

    @classmethod
    def nothing_left(cls) -> web.StreamResponse | None:
        # WHATWG: a 204 makes EventSource fail the connection for good
        # instead of reconnecting.
        return web.Response(status=204)

    def heartbeat(self, now: float) -> None:
        self.write_raw(SSE_HEARTBEAT)

    def final_bytes(self, reason: Disconnect, last_id: str | None) -> bytes:
        retry_ms = self.ctx.settings.retry_ms
        type, body = final_control(reason, last_id, retry_ms)
        return encode_control(Format.SSE, type, body, retry=retry_ms if reason.reconnect else None)


handle_sse = functools.partial(handle_http_stream, SSEStream)
"""``GET``/``HEAD /sse/{topic}``."""
