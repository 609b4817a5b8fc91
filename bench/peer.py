"""The SSE peer a user would pick instead: sse-starlette on uvicorn.

Written the way its README suggests: an async generator per client that
awaits its own ``asyncio.Queue`` and yields ``{"id", "data"}`` dicts to
``EventSourceResponse``. Same endpoints and message JSON as the gateway for
SSE: ``GET /sse/{topic}``, ``POST /topics/{topic}``, ``POST
/topics/{topic}/batch``, ``GET /healthz``.

uvicorn as its documentation recommends (``pip install 'uvicorn[standard]'``):
uvloop and httptools, the same event loop the gateway runs on and the same
llhttp parser as aiohttp's. ``--loop asyncio --http h11`` is the plain
``pip install uvicorn``.

Run: ``python -m bench.peer --port 8082``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

Message = dict[str, Any]

__all__ = ["build_app", "main"]


def build_app() -> Any:
    from sse_starlette.sse import EventSourceResponse
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
    from starlette.routing import Route

    subscribers: defaultdict[str, set[asyncio.Queue[Message]]] = defaultdict(set)
    ids = [0, 0]

    def publish_one(topic: str, data: object) -> str:
        ms = int(time.time() * 1000)
        if ms <= ids[0]:
            ids[1] += 1
            ms = ids[0]
        else:
            ids[0], ids[1] = ms, 0
        msg_id = f"{ms}-{ids[1]}"
        msg = {"id": msg_id, "topic": topic, "ts": round(time.time() * 1000, 3), "data": data}
        for queue in subscribers[topic]:
            queue.put_nowait(msg)
        return msg_id

    async def publish(request: Request) -> Response:
        topic = request.path_params["topic"]
        msg_id = publish_one(topic, await request.json())
        return JSONResponse({"id": msg_id, "topic": topic}, status_code=201)

    async def publish_batch(request: Request) -> Response:
        topic = request.path_params["topic"]
        items = await request.json()
        return JSONResponse(
            {"ids": [publish_one(topic, item) for item in items], "topic": topic}, status_code=201
        )

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok", "connections": sum(map(len, subscribers.values()))})

    async def sse(request: Request) -> Response:
        topic = request.path_params["topic"]
        queue: asyncio.Queue[Message] = asyncio.Queue()

        async def events() -> AsyncIterator[dict[str, str]]:
            subscribers[topic].add(queue)
            try:
                while True:
                    msg = await queue.get()
                    yield {"id": msg["id"], "data": json.dumps(msg, separators=(",", ":"))}
            finally:
                subscribers[topic].discard(queue)

        return EventSourceResponse(events(), sep="\n")

    return Starlette(
        routes=[
            Route("/healthz", healthz),
            Route("/topics/{topic}", publish, methods=["POST"]),
            Route("/topics/{topic}/batch", publish_batch, methods=["POST"]),
            Route("/sse/{topic}", sse),
        ]
    )


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8082)
    parser.add_argument("--topic", action="append", default=[], help="accepted, unused")
    parser.add_argument("--loop", default="uvloop", choices=["uvloop", "asyncio"])
    parser.add_argument("--http", default="httptools", choices=["httptools", "h11"])
    args = parser.parse_args()
    uvicorn.run(
        build_app(),
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        backlog=4096,
        loop=args.loop,
        http=args.http,
    )


if __name__ == "__main__":
    main()
