"""Wire framing: pure functions from messages to bytes. No sockets, no asyncio.

Every transport carries the same message JSON (:func:`message_json`); only the
framing around it differs:

* NDJSON: ``<json>\\n``
* JSON array: ``[`` then items joined by ``,\\n`` then ``]\\n``
* SSE (WHATWG HTML, "Server-sent events"): ``id: <id>\\ndata: <json>\\n\\n``
* WebSocket (RFC 6455 section 5.2): one unmasked text frame per message
* HTTP/1.1 chunked transfer coding (RFC 9112 section 7.1) around any of the
  HTTP bodies.

The message JSON never contains CR, LF or NUL bytes: JSON escapes control
characters inside strings, orjson emits no whitespace, and topic names and ids
are validated before they get here. That is what makes one ``data:`` line (or
one NDJSON line) per message safe by construction; :func:`sse_event` still
refuses a field value that would break the framing rather than trusting it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable
from typing import Any

import orjson

__all__ = [
    "FRAMERS",
    "HTTP_LAST_CHUNK",
    "JSON_CLOSE",
    "JSON_OPEN",
    "NDJSON_HEARTBEAT",
    "SSE_HEARTBEAT",
    "WS_PING",
    "Format",
    "control_json",
    "encode_control",
    "encode_messages",
    "http_chunk",
    "json_item",
    "message_json",
    "ndjson_line",
    "sse_event",
    "sse_retry_field",
    "ws_frame",
]


class Format(enum.Enum):
    """How one message or control event is framed on a transport."""

    NDJSON = "ndjson"
    JSON_ARRAY = "json"
    SSE = "sse"
    WS = "ws"

    # Members are compared by identity, so they may hash by it: Enum's own
    # __hash__ is a Python call, paid on every delivery (the batch cache's key).
    __hash__ = object.__hash__


class Wire:
    """How a stream's shared bytes go out: a format, inside HTTP chunks or not.

    One instance per pair (:meth:`of`), hashed by identity: the key of a
    batch's cache, looked up on every delivery, where a ``(format, chunked)``
    tuple would be built and hashed each time.
    """

    __slots__ = ("fmt", "http_chunked")

    def __init__(self, fmt: Format, http_chunked: bool) -> None:
        self.fmt = fmt
        self.http_chunked = http_chunked

    @staticmethod
    def of(fmt: Format, http_chunked: bool) -> Wire:
        return _WIRES[fmt, http_chunked]

    def __repr__(self) -> str:
        return f"Wire({self.fmt.name}{', chunked' if self.http_chunked else ''})"


_WIRES = {(fmt, chunked): Wire(fmt, chunked) for fmt in Format for chunked in (False, True)}


def message_json(id: str, topic: str, ts: float, data_json: bytes) -> bytes:
    """The message object, identical on every transport.

    ``data_json`` is already-serialized compact JSON; it is embedded as is.
    """
    return orjson.dumps({"id": id, "topic": topic, "ts": ts, "data": orjson.Fragment(data_json)})


def control_json(type: str, **fields: Any) -> bytes:
    """A control event: a JSON object whose first key is ``type``."""
    return orjson.dumps({"type": type, **fields})


# -- NDJSON -------------------------------------------------------------------

NDJSON_HEARTBEAT = b"\n"
"""A blank line: whitespace to a JSON reader, skipped by NDJSON readers."""


def ndjson_line(obj_json: bytes) -> bytes:
    return obj_json + b"\n"


# -- JSON array ---------------------------------------------------------------

JSON_OPEN = b"["
JSON_CLOSE = b"]\n"
JSON_SEPARATOR = b",\n"
JSON_FIRST_STRIP = len(JSON_SEPARATOR)
"""The first item of an array is written without its leading separator."""


def json_item(obj_json: bytes) -> bytes:
    """An array item with its leading separator (strip it for the first item)."""
    return JSON_SEPARATOR + obj_json


# -- Server-Sent Events ---------------------------------------------------------

SSE_HEARTBEAT = b": ping\n\n"
"""A comment line (ignored by EventSource), as aiohttp-sse writes it with sep="\\n"."""

_SSE_FORBIDDEN = (b"\r", b"\n", b"\0")


def _sse_field_value(name: str, value: str) -> bytes:
    raw = value.encode()
    for bad in _SSE_FORBIDDEN:
        if bad in raw:
            # WHATWG: a field ends at CR or LF, and an id containing NUL is
            # ignored by the client; either would corrupt the stream.
            raise ValueError(f"SSE {name} must not contain CR, LF or NUL: {value!r}")
    return raw


def sse_event(
    data: bytes,
    *,
    id: str | None = None,
    event: str | None = None,
    retry: int | None = None,
) -> bytes:
    """One SSE event, lines ended by LF.

    ``data`` is split on CR, LF and CRLF into several ``data:`` lines, as the
    WHATWG parser joins them back with LF; the gateway's JSON never has any.
    """
    parts: list[bytes] = []
    if id is not None:
        parts.append(b"id: " + _sse_field_value("id", id) + b"\n")
    if event is not None:
        parts.append(b"event: " + _sse_field_value("event", event) + b"\n")
    if b"\r" in data or b"\n" in data:
        lines = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
    else:
        lines = [data]
    if b"\0" in data:
        raise ValueError("SSE data must not contain NUL")
    for line in lines:
        parts.append(b"data: " + line + b"\n")
    if retry is not None:
        if retry < 0:
            raise ValueError("retry must not be negative")
        parts.append(b"retry: %d\n" % retry)
    parts.append(b"\n")
    return b"".join(parts)


def sse_retry_field(retry_ms: int) -> bytes:
    """A ``retry:`` line with no blank line after it.

    Written just before the first event of a stream, it becomes part of that
    event's block. A retry-only block (``retry: N`` then a blank line) is
    legal and dispatches nothing in a WHATWG parser, but some popular clients
    (httpx-sse) dispatch it as an empty message; riding on a real event avoids
    that.
    """
    return b"retry: %d\n" % retry_ms


# -- WebSocket ------------------------------------------------------------------

WS_TEXT = 0x1
WS_PING_OPCODE = 0x9


def ws_frame(payload: bytes, opcode: int = WS_TEXT) -> bytes:
    """One final, unmasked server-to-client frame (RFC 6455 section 5.2).

    Servers never mask (section 5.1); no extension is negotiated, so RSV bits
    are 0.
    """
    length = len(payload)
    first = 0x80 | opcode
    if length < 126:
        header = bytes((first, length))
    elif length < 1 << 16:
        header = bytes((first, 126)) + length.to_bytes(2, "big")
    else:
        header = bytes((first, 127)) + length.to_bytes(8, "big")
    return header + payload


WS_PING = ws_frame(b"", WS_PING_OPCODE)
"""An empty ping (RFC 6455 section 5.5.2); clients answer with a pong."""


# -- HTTP/1.1 chunked transfer coding --------------------------------------------

HTTP_LAST_CHUNK = b"0\r\n\r\n"


def http_chunk(body: bytes) -> bytes:
    """One chunk: hex size, CRLF, the bytes, CRLF. Empty bodies are not chunks."""
    if not body:
        raise ValueError("an empty chunk would end the body")
    return b"%x\r\n%b\r\n" % (len(body), body)


# -- per format -------------------------------------------------------------------


def _sse_message(message_id: str, message_json: bytes) -> bytes:
    # Fast path of sse_event(): ids are validated at parse/generation time
    # and message JSON has no CR/LF/NUL (see module docstring).
    return b"id: " + message_id.encode() + b"\ndata: " + message_json + b"\n\n"


FRAMERS: dict[Format, Callable[[str, bytes], bytes]] = {
    Format.NDJSON: lambda _, message_json: ndjson_line(message_json),
    Format.JSON_ARRAY: lambda _, message_json: json_item(message_json),
    Format.SSE: _sse_message,
    Format.WS: lambda _, message_json: ws_frame(message_json),
}
"""Per format, how one ``(id, message_json)`` is framed. A format's framing of
several messages is the concatenation of theirs (:func:`encode_messages`)."""


def encode_messages(fmt: Format, messages: Iterable[tuple[str, bytes]]) -> bytes:
    """Frame ``(id, message_json)`` pairs for one format, as one byte string."""
    frame = FRAMERS[fmt]
    return b"".join([frame(i, m) for i, m in messages])


def encode_control(fmt: Format, type: str, obj_json: bytes, *, retry: int | None = None) -> bytes:
    """Frame one control event for one format (SSE: a named event, no id)."""
    if fmt is Format.NDJSON:
        return obj_json + b"\n"
    if fmt is Format.JSON_ARRAY:
        return JSON_SEPARATOR + obj_json
    if fmt is Format.SSE:
        return sse_event(obj_json, event=type, retry=retry)
    return ws_frame(obj_json)
