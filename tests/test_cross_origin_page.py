"""A page on another origin, in a real browser (Chromium through playwright: tests/browser.py).

The gateway listens on http://127.0.0.1:PORT1; a tiny aiohttp site the test
starts serves a blank page on http://localhost:PORT2, another origin. From that
page: ``EventSource`` with ``withCredentials``, a fetch stream read with a
``ReadableStream`` reader, a JSON publish (which makes the browser send a CORS
preflight first) and a WebSocket work when the origin is listed in
``--allowed-origins``, and fail when it is not. Either way, a ``no-cors``
text/plain POST and a text/plain form, the two ways a page can send a body to
another origin without asking it, publish nothing (the topic's history is
checked over HTTP afterwards).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
from aiohttp import web

from tests.helpers import TIMEOUT, GatewayUnderTest, start_gateway
from tests.test_page import MS

if TYPE_CHECKING:
    from playwright.async_api import Browser, Page, Response

pytestmark = pytest.mark.browser

WAIT_MS = MS // 2  # how long the page waits for an event that may never come

EVENT_SOURCE = """([url, ms]) => new Promise(resolve => {
    const es = new EventSource(url, {withCredentials: true});
    const timer = setTimeout(() => { es.close(); resolve({outcome: "timeout"}); }, ms);
    es.onmessage = e => {
        clearTimeout(timer); es.close();
        resolve({outcome: "message", message: JSON.parse(e.data)});
    };
    es.onerror = () => {
        clearTimeout(timer); const state = es.readyState; es.close();
        resolve({outcome: "error", state});
    };
})"""

FETCH_STREAM = """async url => {
    try {
        const r = await fetch(url, {credentials: "include"});
        const reader = r.body.getReader();
        const decoder = new TextDecoder();
        let text = "", reads = 0;
        for (;;) {
            const {done, value} = await reader.read();
            if (done) break;
            reads++;
            text += decoder.decode(value, {stream: true});
        }
        const items = text.split("\\n").filter(line => line.trim()).map(l => JSON.parse(l));
        return {outcome: "ok", status: r.status, type: r.headers.get("content-type"), items, reads};
    } catch (e) {
        return {outcome: "error", error: String(e)};
    }
}"""

PUBLISH_JSON = """async ([url, body]) => {
    try {
        const r = await fetch(url, {
            method: "POST", credentials: "include",
            headers: {"Content-Type": "application/json"}, body,
        });
        return {outcome: "ok", status: r.status, body: await r.json()};
    } catch (e) {
        return {outcome: "error", error: String(e)};
    }
}"""

WEBSOCKET = """([url, ms]) => new Promise(resolve => {
    const ws = new WebSocket(url);
    let opened = false;
    const timer = setTimeout(() => { ws.close(); resolve({outcome: "timeout", opened}); }, ms);
    ws.onopen = () => { opened = true; ws.send(JSON.stringify({type: "ping"})); };
    ws.onmessage = e => {
        if (JSON.parse(e.data).type === "pong") {
            clearTimeout(timer); ws.close(); resolve({outcome: "pong", opened});
        }
    };
    ws.onclose = e => { clearTimeout(timer); resolve({outcome: "closed", opened, code: e.code}); };
})"""

# The two ways a page sends a body to another origin without a preflight. The form's
# text/plain body is `{"csrf": 1, "pad": "="}`: valid JSON, the classic way round a
# server that parses whatever it is sent.
NO_CORS_POST = """async ([url, body]) => {
    const r = await fetch(url, {method: "POST", mode: "no-cors", body});
    return {type: r.type, status: r.status};
}"""
FORM_POST = """url => {
    const frame = document.createElement("iframe");
    frame.name = "sink";
    document.body.append(frame);
    const form = document.createElement("form");
    form.method = "POST"; form.action = url; form.enctype = "text/plain"; form.target = "sink";
    const field = document.createElement("input");
    field.name = '{"csrf": 1, "pad": "'; field.value = '"}';
    form.append(field);
    document.body.append(form);
    form.submit();
}"""


@contextlib.asynccontextmanager
async def other_origin() -> AsyncIterator[str]:
    """A blank page on http://localhost:PORT2 (the gateway is on 127.0.0.1:PORT1)."""

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>another origin</title><p>a web app elsewhere</p>",
            content_type="text/html",
        )

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://localhost:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def history(gw: GatewayUnderTest) -> list[Any]:
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{gw.url}/topics/news/messages") as resp:
            assert resp.status == 200
            return [m["data"] for m in (await resp.json())["messages"]]


