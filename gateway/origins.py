"""What a web page on another origin may do with the gateway: the WebSocket
Origin rule, with the origins listed in ``--allowed-origins``.

A browser attaches ``Origin`` to every WebSocket handshake and to every
cross-origin request, and it cannot be forged from a page.

* **WebSocket.** The handshake is not covered by CORS: a browser opens a
  WebSocket to any origin and lets the page read it. So a handshake whose
  ``Origin`` is neither the gateway's own (the scheme, host and port the
  request was sent to) nor listed is refused, 403 ``forbidden_origin``, before
  the upgrade. No ``Origin`` at all is a program, not a page: allowed.
"""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp import hdrs, web

from .errors import StreamgateError
from .settings import Settings

__all__ = [
    "ORIGINS",
    "ForbiddenOrigin",
    "OriginPolicy",
    "own_origin",
]

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


ORIGINS = web.AppKey("origins", OriginPolicy)
