"""The JSON API: publish, inspect topics and history, health; JSON errors."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson
from aiohttp import hdrs, web

from . import jsonvalue
from .auth import OPEN, Grant
from .context import CONTEXT, Context
from .errors import (
    BadRequest,
    Conflict,
    NotFound,
    PayloadTooLarge,
    RequestTimeout,
    StreamgateError,
    UnsupportedMediaType,
)
from .ids import format_id
from .origins import preflight
from .responses import Handler, error_response, json_errors, json_response
from .transports.common import parse_limit, parse_since, validate_topic

__all__ = ["STATIC_DIR", "routes"]

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
MESSAGES_LIMIT = 1000
BATCH_MAX_ITEMS = 10_000
JSON = "application/json"
NDJSON = "application/x-ndjson"


def body_at_hand(request: web.Request, limit: int) -> bytes | None:
    """The whole body when the parser has it already (its Content-Length, or the
    last chunk; a connection lost before that leaves an error, which read_nowait
    raises), else None: then :func:`read_body`. No coroutine and no header to
    look up, which is nearly every publish."""
    content = request.content
    if not content.is_eof():
        return None
    body = content.read_nowait()
    if len(body) > limit:
        raise PayloadTooLarge(f"body is {len(body)} bytes; the limit is {limit}")
    return body


async def read_body(request: web.Request, limit: int) -> bytes:
    """The request body, refusing more than ``limit`` bytes (413) without buffering
    it, and a body that takes longer than ``--read-timeout`` to arrive (408)."""
    body = body_at_hand(request, limit)
    if body is not None:
        return body
    length = request.content_length
    if length is not None and length > limit:
        raise PayloadTooLarge(f"body is {length} bytes; the limit is {limit}")
    timeout = request.app[CONTEXT].settings.read_timeout
    try:
        async with asyncio.timeout(timeout):
            return await _read_body(request, length, limit)
    except TimeoutError:
        raise RequestTimeout(f"the body did not arrive within {timeout:g} s") from None


async def _read_body(request: web.Request, length: int | None, limit: int) -> bytes:
    if length is not None:  # at most limit (read_body checked)
        # The parser stops at Content-Length: one read, no streaming loop.
        try:
            return await request.content.readexactly(length) if length else b""
        except asyncio.IncompleteReadError:
            raise BadRequest("the body is shorter than its Content-Length") from None
    body = bytearray()
    async for chunk in request.content.iter_any():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body is over the limit of {limit} bytes")
    return bytes(body)


def parse_json(body: bytes) -> object:
    """One JSON value, every number in it as published (``jsonvalue.loads``)."""
    if not body or body.isspace():
        raise BadRequest("the body is empty; send a JSON value", code="bad_json")
    return jsonvalue.loads(body)


def require_media_type(request: web.Request, accepted: tuple[str, ...], hint: str) -> str:
    """The body's media type (parameters such as ``charset`` aside) when it is
    one of ``accepted``; 415 ``unsupported_media_type`` otherwise, before the
    body is read.

    The body is parsed as JSON whatever its label, so without this check any web
    page could publish through its visitors' browsers: a form or a ``no-cors``
    fetch may send ``text/plain`` or a form encoding to another origin without
    asking it first. ``application/json`` from another origin needs a CORS
    preflight, which only the origins listed in ``--allowed-origins`` pass.
    """
    raw = request.headers.get(hdrs.CONTENT_TYPE)
    if raw in accepted:  # the usual case, exactly as sent: no parsing
        return raw
    if raw is not None:
        media = request.content_type
        if media in accepted:
            return media
        shown = raw if len(raw) <= 100 else raw[:100] + "…"
        what = f"Content-Type {shown!r} is not accepted here"
    else:
        what = "the request has no Content-Type"
    raise UnsupportedMediaType(f"{what}: {hint}")


TopicHandler = Callable[[web.Request, Context, str, Grant], Awaitable[web.Response]]


def writes_topic(handler: TopicHandler) -> Handler:
    """A route that writes to ``{topic}`` (publish, batch, delete): the topic (400),
    the publish right (401/403), then what the topic is (409), before the handler
    is called with them; the gateway's errors become JSON, as with
    :func:`~gateway.responses.json_errors`. All in one coroutine: a publish is
    hot, and each layer of coroutine costs it about 1,500 instructions."""

    async def route(request: web.Request) -> web.StreamResponse:
        try:
            ctx = request.app[CONTEXT]
            topic = validate_topic(request.match_info["topic"])
            auth = ctx.auth
            # With no access control, no coroutine to make.
            grant = await auth.check(request, topic, "publish") if auth.enabled else OPEN
            if topic in ctx.streams:
                raise Conflict(
                    f"{topic!r} is a per-connection stream, not a topic", code="not_a_topic"
                )
            return await handler(request, ctx, topic, grant)
        except StreamgateError as exc:
            return error_response(exc)

    return route


@writes_topic
async def publish(request: web.Request, ctx: Context, topic: str, grant: Grant) -> web.Response:
    """``POST /topics/{topic}``: the body (any JSON value) becomes the message data."""
    require_media_type(request, (JSON,), f"send the data as JSON with Content-Type: {JSON}")
    publisher = ctx.auth.quota.publisher(request, grant)  # 429 past --publish-rate
    limit = ctx.settings.max_message_bytes
    body = body_at_hand(request, limit)
    value = parse_json(body if body is not None else await read_body(request, limit))
    data = jsonvalue.dumps(value)
    ctx.auth.quota.charge(publisher, 1)
    (message,) = await ctx.publish(topic, [data])
    return json_response({"id": message.id, "topic": topic}, status=201)


@writes_topic
async def publish_batch(
    request: web.Request, ctx: Context, topic: str, grant: Grant
) -> web.Response:
    """``POST /topics/{topic}/batch``: a JSON array, or NDJSON, of message data."""
    media = require_media_type(
        request,
        (JSON, NDJSON),
        f"send a JSON array with Content-Type: {JSON}, or NDJSON lines with Content-Type: {NDJSON}",
    )
    publisher = ctx.auth.quota.publisher(request, grant)  # 429 past --publish-rate
    limit = ctx.settings.max_message_bytes
    body = await read_body(request, limit * 16)
    items: list[object]
    if media == NDJSON:
        items = jsonvalue.loads_lines(body)
    else:
        value = parse_json(body)
        if not isinstance(value, list):
            raise BadRequest("a batch is a JSON array (or NDJSON lines)", code="bad_json")
        items = value
    if not items:
        raise BadRequest("the batch is empty", code="bad_json")
    if len(items) > BATCH_MAX_ITEMS:
        raise PayloadTooLarge(f"at most {BATCH_MAX_ITEMS} messages per batch")
    # Exact-size copies: orjson's output keeps a buffer of at least 4 KiB, so
    # 10,000 small items would hold 40 MB until the batch is published.
    data = [bytes(memoryview(jsonvalue.dumps(item))) for item in items]
    for i, d in enumerate(data):
        if len(d) > limit:
            raise PayloadTooLarge(f"item {i} is over the limit of {limit} bytes")
    ctx.auth.quota.charge(publisher, len(data))  # a batch counts its items
    messages = await ctx.publish(topic, data)
    return json_response({"ids": [m.id for m in messages], "topic": topic}, status=201)


@writes_topic  # deleting takes the publish right
async def delete_topic(
    request: web.Request, ctx: Context, topic: str, grant: Grant
) -> web.Response:
    """``DELETE /topics/{topic}``: the topic and its history go; its local subscribers end."""
    if not await ctx.broker.delete_topic(topic):
        raise NotFound(f"unknown topic {topic!r}")
    ctx.hub.end_topic(topic)
    return json_response({"topic": topic, "deleted": True})


@json_errors
async def list_topics(request: web.Request) -> web.Response:
    """``GET /topics``; with access control on, only what the request may read."""
    ctx = request.app[CONTEXT]
    shared = await ctx.broker.topics()
    if ctx.auth.enabled:
        names = [*(t.name for t in shared), *ctx.streams]
        visible = set(await ctx.auth.visible(request, names))
        shared = [t for t in shared if t.name in visible]
        stream_names = [name for name in ctx.streams if name in visible]
    else:
        stream_names = list(ctx.streams)
    topics = [
        {
            "name": t.name,
            "kind": "shared",
            "first_id": t.first_id,
            "last_id": t.last_id,
            "length": t.length,
            "subscribers": ctx.hub.subscriber_counts(t.name),
        }
        for t in shared
    ]
    streams = [{"name": name, "kind": "per-connection"} for name in stream_names]
    return json_response({"topics": topics, "streams": streams})


@json_errors
async def topic_messages(request: web.Request) -> web.Response:
    """``GET /topics/{topic}/messages?since=&limit=``: history as one JSON document."""
    ctx = request.app[CONTEXT]
    topic = validate_topic(request.match_info["topic"])
    since = parse_since(request.query.get("since"))
    limit = parse_limit(request.query.get("limit"), maximum=MESSAGES_LIMIT) or 100
    await ctx.auth.check(request, topic, "subscribe")
    read = await ctx.broker.read(topic, since, limit)
    last_id = format_id(read.last_key) if read.last_key != (0, 0) else None
    # The message objects are embedded byte for byte, as on the streams.
    head = orjson.dumps(
        {"topic": topic, "gap": read.gap, "first_id": read.first_id, "last_id": last_id}
    )
    body = head[:-1] + b',"messages":[' + b",".join(m.json for m in read.messages) + b"]}"
    return web.Response(body=body, content_type="application/json")


@json_errors
async def healthz(request: web.Request) -> web.Response:
    ctx = request.app[CONTEXT]
    return json_response(
        {
            "status": "ok",
            "topics": len(await ctx.broker.topics()),
            "connections": len(ctx.sessions),
            "history_bytes": ctx.broker.history_bytes(),
            "sources": ctx.sources,
            "disconnects": dict(ctx.disconnects),
            "refused_connections": ctx.gate.refused.total if ctx.gate else 0,
            "malformed_requests": ctx.gate.malformed.total if ctx.gate else 0,
        }
    )


async def index(request: web.Request) -> web.StreamResponse:
    page = STATIC_DIR / "index.html"
    if not page.is_file():
        return web.Response(text="streamgate: the page is not installed\n", status=404)
    return web.FileResponse(page, headers={"Cache-Control": "no-cache"})


async def static_file(request: web.Request) -> web.StreamResponse:
    """``GET /static/{name}``: the page's files (no sub-folders), JSON 404 otherwise."""
    name = request.match_info["name"]
    path = STATIC_DIR / name
    if "/" in name or name.startswith(".") or not path.is_file():
        return error_response(NotFound(f"no file {name!r} here", code="not_found"))
    return web.FileResponse(path, headers={"Cache-Control": "no-cache"})


