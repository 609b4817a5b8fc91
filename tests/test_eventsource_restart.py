"""A browser's EventSource across a gateway restart (Chromium): it reconnects by
itself to a gateway that no longer knows the topic, is told of the gap, keeps
its connection open (a 404 would have closed it for good), and receives the
next message."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import pytest

from tests.helpers import TIMEOUT, free_port, spawn_gateway

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.browser

JSON = {"Content-Type": "application/json"}

LISTEN = """() => {
  window.got = [];
  const es = new EventSource("/sse/news");
  window.es = es;
  es.onmessage = (ev) => window.got.push({kind: "message", data: JSON.parse(ev.data).data});
  for (const type of ["gap", "goodbye"]) {
    es.addEventListener(type, (ev) => window.got.push({kind: type, ...JSON.parse(ev.data)}));
  }
}"""


async def test_eventsource_survives_a_gateway_restart(browser: Browser) -> None:
    port = free_port()
    page = await browser.new_page()
    try:
        async with spawn_gateway("--topic", "news", port=port) as gw:
            await page.goto(f"{gw.url}/healthz")  # any page of the gateway's origin
            await page.evaluate(LISTEN)
            await page.wait_for_function("() => window.es.readyState === 1", timeout=TIMEOUT * 1000)
            resp = await page.request.post(
                f"{gw.url}/topics/news",
                data='{"before": 1}',
                headers={"Content-Type": "application/json"},
            )
            assert resp.status == 201
            await page.wait_for_function("() => window.got.length === 1", timeout=TIMEOUT * 1000)
        # The gateway is gone (the stream got its goodbye); a new one, with no
        # --topic and no history, comes up on the same port.
        await asyncio.sleep(0.5)
        async with spawn_gateway(port=port) as gw:
            await page.wait_for_function(
                "() => window.got.some(e => e.kind === 'gap') && window.es.readyState === 1",
                timeout=TIMEOUT * 1000,
            )
            resp = await page.request.post(
                f"{gw.url}/topics/news",
                data='{"after": 1}',
                headers={"Content-Type": "application/json"},
            )
            assert resp.status == 201
            await page.wait_for_function(
                "() => window.got.some(e => e.kind === 'message' && e.data.after === 1)",
                timeout=TIMEOUT * 1000,
            )
            got = await page.evaluate("() => window.got")
            state = await page.evaluate("() => window.es.readyState")
    finally:
        await page.close()
    kinds = [e["kind"] for e in got]
    assert kinds == ["message", "goodbye", "gap", "message"], got
    assert got[1]["reason"] == "shutdown"
    assert got[2]["first_id"] is None  # the new gateway holds no history of the topic
    assert state == 1  # still open: a 404 would have closed it for good
