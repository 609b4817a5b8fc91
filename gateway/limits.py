"""What keeps a client from holding more than its share: connections, logs, errors.

* :class:`ConnectionGate` sits in front of aiohttp's protocol factory. Past
  ``--max-connections`` it answers a connection itself with a 503 JSON error
  and closes it, so the gateway never runs out of file descriptors for the
  clients it does serve. It also makes aiohttp answer malformed requests with
  the gateway's JSON error body (see :mod:`gateway.aiohttp_compat`).
* :class:`Tally` turns a flood of one kind of event (a refused connection, a
  malformed request, an ``accept()`` out of descriptors) into one log line per
  interval that says how many there were.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import resource
from collections.abc import Callable, Sized
from http import HTTPStatus
from typing import Any

import orjson
from aiohttp import web

from . import aiohttp_compat
from .responses import SERVER

__all__ = [
    "FD_RESERVE",
    "LOG_INTERVAL",
    "ConnectionGate",
    "Tally",
    "accept_error_handler",
    "max_connections",
]

log = logging.getLogger("gateway.limits")

LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same kind of flood."""

FD_RESERVE = 64
"""Descriptors kept free below the open-files limit for everything that is not
a client connection (listening socket, Redis, logs, the refusals themselves)."""

REFUSAL_LINGER = 1.0
"""Seconds a refused connection may take to read its 503 before it is dropped."""


def max_connections(wanted: int) -> int:
    """``--max-connections``, at most the open-files limit less :data:`FD_RESERVE`
    (also the default, for 0): past the file limit the OS would refuse
    connections itself, with no answer to the client (and, on uvloop, no log)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    most = max(16, soft - FD_RESERVE)
    if wanted > most:
        log.warning(
            "--max-connections %d is over the open-files limit (%d) less %d: using %d",
            wanted,
            soft,
            FD_RESERVE,
            most,
        )
    return min(wanted, most) if wanted else most


class Tally:
    """Counts events of one kind and logs them at most once per interval.

    The first event of a quiet period is logged at once; the ones that follow
    within ``interval`` are counted and reported in the next line.
    """

    __slots__ = ("_count", "_handle", "_interval", "_logger", "_text", "total")

    def __init__(
        self, text: str, *, logger: logging.Logger = log, interval: float = LOG_INTERVAL
    ) -> None:
        self._text = text
        self._logger = logger
        self._interval = interval
        self._count = 0
        self._handle: asyncio.TimerHandle | None = None
        self.total = 0
        """Events since start (for /healthz and tests)."""

    def add(self, detail: str = "") -> None:
        self.total += 1
        if self._handle is None:
            self._logger.warning("%s%s", self._text, f": {detail}" if detail else "")
            self._handle = asyncio.get_running_loop().call_later(self._interval, self._flush)
        else:
            self._count += 1

    def _flush(self) -> None:
        self._handle = None
        if self._count:
            count, self._count = self._count, 0
            self._logger.warning(
                "%s (%d more in the last %.0f s)", self._text, count, self._interval
            )
            self._handle = asyncio.get_running_loop().call_later(self._interval, self._flush)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None


def json_error_bytes(status: int, code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


class _Refusal(asyncio.Protocol):
    """Answers one connection with a 503 and closes it, without reading it.

    The answer goes out, then our half of the connection is shut down; what the
    client sends is discarded until it closes its half (closing with unread
    bytes would reset the connection before the client reads the 503), and the
    connection is dropped after :data:`REFUSAL_LINGER` seconds whatever happens.
    At most half of :data:`FD_RESERVE` refusals linger at once; past that a
    refused connection is dropped as soon as its answer is written.
    """

    def __init__(self, response: bytes, gate: ConnectionGate) -> None:
        self._response = response
        self._gate = gate
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(self._response)
        if self._gate.lingering >= FD_RESERVE // 2 or not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        self._gate.lingering += 1
        self._timer = asyncio.get_running_loop().call_later(REFUSAL_LINGER, transport.abort)

    def data_received(self, data: bytes) -> None:
        return None

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
            self._gate.lingering -= 1


def _refusal_response(limit: int) -> bytes:
    body = json_error_bytes(
        503,
        "too_many_connections",
        f"the gateway holds {limit} connections already (--max-connections); retry later",
    )
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        f"Server: {SERVER}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode() + body


def _json_error_hook(malformed: Tally) -> aiohttp_compat.ErrorHook:
    def hook(
        request: web.BaseRequest, status: int, exc: BaseException | None, message: str | None
    ) -> web.StreamResponse:
        if status >= 500:
            log.error("error handling a request from %s", request.remote, exc_info=exc)
            code, text = "internal", "internal server error"
        else:
            text = (message or (str(exc) if exc else "") or HTTPStatus(status).phrase).strip()
            malformed.add(f"{request.remote}: {text[:200]}")
            code = "bad_request"
        # Answered outside the routes: no on_response_prepare signal runs for it.
        return web.Response(
            body=json_error_bytes(status, code, text[:500]),
            status=status,
            content_type="application/json",
            headers={"Server": SERVER},
        )

    return hook


class ConnectionGate:
    """Counts connections at accept time and refuses those past the limit."""

    def __init__(self, max_connections: int, owned: Sized = ()) -> None:
        self.max_connections = max_connections
        self.owned = owned
        """The open connections the streams took over from aiohttp (``Context.owned``)."""
        self.lingering = 0
        """Refused connections waiting for the client to read its 503."""
        self.refused = Tally(f"refusing connections: --max-connections ({max_connections}) reached")
        self.malformed = Tally("malformed requests answered with 400")
        self._refusal = _refusal_response(max_connections)
        self._hook = _json_error_hook(self.malformed)

    def wrap(self, server: web.Server) -> Callable[[], asyncio.BaseProtocol]:
        def factory() -> asyncio.BaseProtocol:
            if aiohttp_compat.open_connections(server) + len(self.owned) >= self.max_connections:
                self.refused.add()
                return _Refusal(self._refusal, self)
            handler = server()
            aiohttp_compat.adopt_request_handler(handler, self._hook)
            return handler

        return factory

    def close(self) -> None:
        self.refused.close()
        self.malformed.close()


_ACCEPT_ERRNOS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}


def accept_error_handler(
    tally: Tally,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """A loop exception handler that counts ``accept()`` failures for lack of
    descriptors (asyncio logs a traceback for each, thousands a second) and
    passes everything else to the default handler."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in _ACCEPT_ERRNOS:
            with contextlib.suppress(Exception):
                tally.add(str(exc))
            return
        if isinstance(exc, ValueError) and "_start_serving" in str(context.get("handle")):
            # After such a failure asyncio retries accept() from a timer, which
            # fails on a listening socket closed meanwhile (at shutdown): harmless.
            log.debug("accept() retry after shutdown: %s", exc)
            return
        loop.default_exception_handler(context)

    return handler
