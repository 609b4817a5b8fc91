"""The framework's floor for publishing: a bare aiohttp handler that answers 201.

``POST /topics/{topic}`` reads the body and answers 201 with a small JSON body,
nothing else: no parsing, no id, no history, no fan-out. On uvloop, as the
gateway runs by default, with aiohttp's access log off, as the gateway's. What
``POST /topics/{t}`` of the gateway costs beyond this is the gateway's own.

Run: ``python -m bench.bare --port 8082``.
"""

from __future__ import annotations

import argparse
import asyncio

from aiohttp import web

__all__ = ["build_app", "main"]

ANSWER = b'{"id":"0-0","topic":"bench"}'


async def publish(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=ANSWER, status=201, content_type="application/json")


async def healthz(request: web.Request) -> web.Response:
    return web.Response(body=b'{"status":"ok"}', content_type="application/json")


def build_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.post("/topics/{topic}", publish), web.get("/healthz", healthz)])
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--topic", action="append", default=[], help="accepted, unused")
    args = parser.parse_args()
    try:
        import uvloop
    except ImportError:  # the gateway falls back to asyncio's loop the same way
        pass
    else:
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    web.run_app(
        build_app(), host=args.host, port=args.port, backlog=4096, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
