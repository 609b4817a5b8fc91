"""The demo page (GET /) in a real browser: Chromium driven by playwright.

The gateway runs in the test's event loop (tests.helpers.start_gateway) on a loopback port;
the page reads its per-transport state from ``window.streamgate``. Every wait is a
``wait_for_function`` bounded by TIMEOUT, never a fixed sleep.

Needs a Chromium (``apt-get install -y chromium``, or ``STREAMGATE_CHROMIUM``) and playwright
(``pip install -e '.[test]'``; no ``playwright install``: the browser is the system one). Without
either, these tests are skipped with the reason: the ``browser`` fixture, tests/browser.py.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.helpers import TIMEOUT, start_gateway

if TYPE_CHECKING:
    from playwright.async_api import Browser, ConsoleMessage, Page, Request

pytestmark = pytest.mark.browser

MS = int(TIMEOUT * 1000)  # playwright counts in milliseconds
TRANSPORTS = ("chunked", "ws", "sse")
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
TICK = 0.2

# JavaScript run in the page.
ALL_COUNT_AT_LEAST = """n => Object.values(window.streamgate?.transports ?? {}).length === 3
    && Object.values(window.streamgate.transports).every(c => c.state === "live" && c.count >= n)"""
ALL_HAVE_ID = """id => Object.values(window.streamgate.transports).every(c => c.idSet.has(id))"""
ALL_AT_LEAST_ID = """bound => Object.values(window.streamgate.transports).every(c =>
    c.lastId !== null && window.streamgate.cmpId(c.lastId, bound) >= 0)"""
SNAPSHOT = """() => Object.fromEntries(
    Object.entries(window.streamgate.transports).map(([k, c]) => [k, {
    ids: c.ids, startId: c.startId, lastId: c.lastId, count: c.count, dups: c.dups,
    gaps: c.gaps, reconnects: c.reconnects, state: c.state, resumeOk: c.resumeOk,
    resumeText: c.resumeText, bytes: c.bytes, bad: c.bad, missing: c.missingVsOthers(),
    controls: c.controls}]))"""
# Polled in the page (a short fetch): what GET /topics says about the ticks subscribers.
SUBSCRIBERS_ARE_ONE = """async () => {
    const body = await (await fetch("/topics", {cache: "no-store"})).json();
    const s = body.topics.find(t => t.name === "ticks").subscribers;
    return s.chunked === 1 && s.ws === 1 && s.sse === 1;
}"""


def id_key(message_id: str) -> tuple[int, int]:
    ms, seq = message_id.split("-")
    return int(ms), int(seq)


class Session:
    """A gateway, one page on it, what the page said on its console, and how many HTTP
    requests it had in flight at once (the WebSocket is not an HTTP request here)."""

    def __init__(self, gw: Any, page: Page) -> None:
        self.gw = gw
        self.page = page
        self.errors: list[str] = []
        self.in_flight: dict[Request, str] = {}
        self.peak = 0  # HTTP requests in flight at once
        self.peak_by_kind: dict[str, int] = {}  # by first path segment: chunked, sse, topics
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", self._request)
        page.on("requestfinished", self._request_over)
        page.on("requestfailed", self._request_over)

    def _request(self, request: Request) -> None:
        if not request.url.startswith("http"):
            return
        kind = urlsplit(request.url).path.split("/")[1]
        self.in_flight[request] = kind
        self.peak = max(self.peak, len(self.in_flight))
        same = sum(1 for k in self.in_flight.values() if k == kind)
        self.peak_by_kind[kind] = max(self.peak_by_kind.get(kind, 0), same)

    def _request_over(self, request: Request) -> None:
        self.in_flight.pop(request, None)

    def assert_within_connection_budget(self) -> None:
        """HTTP/1.1 allows 6 connections per host: the page holds one chunked fetch and one
        EventSource at a time, and its short requests come and go beside them."""
        assert self.peak_by_kind.get("chunked") == 1, self.peak_by_kind
        assert self.peak_by_kind.get("sse") == 1, self.peak_by_kind
        assert self.peak <= 4, (self.peak, self.peak_by_kind)

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type in ("error", "assert"):
            self.errors.append(f"console.{msg.type}: {msg.text}")

    async def state(self) -> dict[str, dict[str, Any]]:
        snapshot: dict[str, dict[str, Any]] = await self.page.evaluate(SNAPSHOT)
        return snapshot

    async def wait(self, expression: str, arg: Any = None) -> None:
        await self.page.wait_for_function(expression, arg=arg, timeout=MS, polling=100)

    async def history(self, since: str) -> list[str]:
        """The ids the gateway retains after ``since`` (GET /topics/ticks/messages)."""
        ids: list[str] = []
        async with aiohttp.ClientSession() as http:
            while True:
                url = f"{self.gw.url}/topics/ticks/messages"
                params = {"since": since, "limit": "1000"}
                async with http.get(url, params=params) as resp:
                    assert resp.status == 200, await resp.text()
                    body = await resp.json()
                assert body["gap"] is False, body
                if not body["messages"]:
                    return ids
                ids += [m["id"] for m in body["messages"]]
                since = ids[-1]


@contextlib.asynccontextmanager
async def session(
    browser: Browser, *, width: int = 1280, height: int = 800, **settings: Any
) -> AsyncIterator[Session]:
    async with start_gateway(tick_interval=TICK, **settings) as gw:
        context = await browser.new_context(viewport={"width": width, "height": height})
        page = await context.new_page()
        s = Session(gw, page)
        try:
            await page.goto(f"{gw.url}/", timeout=MS)
            # three live columns, each with a few ticks
            await s.wait(ALL_COUNT_AT_LEAST, 3)
            yield s
        finally:
            # close the browser side first, so that the gateway stopping is not seen as a drop
            await context.close()


async def test_page_loads_without_console_errors(browser: Browser) -> None:
    async with session(browser) as s:
        page = s.page
        assert await page.title() != ""
        for name in TRANSPORTS:
            assert await page.locator(f'[data-transport="{name}"]').count() == 1
        # the topic picker is fed by GET /topics
        options = await page.locator("#topic option").all_text_contents()
        assert "ticks" in options
        assert await page.locator("#topic").input_value() == "ticks"
        # the stylesheet and the script come from /static/, nothing from elsewhere
        display = await page.evaluate(
            "getComputedStyle(document.querySelector('.columns')).display"
        )
        assert display == "grid"
        hosts = await page.evaluate(
            "[...performance.getEntriesByType('resource')].map(e => new URL(e.name).host)"
        )
        assert set(hosts) <= {s.gw.url.removeprefix("http://")}, hosts
        # figures on screen
        for name in TRANSPORTS:
            column = page.locator(f'[data-transport="{name}"]')
            await s.wait(
                """name => document.querySelector(`[data-transport="${name}"] [data-field=count]`)
                    .textContent !== "0" """,
                name,
            )
            last_id = await column.locator("[data-field=lastId]").text_content()
            assert last_id is not None and "-" in last_id
            assert await column.locator("[data-field=state]").text_content() == "live"
        assert s.errors == []


async def test_three_columns_receive_the_same_ids(browser: Browser) -> None:
    async with session(browser) as s:
        await s.wait(ALL_COUNT_AT_LEAST, 10)
        # a burst between the ticks: 500 messages in one request
        burst = await s.gw.publish_batch("ticks", [{"burst": i} for i in range(500)])
        first = await s.state()
        bound = max([burst[-1], *(c["lastId"] for c in first.values())], key=id_key)
        await s.wait(ALL_AT_LEAST_ID, bound)
        state = await s.state()
        start = state["chunked"]["startId"]
        lists = {}
        for name, c in state.items():
            assert c["startId"] == start, name
            assert c["dups"] == 0 and c["gaps"] == 0 and c["bad"] == 0, (name, c)
            assert c["missing"] == [], (name, c)
            lists[name] = [i for i in c["ids"] if id_key(i) <= id_key(bound)]
        assert len(lists["chunked"]) >= 510
        assert set(burst) <= set(lists["chunked"])
        assert lists["chunked"] == lists["ws"] == lists["sse"]
        # and they are exactly what the gateway holds after the common start
        held = [i for i in await s.history(start) if id_key(i) <= id_key(bound)]
        assert lists["chunked"] == held
        assert s.errors == []


async def test_published_message_arrives_in_all_three(browser: Browser) -> None:
    async with session(browser) as s:
        page = s.page
        marker = uuid.uuid4().hex
        payload = {"marker": marker, "html": "<b id='injected'>bold</b>", "text": "héllo ✓"}
        await page.fill("#payload", json.dumps(payload))
        await page.click("#publish-btn")
        await s.wait("() => window.streamgate.published.length === 1")
        published = await page.evaluate("window.streamgate.published[0]")
        await s.wait(ALL_HAVE_ID, published)
        # the status line reports the arrival in each column
        await s.wait(
            """() => ["chunked", "ws", "sse"].every(n =>
                document.querySelector("#status").textContent.includes(n + " ✓"))"""
        )
        # the gateway holds it with the published data
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{s.gw.url}/topics/ticks/messages?limit=1000") as resp:
                body = await resp.json()
        held = {m["id"]: m["data"] for m in body["messages"]}
        assert held[published] == payload
        # shown in every column as text, never as markup
        for name in TRANSPORTS:
            cell = page.locator(f'[data-transport="{name}"] .log li .data', has_text=marker)
            await cell.first.wait_for(timeout=MS)
            assert "<b id='injected'>" in (await cell.first.text_content() or "")
        assert await page.locator("#injected").count() == 0
        # a bad document is refused in the page, not sent
        await page.fill("#payload", "{not json")
        await page.click("#publish-btn")
        await s.wait("() => document.querySelector('#status').dataset.kind === 'error'")
        assert await page.evaluate("window.streamgate.published.length") == 1
        assert s.errors == []


async def test_topic_picker_switches_every_column(browser: Browser) -> None:
    async with session(browser, topics=("news",)) as s:
        page = s.page
        assert sorted(await page.locator("#topic option").all_text_contents()) == ["news", "ticks"]
        await page.select_option("#topic", "news")
        await s.wait(
            """() => window.streamgate.topic === "news"
                && Object.values(window.streamgate.transports).every(c => c.state === "live")"""
        )
        assert "topic=news" in page.url
        await page.fill("#payload", json.dumps({"on": "news"}))
        await page.click("#publish-btn")
        await s.wait("() => window.streamgate.published.length === 1")
        published = await page.evaluate("window.streamgate.published[0]")
        await s.wait(ALL_HAVE_ID, published)
        for name, c in (await s.state()).items():
            assert c["ids"] == [published], name  # news only: the ticks stayed behind
        # a reload keeps the topic (?topic=news)
        await page.reload()
        await s.wait(
            """() => window.streamgate?.ready && window.streamgate.topic === "news"
                && Object.values(window.streamgate.transports).every(c => c.state === "live")"""
        )
        assert await page.locator("#topic").input_value() == "news"
        assert s.errors == []


# Feeds an NDJSON byte stream to the page's own line splitter (the one the chunked column
# uses) cut at every pair of positions, then one byte at a time; returns the bad cuts.
SPLIT_EVERYWHERE = """() => {
    const Lines = window.streamgate.NdjsonLines;
    const lines = [
        '{"id":"1-0","topic":"t","ts":1.5,"data":"h\u00e9llo \u2713 \ud834\udd1e"}',
        '{"type":"gap","topic":"t","since":"0-0","first_id":null}',
        '{"id":"1-1","topic":"t","ts":2,"data":{"k":[1,2,3]}}',
    ];
    const text = lines[0] + "\\n\\n" + lines[1] + "\\n\\n\\n" + lines[2] + "\\n\\n";
    const bytes = new TextEncoder().encode(text);
    const want = JSON.stringify(lines);
    const run = cuts => {
        const splitter = new Lines();
        const out = [];
        let prev = 0;
        for (const cut of [...cuts, bytes.length]) {
            out.push(...splitter.feed(bytes.subarray(prev, cut)));
            prev = cut;
        }
        out.push(...splitter.end());
        return JSON.stringify(out);
    };
    const bad = [];
    let runs = 0;
    for (let i = 0; i <= bytes.length; i++) {
        for (let j = i; j <= bytes.length; j++) {
            runs++;
            if (run([i, j]) !== want) bad.push([i, j]);
        }
    }
    runs++;
    if (run([...Array(bytes.length).keys()]) !== want) bad.push("byte by byte");
    // a last line without its newline is still delivered when the stream ends
    const tail = new Lines();
    const last = [...tail.feed(new TextEncoder().encode(lines[2])), ...tail.end()];
    if (JSON.stringify(last) !== JSON.stringify([lines[2]])) bad.push("no final newline");
    return {bad: bad.slice(0, 10), runs, multibyte: bytes.length > text.length};
}"""


async def test_ndjson_lines_are_reassembled_across_any_chunk_boundary(browser: Browser) -> None:
    async with session(browser) as s:
        result = await s.page.evaluate(SPLIT_EVERYWHERE)
        assert result["multibyte"] is True  # cuts fall inside UTF-8 characters too
        assert result["runs"] > 10_000
        assert result["bad"] == []
        # end to end: a message far larger than one network read, full of multi-byte
        # characters, arrives whole on every transport (a broken line would not parse)
        big = {"text": "é✓𝄞x" * 5000}
        published = await s.gw.publish("ticks", big)
        await s.wait(ALL_HAVE_ID, published)
        after = await s.gw.publish("ticks", {"after": "big"})
        await s.wait(ALL_HAVE_ID, after)
        state = await s.page.evaluate(
            "() => Object.values(window.streamgate.transports).map(c => [c.name, c.bad, c.bytes])"
        )
        for name, bad, received in state:
            assert bad == 0, name
            assert received > len(json.dumps(big, ensure_ascii=False).encode()), name
        assert s.errors == []


@pytest.mark.parametrize("name", TRANSPORTS)
async def test_disconnect_then_reconnect_loses_nothing(browser: Browser, name: str) -> None:
    async with session(browser) as s:
        page = s.page
        column = f'[data-transport="{name}"]'
        button = page.locator(f"{column} [data-action=toggle]")
        assert await button.text_content() == "Disconnect"
        await button.click()
        await s.wait(f"() => window.streamgate.transports.{name}.state === 'disconnected'")
        await s.wait(
            f"() => document.querySelector('{column} [data-action=toggle]')"
            ".textContent === 'Reconnect'"
        )
        away_from = await page.evaluate(f"window.streamgate.transports.{name}.lastId")
        # published while the column is away (the ticks keep coming too)
        published = [await s.gw.publish("ticks", {"while_away": i}) for i in range(5)]
        others = [n for n in TRANSPORTS if n != name]
        await s.wait(
            """([others, ids]) => others.every(n =>
                ids.every(id => window.streamgate.transports[n].idSet.has(id)))""",
            [others, published],
        )
        missed_so_far = await page.evaluate(
            "([n, ids]) => ids.filter(id => window.streamgate.transports[n].idSet.has(id))",
            [name, published],
        )
        assert missed_so_far == [], "a disconnected column still received messages"

        await button.click()
        await s.wait(
            "([n, ids]) => ids.every(id => window.streamgate.transports[n].idSet.has(id))",
            [name, published],
        )
        # the column checks itself against the gateway's history, and says so
        await s.wait(f"() => window.streamgate.transports.{name}.resumeOk !== null")
        state = await s.state()
        mine = state[name]
        assert mine["resumeOk"] is True, mine["resumeText"]
        assert "nothing missed" in mine["resumeText"]
        assert f"resumed from {away_from}" in mine["resumeText"]
        assert mine["reconnects"] == 1
        assert mine["dups"] == 0 and mine["gaps"] == 0
        resume_line = page.locator(f"{column} [data-field=resume]")
        await s.wait(
            "sel => document.querySelector(sel).textContent.includes('nothing missed')",
            f"{column} [data-field=resume]",
        )
        assert await resume_line.get_attribute("data-ok") == "yes"

        # every id the gateway holds after the common start, up to where the column is now,
        # arrived exactly once and in order, and the same ids as the other columns
        bound = mine["lastId"]
        await s.wait(ALL_AT_LEAST_ID, bound)
        state = await s.state()
        held = [i for i in await s.history(mine["startId"]) if id_key(i) <= id_key(bound)]
        for n in TRANSPORTS:
            got = [i for i in state[n]["ids"] if id_key(i) <= id_key(bound)]
            assert got == held, n
            assert state[n]["missing"] == [], n
        # the old connection is gone: the gateway counts one subscriber per transport again
        await s.wait(SUBSCRIBERS_ARE_ONE)
        s.assert_within_connection_budget()
        assert await button.text_content() == "Disconnect"
        assert s.errors == []


async def test_dropped_connections_come_back_without_loss(browser: Browser) -> None:
    """A network failure (the gateway aborts every stream): each column reconnects by itself
    with since=<last id>, and nothing published meanwhile is missed."""
    async with session(browser) as s:
        assert s.gw.drop_all() == 3
        published = [await s.gw.publish("ticks", {"after_drop": i}) for i in range(3)]
        await s.wait(
            "() => Object.values(window.streamgate.transports).every(c => c.reconnects >= 1)"
        )
        await s.wait(ALL_HAVE_ID, published[-1])
        await s.wait(
            "() => Object.values(window.streamgate.transports).every(c => c.resumeOk !== null)"
        )
        state = await s.state()
        bound = min((c["lastId"] for c in state.values()), key=id_key)
        held = [i for i in await s.history(state["ws"]["startId"]) if id_key(i) <= id_key(bound)]
        for name, c in state.items():
            assert c["resumeOk"] is True, (name, c["resumeText"])
            assert c["dups"] == 0 and c["gaps"] == 0, name
            assert [i for i in c["ids"] if id_key(i) <= id_key(bound)] == held, name
        await s.wait(SUBSCRIBERS_ARE_ONE)
        s.assert_within_connection_budget()
        # Chromium reports the aborted streams itself (net::ERR_...); the page adds nothing.
        assert [e for e in s.errors if "net::ERR_" not in e] == []


async def test_goodbye_on_restart_then_every_column_resumes(browser: Browser) -> None:
    """The gateway stops (a goodbye on every stream) and comes back on the same port: each
    column reconnects by itself with since=<last id>, and is told of the gap."""
    context = await browser.new_context(viewport={"width": 1280, "height": 800})
    try:
        page = await context.new_page()
        async with start_gateway(tick_interval=TICK) as gw:
            s = Session(gw, page)
            await page.goto(f"{gw.url}/", timeout=MS)
            await s.wait(ALL_COUNT_AT_LEAST, 3)
            port = gw.port
        await s.wait(
            """() => Object.values(window.streamgate.transports).every(c =>
                c.controls.some(e => e.type === "goodbye" && e.reason === "shutdown"))"""
        )
        before = await s.state()
        async with start_gateway(tick_interval=TICK, port=port) as gw2:
            s.gw = gw2
            published = await gw2.publish("ticks", {"after": "restart"})
            await s.wait(ALL_HAVE_ID, published)
            await s.wait(
                """() => Object.values(window.streamgate.transports).every(c =>
                    c.state === "live" && c.resumeOk !== null)"""
            )
            state = await s.state()
            for name, c in state.items():
                # A memory gateway's history starts anew with the process: it cannot
                # vouch for what the old one held after the column's last id, so the
                # resume starts with a gap event (conservative: never a silent loss).
                assert c["resumeOk"] is False and "gap" in c["resumeText"], (name, c)
                assert f"resumed from {before[name]['lastId']}" in c["resumeText"], name
                assert c["reconnects"] >= 1 and c["dups"] == 0 and c["bad"] == 0, name
            await context.close()
        # While the gateway was down Chromium may report refused connections (net::ERR_...,
        # or a failed WebSocket); the page itself adds nothing.
        assert [e for e in s.errors if "net::ERR_" not in e and "WebSocket" not in e] == []
    finally:
        await context.close()


async def test_screenshots(browser: Browser) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    async with session(browser) as s:
        await s.page.fill("#payload", json.dumps({"hello": "from the publish box"}))
        await s.page.click("#publish-btn")
        await s.wait("() => window.streamgate.published.length === 1")
        published = await s.page.evaluate("window.streamgate.published[0]")
        await s.wait(ALL_HAVE_ID, published)
        await s.wait(ALL_COUNT_AT_LEAST, 12)
        laptop = ARTIFACTS / "page.png"
        await s.page.screenshot(path=str(laptop))
        assert laptop.stat().st_size > 10_000
        assert s.errors == []
    # on a phone the three columns stack
    async with session(browser, width=390, height=844) as s:
        boxes = [await s.page.locator(f'[data-transport="{n}"]').bounding_box() for n in TRANSPORTS]
        assert all(b is not None for b in boxes)
        xs = {round(b["x"]) for b in boxes if b}
        assert len(xs) == 1, boxes
        widths = [b["width"] for b in boxes if b]
        assert min(widths) > 300
        assert await s.page.evaluate("document.documentElement.scrollWidth <= innerWidth")
        phone = ARTIFACTS / "page-phone.png"
        await s.page.screenshot(path=str(phone), full_page=True)
        assert phone.stat().st_size > 10_000
        assert s.errors == []