class Statuses:
    """What the gateway answered each request the page sent it (opaque ones included)."""

    def __init__(self, page: Page, gw: GatewayUnderTest) -> None:
        self.seen: list[tuple[str, str, int]] = []
        self._prefix = gw.url
        page.on("response", self._response)

    def _response(self, response: Response) -> None:
        if response.url.startswith(self._prefix):
            request = response.request
            self.seen.append((request.method, response.url[len(self._prefix) :], response.status))


async def cross_site_writes_publish_nothing(page: Page, gw: GatewayUnderTest) -> None:
    statuses = Statuses(page, gw)
    before = await history(gw)
    result = await page.evaluate(NO_CORS_POST, [f"{gw.url}/topics/news", '{"csrf": 1}'])
    assert result == {"type": "opaque", "status": 0}  # the page learns nothing...
    await page.evaluate(FORM_POST, f"{gw.url}/topics/news")
    loop = asyncio.get_running_loop()
    deadline = loop.time() + TIMEOUT
    while len([s for s in statuses.seen if s[0] == "POST"]) < 2 and loop.time() < deadline:
        await page.wait_for_timeout(20)
    # ...the gateway refused both before reading their bodies, and published nothing
    assert [s for s in statuses.seen if s[0] == "POST"] == [("POST", "/topics/news", 415)] * 2
    assert await history(gw) == before


async def test_a_listed_origin_reads_streams_publishes_and_opens_websockets(
    browser: Browser,
) -> None:
    async with (
        other_origin() as origin,
        start_gateway(topics=("news",), allowed_origins=(origin,)) as gw,
    ):
        first = await gw.publish("news", {"n": 1})
        second = await gw.publish("news", {"n": 2})
        context = await browser.new_context()
        try:
            page = await context.new_page()
            await page.goto(origin, timeout=MS)
            assert await page.evaluate("location.origin") == origin != gw.url

            got = await page.evaluate(EVENT_SOURCE, [f"{gw.url}/sse/news?since=0-0", WAIT_MS])
            assert got["outcome"] == "message", got
            assert (got["message"]["id"], got["message"]["data"]) == (first, {"n": 1})

            got = await page.evaluate(FETCH_STREAM, f"{gw.url}/chunked/news?since=0-0&limit=2")
            assert got["outcome"] == "ok", got
            assert got["type"].startswith("application/x-ndjson")
            assert [i.get("id") for i in got["items"]] == [first, second, None]
            assert got["items"][-1] == {"type": "end", "reason": "limit", "last_id": second}

            got = await page.evaluate(
                PUBLISH_JSON, [f"{gw.url}/topics/news", '{"from": "the app"}']
            )
            assert got["outcome"] == "ok" and got["status"] == 201, got
            assert await history(gw) == [{"n": 1}, {"n": 2}, {"from": "the app"}]

            got = await page.evaluate(WEBSOCKET, [f"{gw.ws_url}/ws/news", WAIT_MS])
            assert got == {"outcome": "pong", "opened": True}

            await cross_site_writes_publish_nothing(page, gw)
        finally:
            await context.close()


async def test_an_unlisted_origin_can_neither_read_nor_publish_nor_open_a_websocket(
    browser: Browser,
) -> None:
    async with (
        other_origin() as origin,
        start_gateway(topics=("news",), allowed_origins=("https://app.example",)) as gw,
    ):
        first = await gw.publish("news", {"n": 1})
        context = await browser.new_context()
        try:
            page = await context.new_page()
            statuses = Statuses(page, gw)
            await page.goto(origin, timeout=MS)

            got = await page.evaluate(EVENT_SOURCE, [f"{gw.url}/sse/news?since=0-0", WAIT_MS])
            assert got == {"outcome": "error", "state": 2}  # CLOSED: EventSource gives up

            got = await page.evaluate(FETCH_STREAM, f"{gw.url}/chunked/news?since=0-0&limit=1")
            assert got["outcome"] == "error" and "TypeError" in got["error"], got

            got = await page.evaluate(
                PUBLISH_JSON, [f"{gw.url}/topics/news", '{"from": "elsewhere"}']
            )
            assert got["outcome"] == "error" and "TypeError" in got["error"], got
            # the preflight was refused, so the POST itself was never sent
            assert not [s for s in statuses.seen if s[0] == "POST"]
            assert await history(gw) == [{"n": 1}]

            got = await page.evaluate(WEBSOCKET, [f"{gw.ws_url}/ws/news", WAIT_MS])
            assert got == {"outcome": "closed", "opened": False, "code": 1006}
            assert gw.context.hub.subscriber_counts("news")["ws"] == 0

            await cross_site_writes_publish_nothing(page, gw)
            assert first
        finally:
            await context.close()
