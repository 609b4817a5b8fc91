"""What the three streaming transports share: request parsing, the start of a
stream (a subscription, or a per-connection generator's pump) and the HTTP
streams' run and ending."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, ClassVar

import orjson
from aiohttp import web

from .. import aiohttp_compat, errors
from ..auth import Grant
from ..context import CONTEXT, Context
from ..errors import BadRequest, Disconnect, StreamgateError
from ..framing import HTTP_LAST_CHUNK, Format, Wire, control_json
from ..hub import Subscriber
from ..ids import Key, parse_id
from ..message import Message
from ..responses import error_response
from .stream import Stream

__all__ = [
    "RESERVED_PARAMS",
    "HttpStream",
    "OpenStream",
    "StreamRequest",
    "begin",
    "handle_http_stream",
    "open_stream",
    "parse_stream_request",
    "run_stream",
    "validate_topic",
]

log = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
RESERVED_PARAMS = frozenset({"since", "limit", "format", "skip", "token"})
"""Query parameters the gateway reads itself: never passed to a per-connection stream
(``skip`` is the gateway's to give, from ``since``; ``token`` is a credential)."""
YIELD_EVERY = 64
"""A per-connection pump gives other connections a turn at least this often."""
NO_PARAMS: Mapping[str, str] = MappingProxyType({})
"""The query of a URL without one, and the parameters of a shared topic: one
object for every such stream, none made per connection."""


def validate_topic(name: str) -> str:
    """Topic names are plain ASCII tokens: nothing that could break a framing."""
    if TOPIC_RE.fullmatch(name) is None:
        shown = name if len(name) <= 64 else name[:64] + "…"
        raise BadRequest(
            f"illegal topic name {shown!r}: use 1-128 of A-Z a-z 0-9 . _ : - "
            "(starting with a letter or digit)",
            code="bad_topic",
        )
    return name


def parse_since(raw: str | None) -> Key | None:
    if raw is None:
        return None
    try:
        return parse_id(raw)
    except ValueError as exc:
        raise BadRequest(str(exc), code="bad_id") from None


def parse_limit(raw: str | None, *, maximum: int | None = None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1 or (maximum is not None and value > maximum):
        top = f" and at most {maximum}" if maximum is not None else ""
        raise BadRequest(
            f"limit must be a whole number of at least 1{top}, got {raw!r}", code="bad_limit"
        )
    return value


@dataclass(frozen=True, slots=True)
class StreamRequest:
    """A validated request for a stream, whichever the transport."""

    topic: str
    since: Key | None
    limit: int | None
    params: Mapping[str, str]
    """Parameters for a per-connection stream's generator (``NO_PARAMS`` otherwise)."""
    per_connection: bool
    grant: Grant
    """What access control allowed (``auth.OPEN`` when it is off)."""


async def parse_stream_request(
    request: web.Request, ctx: Context, *, last_event_id: bool = False
) -> StreamRequest:
    """Validate everything before any byte of the stream goes out (JSON errors):
    the request's syntax (400), then access (401/403), then the topic (409 past
    --max-topics when a subscription creates it), so a client that may not read
    a topic cannot make it or learn whether it exists."""
    topic = validate_topic(request.match_info["topic"])
    # request.query parses and caches a dict even for an empty query string.
    query = request.query if request.rel_url.raw_query_string else NO_PARAMS
    raw_since = query.get("since")
    if last_event_id:
        # WHATWG: EventSource reconnects to the *same URL* and sends the id of
        # the last event it processed in this header, so the header is always
        # the newer position: it wins over a since= left in the URL.
        raw_since = request.headers.get("Last-Event-ID") or raw_since
    since = parse_since(raw_since)
    limit = parse_limit(query.get("limit"))
    grant = await ctx.auth.check(request, topic, "subscribe")
    per_connection = topic in ctx.streams
    if not per_connection and request.method != "HEAD":
        # A topic nobody has published to yet is made here, so its subscribers
        # wait for its first message (409 past --max-topics, like a publish).
        newest = await ctx.broker.create_topic(topic)
        if since is None:
            # "From now" is fixed before the response goes out: a message
            # published once the client sees it is after this id (replayed if
            # it beats the hub's watch), never silently skipped.
            since = newest
    params = NO_PARAMS
    if per_connection and query:
        params = {k: v for k, v in query.items() if k not in RESERVED_PARAMS}
    return StreamRequest(topic, since, limit, params, per_connection, grant)


async def begin(stream: Stream, req: StreamRequest, opened: OpenStream | None) -> None:
    """Start a stream: subscribe to a shared topic (replay, then live), or start
    the per-connection generator's pump. The stream counts as open from here."""
    ctx = stream.ctx
    ctx.sessions[stream] = None
    expires_at = req.grant.expires_at
    if expires_at is not None:
        stream.expire_at(expires_at)
    if not req.per_connection:
        sub = Subscriber(
            stream, req.topic, limit=req.limit, max_backlog_bytes=ctx.settings.max_queue_bytes
        )
        stream.sub = sub
        await ctx.hub.subscribe(sub, req.since)
    elif opened is None:  # resumed past the end: nothing left
        stream.close(errors.STREAM_COMPLETE)
    else:
        stream.pump = asyncio.ensure_future(run_stream(stream, req, opened))


class HttpStream(Stream):
    """A stream in one HTTP response (chunked and SSE): the handler waits for
    its end, then finishes it; the body ends with the last chunk, and the
    connection is closed after a ``goodbye`` (the client reconnects) or on
    HTTP/1.0.

    What differs between the two is said by the class (the format, the
    response, ``Last-Event-ID``); :func:`handle_http_stream` is the one handler."""

    __slots__ = ()
    status = 200
    reads_last_event_id: ClassVar[bool] = False
    """Whether ``Last-Event-ID`` counts as ``since`` (SSE's reconnect header)."""

    def __init__(
        self, request: web.Request, ctx: Context, fmt: Format, quota_key: str | None
    ) -> None:
        wire = Wire.of(fmt, aiohttp_compat.http_chunked(request))
        super().__init__(request, ctx, wire, quota_key)

    @classmethod
    def format_of(cls, request: web.Request) -> Format:
        """The body's format the request asks for (400 ``bad_format``)."""
        return cls.fmt

    @classmethod
    def new_response(cls, fmt: Format, *, head: bool) -> web.StreamResponse:
        """The response to prepare (``head``: to answer a HEAD request with)."""
        raise NotImplementedError

    @classmethod
    def nothing_left(cls) -> web.StreamResponse | None:
        """The answer to a per-connection stream resumed past its end, if not
        an empty stream that ends at once."""
        return None

    async def terminate(self, reason: Disconnect) -> None:
        if self.wire.http_chunked:  # the body's end (HTTP/1.0: the connection's)
            self.transport.write(HTTP_LAST_CHUNK)
            self.sent += len(HTTP_LAST_CHUNK)


async def handle_http_stream(cls: type[HttpStream], request: web.Request) -> web.StreamResponse:
    """``GET``/``HEAD`` of ``/chunked/{topic}`` and ``/sse/{topic}`` (bound to the
    class with ``functools.partial``).

    Everything that can fail with a JSON error happens before the response
    head goes out; then the stream takes the connection over and this handler
    returns: aiohttp's request and task end, and an idle stream is its
    connection's protocol and little else.
    """
    ctx = request.app[CONTEXT]
    head = request.method == "HEAD"  # headers only: no subscription, no generator run
    try:
        fmt = cls.format_of(request)
        req = await parse_stream_request(request, ctx, last_event_id=cls.reads_last_event_id)
        quota_key = None if head else ctx.auth.quota.enter(request)  # 429 past the per-IP limit
    except StreamgateError as exc:
        return error_response(exc)
    if head:
        return cls.new_response(fmt, head=True)
    stream = None
    try:
        try:
            opened = await open_stream(ctx, req) if req.per_connection else None
        except StreamgateError as exc:
            return error_response(exc)
        if req.per_connection and opened is None:
            answer = cls.nothing_left()
            if answer is not None:
                return answer
        resp = cls.new_response(fmt, head=False)
        resp.force_close()  # the stream closes the connection at its end
        await resp.prepare(request)
        stream = cls(request, ctx, fmt, quota_key)  # it owns the connection from here
    finally:
        if stream is None:
            ctx.auth.quota.leave(quota_key)
    stream.start(begin(stream, req, opened))
    return resp


# -- per-connection streams -----------------------------------------------------------------


@dataclass(slots=True)
class OpenStream:
    """A per-connection generator, positioned after ``since``, first item fetched."""

    iterator: AsyncIterator[Any]
    first: Any
    position: int
    """Items already consumed before ``first``."""


async def open_stream(ctx: Context, req: StreamRequest) -> OpenStream | None:
    """Start the generator and fetch its first item before the response starts.

    Bad parameters surface here as 400 ``bad_params``; ``None`` means the stream
    has nothing after ``since`` (already complete). Resuming at ``since=0-<n>``
    skips ``n`` items: a factory with a keyword-only ``skip`` gets ``skip=n`` and
    positions itself; for any other the gateway advances it ``n`` times, giving
    other connections a turn every ``YIELD_EVERY`` items, and refuses (400
    ``bad_id``) more than ``--max-skip``.
    """
    stream = ctx.streams[req.topic]
    skip = 0
    if req.since is not None:
        if req.since[0] != 0:
            raise BadRequest(
                f"ids of per-connection stream {req.topic!r} look like 0-<n>", code="bad_id"
            )
        skip = req.since[1]
    native = stream.takes_skip
    max_skip = ctx.settings.max_skip
    if not native and skip > max_skip:
        raise BadRequest(
            f"cannot resume stream {req.topic!r} after item {skip}: it cannot skip items "
            f"itself, and the gateway skips at most {max_skip} (--max-skip) by re-running it",
            code="bad_id",
        )
    try:
        iterator = stream(req.params, skip)
        if not native:
            for done in range(1, skip + 1):
                await anext(iterator)
                if done % YIELD_EVERY == 0:
                    await asyncio.sleep(0)
        first = await anext(iterator)
    except StopAsyncIteration:
        return None
    except (TypeError, ValueError) as exc:
        raise BadRequest(
            f"bad parameters for stream {req.topic!r}: {exc}", code="bad_params"
        ) from None
    return OpenStream(iterator, first, skip)


async def _close_iterator(iterator: AsyncIterator[Any]) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:
            log.exception("closing a per-connection stream failed")


async def run_stream(stream: Stream, req: StreamRequest, opened: OpenStream) -> None:
    """The pump of a per-connection stream, in a task of its own: write the
    generator's items one at a time, waiting for the socket each time.

    It ends the stream when the generator is done or fails; when the stream
    ends first (shutdown, a bound, the client), :meth:`Stream.close` cancels
    this task, so a generator that sleeps never holds an ending back.
    """
    iterator = opened.iterator
    position = opened.position
    remaining = req.limit
    item = opened.first
    metrics = stream.ctx.metrics
    try:
        while True:
            position += 1
            msg = Message.create((0, position), req.topic, orjson.dumps(item))
            stream.write_messages((msg,))
            stream.last_id = msg.id
            if metrics is not None:
                metrics.delivered(stream.transport_name, 1)
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    stream.close(errors.LIMIT_REACHED)
            if stream.closed:
                return
            if position % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            await stream.drain()
            if stream.closed:
                return
            try:
                item = await anext(iterator)
            except StopAsyncIteration:
                stream.close(errors.STREAM_COMPLETE)
                return
    except Exception as exc:
        log.exception("per-connection stream %r failed", req.topic)
        # Not "error": that name is EventSource's own connection-error event.
        failed = control_json("stream-error", code="stream_failed", message=str(exc))
        stream.write_control("stream-error", failed)
        stream.close(errors.SOURCE_FAILED)
    finally:
        await _close_iterator(iterator)
