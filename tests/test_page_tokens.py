"""The page with a token: ``/?token=...``, and freshToken() after a 401 or an expiry.

The page (gateway/static) is served by tests/token_server.py, which speaks the
gateway's access-control contract, in a real Chromium (tests/browser.py: skipped,
with the reason, without one). Without a token the page is tested by tests/test_page.py.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import TYPE_CHECKING

import pytest

from tests.helpers import TIMEOUT
from tests.token_server import token_server

if TYPE_CHECKING:
    from playwright.async_api import Browser

pytestmark = pytest.mark.browser

MS = int(TIMEOUT * 1000)
TRANSPORTS = ("chunked", "ws", "sse")


# The app's own freshToken: a new token on every call, counted.
FRESH_TOKENS = """() => {
    let n = 1;
    window.streamgate.freshToken = async () => `tok-${++n}`;
}"""
STATE = """() => Object.fromEntries(Object.entries(window.streamgate.transports).map(
    ([k, c]) => [k, {ids: c.ids, state: c.state, dups: c.dups, gaps: c.gaps,
                     reconnects: c.reconnects, resumeOk: c.resumeOk, bad: c.bad}]))"""


async def test_page_sends_its_token_and_asks_for_fresh_ones(browser: Browser) -> None:
    """?token= goes out as a header (fetch) or in the query (WebSocket, EventSource); a 401
    and every token_expired goodbye make the page call freshToken() before reconnecting; each
    column still gets ids 1..6 exactly once."""
    valid = {f"tok-{i}" for i in range(1, 30)}
    async with token_server(
        total=6, per_token=2, valid=valid, revoke_on_expiry=False, page=True
    ) as srv:
        srv.gate = asyncio.Event()  # the streams wait until the app's freshToken is in
        context = await browser.new_context()
        try:
            page = await context.new_page()
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            await page.goto(f"{srv.url}/?token=tok-1", timeout=MS)
            await page.wait_for_function(
                "() => window.streamgate?.ready === true", timeout=MS, polling=50
            )
            # The token left the address bar for this tab's sessionStorage.
            assert "token" not in page.url
            assert await page.evaluate("sessionStorage.getItem('streamgate_token')") == "tok-1"
            assert await page.evaluate("window.streamgate.auth.token") == "tok-1"
            await page.evaluate(FRESH_TOKENS)
            srv.valid.discard("tok-1")  # expired while the page was loading: every stream 401
            srv.gate.set()
            await page.wait_for_function(
                """() => Object.values(window.streamgate.transports).every(
                    c => c.state === "ended")""",
                timeout=MS,
                polling=100,
            )
            state = await page.evaluate(STATE)
            for name in TRANSPORTS:
                c = state[name]
                assert c["ids"] == [f"{i}-0" for i in range(1, 7)], (name, c)
                assert c["dups"] == 0 and c["gaps"] == 0 and c["bad"] == 0, (name, c)
            # The publish box sends the token too.
            await page.fill("#payload", '{"hello": "with a token"}')
            await page.click("#publish-btn")
            await page.wait_for_function(
                "() => window.streamgate.published.length === 1", timeout=MS
            )
            calls = await page.evaluate("window.streamgate.auth.calls")
        finally:
            await context.close()
    streams = [s for s in srv.seen if s.transport in TRANSPORTS]
    for name in TRANSPORTS:
        mine = [s for s in streams if s.transport == name]
        # the 401, then three connections (two expiries), each with a fresh token
        assert [(s.token, s.status) for s in mine[:1]] == [("tok-1", 401)], (name, mine)
        assert [s.status for s in mine[1:]] == [200, 200, 200], (name, mine)
        tokens = [s.token for s in mine]
        assert all(a != b for a, b in itertools.pairwise(tokens)), (name, tokens)
        assert [s.since for s in mine[1:]] == ["0-0", "2-0", "4-0"], (name, mine)
        # fetch sends a header; WebSocket and EventSource cannot
        assert {s.via for s in mine} == {"header" if name == "chunked" else "query"}, name
    others = [s for s in srv.seen if s.transport not in TRANSPORTS]
    assert {s.transport for s in others} >= {"topics", "publish"}
    assert all(s.via == "header" and s.status == 200 for s in others), others
    # 1 at start, 1 for the 401s, 1 or more per round of expiries (the columns share a call
    # when they expire together)
    assert 1 + 1 + 2 <= calls <= 1 + 1 + 2 * 3, calls
    assert errors == []
