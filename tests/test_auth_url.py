"""``--auth-url``: the gateway asks the application, a real aiohttp app started
here on loopback, about each new stream and publish: allow, 401, 403, slow
(503), down (503), answers cached, the client's Cookie and Authorization
forwarded; and how it combines with tokens."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import jwt
import orjson
import websockets
from aiohttp import web

from tests.helpers import TIMEOUT, GatewayUnderTest, free_port, start_gateway
from tests.test_auth import SECRET, attempt, command
from tests.wire import read_until


@dataclass
class App:
    """The application: who may do what, and every question it was asked."""

    url: str = ""
    hits: list[dict[str, Any]] = field(default_factory=list)
    exp: float | None = None

    async def check(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.hits.append(
            {
                "body": body,
                "topic": request.headers.get("X-Streamgate-Topic"),
                "action": request.headers.get("X-Streamgate-Action"),
                "cookie": request.headers.get("Cookie"),
                "authorization": request.headers.get("Authorization"),
                "token": request.headers.get("X-Streamgate-Token"),
            }
        )
        topic = body["topic"]
        if topic == "slow":
            await asyncio.sleep(5)
        if topic == "broken":
            return web.Response(status=500)
        if topic == "elsewhere":
            raise web.HTTPFound("/login")
        session = request.cookies.get("session")
        if session is None and request.headers.get("Authorization") != "Bearer app-token":
            return web.Response(status=401)
        if session == "reader" and body["action"] == "publish":
            return web.Response(status=403)
        if topic == "locked":
            return web.Response(status=403)
        answer: dict[str, Any] = {"sub": session or "bearer"}
        if self.exp is not None:
            answer["exp"] = self.exp
        return web.json_response(answer)

    def asked(self, topic: str | None = None) -> int:
        return sum(1 for h in self.hits if topic is None or h["topic"] == topic)


@contextlib.asynccontextmanager
async def application() -> AsyncIterator[App]:
    app = App()
    web_app = web.Application()
    web_app.router.add_post("/check", app.check)
    runner = web.AppRunner(web_app, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    app.url = f"http://127.0.0.1:{port}/check"
    try:
        yield app
    finally:
        await runner.cleanup()


@contextlib.asynccontextmanager
async def gateway_asking(app: App, **settings: Any) -> AsyncIterator[GatewayUnderTest]:
    values: dict[str, Any] = {
        "auth_url": app.url,
        "auth_url_timeout": 0.5,
        "topics": ("news", "slow", "broken", "locked", "elsewhere"),
    }
    values.update(settings)
    async with start_gateway(**values) as gw:
        await gw.context.broker.publish("news", [b'{"n":1}'])
        yield gw


READER = {"Cookie": "session=reader; theme=dark"}
WRITER = {"Cookie": "session=writer"}


async def test_the_application_allows_and_sees_the_credentials() -> None:
    async with application() as app, gateway_asking(app) as gw:
        for transport in ("chunked", "sse", "ws"):
            reader = await read_until(
                gw.url, transport, "news", count=1, query="since=0-0", headers=READER
            )
            assert [m.obj["data"] for m in reader.messages] == [{"n": 1}]
        # One question for the three: the same credential, topic and action.
        assert app.hits == [
            {
                "body": {"topic": "news", "action": "subscribe"},
                "topic": "news",
                "action": "subscribe",
                "cookie": "session=reader; theme=dark",
                "authorization": None,
                "token": None,
            }
        ]
        headers = {"Authorization": "Bearer app-token"}
        assert (await attempt(gw, "POST /topics/news?token=abc", headers)).status == 201
        assert app.hits[-1]["authorization"] == "Bearer app-token"
        assert (app.hits[-1]["action"], app.hits[-1]["token"]) == ("publish", "abc")


async def test_the_application_refuses_with_its_status() -> None:
    async with application() as app, gateway_asking(app) as gw:
        for endpoint in ("GET /chunked/news", "GET /sse/news", "WS /ws/news", "POST /topics/news"):
            answer = await attempt(gw, endpoint, {})
            assert (answer.status, answer.body["error"]) == (401, "unauthorized"), endpoint
            assert answer.headers["WWW-Authenticate"].startswith("Bearer")
        for endpoint in ("GET /sse/locked", "WS /ws/locked", "DELETE /topics/locked"):
            answer = await attempt(gw, endpoint, WRITER)
            assert (answer.status, answer.body["error"]) == (403, "forbidden"), endpoint
        assert (await attempt(gw, "POST /topics/news", READER)).status == 403
        assert (await attempt(gw, "POST /topics/news", WRITER)).status == 201


async def test_a_slow_broken_or_redirecting_application_is_503() -> None:
    async with application() as app, gateway_asking(app) as gw:
        started = time.monotonic()
        for endpoint in ("GET /sse/slow", "WS /ws/slow"):
            answer = await attempt(gw, endpoint, WRITER)
            assert (answer.status, answer.body["error"]) == (503, "auth_unavailable"), endpoint
        assert time.monotonic() - started < 2 * 0.5 + TIMEOUT / 10
        for topic in ("broken", "elsewhere"):
            answer = await attempt(gw, f"GET /chunked/{topic}", WRITER)
            assert (answer.status, answer.body["error"]) == (503, "auth_unavailable"), topic
        # Failures are not cached: each attempt asks again.
        await attempt(gw, "GET /chunked/broken", WRITER)
        assert app.asked("broken") == 2


async def test_an_application_that_is_down_is_503() -> None:
    down = f"http://127.0.0.1:{free_port()}/check"
    async with start_gateway(auth_url=down, topics=("news",)) as gw:
        for endpoint in ("GET /chunked/news", "WS /ws/news", "POST /topics/news"):
            answer = await attempt(gw, endpoint, WRITER)
            assert (answer.status, answer.body["error"]) == (503, "auth_unavailable"), endpoint
        async with gw.session.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200  # not behind access control


async def test_answers_are_cached_per_credential_topic_and_action() -> None:
    async with application() as app, gateway_asking(app, auth_cache_ttl=1.0) as gw:
        for _ in range(3):  # reconnects within the ttl
            assert (await attempt(gw, "GET /sse/news", READER)).status == 200
        assert (await attempt(gw, "GET /sse/locked", WRITER)).status == 403
        assert (await attempt(gw, "GET /sse/locked", WRITER)).status == 403  # refusals too
        assert app.asked() == 2
        assert (await attempt(gw, "GET /sse/news", WRITER)).status == 200  # another credential
        assert (await attempt(gw, "POST /topics/news", WRITER)).status == 201  # another action
        assert app.asked() == 4
        # A burst of the same question at once: one request.
        await asyncio.gather(
            *(attempt(gw, "GET /chunked/news", {"Cookie": "session=x"}) for _ in range(10))
        )
        assert app.asked() == 5
        await asyncio.sleep(1.1)  # past the ttl: asked again
        assert (await attempt(gw, "GET /sse/news", READER)).status == 200
        assert app.asked() == 6
    async with application() as app, gateway_asking(app, auth_cache_ttl=0) as gw:
        for _ in range(2):
            assert (await attempt(gw, "GET /sse/news", READER)).status == 200
        assert app.asked() == 2


async def test_the_ws_publish_command_asks_the_application() -> None:
    async with application() as app, gateway_asking(app) as gw:
        url = f"{gw.ws_url}/ws/news"
        async with websockets.connect(url, additional_headers=READER) as conn:
            reply = await command(conn, {"type": "publish", "data": 1})
            assert (reply["type"], reply["code"]) == ("error", "forbidden")
            assert (await command(conn, {"type": "ping"}))["type"] == "pong"
        async with websockets.connect(url, additional_headers=WRITER) as conn:
            for _ in range(3):
                assert (await command(conn, {"type": "publish", "data": 1}))["type"] == "published"
        # reader: subscribe, publish; writer: subscribe, publish (then cached).
        assert app.asked() == 4


async def test_an_exp_in_the_answer_ends_the_stream() -> None:
    async with application() as app, gateway_asking(app) as gw:
        app.exp = time.time() + 1.5
        reader = await read_until(gw.url, "ws", "news", headers=WRITER)
        assert reader.controls[-1]["reason"] == "token_expired"
        assert reader.close_code == 4003
        # Cached past its exp: the same credential is now refused (401), not let in.
        assert (await attempt(gw, "GET /sse/news", WRITER)).status == 401


async def test_tokens_and_the_application_together() -> None:
    def token(**claims: Any) -> str:
        return jwt.encode(
            {"sub": "tok", "streamgate": {"subscribe": ["news"]}, **claims}, SECRET, "HS256"
        )

    async with application() as app, gateway_asking(app, auth_key=SECRET) as gw:
        # A token the key verifies decides; the application is not asked.
        assert (
            await attempt(gw, "GET /sse/news", {"Authorization": f"Bearer {token()}"})
        ).status == 200
        assert (
            await attempt(gw, "POST /topics/news", {"Authorization": f"Bearer {token()}"})
        ).status == 403
        expired = {"Authorization": f"Bearer {token(exp=int(time.time()) - 60)}"}
        assert (await attempt(gw, "GET /sse/news", expired)).status == 401
        assert app.asked() == 0
        # No token: the application is asked (with the cookie).
        assert (await attempt(gw, "GET /sse/news", READER)).status == 200
        assert app.asked() == 1
        # A token this key does not verify is the application's to judge.
        assert (
            await attempt(gw, "GET /sse/news", {"Authorization": "Bearer app-token"})
        ).status == 200
        assert app.hits[-1]["authorization"] == "Bearer app-token"


async def test_the_topic_list_asks_about_each_topic() -> None:
    async with application() as app, gateway_asking(app) as gw:
        # slow, broken and elsewhere cannot be decided: 503 rather than a partial list.
        async with gw.session.get(f"{gw.url}/topics", headers=WRITER) as resp:
            assert resp.status == 503
            assert (await resp.json())["error"] == "auth_unavailable"
    async with application() as app, gateway_asking(app, topics=("news", "locked")) as gw:
        async with gw.session.get(f"{gw.url}/topics", headers=WRITER) as resp:
            assert resp.status == 200
            body = await resp.json()
        assert [t["name"] for t in body["topics"]] == ["news"]
        async with gw.session.get(f"{gw.url}/topics") as resp:
            assert resp.status == 401
            assert orjson.loads(await resp.read())["error"] == "unauthorized"
