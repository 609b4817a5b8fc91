"""One exception tree for the gateway, and the Disconnect value transports translate."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BadRequest",
    "Conflict",
    "Disconnect",
    "Forbidden",
    "NotFound",
    "PayloadTooLarge",
    "RequestTimeout",
    "StreamgateError",
    "TooManyRequests",
    "Unauthorized",
    "Unavailable",
    "UnsupportedMediaType",
]


class StreamgateError(Exception):
    """Base of every error the gateway raises on purpose.

    ``status`` is the HTTP status the API answers with and ``code`` the short
    machine-readable error name put in the JSON body; ``headers``, when set, go
    on the answer too (``WWW-Authenticate``, ``Retry-After``).
    """

    status = 500
    code = "internal"
    headers: dict[str, str] | None = None

    def __init__(
        self, message: str, *, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if headers is not None:
            self.headers = headers


class BadRequest(StreamgateError):
    status = 400
    code = "bad_request"


class Unauthorized(StreamgateError):
    """No credential, or one that is not valid (RFC 9110 section 15.5.2): the
    answer names the scheme the gateway takes (RFC 6750 section 3)."""

    status = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": 'Bearer realm="streamgate"'}  # noqa: RUF012 (never mutated)


class Forbidden(StreamgateError):
    """A valid credential that does not allow this action on this topic."""

    status = 403
    code = "forbidden"


class NotFound(StreamgateError):
    status = 404
    code = "unknown_topic"


class RequestTimeout(StreamgateError):
    """The request's body did not arrive within ``--read-timeout``; the
    connection is closed after the answer (its state is unknown)."""

    status = 408
    code = "read_timeout"


class Conflict(StreamgateError):
    status = 409
    code = "conflict"


class PayloadTooLarge(StreamgateError):
    status = 413
    code = "too_large"


class UnsupportedMediaType(StreamgateError):
    """A publish body that is not declared JSON (or NDJSON): what a browser may
    send to another origin without asking first (a form, ``no-cors`` fetch)."""

    status = 415
    code = "unsupported_media_type"


class TooManyRequests(StreamgateError):
    """Over a per-client rate or count; ``Retry-After`` says when to come back."""

    status = 429
    code = "rate_limited"


class Unavailable(StreamgateError):
    status = 503
    code = "broker_unavailable"


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Why the server ends a stream; every transport translates it.

    ``ws_code`` is the WebSocket close code (RFC 6455 section 7.4), ``reason`` the
    ``goodbye``/``end`` reason on every transport, and ``reconnect`` whether the
    client is expected to come back (``goodbye``) or not (``end``).
    """

    reason: str
    ws_code: int
    reconnect: bool


SHUTDOWN = Disconnect("shutdown", 1001, reconnect=True)
SLOW_CONSUMER = Disconnect("slow_consumer", 4001, reconnect=True)
WRITE_TIMEOUT = Disconnect("write_timeout", 4002, reconnect=True)
LIMIT_REACHED = Disconnect("limit", 1000, reconnect=False)
STREAM_COMPLETE = Disconnect("complete", 1000, reconnect=False)
SOURCE_FAILED = Disconnect("source_failed", 1011, reconnect=True)
HEARTBEAT_TIMEOUT = Disconnect("heartbeat_timeout", 1011, reconnect=True)
INTERNAL_ERROR = Disconnect("internal_error", 1011, reconnect=True)
"""A fault of the gateway's own (never the client's): reconnect and resume."""
RATE_LIMITED = Disconnect("rate_limited", 1008, reconnect=False)
"""A WebSocket client kept publishing past ``--ws-publish-rate``."""
CLIENT_GONE = Disconnect("client_gone", 1000, reconnect=False)
"""The client went away (or closed its WebSocket): nothing is sent."""
TOPIC_DELETED = Disconnect("topic_deleted", 1000, reconnect=False)
"""The topic was deleted (``DELETE /topics/{topic}``) or expired: nothing to resume."""
TOKEN_EXPIRED = Disconnect("token_expired", 4003, reconnect=True)
"""The stream's credential expired: come back with a fresh one (and ``since``)."""
