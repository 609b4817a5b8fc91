"""The sink: writes a subscriber's bytes straight to its socket.

Every transport ends in an asyncio transport. The hub hands the same framed
bytes to every subscriber of a format, so the sink's job on the hot path is one
``transport.write()`` and two cheap checks:

* the bytes queued in user space above the socket stay under
  ``max_queue_bytes``, or the subscriber is disconnected as a slow consumer;
* a socket that stays blocked (the protocol paused writing) for
  ``write_timeout`` seconds is disconnected too.

Writing to the transport directly, rather than through ``await
response.write()``, is what lets one flush reach a thousand subscribers in one
pass with no task switch per subscriber. HTTP framing is ours to add then: the
sink wraps bodies in chunked transfer coding itself when aiohttp chose chunked
encoding for the response (RFC 9112 section 7.1), and aiohttp still writes the
headers before and the last chunk after. WebSocket frames are built by
:func:`gateway.framing.ws_frame`; aiohttp's writer is used only for control
frames (ping, pong, close), each written with a single ``transport.write`` too,
so frames never interleave.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import TYPE_CHECKING

from aiohttp import web

from .. import errors
from ..errors import Disconnect
from ..framing import JSON_FIRST_STRIP, Format, encode_control, encode_messages, http_chunk

if TYPE_CHECKING:
    from ..hub import Batch
    from ..message import Message

__all__ = ["DirectSink"]


class DirectSink:
    """Writes framed bytes for one connection; implements :class:`gateway.hub.Sink`."""

    __slots__ = (
        "_done",
        "_prefix",
        "_protocol",
        "_stall_timer",
        "_strip",
        "closed",
        "fmt",
        "http_chunked",
        "last_pong",
        "loop",
        "max_queue_bytes",
        "pinged_at",
        "reason",
        "transport",
        "transport_name",
        "write_timeout",
    )

    def __init__(
        self,
        request: web.BaseRequest,
        *,
        transport_name: str,
        fmt: Format,
        http_chunked: bool,
        max_queue_bytes: int,
        write_timeout: float,
        first_prefix: bytes = b"",
    ) -> None:
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("client went away before the stream started")
        self.transport: asyncio.Transport = transport
        self._protocol = request.protocol
        self.loop = asyncio.get_running_loop()
        self.transport_name = transport_name
        self.fmt = fmt
        self.http_chunked = http_chunked
        self.max_queue_bytes = max_queue_bytes
        self.write_timeout = write_timeout
        self.closed = False
        self.reason: Disconnect | None = None
        """Why the stream ended, once it has."""
        self._done: asyncio.Future[Disconnect] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        # WebSocket liveness, kept by the heartbeat loop and the WS reader.
        self.pinged_at = 0.0
        self.last_pong = 0.0
        # The first write of a stream may differ from what everyone shares: a
        # JSON array's first item goes out without its leading separator, an
        # SSE stream's first event carries the retry: field.
        self._strip = JSON_FIRST_STRIP if fmt is Format.JSON_ARRAY else 0
        self._prefix = first_prefix

    # -- writing ---------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        if self._strip or self._prefix:
            self.write_body(batch.wire(self.fmt, False))
        else:
            self._write(batch.wire(self.fmt, self.http_chunked))

    def write_messages(self, messages: Sequence[Message]) -> None:
        self.write_body(encode_messages(self.fmt, [(m.id, m.json) for m in messages]))

    def write_control(self, type: str, obj_json: bytes, *, retry: int | None = None) -> None:
        self.write_body(encode_control(self.fmt, type, obj_json, retry=retry))

    def _first(self, body: bytes) -> bytes:
        if self._strip:
            body = body[self._strip :]
            self._strip = 0
        if self._prefix:
            body = self._prefix + body
            self._prefix = b""
        return body

    def write_body(self, body: bytes) -> None:
        """Write format-framed bytes, adding the HTTP chunk framing if needed."""
        if self._strip or self._prefix:
            body = self._first(body)
        if body:
            self._write(http_chunk(body) if self.http_chunked else body)

    def _write(self, data: bytes) -> None:
        if self.closed:
            return
        transport = self.transport
        if transport.is_closing():
            self.close(errors.CLIENT_GONE)
            return
        transport.write(data)
        if transport.get_write_buffer_size() > self.max_queue_bytes:
            self.close(errors.SLOW_CONSUMER)
        elif self._protocol.writing_paused and self._stall_timer is None:
            self._stall_timer = self.loop.call_later(self.write_timeout, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        if not self.closed and self._protocol.writing_paused:
            self.close(errors.WRITE_TIMEOUT)

    async def drain(self) -> None:
        """Wait while the socket is blocked, at most ``write_timeout`` seconds."""
        if self.closed or not self._protocol.writing_paused:
            return
        try:
            async with asyncio.timeout(self.write_timeout):
                await self._protocol._drain_helper()
        except TimeoutError:
            self.close(errors.WRITE_TIMEOUT)
        except (ConnectionError, RuntimeError):
            self.close(errors.CLIENT_GONE)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in user space for this socket."""
        return 0 if self.transport.is_closing() else self.transport.get_write_buffer_size()

    # -- ending ----------------------------------------------------------------

    @property
    def done(self) -> asyncio.Future[Disconnect]:
        """Resolves with the reason when the stream is over.

        Made on first use: a WebSocket on a shared topic never waits on it, and
        an idle connection is smaller without it.
        """
        done = self._done
        if done is None:
            done = self._done = self.loop.create_future()
            if self.reason is not None:
                done.set_result(self.reason)
        return done

    def close(self, reason: Disconnect) -> None:
        """Mark the stream over; the handler waiting on ``done`` says goodbye."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        done = self._done
        if done is not None and not done.done():
            done.set_result(reason)

    def write_final(self, body: bytes) -> None:
        """Write the last format-framed bytes after ``close()`` (best effort).

        Used for the goodbye/end control event and the JSON array's ``]``.
        """
        if self.transport.is_closing():
            return
        body = self._first(body)
        if body:
            self.transport.write(http_chunk(body) if self.http_chunked else body)

    def write_raw(self, body: bytes) -> None:
        """Write bytes that are not messages: heartbeats, the JSON array's ``[``,
        WebSocket pongs. Never stripped or prefixed, but bounded like the rest."""
        self._write(http_chunk(body) if self.http_chunked else body)

    def abort_later(self, delay: float) -> None:
        """Drop the connection if its final bytes are not taken within ``delay``."""
        transport = self.transport
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            return
        self.loop.call_later(delay, transport.abort)
