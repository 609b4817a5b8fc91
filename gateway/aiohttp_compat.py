"""Every use of a private part of aiohttp (and of aiohttp-sse), in one place.

A stream takes its connection over from aiohttp once its response head is
out, and writes shared bytes straight to the transport; for that the gateway
leans on a few parts of aiohttp that are not public API. Each is listed here,
used only through this module, and checked by ``tests/test_aiohttp_compat.py``
against the installed versions, so an upgrade that changes one fails that test
loudly instead of breaking a stream quietly. pyproject.toml caps aiohttp below
its next major version.

The contract, item by item:

1. ``StreamWriter.chunked``: aiohttp chose chunked transfer coding for the
   response (HTTP/1.1), so the bytes the gateway writes itself must be chunks.
2. ``BaseSite._server``: the asyncio server that ``BaseSite.stop()`` closes;
   :class:`GatewaySite` sets it, as ``TCPSite`` does, but with the gateway's
   own protocol factory.
3. ``web.Server._connections``: the open connections (counted for
   ``--max-connections`` without copying the list ``Server.connections`` makes).
4. ``RequestHandler`` has no instance ``__dict__`` and a ``handle_error``
   method; a subclass that adds no slots can take an instance's class, which is
   how every error aiohttp answers itself (a malformed request) becomes JSON.
5. Taking a connection over, once a stream's response head is out.
   ``RequestHandler.connection_lost(None)`` lets go of a connection without
   closing it when its ``transport`` is cleared first (else its
   ``force_close`` closes it): the handler forgets the connection, and its
   task (cancelled, with ``handler_cancellation``) ends, taking the request,
   its headers and the parser with it. ``RequestHandler._manager`` is the
   ``web.Server`` whose ``_connections`` (item 3) would count the handler
   until its task is done; the takeover removes it at once.
   ``RequestHandler._message_tail`` holds the bytes a client sent after a
   request that asks for an upgrade (aiohttp's parser stops there).
6. aiohttp-sse's ``EventSourceResponse``: ``_allow_all_methods``, ``_req`` and,
   from 3.0, ``_set_tcp_user_timeout``; the gateway's SSE response replaces its
   ``prepare`` to start no ping task.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

__all__ = [
    "ErrorHook",
    "GatewaySite",
    "adopt_request_handler",
    "http_chunked",
    "open_connections",
    "sse_allows_method",
    "sse_request_transport",
    "sse_set_tcp_user_timeout",
    "take_over",
]


# -- 1. response framing -------------------------------------------------------------------


def http_chunked(request: web.BaseRequest) -> bool:
    """After ``prepare``: does the body go out in chunked transfer coding?"""
    return bool(getattr(request.writer, "chunked", True))


# -- 2, 3. listening -------------------------------------------------------------------------


class GatewaySite(web.BaseSite):
    """``TCPSite`` with the gateway's protocol factory in front of aiohttp's.

    ``wrap`` receives aiohttp's factory (the ``web.Server``) and returns the one
    the listening socket uses: it may answer a connection itself (the
    ``--max-connections`` refusal) or adopt aiohttp's handler.
    """

    __slots__ = ("_bound_port", "_host", "_port", "_reuse_port", "_wrap")

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str,
        port: int,
        *,
        wrap: Callable[[web.Server], Callable[[], asyncio.BaseProtocol]],
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, backlog=backlog)
        self._host = host
        self._port = port
        self._wrap = wrap
        self._bound_port = port
        self._reuse_port = reuse_port

    @property
    def name(self) -> str:
        return f"http://{self._host}:{self._bound_port}"

    @property
    def port(self) -> int:
        return self._bound_port

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        loop = asyncio.get_running_loop()
        listener = await loop.create_server(
            self._wrap(server),
            self._host,
            self._port,
            backlog=self._backlog,
            reuse_address=True,
            reuse_port=self._reuse_port or None,
        )
        self._server = listener
        if listener.sockets:
            self._bound_port = listener.sockets[0].getsockname()[1]


def open_connections(server: web.Server) -> int:
    """How many connections aiohttp's server holds (without copying them)."""
    return len(server._connections)


# -- 4. errors aiohttp answers itself ----------------------------------------------------------

ErrorHook = Callable[[web.BaseRequest, int, BaseException | None, str | None], web.StreamResponse]


@functools.cache
def _handler_class(hook: ErrorHook) -> type[RequestHandler]:
    class GatewayRequestHandler(RequestHandler):
        __slots__ = ()

        def handle_error(
            self,
            request: web.BaseRequest,
            status: int = 500,
            exc: BaseException | None = None,
            message: str | None = None,
        ) -> web.StreamResponse:
            if request.writer.output_size > 0:  # aiohttp's rule: too late for an answer
                raise ConnectionError("the response has started; cannot answer an error")
            resp = hook(request, status, exc, message)
            resp.force_close()
            return resp

    return GatewayRequestHandler


def adopt_request_handler(handler: asyncio.BaseProtocol, hook: ErrorHook) -> None:
    """Make ``hook`` answer the errors aiohttp's handler ``handler`` answers itself
    (malformed requests, unhandled exceptions): it returns the response, which
    always closes the connection, and does its own logging."""
    if type(handler) is RequestHandler:
        handler.__class__ = _handler_class(hook)


# -- 5. taking a connection over ---------------------------------------------------------------


def take_over(request: web.BaseRequest, protocol: asyncio.Protocol) -> bytes:
    """Give the connection of ``request`` to ``protocol`` for good, once the
    response head is on the wire; returns the bytes the client sent after an
    upgrade request, for ``protocol`` to read.

    aiohttp's handler forgets the connection as if the client had gone, but
    the transport stays open: the request, its parsed headers, the parser and
    the task that ran the handler all end, which is what keeps an idle
    stream small. The calling handler must not await again (aiohttp may
    cancel it) and must not return a response that writes (its writer has no
    transport any more, so aiohttp's ``write_eof`` finds nothing to write to).
    """
    handler = request.protocol
    transport = request.transport
    if not isinstance(handler, RequestHandler) or transport is None:
        raise ConnectionResetError("the connection is gone")
    tail = handler._message_tail
    handler._message_tail = b""
    server = handler._manager
    transport.set_protocol(protocol)
    handler.transport = None  # else its force_close() would close the transport
    handler.connection_lost(None)
    if server is not None:  # it counts the handler until its task is done: not any more
        server._connections.pop(handler, None)
    if not transport.is_reading():  # paused by aiohttp for a long tail
        transport.resume_reading()
    return tail


# -- 6. aiohttp-sse ---------------------------------------------------------------------------


def sse_allows_method(resp: Any, method: str) -> bool:
    return bool(resp._allow_all_methods) or method == "GET"


def sse_set_tcp_user_timeout(resp: Any, request: web.BaseRequest) -> None:
    setter = getattr(resp, "_set_tcp_user_timeout", None)  # aiohttp-sse >= 3.0
    if setter is not None:
        setter(request)


def sse_request_transport(resp: Any) -> asyncio.BaseTransport | None:
    req = resp._req
    return None if req is None else req.transport