async def not_found(request: web.Request) -> web.Response:
    return error_response(NotFound(f"no route for {request.path}", code="not_found"))


def method_not_allowed(allowed: list[str]) -> Callable[[web.Request], Awaitable[web.Response]]:
    async def handler(request: web.Request) -> web.Response:
        resp = error_response(
            StreamgateError(
                f"{request.method} is not allowed here; use {', '.join(allowed)}",
                code="method_not_allowed",
            )
        )
        resp.set_status(405)
        resp.headers["Allow"] = ", ".join(allowed)
        return resp

    return handler


def routes(extra: dict[str, Handler] | None = None) -> list[web.AbstractRouteDef]:
    """The route table; ``extra`` adds ``GET`` routes (``/metrics``) before the
    catch-all 404, with their preflight and 405 like every other path."""
    from .transports.chunked import handle_chunked
    from .transports.sse import handle_sse
    from .transports.websocket import handle_ws

    table: dict[str, list[tuple[str, Handler]]] = {
        "/": [("GET", index)],
        "/healthz": [("GET", healthz)],
        "/topics": [("GET", list_topics)],
        "/topics/{topic}": [("POST", publish), ("DELETE", delete_topic)],
        "/topics/{topic}/batch": [("POST", publish_batch)],
        "/topics/{topic}/messages": [("GET", topic_messages)],
        "/chunked/{topic}": [("GET", handle_chunked)],
        "/sse/{topic}": [("GET", handle_sse)],
        "/ws/{topic}": [("GET", handle_ws)],
        "/static/{name}": [("GET", static_file)],
    }
    for path, handler in (extra or {}).items():
        table[path] = [("GET", handler)]
    defs: list[web.AbstractRouteDef] = []
    for path, methods in table.items():
        defs += [web.route(method, path, handler) for method, handler in methods]
        allowed = [m for m, _ in methods]
        defs.append(web.route("OPTIONS", path, preflight(allowed)))  # CORS
        defs.append(web.route("*", path, method_not_allowed(allowed)))
    defs.append(web.route("*", "/{tail:.*}", not_found))
    return defs
