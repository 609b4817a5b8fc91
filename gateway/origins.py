"""What a web page on another origin may do with the gateway: the WebSocket
Origin rule, and CORS for the origins listed in ``--allowed-origins``.

A browser attaches ``Origin`` to every WebSocket handshake and to every
cross-origin request, and it cannot be forged from a page. Two rules follow:

* **WebSocket.** The handshake is not covered by CORS: a browser opens a
  WebSocket to any origin and lets the page read it. So a handshake whose
  ``Origin`` is neither the gateway's own (the scheme, host and port the
  request was sent to) nor listed is refused, 403 ``forbidden_origin``, before
  the upgrade. No ``Origin`` at all is a program, not a page: allowed.
* **CORS.** Answers to a listed origin carry ``Access-Control-Allow-Origin``
  (its origin), ``-Allow-Credentials`` and ``-Expose-Headers``; a preflight
  (``OPTIONS`` with ``Access-Control-Request-Method``) from it gets a 204 with
  the route's methods and the request headers it may send. Any other origin
  gets no CORS header, so its browser keeps the answer from the page, and its
  preflight is 403 JSON, so its browser never sends the request.
  ``Vary: Origin`` is on every answer once an origin is listed.

The headers are set by an ``on_response_prepare`` signal handler, registered
only when an origin is listed: it runs once per response, as the headers go
out, and a stream drops its headers once they are sent, so an idle stream holds
nothing for CORS (a middleware's frame would live as long as the stream).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from aiohttp import hdrs, web

from .errors import StreamgateError
from .responses import error_response
from .settings import Settings

__all__ = [
    "ALLOW_HEADERS",
    "EXPOSE_HEADERS",
    "MAX_AGE",
    "ORIGINS",
    "ForbiddenOrigin",
    "OriginPolicy",
    "own_origin",
    "preflight",
]

ALLOW_HEADERS = "Authorization, Content-Type, Last-Event-ID"
"""Request headers a listed origin's page may send: a token, a JSON body, and
the resume header an ``EventSource`` sends when it reconnects."""
EXPOSE_HEADERS = "Retry-After"
"""Response headers a listed origin's script may read besides the safelisted ones."""
MAX_AGE = "600"
"""Seconds a browser may reuse a preflight's answer (Chromium caps it at 7200):
a change to ``--allowed-origins`` reaches open pages within ten minutes."""

_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


class ForbiddenOrigin(StreamgateError):
    status = 403
    code = "forbidden_origin"


def own_origin(request: web.BaseRequest) -> str | None:
    """The origin this request was sent to: its scheme (``X-Forwarded-Proto``
    when a proxy in front terminates TLS; a page cannot set that header on a
    handshake) and its ``Host``, lower case, without a default port."""
    host = request.headers.get(hdrs.HOST)
    if not host:
        return None
    proto = request.headers.get(hdrs.X_FORWARDED_PROTO, "").partition(",")[0].strip().lower()
    scheme = proto if proto in _DEFAULT_PORTS else request.scheme
    host = host.strip().lower()
    default = _DEFAULT_PORTS.get(scheme)
    if default and host.endswith(default):
        host = host[: -len(default)]
    return f"{scheme}://{host}"


@dataclass(frozen=True, slots=True)
class OriginPolicy:
    """``--allowed-origins`` and ``--cors-credentials``, ready for each request."""

    listed: frozenset[str]
    any_origin: bool
    credentials: bool

    @classmethod
    def from_settings(cls, settings: Settings) -> OriginPolicy:
        origins = settings.allowed_origins
        return cls(
            frozenset(o for o in origins if o != "*"), "*" in origins, settings.cors_credentials
        )

    @property
    def cors(self) -> bool:
        """Some origin is listed: CORS answers are on."""
        return self.any_origin or bool(self.listed)

    def allows(self, origin: str) -> bool:
        return self.any_origin or origin in self.listed

    def check_websocket(self, request: web.BaseRequest) -> None:
        """Refuse (403) a handshake from a page of a foreign, unlisted origin."""
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or self.allows(origin):
            return
        own = own_origin(request)
        if origin == own:
            return
        shown = origin if len(origin) <= 100 else origin[:100] + "…"
        raise ForbiddenOrigin(
            f"a WebSocket from a page of {shown!r} is not allowed: the gateway takes its own "
            f"origin ({own}) and the origins listed with --allowed-origins"
        )

    async def on_prepare(self, request: web.BaseRequest, response: web.StreamResponse) -> None:
        """``on_response_prepare`` (registered only when :attr:`cors`)."""
        headers = response.headers
        vary = headers.get(hdrs.VARY)
        if vary is None:
            headers[hdrs.VARY] = "Origin"
        elif "origin" not in vary.lower():
            headers[hdrs.VARY] = f"{vary}, Origin"
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and self.allows(origin):
            headers[hdrs.ACCESS_CONTROL_ALLOW_ORIGIN] = origin
            if self.credentials:
                headers[hdrs.ACCESS_CONTROL_ALLOW_CREDENTIALS] = "true"
            headers[hdrs.ACCESS_CONTROL_EXPOSE_HEADERS] = EXPOSE_HEADERS


ORIGINS = web.AppKey("origins", OriginPolicy)


def preflight(methods: Sequence[str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    """The ``OPTIONS`` handler of a route that takes ``methods``.

    A CORS preflight from a listed origin: 204 with the methods, the headers a
    page may send and how long to remember it (``Access-Control-Allow-Origin``
    and ``-Credentials`` come from :meth:`OriginPolicy.on_prepare`, as on every
    answer to that origin). From any other origin: 403 JSON. A plain
    ``OPTIONS`` (no ``Origin`` or no ``Access-Control-Request-Method``): 204
    with ``Allow``.
    """
    allow_methods = ", ".join(methods)
    allow = f"{allow_methods}, OPTIONS"

    async def handler(request: web.Request) -> web.Response:
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is None or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers:
            return web.Response(status=204, headers={hdrs.ALLOW: allow})
        if not request.app[ORIGINS].allows(origin):
            shown = origin if len(origin) <= 100 else origin[:100] + "…"
            return error_response(
                ForbiddenOrigin(
                    f"pages of {shown!r} may not use this gateway: it is not listed with "
                    "--allowed-origins"
                )
            )
        return web.Response(
            status=204,
            headers={
                hdrs.ACCESS_CONTROL_ALLOW_METHODS: allow_methods,
                hdrs.ACCESS_CONTROL_ALLOW_HEADERS: ALLOW_HEADERS,
                hdrs.ACCESS_CONTROL_MAX_AGE: MAX_AGE,
            },
        )

    return handler
