"""What the three streaming transports share: request parsing and the two pumps."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import orjson
from aiohttp import web

from .. import errors
from ..context import Context
from ..errors import BadRequest, Disconnect
from ..framing import control_json
from ..hub import Subscriber
from ..ids import Key, parse_id
from ..message import Message
from ..sources import takes_skip
from .sink import DirectSink

__all__ = [
    "RESERVED_PARAMS",
    "StreamRequest",
    "end_http_stream",
    "end_subscription",
    "final_control",
    "open_stream",
    "parse_stream_request",
    "run_stream",
    "run_subscription",
    "run_to_end",
    "start_response",
    "start_subscription",
    "validate_topic",
]

log = logging.getLogger(__name__)

TOPIC_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
RESERVED_PARAMS = frozenset({"since", "limit", "format", "skip"})
"""Query parameters the gateway reads itself: never passed to a per-connection stream
(``skip`` is the gateway's to give, from ``since``)."""
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


async def parse_stream_request(
    request: web.Request, ctx: Context, *, last_event_id: bool = False
) -> StreamRequest:
    """Validate everything before any byte of the stream goes out (400/404 JSON)."""
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
    per_connection = topic in ctx.streams
    if not per_connection:
        await ctx.require_topic(topic)
    params = NO_PARAMS
    if per_connection and query:
        params = {k: v for k, v in query.items() if k not in RESERVED_PARAMS}
    return StreamRequest(topic, since, limit, params, per_connection)


async def start_response(resp: web.StreamResponse, request: web.Request) -> None:
    """Send the response headers, then let go of them.

    Nothing reads a response's headers once they are on the wire, and an idle
    stream would otherwise keep the dict alive (about 0.5 KiB) for its lifetime.
    """
    await resp.prepare(request)
    resp.headers.clear()


def final_control(reason: Disconnect, last_id: str | None, retry_ms: int) -> tuple[str, bytes]:
    """The control event that ends a stream: ``goodbye`` or ``end``."""
    if reason.reconnect:
        return "goodbye", control_json(
            "goodbye", reason=reason.reason, reconnect_ms=retry_ms, last_id=last_id
        )
    return "end", control_json("end", reason=reason.reason, last_id=last_id)


# -- shared topics ---------------------------------------------------------------------


async def start_subscription(ctx: Context, sink: DirectSink, req: StreamRequest) -> Subscriber:
    """Register, replay history after ``since``, and go live."""
    sub = Subscriber(
        sink, req.topic, limit=req.limit, max_backlog_bytes=ctx.settings.max_queue_bytes
    )
    ctx.sessions[sink] = None
    try:
        await ctx.hub.subscribe(sub, req.since)
    except BaseException:
        end_subscription(ctx, sink, sub)
        raise
    return sub


def end_subscription(
    ctx: Context, sink: DirectSink, sub: Subscriber
) -> tuple[Disconnect, str | None]:
    """Unregister; returns why the stream ended and the last id written."""
    sink.close(errors.CLIENT_GONE)  # no-op when the server already ended it
    ctx.hub.unsubscribe(sub)
    ctx.sessions.pop(sink, None)
    reason = sink.reason or errors.CLIENT_GONE  # set by the close() above at the latest
    ctx.disconnects[reason.reason] += 1
    return reason, sub.last_id


async def run_subscription(
    ctx: Context, sink: DirectSink, req: StreamRequest
) -> tuple[Disconnect, str | None]:
    """Replay, go live, and wait until the stream ends; returns why and the last id."""
    sub = await start_subscription(ctx, sink, req)
    try:
        await sink.done
    finally:
        result = end_subscription(ctx, sink, sub)
    return result


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
    factory = ctx.streams[req.topic]
    skip = 0
    if req.since is not None:
        if req.since[0] != 0:
            raise BadRequest(
                f"ids of per-connection stream {req.topic!r} look like 0-<n>", code="bad_id"
            )
        skip = req.since[1]
    native = takes_skip(factory)
    max_skip = ctx.settings.max_skip
    if not native and skip > max_skip:
        raise BadRequest(
            f"cannot resume stream {req.topic!r} after item {skip}: it cannot skip items "
            f"itself, and the gateway skips at most {max_skip} (--max-skip) by re-running it",
            code="bad_id",
        )
    try:
        if native:
            iterator = aiter(factory(**req.params, skip=skip))
        else:
            iterator = aiter(factory(**req.params))
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


async def run_stream(
    ctx: Context, sink: DirectSink, req: StreamRequest, stream: OpenStream
) -> tuple[Disconnect, str | None]:
    """Write the generator's items one at a time, waiting for the socket each time."""
    position = stream.position
    last_id: str | None = None
    remaining = req.limit
    item = stream.first
    # Shutdown or a slow-consumer verdict must not wait for a generator that
    # sleeps (count?interval=60): cancel the wait, not the handler.
    me = asyncio.current_task()
    waiting = cancelled_by_us = False

    def on_done(_: object) -> None:
        nonlocal cancelled_by_us
        if waiting and me is not None:
            cancelled_by_us = True
            me.cancel()

    sink.done.add_done_callback(on_done)
    ctx.sessions[sink] = None
    try:
        while True:
            position += 1
            msg = Message.create((0, position), req.topic, orjson.dumps(item))
            sink.write_messages((msg,))
            last_id = msg.id
            if remaining is not None:
                remaining -= 1
                if remaining == 0:
                    sink.close(errors.LIMIT_REACHED)
            if sink.closed:
                break
            if position % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            await sink.drain()
            if sink.closed:
                break
            waiting = True
            try:
                item = await anext(stream.iterator)
            except StopAsyncIteration:
                sink.close(errors.STREAM_COMPLETE)
                break
            except asyncio.CancelledError:
                if cancelled_by_us and me is not None and me.uncancel() == 0:
                    break
                raise
            finally:
                waiting = False
    except asyncio.CancelledError:
        sink.close(errors.CLIENT_GONE)
        raise
    except Exception as exc:
        log.exception("per-connection stream %r failed", req.topic)
        sink.write_control("error", control_json("error", code="stream_failed", message=str(exc)))
        sink.close(errors.SOURCE_FAILED)
    finally:
        ctx.sessions.pop(sink, None)
        await _close_iterator(stream.iterator)
    reason = sink.reason or errors.CLIENT_GONE
    ctx.disconnects[reason.reason] += 1
    return reason, last_id


async def run_to_end(
    ctx: Context, sink: DirectSink, req: StreamRequest, stream: OpenStream | None
) -> tuple[Disconnect, str | None]:
    """Run a shared subscription or a per-connection stream until it ends."""
    if not req.per_connection:
        return await run_subscription(ctx, sink, req)
    if stream is None:  # resumed past the end: nothing left
        sink.close(errors.STREAM_COMPLETE)
        return errors.STREAM_COMPLETE, None
    return await run_stream(ctx, sink, req, stream)


async def end_http_stream(
    resp: web.StreamResponse, sink: DirectSink, reason: Disconnect, write_timeout: float
) -> None:
    """After the final control event: the last chunk, and no keep-alive after a goodbye.

    A client that does not take its last bytes within ``write_timeout`` is dropped.
    """
    if reason.reconnect:
        resp.force_close()
    with contextlib.suppress(ConnectionError):
        await resp.write_eof()
    sink.abort_later(write_timeout)
