"""Tokens in the clients of clients/, against a real server speaking the auth contract.

The server (tests/token_server.py) runs on loopback in the test's event loop: it
checks the bearer token of every stream request, answers 401/403 JSON, and ends
a stream with a ``goodbye`` ``token_expired`` (WebSocket: then close 4003) after
a few messages, revoking that token. Each client must send its token on every
(re)connection, call a token callable each time, come back at once after an
expiry and lose nothing, retry a 401 once with a fresh token from a callable,
and stop with a one-line error otherwise.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest

from clients.chunked import ChunkedClient
from clients.compare import TRANSPORTS, compare
from clients.sse import Event, EventSource, SSEClient
from clients.sync import SyncClient
from clients.ws import WSClient
from tests.helpers import TIMEOUT
from tests.test_clients import collect, iterate, script
from tests.token_server import TokenServer, token_server

KINDS = ["chunked", "json", "sse", "ws", "sync"]
MODULES = {
    "chunked": ("clients.chunked", []),
    "json": ("clients.chunked", ["--format", "json"]),
    "sse": ("clients.sse", []),
    "ws": ("clients.ws", []),
    "sync": ("clients.sync", []),
}
TRANSPORT = {"chunked": "chunked", "json": "chunked", "sse": "sse", "ws": "ws", "sync": "chunked"}


def ids(n: int) -> list[str]:
    return [f"{i}-0" for i in range(1, n + 1)]


def stream_url(kind: str, srv: TokenServer, topic: str = "news") -> str:
    base = srv.ws_url if kind == "ws" else srv.url
    return f"{base}/{TRANSPORT[kind]}/{topic}"


def make_client(kind: str, srv: TokenServer, topic: str = "news", **kw: Any) -> Any:
    url = stream_url(kind, srv, topic)
    if kind == "chunked":
        return ChunkedClient(url, **kw)
    if kind == "json":
        return ChunkedClient(url, format="json", **kw)
    if kind == "sse":
        return SSEClient(url, **kw)
    if kind == "ws":
        return WSClient(url, **kw)
    if kind == "sync":
        return SyncClient(url, **kw)
    raise AssertionError(kind)


class Tokens:
    """A token callable that hands the next of *values* on each call, and counts the calls."""

    def __init__(self, values: Iterable[str], *, asynchronous: bool = False) -> None:
        self._values = iter(values)
        self.handed: list[str] = []
        self.asynchronous = asynchronous

    @property
    def calls(self) -> int:
        return len(self.handed)

    def _next(self) -> str:
        value = next(self._values)
        self.handed.append(value)
        return value

    def callable(self) -> Callable[[], str] | Callable[[], Awaitable[str]]:
        if not self.asynchronous:
            return self._next

        async def fresh() -> str:
            await asyncio.sleep(0)  # as a call to the app's backend would
            return self._next()

        return fresh


def numbered(prefix: str = "tok") -> Iterable[str]:
    return (f"{prefix}-{i}" for i in itertools.count(1))


async def read_until_error(client: Any) -> tuple[list[Any], BaseException]:
    """The messages a client yields before it fails; the failure."""
    got: list[Any] = []
    with pytest.raises(Exception) as info:
        async with asyncio.timeout(TIMEOUT):
            async for msg in iterate(client):
                got.append(msg)
    assert type(info.value).__name__ == "StreamError", repr(info.value)
    return got, info.value


def assert_one_line(exc: BaseException, *needles: str) -> None:
    text = str(exc)
    assert "\n" not in text and "\r" not in text, text
    for needle in needles:
        assert needle in text, text


# -- token on every (re)connection ------------------------------------------------------


# clients.sync takes a plain callable; the asyncio clients a plain or an async one.
CALLABLES = [(k, False) for k in KINDS] + [(k, True) for k in KINDS if k != "sync"]


@pytest.mark.parametrize(
    ("kind", "asynchronous"),
    CALLABLES,
    ids=[f"{k}-{'async' if a else 'plain'}" for k, a in CALLABLES],
)
async def test_callable_gives_a_fresh_token_for_every_connection(
    kind: str, asynchronous: bool
) -> None:
    """Three connections (two expiries): three calls, three tokens, ids 1..6 exactly once."""
    tokens = Tokens(numbered(), asynchronous=asynchronous)
    async with token_server(total=6, per_token=2, valid={f"tok-{i}" for i in range(1, 10)}) as srv:
        controls: list[dict[str, Any]] = []
        client = make_client(kind, srv, token=tokens.callable(), on_control=controls.append)
        started = time.monotonic()
        msgs, ended = await collect(client)
        took = time.monotonic() - started
    assert ended
    assert [m.id for m in msgs] == ids(6)  # nothing missed, nothing twice
    assert tokens.calls == 3
    assert srv.tokens() == ["tok-1", "tok-2", "tok-3"]
    assert [s.via for s in srv.seen] == ["header"] * 3
    assert [s.status for s in srv.seen] == [200] * 3
    assert [s.since for s in srv.seen] == [None, "2-0", "4-0"]  # resumed where it was
    assert client.stats.reconnects == 2
    goodbyes = [c for c in controls if c["type"] == "goodbye"]
    assert [g["reason"] for g in goodbyes] == ["token_expired"] * 2
    # At once: no backoff, and not the 5 s retry the SSE stream sets.
    assert took < 3.0, took


@pytest.mark.parametrize("kind", KINDS)
async def test_string_token_is_sent_on_every_reconnection(kind: str) -> None:
    async with token_server(total=5, per_token=2, valid={"s3cret"}, revoke_on_expiry=False) as srv:
        msgs, ended = await collect(make_client(kind, srv, token="s3cret"))
    assert ended
    assert [m.id for m in msgs] == ids(5)
    assert srv.tokens() == ["s3cret"] * 3


async def test_ws_close_4003_alone_means_reconnect_at_once() -> None:
    """No goodbye frame, only the close code: still a token expiry, still at once."""
    tokens = Tokens(numbered())
    async with token_server(
        total=4, per_token=1, valid={f"tok-{i}" for i in range(1, 9)}, ws_goodbye_frame=False
    ) as srv:
        client = make_client("ws", srv, token=tokens.callable())
        started = time.monotonic()
        msgs, ended = await collect(client)
        took = time.monotonic() - started
    assert ended and [m.id for m in msgs] == ids(4)
    assert tokens.calls == 4 and srv.tokens() == tokens.handed
    assert took < 3.0, took


# -- 401 and 403 ------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
async def test_401_with_a_string_token_stops_with_one_line(kind: str) -> None:
    async with token_server(valid={"good"}) as srv:
        got, exc = await read_until_error(make_client(kind, srv, token="bad"))
        assert got == []
        assert_one_line(exc, "401", "unauthorized")
        assert getattr(exc, "status", None) == 401
        assert len(srv.seen) == 1  # no retry: the same string would fail the same way
        got, exc = await read_until_error(make_client(kind, srv))  # no token at all
        assert_one_line(exc, "401")
        assert srv.seen[-1].token is None and len(srv.seen) == 2


@pytest.mark.parametrize("kind", KINDS)
async def test_401_with_a_callable_retries_once_with_a_fresh_token(kind: str) -> None:
    tokens = Tokens(["stale", "good", "never"])
    async with token_server(total=3, valid={"good"}) as srv:
        msgs, ended = await collect(make_client(kind, srv, token=tokens.callable()))
    assert ended and [m.id for m in msgs] == ids(3)
    assert tokens.handed == ["stale", "good"]
    assert [(s.token, s.status) for s in srv.seen] == [("stale", 401), ("good", 200)]


@pytest.mark.parametrize("kind", KINDS)
async def test_401_twice_with_a_callable_stops(kind: str) -> None:
    tokens = Tokens(numbered("bad"))
    async with token_server(valid={"good"}) as srv:
        got, exc = await read_until_error(make_client(kind, srv, token=tokens.callable()))
    assert got == []
    assert_one_line(exc, "401")
    assert tokens.calls == 2
    assert [(s.token, s.status) for s in srv.seen] == [("bad-1", 401), ("bad-2", 401)]


@pytest.mark.parametrize("kind", KINDS)
async def test_expired_string_token_stops_after_what_it_got(kind: str) -> None:
    """The server refuses the expired token: a string cannot be refreshed, so it stops."""
    async with token_server(total=6, per_token=2, valid={"once"}) as srv:
        got, exc = await read_until_error(make_client(kind, srv, token="once"))
    assert [m.id for m in got] == ids(2)
    assert_one_line(exc, "401")
    assert [(s.token, s.status, s.since) for s in srv.seen] == [
        ("once", 200, None),
        ("once", 401, "2-0"),
    ]


@pytest.mark.parametrize("kind", KINDS)
async def test_403_stops_without_retrying(kind: str) -> None:
    tokens = Tokens(numbered())
    async with token_server(valid={"tok-1", "tok-2"}) as srv:
        client = make_client(kind, srv, "secret", token=tokens.callable())
        got, exc = await read_until_error(client)
    assert got == []
    assert_one_line(exc, "403", "forbidden")
    assert getattr(exc, "status", None) == 403
    assert tokens.calls == 1 and len(srv.seen) == 1


# -- the scripts --------------------------------------------------------------------------


async def run_script(kind: str, srv: TokenServer, *args: str, topic: str = "news") -> Any:
    module, extra = MODULES[kind]
    async with script(module, stream_url(kind, srv, topic), *args, *extra) as s:
        status, err = await s.finish()
    return status, s.lines, err


@pytest.mark.parametrize("kind", KINDS)
async def test_script_token_from_flag_or_environment(
    kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with token_server(total=3, valid={"from-env", "from-flag"}) as srv:
        monkeypatch.setenv("STREAMGATE_TOKEN", "from-env")
        status, lines, err = await run_script(kind, srv)
        assert status == 0, err
        assert [line.split()[1] for line in lines] == ids(3)
        assert srv.tokens() == ["from-env"]
        status, lines, err = await run_script(kind, srv, "--token", "from-flag")
        assert status == 0, err
        assert srv.tokens() == ["from-env", "from-flag"]  # the flag wins
        assert [s.via for s in srv.seen] == ["header", "header"]


def error_lines(err: str) -> list[str]:
    """stderr without the clients' notes (``# ...``)."""
    return [line for line in err.splitlines() if not line.startswith("# ")]


