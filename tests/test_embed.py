"""The public API: a Gateway mounted in an application of its own under a prefix.

The host application here has its own routes and a middleware (a login cookie),
publishes from a handler and from a background task, and decides access with
``authorize``; the streams are read over real sockets with real clients.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
import websockets
from aiohttp import web

from gateway import Gateway, Settings
from tests.helpers import TIMEOUT, free_port
from tests.wire import open_reader, read_until

TRANSPORTS = ["chunked", "sse", "ws"]
USERS = {"s-alice": "alice", "s-admin": "admin"}
# Where the host's middleware puts the user: a typed key where aiohttp has them (3.14).
USER: Any = web.RequestKey("user", str) if hasattr(web, "RequestKey") else "user"


@dataclass
class Host:
    gw: Gateway
    url: str  # the host application's root
    base: str  # where the gateway is mounted
    asked: list[tuple[str, str, str | None]]  # what authorize was asked, and for whom
    published_in_background: list[str]
    go: asyncio.Event  # starts the host's background publisher


@contextlib.asynccontextmanager
async def host_app(*, handler_cancellation: bool = True, **settings: Any) -> AsyncIterator[Host]:
    asked: list[tuple[str, str, str | None]] = []
    background: list[str] = []

    async def authorize(request: web.Request, topic: str, action: str) -> bool:
        user = request.get(USER)
        asked.append((topic, action, user))
        if action == "subscribe":
            return topic == "public" or user is not None
        return user == "admin"

    gw = Gateway(tick_interval=0, grace=2.0, authorize=authorize, **settings)

    @gw.stream("squares")
    async def squares(n: int = 3, scale: float = 1.0, loud: bool = False) -> AsyncIterator[object]:
        for i in range(1, n + 1):
            yield {"i": i, "sq": i * i * scale, "loud": loud}

    @web.middleware
    async def session(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        request[USER] = USERS.get(request.cookies.get("sid", ""))
        return await handler(request)

    async def create_order(request: web.Request) -> web.Response:
        if request[USER] is None:
            return web.json_response({"error": "sign in"}, status=401)
        msg_id = await gw.publish("orders", {"by": request[USER], **await request.json()})
        return web.json_response({"id": msg_id}, status=201)

    async def hello(request: web.Request) -> web.Response:
        return web.json_response({"hello": request[USER]})

    go = asyncio.Event()

    async def ticker(app: web.Application) -> AsyncIterator[None]:
        async def run() -> None:
            await go.wait()
            background.extend(await gw.publish_many("news", [{"n": 1}, {"n": 2}, {"n": 3}]))

        task = asyncio.create_task(run())
        yield
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    app = web.Application(middlewares=[session])
    app.router.add_get("/", hello)
    app.router.add_post("/orders", create_order)
    gw.attach(app, prefix="/stream")
    app.cleanup_ctx.append(ticker)
    runner = web.AppRunner(app, handler_cancellation=handler_cancellation)
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        url = f"http://127.0.0.1:{port}"
        yield Host(gw, url, f"{url}/stream", asked, background, go)
    finally:
        await runner.cleanup()


ALICE = {"Cookie": "sid=s-alice"}


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_streams_end_cleanly_under_a_runner_that_does_not_cancel_handlers(
    transport: str,
) -> None:
    """aiohttp's default runner lets a handler run on when its client goes; a
    stream's handler returns once the stream has its connection, and aiohttp
    then writes nothing more on it (no second last chunk, no close frame)."""
    async with host_app(handler_cancellation=False) as h:
        ids = await h.gw.publish_many("public", [{"n": 1}, {"n": 2}])
        port = int(h.url.rsplit(":", 1)[1])
        path = f"/stream/{transport}/public?since=0-0&limit=2"
        if transport == "ws":
            async with websockets.connect(f"ws://127.0.0.1:{port}{path}") as ws:
                frames = [await asyncio.wait_for(ws.recv(), TIMEOUT) for _ in range(3)]
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
            assert ws.close_code == 1000
            assert [f'"id":"{i}"' in frames[n] for n, i in enumerate(ids)] == [True, True]
            assert '"type":"end"' in frames[2]
            return
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            raw = await asyncio.wait_for(reader.read(), TIMEOUT)  # to the server's FIN
        finally:
            writer.close()
        head, _, body = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200") and b"Connection: close" in head
        chunks = []
        while True:  # the body is whole chunks, the last chunk once, then nothing
            size_line, _, body = body.partition(b"\r\n")
            size = int(size_line, 16)
            if size == 0:
                assert body == b"\r\n"
                break
            chunks.append(body[:size])
            assert body[size : size + 2] == b"\r\n"
            body = body[size + 2 :]
        text = b"".join(chunks).decode()
        assert all(i in text for i in ids) and '"end"' in text


async def test_the_host_app_keeps_its_own_routes_and_middleware() -> None:
    async with host_app() as h, aiohttp.ClientSession() as http:
        async with http.get(h.url + "/", headers=ALICE) as resp:
            assert await resp.json() == {"hello": "alice"}
        async with http.get(h.base + "/healthz") as resp:
            assert resp.status == 200 and (await resp.json())["status"] == "ok"
        async with http.get(h.base + "/nowhere") as resp:  # the gateway's JSON 404
            assert resp.status == 404 and (await resp.json())["error"] == "not_found"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_handler_publishes_and_every_transport_reads_it_under_the_prefix(
    transport: str,
) -> None:
    async with host_app() as h, aiohttp.ClientSession() as http:
        started = asyncio.Event()
        reader = asyncio.create_task(
            read_until(h.base, transport, "orders", count=2, headers=ALICE, started=started)
        )
        await started.wait()
        ids = []
        for sku in ("a", "b"):
            async with http.post(h.url + "/orders", json={"sku": sku}, headers=ALICE) as resp:
                assert resp.status == 201, await resp.text()
                ids.append((await resp.json())["id"])
        got = await reader
        assert got.ids == ids
        assert [m.obj["data"] for m in got.messages] == [
            {"by": "alice", "sku": "a"},
            {"by": "alice", "sku": "b"},
        ]
        assert ("orders", "subscribe", "alice") in h.asked


async def test_a_background_task_publishes_a_batch() -> None:
    async with host_app() as h:
        async with open_reader(h.base, "sse", "news", headers=ALICE) as (_, items):
            h.go.set()
            async with asyncio.timeout(TIMEOUT):
                got = [await anext(items) for _ in range(3)]
        assert [i.obj["data"] for i in got] == [{"n": 1}, {"n": 2}, {"n": 3}]
        assert [i.id for i in got] == h.published_in_background


async def test_authorize_decides_with_the_host_apps_session() -> None:
    async with host_app() as h, aiohttp.ClientSession() as http:
        async with http.get(h.base + "/sse/orders") as resp:  # nobody signed in
            assert resp.status == 403
            assert (await resp.json())["error"] == "forbidden"
        async with http.get(h.base + "/chunked/public?limit=1", timeout=aiohttp.ClientTimeout(1)):
            pass  # anyone may read "public" (the response started: allowed)
        ws_url = h.base.replace("http", "ws") + "/ws/orders"
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(ws_url):
                pass
        assert refused.value.response.status_code == 403
        # Publishing over HTTP: admin only (alice may read but not publish).
        for cookie, status in (("s-alice", 403), ("s-admin", 201)):
            async with http.post(
                h.base + "/topics/orders", json={"x": 1}, headers={"Cookie": f"sid={cookie}"}
            ) as resp:
                assert resp.status == status, await resp.text()
        assert ("orders", "publish", "alice") in h.asked
        assert ("orders", "publish", "admin") in h.asked
        assert ("orders", "subscribe", None) in h.asked


async def test_stream_parameters_are_converted_by_their_annotations() -> None:
    async with host_app() as h, aiohttp.ClientSession() as http:
        got = await read_until(
            h.base, "chunked", "squares", query="n=2&scale=0.5&loud=yes", headers=ALICE
        )
        assert [m.obj["data"] for m in got.messages] == [
            {"i": 1, "sq": 0.5, "loud": True},
            {"i": 2, "sq": 2.0, "loud": True},
        ]
        for query, word in (("n=two", "integer"), ("scale=nan", "finite"), ("loud=maybe", "true")):
            async with http.get(f"{h.base}/sse/squares?{query}", headers=ALICE) as resp:
                body = await resp.json()
                assert resp.status == 400 and body["error"] == "bad_params", body
                assert word in body["message"], body


async def test_the_page_and_its_data_are_reached_under_the_prefix() -> None:
    async with host_app() as h, aiohttp.ClientSession() as http:
        async with http.get(h.base, allow_redirects=False) as resp:
            assert resp.status == 308 and resp.headers["Location"] == "/stream/"
        async with http.get(h.base + "/") as resp:
            page = await resp.text()
        # Every link of the page is relative, so it resolves under /stream/.
        assert 'src="static/app.js"' in page and 'href="static/style.css"' in page
        for name in ("app.js", "style.css"):
            async with http.get(f"{h.base}/static/{name}") as resp:
                assert resp.status == 200


async def test_publish_is_refused_before_the_app_runs_and_settings_are_checked() -> None:
    gw = Gateway(tick_interval=0)
    with pytest.raises(RuntimeError, match="not running"):
        await gw.publish("t", 1)
    with pytest.raises(TypeError, match="history_sise"):
        Gateway(history_sise=5)
    with pytest.raises(ValueError, match="history_size"):
        Gateway(history_size=0)
    with pytest.raises(ValueError, match="prefix"):
        gw.attach(web.Application(), prefix="/")
    base = Settings(history_size=7, heartbeat=3)
    assert Gateway(base, heartbeat=5).settings == Settings(history_size=7, heartbeat=5)


async def test_publish_from_python_checks_what_it_sends() -> None:
    async with host_app(max_message_bytes=64) as h:
        with pytest.raises(TypeError, match="cannot publish"):
            await h.gw.publish("orders", object())
        from gateway.errors import NotFound, PayloadTooLarge

        with pytest.raises(PayloadTooLarge):
            await h.gw.publish("orders", "x" * 100)
        with pytest.raises(NotFound):
            await h.gw.publish("squares", 1)  # a per-connection stream
        assert await h.gw.publish_many("orders", []) == []
        ids = await h.gw.publish_many("orders", ["a", "b"])
        async with aiohttp.ClientSession() as http:
            async with http.get(h.base + "/topics/orders/messages", headers=ALICE) as resp:
                body = await resp.json()
        assert [m["id"] for m in body["messages"]] == ids
