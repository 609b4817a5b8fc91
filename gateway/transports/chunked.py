"""``GET /chunked/{topic}``: chunked HTTP, NDJSON (default) or one JSON array."""

from __future__ import annotations

import functools

from aiohttp import web

from ..context import Context
from ..errors import BadRequest, Disconnect
from ..framing import JSON_CLOSE, JSON_FIRST_STRIP, JSON_OPEN, NDJSON_HEARTBEAT, Format
from .common import HttpStream, handle_http_stream

__all__ = ["HEARTBEAT", "ChunkedStream", "handle_chunked"]

HEARTBEAT = NDJSON_HEARTBEAT
"""Whitespace: a blank NDJSON line, insignificant between JSON array items."""

_CONTENT_TYPES = {Format.NDJSON: "application/x-ndjson", Format.JSON_ARRAY: "application/json"}


def _parse_format(raw: str | None) -> Format:
    if raw in (None, "", "ndjson"):
        return Format.NDJSON
    if raw == "json":
        return Format.JSON_ARRAY
    raise BadRequest(f"format must be ndjson or json, got {raw!r}", code="bad_format")


class ChunkedStream(HttpStream):
    """NDJSON lines, or the items of one JSON array; a blank line as heartbeat.

    A JSON array opens with ``[`` and its first item goes out without the
    separator every other subscriber's shared bytes carry; it closes with
    ``]``, which is itself the end of a finished stream (no ``end`` item).
    """

    transport_name = "chunked"
    __slots__ = ("fmt",)

    def __init__(
        self, request: web.Request, ctx: Context, fmt: Format, quota_key: str | None
    ) -> None:
        super().__init__(request, ctx, fmt, quota_key)
        self.fmt = fmt
        if fmt is Format.JSON_ARRAY:
            self.write_raw(JSON_OPEN)
            self.first_bytes(JSON_FIRST_STRIP)

    @classmethod
    def format_of(cls, request: web.Request) -> Format:
        return _parse_format(request.query.get("format"))

    @classmethod
    def new_response(cls, fmt: Format, *, head: bool) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        resp.content_type = _CONTENT_TYPES[fmt]
        resp.charset = "utf-8"
        return resp

    def heartbeat(self, now: float) -> None:
        self.write_raw(HEARTBEAT)

    def final_bytes(self, reason: Disconnect, last_id: str | None) -> bytes:
        if self.fmt is Format.NDJSON:
            return super().final_bytes(reason, last_id)
        if reason.reconnect:  # a goodbye item, then the array's end
            return super().final_bytes(reason, last_id) + JSON_CLOSE
        self.first_bytes(None)  # the array's end is its own "end" event, with no separator
        return JSON_CLOSE


handle_chunked = functools.partial(handle_http_stream, ChunkedStream)
"""``GET``/``HEAD /chunked/{topic}``."""
