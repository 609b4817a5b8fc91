"""JSON responses and the JSON error every bad request gets."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import hdrs, web

from .errors import StreamgateError

__all__ = ["SERVER", "error_response", "json_errors", "json_response", "name_the_server"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

SERVER = "streamgate"
"""The ``Server:`` header of every answer: no version (aiohttp's default names
its own and Python's) for a scanner to match against known flaws."""


async def name_the_server(request: web.BaseRequest, response: web.StreamResponse) -> None:
    """``on_response_prepare``: once per response, as its headers go out (a
    stream releases them right after)."""
    response.headers[hdrs.SERVER] = SERVER


def json_response(obj: object, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(obj), status=status, content_type="application/json")


def error_response(exc: StreamgateError) -> web.Response:
    """``{"error": code, "message": text}`` with the error's status and headers."""
    resp = json_response({"error": exc.code, "message": exc.message}, exc.status)
    if exc.headers:
        resp.headers.update(exc.headers)
    if exc.status == 408:  # part of a body may still be on its way: no keep-alive
        resp.force_close()
    return resp


def json_errors(handler: Handler) -> Handler:
    """Turn the gateway's errors into JSON for a short-lived API handler.

    The gateway has no middleware on purpose: a middleware's frame stays alive
    for as long as a stream does (about 1 KiB per open connection with
    aiohttp's own per-app middleware). Streaming handlers catch their
    validation errors themselves; API handlers use this decorator.
    """

    @functools.wraps(handler)
    async def wrapper(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except StreamgateError as exc:
            return error_response(exc)

    return wrapper
