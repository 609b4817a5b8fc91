"""One open streaming connection: how its bytes go out and how it ends.

:class:`Stream` is the base of the three transports' classes
(:class:`~gateway.transports.chunked.ChunkedStream`,
:class:`~gateway.transports.sse.SSEStream`,
:class:`~gateway.transports.websocket.WSStream`). Each owns its framing state
(the JSON array's first item, SSE's ``retry:``), its heartbeat and its ending;
this base owns what they share.

**The connection.** Once the response head is out (the 101 of a WebSocket),
the stream takes the connection over from aiohttp
(:func:`gateway.aiohttp_compat.take_over`) and is its asyncio protocol from
then on: aiohttp's request, parsed headers, parser and handler task end, and
an idle stream is the transport, this object and its subscription. The
stream's start (subscription, or a generator's pump) and its ending run in
tasks of its own; the connection closes when the stream ends.

**Writing.** The hub hands the same framed bytes to every subscriber of a
format, so the hot path is one ``transport.write()`` and two cheap checks: the
bytes queued in user space stay under ``--max-queue-bytes`` (else the stream
ends as a slow consumer), and a socket that stays blocked for
``--write-timeout`` ends it too. Writing to the transport directly is what
lets one sweep reach a thousand subscribers in one pass with no task switch
per subscriber.

**Ending**, the one path every stream takes, whoever ends it:

1. :meth:`Stream.close` records the :class:`~gateway.errors.Disconnect` (from
   the hub, a bound, the heartbeat loop, shutdown, the client) and schedules
   step 2 in a task. It never blocks, so it is safe inside a sweep.
2. :meth:`Stream.finish` writes the final ``goodbye``/``end`` (best effort),
   then the transport's own ending (:meth:`Stream.terminate`: the last chunk,
   or the WebSocket close handshake), waits until the kernel has sent every
   byte, and closes the connection. All of it within ``--write-timeout`` of
   step 1.
3. Past that deadline the connection is reset (``SO_LINGER`` 0, then abort):
   the kernel drops what it still holds for a client that stopped reading, and
   nothing is left behind in ``ss``.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import socket
import struct
import time
from collections.abc import Coroutine, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from aiohttp import web

from .. import aiohttp_compat, errors
from ..errors import Disconnect
from ..framing import Format, Wire, control_json, encode_control, encode_messages, http_chunk

if TYPE_CHECKING:
    from ..context import Context
    from ..hub import Batch, Subscriber
    from ..message import Message

__all__ = ["Stream", "limit_unacked", "reset_connection", "unsent_bytes"]

log = logging.getLogger(__name__)

SIOCOUTQNSD = 0x894B
"""Linux ioctl: bytes in a socket's send queue not yet sent to the peer."""
_LINGER_RESET = struct.pack("ii", 1, 0)


def unsent_bytes(sock: socket.socket | None) -> int:
    """Bytes the kernel holds for ``sock`` that the peer has not been sent (Linux;
    0 where the ioctl is missing: the user-space buffer is then all we check)."""
    if sock is None:
        return 0
    try:
        raw = fcntl.ioctl(sock.fileno(), SIOCOUTQNSD, b"\0\0\0\0")
    except (OSError, ValueError):
        return 0
    return int(struct.unpack("i", raw)[0])


