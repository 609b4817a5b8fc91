"""docs/examples/shop.py, run as a user runs it: its own process, its own port.

A signed-in user reads the orders a handler of the app publishes, over the three
transports under /stream and on the gateway's page (Chromium); the app's session
decides who may read and publish (``authorize``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp
import pytest

from tests.helpers import TIMEOUT, free_port, poll_until
from tests.test_page import ALL_COUNT_AT_LEAST, ALL_HAVE_ID, MS
from tests.wire import read_until

if TYPE_CHECKING:
    from playwright.async_api import Browser

EXAMPLE = Path(__file__).resolve().parent.parent / "docs" / "examples" / "shop.py"


@contextlib.asynccontextmanager
async def shop() -> AsyncIterator[str]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--port",
        str(port),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:

            async def up() -> bool:
                assert proc.returncode is None, "the example exited"
                with contextlib.suppress(aiohttp.ClientError):
                    async with http.get(url + "/stream/healthz") as resp:
                        return resp.status == 200
                return False

            await poll_until(up, within=TIMEOUT * 3, what="the example to answer")
        yield url
    finally:
        if proc.returncode is None:
            proc.terminate()
        async with asyncio.timeout(TIMEOUT):
            stderr = await proc.communicate()
        assert proc.returncode in (0, -15), stderr


async def sign_in(http: aiohttp.ClientSession, url: str, user: str) -> dict[str, str]:
    async with http.post(url + "/login", data={"user": user}, allow_redirects=False) as resp:
        assert resp.status == 303
        cookie = resp.cookies["shop_session"].value
    return {"Cookie": f"shop_session={cookie}"}


async def order(http: aiohttp.ClientSession, url: str, who: dict[str, str], sku: str) -> str:
    async with http.post(url + "/orders", json={"sku": sku}, headers=who) as resp:
        assert resp.status == 201, await resp.text()
        return str((await resp.json())["id"])


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_the_example_streams_its_orders_to_signed_in_users(transport: str) -> None:
    async with shop() as url, aiohttp.ClientSession() as http:
        async with http.get(url + "/stream/sse/orders") as resp:
            assert resp.status == 403  # not signed in
        bob = await sign_in(http, url, "bob")
        started = asyncio.Event()
        reader = asyncio.create_task(
            read_until(url + "/stream", transport, "orders", count=1, headers=bob, started=started)
        )
        await started.wait()
        msg_id = await order(http, url, bob, "tea")
        got = await reader
        assert got.ids == [msg_id]
        assert got.messages[0].obj["data"] == {"by": "bob", "sku": "tea"}
        # Publishing over the gateway's own HTTP API: admin only.
        async with http.post(url + "/stream/topics/orders", json={}, headers=bob) as resp:
            assert resp.status == 403
        admin = await sign_in(http, url, "admin")
        async with http.post(url + "/stream/topics/orders", json={}, headers=admin) as resp:
            assert resp.status == 201
        # The background task's news and the shared source's prices are there too.
        news = await read_until(url + "/stream", transport, "news", count=1, headers=bob)
        assert "headline" in news.messages[0].obj["data"]
        squares = await read_until(url + "/stream", transport, "squares", query="n=3")
        assert [m.obj["data"]["sq"] for m in squares.messages] == [1, 4, 9]


@pytest.mark.browser
async def test_the_gateways_page_works_under_the_prefix(browser: Browser) -> None:
    async with shop() as url, aiohttp.ClientSession() as http:
        context = await browser.new_context()
        try:
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            # Sign in through the app's own form: the page then carries its cookie.
            await page.goto(url + "/", timeout=MS)
            await page.fill("input[name=user]", "carol")
            await page.click("button")
            await page.wait_for_url(url + "/", timeout=MS)
            await page.goto(url + "/stream?topic=orders", timeout=MS)  # redirected to /stream/
            assert page.url == url + "/stream/?topic=orders"
            await page.wait_for_function(ALL_COUNT_AT_LEAST, arg=0, timeout=MS, polling=100)
            cookies = await context.cookies()
            carol = {"Cookie": f"shop_session={cookies[0]['value']}"}
            msg_id = await order(http, url, carol, "cake")
            await page.wait_for_function(ALL_HAVE_ID, arg=msg_id, timeout=MS, polling=100)
            assert errors == []
        finally:
            await context.close()
