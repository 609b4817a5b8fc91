"""Logs an operator can use: text or JSON lines, and the access log.

``--log-format json`` makes every log line one JSON object (``ts``, ``level``,
``logger``, ``message``, and the line's own fields), for log collectors.

``--access-log`` adds one line (logger ``gateway.access``) per request, written
by aiohttp's access-log hook when the answer is out (:class:`RequestLog`), and
one per stream, written by the stream itself when it has ended
(:class:`AccessLog`): its transport, topic, duration, the bytes it wrote and
why it ended. A stream is logged once, at its end, whoever ended it (the
client going away cancels an HTTP stream's handler, and aiohttp's hook then
never runs). A ``token`` in a logged query is replaced by ``REDACTED``.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

from .context import CONTEXT

if TYPE_CHECKING:
    from .settings import Settings
    from .transports.stream import Stream

__all__ = ["ACCESS", "AccessLog", "JsonFormatter", "RequestLog", "configure_logging"]

ACCESS = logging.getLogger("gateway.access")

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
MAX_TARGET = 512
"""A logged path and query longer than this is cut (aiohttp allows 8 KiB)."""
_TOKEN_IN_QUERY = re.compile(r"(^|&)(token=)[^&]*")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, the record's ``fields`` (access lines), ``exc`` for a traceback."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            doc.update(fields)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        if record.stack_info:
            doc["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(doc, default=str).decode()


def configure_logging(settings: Settings) -> None:
    """The process's logging, from ``--log-level`` and ``--log-format`` (stderr)."""
    handler = logging.StreamHandler()
    if settings.log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level.upper())


def target(request: web.BaseRequest) -> str:
    """The path and query as the client sent them, ``token=`` redacted, cut at
    :data:`MAX_TARGET` characters."""
    url = request.rel_url
    query = url.raw_query_string
    text = url.raw_path
    if query:
        if "token=" in query:
            query = _TOKEN_IN_QUERY.sub(r"\1\2REDACTED", query)
        text += "?" + query
    return text if len(text) <= MAX_TARGET else text[:MAX_TARGET] + "…"


def _client(request: web.BaseRequest) -> str:
    """The client's address (``X-Forwarded-For`` from ``--trusted-proxies``)."""
    ctx = request.app.get(CONTEXT) if isinstance(request, web.Request) else None
    if ctx is None:
        return request.remote or ""
    return ctx.auth.quota.address(request)


_HEAD = ("kind", "remote", "method", "path", "status", "bytes", "duration_s")
_LINE = '%s "%s %s" %s %sB %.3fs%s'


def _emit(fields: dict[str, Any]) -> None:
    """One access line: ``fields`` as they are for JSON; for text,
    ``client "METHOD path" status bytesB seconds`` and then ``key=value``."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    rest = " ".join(f"{k}={v}" for k, v in fields.items() if k not in _HEAD and v is not None)
    args = (
        fields["remote"] or "-",
        fields["method"],
        fields["path"],
        fields["status"],
        fields["bytes"],
        fields["duration_s"],
        " " + rest if rest else "",
    )
    # The record made directly: ACCESS.info() would also look up the caller's
    # frame and file (findCaller), a sixth of a line's cost, for nothing here.
    record = ACCESS.makeRecord(
        ACCESS.name, logging.INFO, __file__, 0, _LINE, args, None, extra={"fields": fields}
    )
    ACCESS.handle(record)


class AccessLog:
    """The streams' access lines (``ctx.access_log``; None without ``--access-log``).

    A stream is entered when it is made (:meth:`opened`: its start, client,
    request line and topic) and logged when it has ended (:meth:`closed`).
    Nothing is kept or done per stream without ``--access-log``.
    """

    __slots__ = ("_open",)

    def __init__(self) -> None:
        self._open: dict[Stream, tuple[float, str, str, str, str]] = {}

    def opened(self, stream: Stream, request: web.BaseRequest) -> None:
        self._open[stream] = (
            time.monotonic(),
            _client(request),
            request.method,
            target(request),
            request.match_info.get("topic", "") if isinstance(request, web.Request) else "",
        )

    def closed(self, stream: Stream) -> None:
        """The stream's line (once: a second call finds nothing)."""
        entry = self._open.pop(stream, None)
        if entry is None:
            return
        started, remote, method, path, topic = entry
        reason = stream.reason
        last_id = stream.sub.last_id if stream.sub is not None else stream.last_id
        _emit(
            {
                "kind": "stream",
                "remote": remote,
                "method": method,
                "path": path,
                "status": stream.status,
                "transport": stream.transport_name,
                "topic": topic,
                "duration_s": round(time.monotonic() - started, 6),
                "bytes": stream.sent,
                "reason": reason.reason if reason is not None else None,
                "last_id": last_id,
            }
        )

    def __len__(self) -> int:
        return len(self._open)


class RequestLog(AbstractAccessLogger):
    """aiohttp's access-log hook: one line per answered request. A stream's
    line comes from :class:`AccessLog` instead (it knows why the stream ended)."""

    def log(self, request: web.BaseRequest, response: web.StreamResponse, time: float) -> None:
        if _was_streamed(request, response):
            return
        fields: dict[str, Any] = {
            "kind": "request",
            "remote": _client(request),
            "method": request.method,
            "path": target(request),
            "status": response.status,
            "duration_s": round(time, 6),
            "bytes": response.body_length,
        }
        if response.status >= 400 and isinstance(response, web.Response):
            fields["error"] = _error_code(response)
        _emit(fields)

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)


def _was_streamed(request: web.BaseRequest, response: web.StreamResponse) -> bool:
    """A stream's own response (chunked, SSE, WebSocket), logged at its end.
    Every other answer of a stream's handler (an error, SSE's 204, HEAD) is a
    ``web.Response`` or was never streamed."""
    if request.method != "GET" or isinstance(response, web.Response | web.FileResponse):
        return False
    if response.status not in (101, 200) or not isinstance(request, web.Request):
        return False
    return request.match_info.handler in _stream_handlers()


@functools.cache
def _stream_handlers() -> frozenset[Callable[..., Any]]:
    from .transports.chunked import handle_chunked
    from .transports.sse import handle_sse
    from .transports.websocket import handle_ws

    return frozenset((handle_chunked, handle_sse, handle_ws))


def _error_code(response: web.Response) -> str | None:
    """The ``error`` of the gateway's JSON error body."""
    body = response.body
    if not isinstance(body, bytes) or not body.startswith(b'{"error":'):
        return None
    try:
        code = orjson.loads(body).get("error")
    except orjson.JSONDecodeError:
        return None
    return code if isinstance(code, str) else None