def limit_unacked(transport: asyncio.Transport, seconds: float) -> None:
    """``TCP_USER_TIMEOUT``: the kernel drops the connection when bytes it sent
    stay unacknowledged for ``seconds`` (a peer gone without a FIN or RST: a
    pulled cable, a dead host). A stream that flows gets no heartbeat, so this
    is what finds such a peer there; without it the kernel retries for about
    15 minutes."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, int(seconds * 1000))


def reset_connection(transport: asyncio.Transport) -> None:
    """Drop a connection now, and what the kernel still holds for it (RST)."""
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError, ValueError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    transport.abort()


class Stream(asyncio.Protocol):
    """Writes framed bytes for one connection and ends it; a :class:`gateway.hub.Sink`."""

    transport_name: ClassVar[str]
    fmt: Format
    status: int
    """The response's status (the access log's figure)."""

    __slots__ = (
        "_beat_mark",
        "_beat_sent",
        "_expiry",
        "_first",
        "_quota_key",
        "_stall_timer",
        "_started",
        "_tail",
        "_task",
        "_writable",
        "closed",
        "closed_at",
        "ctx",
        "last_id",
        "loop",
        "max_queue_bytes",
        "pump",
        "reason",
        "sent",
        "shared_wire",
        "sub",
        "transport",
        "wire",
        "write_timeout",
        "writing_paused",
    )

    def __init__(
        self, request: web.Request, ctx: Context, wire: Wire, quota_key: str | None
    ) -> None:
        """Take the connection over from aiohttp, whose response head is out
        (aiohttp's request, parser and handler task end here); ``quota_key``
        is what the stream counts under for ``--max-connections-per-ip``."""
        transport = request.transport
        protocol = request.protocol
        if transport is None or protocol is None:
            raise ConnectionResetError("client went away before the stream started")
        self.transport: asyncio.Transport = transport
        self.writing_paused = protocol.writing_paused
        self._tail = aiohttp_compat.take_over(request, self)
        """What the client sent after its request, read once the stream has started."""
        transport.pause_reading()  # until then
        self.ctx = ctx
        ctx.owned[self] = None
        self._quota_key = quota_key
        self.loop = asyncio.get_running_loop()
        settings = ctx.settings
        self.max_queue_bytes = settings.max_queue_bytes
        self.write_timeout = settings.write_timeout
        self.wire = wire
        """The format and chunking of this stream's bytes: their key in a batch."""
        self.shared_wire: Wire | None = wire
        """``wire`` once the stream's first bytes are out, None before: the sweep
        writes a batch's bytes for it as they are (:meth:`write`) only then."""
        self.closed = False
        self.closed_at = 0.0
        self.reason: Disconnect | None = None
        """Why the stream ended, once it has."""
        self._started = False
        self._task: asyncio.Task[None] | None = None
        """The stream's start, then its ending."""
        self._writable: asyncio.Future[None] | None = None
        self._stall_timer: asyncio.TimerHandle | None = None
        self._expiry: asyncio.TimerHandle | None = None
        """Ends the stream when its credential expires; only for a grant with an expiry."""
        self.sub: Subscriber | None = None
        """The subscription of a shared topic."""
        self.pump: asyncio.Task[None] | None = None
        """The task running a per-connection generator."""
        self.last_id: str | None = None
        """The last per-connection item written (shared topics: the subscriber's cursor)."""
        self._first: int | bytes | None = None
        """How the first bytes differ from what everyone shares (:meth:`first_bytes`)."""
        self.sent = 0
        """Bytes handed to the socket after the headers (the access log's figure)."""
        self._beat_mark = 0
        """``sent`` when the heartbeat loop last came by."""
        self._beat_sent = False
        """Whether it left a heartbeat then."""
        limit_unacked(transport, 2 * max(settings.heartbeat, settings.write_timeout))
        if ctx.access_log is not None:
            ctx.access_log.opened(self, request)

    def start(self, beginning: Coroutine[Any, Any, None]) -> None:
        """Run ``beginning`` (the subscription, or the start of the generator's
        pump) in a task of the stream's own, then read the client's bytes. The
        handler that made the stream returns at once: aiohttp is done with it."""
        self._task = asyncio.ensure_future(self._begin(beginning))

    async def _begin(self, beginning: Coroutine[Any, Any, None]) -> None:
        try:
            await beginning
        except Exception:
            log.exception("a %s stream failed to start", self.transport_name)
            self.close(errors.INTERNAL_ERROR)
        self._started = True
        self._task = None
        transport = self.transport
        if not transport.is_closing():
            transport.resume_reading()
        tail, self._tail = self._tail, b""
        if tail and not self.closed:
            self.data_received(tail)
        if self.closed:
            self._start_ending()

    # -- the connection (asyncio's protocol callbacks) -----------------------------------------

    def data_received(self, data: bytes) -> None:
        """Bytes from the client of an HTTP stream: a request pipelined behind
        it, never answered (the connection closes at the stream's end)."""

    def eof_received(self) -> bool:
        return False  # the client is done: asyncio closes the transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.close(errors.CLIENT_GONE)  # no-op when the server ended the stream
        self.writing_paused = False
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if self._started:
            self._start_ending()

    def pause_writing(self) -> None:
        self.writing_paused = True

    def resume_writing(self) -> None:
        self.writing_paused = False
        waiter = self._writable
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- what each transport says ----------------------------------------------------------

    def beat(self, now: float) -> None:
        """Called by the heartbeat loop twice per ``--heartbeat`` interval: a
        heartbeat if nothing was written since the last call and none was left
        then. So an idle stream gets one per interval, a busy one none, and no
        stream goes a whole interval without a byte. Bytes that flow keep a
        connection open through proxies as well as a heartbeat does, and a
        heartbeat on a busy stream costs a write; a peer that vanished while
        they flow leaves them unacknowledged (:func:`limit_unacked`)."""
        due = self.sent == self._beat_mark and not self._beat_sent
        if due:
            self.heartbeat(now)
        self._beat_sent = due
        self._beat_mark = self.sent

    def heartbeat(self, now: float) -> None:
        """The transport's heartbeat, for an idle stream."""
        raise NotImplementedError

    def final_bytes(self, reason: Disconnect, last_id: str | None) -> bytes:
        """The format-framed bytes that end the stream (goodbye or end)."""
        type, body = final_control(reason, last_id, self.ctx.settings.retry_ms)
        return encode_control(self.fmt, type, body)

    async def terminate(self, reason: Disconnect) -> None:
        """The transport's own ending, after the final bytes (may wait for the client)."""
        raise NotImplementedError

    # -- writing ---------------------------------------------------------------------------

    def write_batch(self, batch: Batch) -> None:
        """A batch the sweep has no bytes for yet (it frames them here, once for
        every stream of this wire), or the stream's first bytes."""
        if self._first is None:
            self.write(batch.wire(self.wire))
        else:
            self.write_body(batch.wire(Wire.of(self.fmt, False)))

    def write_messages(self, messages: Sequence[Message]) -> None:
        self.write_body(encode_messages(self.fmt, [(m.id, m.json) for m in messages]))

    def write_control(self, type: str, obj_json: bytes) -> None:
        self.write_body(encode_control(self.fmt, type, obj_json))

    def first_bytes(self, first: int | bytes | None) -> None:
        """Make the next body written differ from what everyone shares: a JSON
        array's first item goes out without its leading separator (an int: the
        bytes to strip), an SSE stream's first event carries the ``retry:``
        field (bytes: a prefix). Until then the sweep leaves the framing to
        :meth:`write_batch`."""
        self._first = first
        self.shared_wire = None if first is not None else self.wire

    def _first_write(self, body: bytes) -> bytes:
        first = self._first
        if first is None:
            return body
        self.first_bytes(None)
        return body[first:] if isinstance(first, int) else first + body

    def write_body(self, body: bytes) -> None:
        """Write format-framed bytes, adding the HTTP chunk framing if needed."""
        if self._first is not None:
            body = self._first_write(body)
        if body:
            self.write(self._on_wire(body))

    def write_raw(self, body: bytes) -> None:
        """Write bytes that are not messages: heartbeats, the JSON array's ``[``,
        WebSocket pongs. Never stripped or prefixed, but bounded like the rest."""
        self.write(self._on_wire(body))

    def _on_wire(self, body: bytes) -> bytes:
        """Format-framed bytes as they go out: inside an HTTP chunk if the
        response is chunked."""
        return http_chunk(body) if self.wire.http_chunked else body

    def write(self, data: bytes) -> None:
        """Bytes as they go on the wire, counted and bounded (``--max-queue-bytes``)."""
        if self.closed:
            return
        transport = self.transport
        if transport.is_closing():
            self.close(errors.CLIENT_GONE)
            return
        transport.write(data)
        self.sent += len(data)
        if transport.get_write_buffer_size():  # the socket did not take it all
            self._queued(transport)

    def _queued(self, transport: asyncio.Transport) -> None:
        """Bytes wait in user space: past the bound the stream ends; a blocked
        socket gets ``--write-timeout`` to take more."""
        queued = transport.get_write_buffer_size()
        if queued > self.max_queue_bytes:
            self.close(errors.SLOW_CONSUMER)
        elif self._stall_timer is None and self.writing_paused:
            self._stall_timer = self.loop.call_later(self.write_timeout, self._check_stall)

    def _check_stall(self) -> None:
        self._stall_timer = None
        if not self.closed and self.writing_paused:
            self.close(errors.WRITE_TIMEOUT)

    async def drain(self) -> None:
        """Wait while the socket is blocked, at most ``--write-timeout`` seconds."""
        if self.closed or not self.writing_paused:
            return
        try:
            async with asyncio.timeout(self.write_timeout):
                await self._wait_writable()
        except TimeoutError:
            self.close(errors.WRITE_TIMEOUT)
        except (ConnectionError, RuntimeError):
            self.close(errors.CLIENT_GONE)

    async def _wait_writable(self) -> None:
        """Wait until the paused transport resumes (no deadline of its own)."""
        if self.writing_paused and not self.transport.is_closing():
            waiter = self._writable = self.loop.create_future()
            await waiter

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in user space for this socket."""
        return 0 if self.transport.is_closing() else self.transport.get_write_buffer_size()

    # -- ending ----------------------------------------------------------------------------

    def expire_at(self, when: float) -> None:
        """End the stream with ``token_expired`` (WS 4003) at Unix time ``when``."""
        self._expiry = self.loop.call_later(
            max(0.0, when - time.time()), self.close, errors.TOKEN_EXPIRED
        )

    def close(self, reason: Disconnect) -> None:
        """The stream is over (step 1 of the ending); never blocks."""
        if self.closed:
            return
        self.closed = True
        self.closed_at = self.loop.time()
        self.reason = reason
        if self._stall_timer is not None:
            self._stall_timer.cancel()
            self._stall_timer = None
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        pump = self.pump
        if pump is not None and pump is not asyncio.current_task():
            pump.cancel()  # a generator that sleeps must not hold the ending back
        if self._started:
            # Not from inside the hub's sweep that may have called this.
            self.loop.call_soon(self._start_ending)

    def _start_ending(self) -> None:
        if self._task is None:  # once, and not before the stream has started
            self._task = asyncio.ensure_future(self.finish())

    def leave(self) -> str | None:
        """Leave the hub and stop the generator (idempotent); returns the last id
        written. The stream counts as ended from here on."""
        self.close(errors.CLIENT_GONE)  # no-op when the server ended it
        sub = self.sub
        if sub is not None:
            self.sub = None
            self.ctx.hub.unsubscribe(sub)
            self.last_id = sub.last_id
        if self.ctx.sessions.pop(self, False) is None:  # counted once
            assert self.reason is not None
            self.ctx.disconnects[self.reason.reason] += 1
        return self.last_id

    async def finish(self) -> None:
        """Steps 2 and 3 of the ending: final bytes, the transport's ending, every
        byte out of the kernel; all within ``--write-timeout`` of :meth:`close`,
        else the connection is reset."""
        last_id = self.leave()
        reason = self.reason
        assert reason is not None
        transport = self.transport
        clean = False
        try:
            async with asyncio.timeout_at(self.closed_at + self.write_timeout):
                if reason is not errors.CLIENT_GONE and not transport.is_closing():
                    body = self._first_write(self.final_bytes(reason, last_id))
                    if body:
                        data = self._on_wire(body)
                        transport.write(data)
                        self.sent += len(data)
                    await self.terminate(reason)
                await self._sent(transport)
            clean = True
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if not clean:
                reset_connection(transport)
            transport.close()  # the gateway owns the connection; after a reset, a no-op
            self.ctx.owned.pop(self, None)
            self.ctx.auth.quota.leave(self._quota_key)
            self._quota_key = None
            self.logged()

    def logged(self) -> None:
        """The stream's access-log line, once it has ended (with ``--access-log``)."""
        if self.ctx.access_log is not None:
            self.ctx.access_log.closed(self)

    @staticmethod
    async def _sent(transport: asyncio.Transport) -> None:
        """Wait until neither user space nor the kernel holds bytes not yet sent
        (a closed socket holds none)."""
        sock = transport.get_extra_info("socket")
        delay = 0.002
        while transport.get_write_buffer_size() or unsent_bytes(sock):
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.1)

    def reset(self) -> None:
        """Drop the connection now (shutdown past its grace)."""
        reset_connection(self.transport)


def final_control(reason: Disconnect, last_id: str | None, retry_ms: int) -> tuple[str, bytes]:
    """The control event that ends a stream: ``goodbye`` or ``end``."""
    if reason.reconnect:
        return "goodbye", control_json(
            "goodbye", reason=reason.reason, reconnect_ms=retry_ms, last_id=last_id
        )
    return "end", control_json("end", reason=reason.reason, last_id=last_id)