@pytest.mark.parametrize("kind", KINDS)
async def test_script_auth_errors(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMGATE_TOKEN", raising=False)
    async with token_server(total=6, per_token=2, valid={"t1", "t2"}) as srv:
        # no token
        status, lines, err = await run_script(kind, srv)
        assert status == 1 and lines == [], err
        [line] = error_lines(err)
        assert line.startswith("error: ") and "401" in line and "--token" in line, err
        # not allowed for the topic
        status, lines, err = await run_script(kind, srv, "--token", "t1", topic="secret")
        assert status == 1 and lines == [], err
        [line] = error_lines(err)
        assert line.startswith("error: ") and "403 forbidden" in line, err
        # expired on the way: a string token cannot be refreshed
        status, lines, err = await run_script(kind, srv, "--token", "t2")
        assert status == 1, err
        assert [line.split()[1] for line in lines] == ids(2)
        [line] = error_lines(err)
        assert line.startswith("error: ") and "401" in line and "--token" not in line, err
        assert "goodbye: reason=token_expired" in err


async def test_event_source_sends_a_fresh_token_on_each_reconnection() -> None:
    """The raw EventSource: token callable before every connection, after the retry delay."""
    tokens = Tokens(numbered())
    async with token_server(
        total=4, per_token=2, valid={"tok-1", "tok-2", "tok-3"}, sse_retry_ms=10
    ) as srv:
        source = EventSource(f"{srv.url}/sse/news", token=tokens.callable())
        events: list[Event] = []
        async with asyncio.timeout(TIMEOUT):
            async for event in source.events():
                events.append(event)
                if event.type == "end":
                    source.close()
    assert [e.last_event_id for e in events if e.type == "message"] == ids(4)
    assert [e.type for e in events if e.type != "message"] == ["goodbye", "end"]
    assert tokens.handed == ["tok-1", "tok-2"] and srv.tokens() == tokens.handed
    assert [s.since for s in srv.seen] == [None, "2-0"]
    assert source.reconnection_time == 10


# -- compare ------------------------------------------------------------------------------


async def test_compare_hands_the_token_to_every_client() -> None:
    """An async callable: every client calls it before each connection (the sync client's
    thread through the loop), and GET /topics carries it too."""
    tokens = Tokens(numbered(), asynchronous=True)
    async with token_server(total=6, per_token=2, valid={f"tok-{i}" for i in range(1, 40)}) as srv:
        report = await compare(
            srv.url,
            "news",
            TIMEOUT / 2,
            transports=TRANSPORTS,
            since="0-0",
            drain_timeout=TIMEOUT,
            token=tokens.callable(),
        )
    for r in report.results:
        assert r.error is None, (r.name, r.error)
        assert r.ids == ids(6), r.name
        assert r.reconnects == 2, r.name
        assert r.ended, r.name
    assert report.same_ids
    assert [s.status for s in srv.seen] == [200] * len(srv.seen)
    assert srv.seen[0].transport == "topics" and srv.seen[0].token == "tok-1"
    # 5 clients x 3 connections, each with a token of its own
    seen = sorted(str(t) for t in srv.tokens())
    assert len(seen) == 15 and seen == sorted(tokens.handed[1:])
    assert tokens.calls == 16


async def run_compare(*args: str) -> tuple[int, str, str]:
    async with script("clients.compare", *args) as s:
        status, err = await s.finish()
    return status, "\n".join(s.lines), err


async def test_compare_script_token_from_environment_or_flag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with token_server(
        total=4, per_token=2, valid={"from-env", "from-flag"}, revoke_on_expiry=False
    ) as srv:
        monkeypatch.setenv("STREAMGATE_TOKEN", "from-env")
        args = [srv.url, "--topic", "news", "--seconds", str(TIMEOUT / 2), "--since", "0-0"]
        status, out, err = await run_compare(*args, "--json", "--quiet", "--transports", "ws,sync")
        assert status == 0, err
        figures = json.loads(out)
        assert {t: f["messages"] for t, f in figures["transports"].items()} == {"ws": 4, "sync": 4}
        assert set(srv.tokens()) == {"from-env"} and len(srv.tokens()) == 4
        assert srv.seen[0].transport == "topics" and srv.seen[0].token == "from-env"
        del srv.seen[:]
        status, out, err = await run_compare(
            *args, "--quiet", "--transports", "sse", "--token", "from-flag"
        )
        assert status == 0, err
        assert {s.token for s in srv.seen} == {"from-flag"}
        # no token at all: GET /topics says why, on one line
        monkeypatch.delenv("STREAMGATE_TOKEN")
        status, out, err = await run_compare(*args, "--quiet")
        assert status == 1
        assert (
            err.strip()
            == "error: GET /topics: HTTP 401 unauthorized: missing, invalid or expired token"
        )
