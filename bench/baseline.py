"""The baseline: the tutorial design from aiohttp's streaming guides.

An ``asyncio.Queue`` per subscriber; the publisher puts the message dict in
every queue; each subscriber's handler takes one message at a time,
``json.dumps`` it for itself and awaits one write per message
(``resp.write()``, aiohttp-sse's ``resp.send()``, ``ws.send_str()``). Same
endpoints, same message JSON shape (compact, so the bytes per delivery match
the gateway's) as streamgate, so the same load generator drives both:

    GET /chunked/{topic}   GET /sse/{topic}   GET /ws/{topic}
    POST /topics/{topic}   POST /topics/{topic}/batch   GET /healthz
    GET /chunked/count?n=N (the tutorials' per-connection count)

Run: ``python -m bench.baseline --port 8081 --topic bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import defaultdict
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

__all__ = ["build_app", "main"]

Message = dict[str, Any]
SUBSCRIBERS = web.AppKey("subscribers", defaultdict)
IDS = web.AppKey("ids", list)


def _dumps(obj: object) -> str:
    return json.dumps(obj, separators=(",", ":"))


def _new_message(app: web.Application, topic: str, data: object) -> Message:
    ids = app[IDS]
    ms = int(time.time() * 1000)
    if ms <= ids[0]:
        ids[1] += 1
        ms = ids[0]
    else:
        ids[0], ids[1] = ms, 0
    return {
        "id": f"{ms}-{ids[1]}",
        "topic": topic,
        "ts": round(time.time() * 1000, 3),
        "data": data,
    }


def _publish(app: web.Application, topic: str, data: object) -> Message:
    msg = _new_message(app, topic, data)
    for queue in app[SUBSCRIBERS][topic]:
        queue.put_nowait(msg)
    return msg


async def publish(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    msg = _publish(request.app, topic, await request.json())
    return web.json_response({"id": msg["id"], "topic": topic}, status=201)


async def publish_batch(request: web.Request) -> web.Response:
    topic = request.match_info["topic"]
    items = await request.json()
    ids = [_publish(request.app, topic, item)["id"] for item in items]
    return web.json_response({"ids": ids, "topic": topic}, status=201)


async def healthz(request: web.Request) -> web.Response:
    n = sum(len(s) for s in request.app[SUBSCRIBERS].values())
    return web.json_response({"status": "ok", "connections": n})


async def chunked(request: web.Request) -> web.StreamResponse:
    topic = request.match_info["topic"]
    resp = web.StreamResponse(headers={"Cache-Control": "no-cache"})
    resp.content_type = "application/x-ndjson"
    await resp.prepare(request)
    if topic == "count":
        n = int(request.query.get("n", "10"))
        for i in range(1, n + 1):
            msg = {"id": f"0-{i}", "topic": topic, "ts": time.time() * 1000, "data": {"n": i}}
            await resp.write(_dumps(msg).encode() + b"\n")
        return resp
    queue: asyncio.Queue[Message] = asyncio.Queue()
    subscribers = request.app[SUBSCRIBERS][topic]
    subscribers.add(queue)
    try:
        while True:
            msg = await queue.get()
            await resp.write(_dumps(msg).encode() + b"\n")
    finally:
        subscribers.discard(queue)


async def sse(request: web.Request) -> web.StreamResponse:
    topic = request.match_info["topic"]
    queue: asyncio.Queue[Message] = asyncio.Queue()
    subscribers = request.app[SUBSCRIBERS][topic]
    async with sse_response(request, sep="\n") as resp:
        subscribers.add(queue)
        try:
            while resp.is_connected():
                msg = await queue.get()
                await resp.send(_dumps(msg), id=msg["id"])
        finally:
            subscribers.discard(queue)
    return resp


async def ws(request: web.Request) -> web.StreamResponse:
    topic = request.match_info["topic"]
    sock = web.WebSocketResponse()
    await sock.prepare(request)
    queue: asyncio.Queue[Message] = asyncio.Queue()
    subscribers = request.app[SUBSCRIBERS][topic]
    subscribers.add(queue)

    async def sender() -> None:
        while True:
            msg = await queue.get()
            await sock.send_str(_dumps(msg))

    task = asyncio.create_task(sender())
    try:
        async for _ in sock:  # commands are not part of the baseline
            pass
    finally:
        subscribers.discard(queue)
        task.cancel()
    return sock


def build_app() -> web.Application:
    app = web.Application()
    app[SUBSCRIBERS] = defaultdict(set)
    app[IDS] = [0, 0]
    app.add_routes(
        [
            web.get("/healthz", healthz),
            web.post("/topics/{topic}", publish),
            web.post("/topics/{topic}/batch", publish_batch),
            web.get("/chunked/{topic}", chunked),
            web.get("/sse/{topic}", sse),
            web.get("/ws/{topic}", ws),
        ]
    )
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--topic", action="append", default=[], help="accepted, unused")
    args = parser.parse_args()
    web.run_app(
        build_app(), host=args.host, port=args.port, backlog=4096, access_log=None, print=None
    )


if __name__ == "__main__":
    main()
