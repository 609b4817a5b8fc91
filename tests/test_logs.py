"""Logs an operator can use: JSON lines, the access log, the start-up line."""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from gateway.app import local_url
from gateway.logs import JsonFormatter, target
from tests.helpers import JSON_HEADERS, TIMEOUT, poll_until, spawn_gateway, start_gateway, wait_for
from tests.wire import read_until


def json_lines(stderr: bytes) -> list[dict[str, Any]]:
    """Every line of the gateway's stderr, each one JSON object (or the test fails)."""
    lines = [line for line in stderr.decode().splitlines() if line.strip()]
    assert lines
    return [orjson.loads(line) for line in lines]


async def test_access_log_in_json_one_line_per_request_and_per_stream() -> None:
    async with (
        spawn_gateway("--access-log", "--log-format", "json", "--topic", "news") as gw,
        aiohttp.ClientSession() as session,
    ):
        async with session.post(
            f"{gw.url}/topics/news?token=s3cret", data=b'{"n":0}', headers=JSON_HEADERS
        ) as r:
            assert r.status == 201
        async with session.post(f"{gw.url}/topics/news", data=b"{}") as r:
            assert r.status == 415  # no Content-Type: an error line
        # A stream the server ends: chunked, at the client's limit.
        limited = asyncio.create_task(read_until(gw.url, "chunked", "news", query="limit=2"))
        # A stream the client leaves: SSE, after a while; and a WebSocket it closes.
        async with session.get(f"{gw.url}/sse/news") as sse:
            assert sse.status == 200
            async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:
                await poll_until(lambda: _subscribers(session, gw.url, 3), what="3 streams")
                for n in (1, 2):
                    async with session.post(
                        f"{gw.url}/topics/news", data=orjson.dumps({"n": n}), headers=JSON_HEADERS
                    ) as r:
                        assert r.status == 201
                assert [i.obj["data"]["n"] for i in (await limited).messages] == [1, 2]
                frames = [await ws.recv(decode=False) for _ in range(2)]
                assert b'"n":2' in frames[-1]
                await asyncio.sleep(0.3)
            await asyncio.sleep(0.3)
        await poll_until(lambda: _subscribers(session, gw.url, 0), what="no stream")

    lines = json_lines(gw.stderr)
    for line in lines:
        assert {"ts", "level", "logger", "message"} <= line.keys()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", line["ts"])
    start = lines[0]
    assert start["url"] == f"http://127.0.0.1:{gw.port}/"
    assert f"open http://127.0.0.1:{gw.port}/ in a browser" in start["message"]

    access = [line for line in lines if line["logger"] == "gateway.access"]
    requests = [a for a in access if a["kind"] == "request"]
    streams = {a["transport"]: a for a in access if a["kind"] == "stream"}
    assert len(streams) == 3 == len(access) - len(requests)  # each stream once, at its end

    published = [r for r in requests if r["method"] == "POST"]
    assert [(r["path"], r["status"]) for r in published] == [
        ("/topics/news?token=REDACTED", 201),  # the credential never reaches the log
        ("/topics/news", 415),
        ("/topics/news", 201),
        ("/topics/news", 201),
    ]
    assert published[1]["error"] == "unsupported_media_type"
    for r in published:
        assert r["remote"] == "127.0.0.1" and r["bytes"] > 0 and r["duration_s"] >= 0
    assert any(r["path"] == "/healthz" and r["status"] == 200 for r in requests)
    assert not any(r["path"].startswith(("/sse/", "/ws/", "/chunked/")) for r in requests)

    chunked, sse, ws = streams["chunked"], streams["sse"], streams["ws"]
    assert (chunked["reason"], chunked["status"], chunked["topic"]) == ("limit", 200, "news")
    assert chunked["path"] == "/chunked/news?limit=2"
    assert (sse["reason"], sse["status"]) == ("client_gone", 200)
    assert (ws["reason"], ws["status"]) == ("client_gone", 101)
    # The bytes each wrote: two messages (and the chunked stream's end) at least.
    for s in (chunked, sse, ws):
        assert s["bytes"] > 2 * len('{"id":"","topic":"news","data":{"n":1}}'), s
        assert s["last_id"] and s["remote"] == "127.0.0.1"
    assert sse["duration_s"] >= 0.5 and ws["duration_s"] >= 0.3
    assert chunked["duration_s"] < sse["duration_s"]


async def _subscribers(session: aiohttp.ClientSession, url: str, n: int) -> bool:
    async with session.get(f"{url}/topics") as r:
        topics = (await r.json())["topics"]
    return sum(sum(t["subscribers"].values()) for t in topics) == n


async def test_text_start_up_line_names_a_url_that_opens_the_page() -> None:
    # Bound to every interface (the default): the line names the loopback address.
    async with (
        spawn_gateway("--host", "0.0.0.0", "--access-log") as gw,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(f"{gw.url}/healthz") as r:
            assert r.status == 200
    text = gw.stderr.decode()
    url = f"http://127.0.0.1:{gw.port}/"
    assert f"streamgate listening on 0.0.0.0:{gw.port}" in text
    assert f"open {url} in a browser for the page; metrics at {url}metrics" in text
    assert re.search(r'gateway.access: 127\.0\.0\.1 "GET /healthz" 200 \d+B \d+\.\d{3}s', text)
    async with (
        spawn_gateway() as gw2,
        aiohttp.ClientSession() as session,
    ):
        async with session.get(local_url("0.0.0.0", gw2.port)) as r:  # the page itself
            assert r.status == 200
            assert r.content_type == "text/html"
    assert "gateway.access" not in gw2.stderr.decode()  # off by default


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:8080/"),
        ("", "http://127.0.0.1:8080/"),
        ("::", "http://[::1]:8080/"),
        ("::1", "http://[::1]:8080/"),
        ("127.0.0.1", "http://127.0.0.1:8080/"),
        ("192.0.2.7", "http://192.0.2.7:8080/"),
        ("localhost", "http://localhost:8080/"),
    ],
)
def test_local_url(host: str, url: str) -> None:
    assert local_url(host, 8080) == url


async def test_access_log_in_process_server_ended_streams_and_off_by_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with start_gateway(topics=("news",)) as gw:
        assert gw.context.access_log is None
        await read_until(gw.url, "sse", "count", query="n=2")
    assert not [r for r in caplog.records if r.name == "gateway.access"]

    async with start_gateway(topics=("news",), access_log=True) as gw:
        access = gw.context.access_log
        assert access is not None
        reader = await read_until(gw.url, "ws", "count", query="n=3&token=x")
        assert reader.close_code == 1000
        task = asyncio.create_task(read_until(gw.url, "sse", "news", count=10**6))
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")["sse"] == 1)
        assert len(access) == 1  # one open stream entered
        await gw.publish("news", {"x": 1})
        assert gw.context.hub.end_topic("news") == 1  # the server ends it: topic_deleted
        async with asyncio.timeout(TIMEOUT):
            sse = await task
        assert sse.controls[-1]["reason"] == "topic_deleted"
        await wait_for(lambda: len(access) == 0)
    fields = [getattr(r, "fields") for r in caplog.records if r.name == "gateway.access"]  # noqa: B009
    streams = [f for f in fields if f["kind"] == "stream"]
    assert [(f["transport"], f["topic"], f["reason"], f["status"]) for f in streams] == [
        ("ws", "count", "complete", 101),
        ("sse", "news", "topic_deleted", 200),
    ]
    assert streams[0]["path"] == "/ws/count?n=3&token=REDACTED"
    assert streams[0]["last_id"] == "0-3"
    assert all(f["bytes"] > 0 for f in streams)


def test_json_formatter_one_object_per_line_with_a_traceback() -> None:
    try:
        raise ValueError("boom\nline two")
    except ValueError:
        record = logging.LogRecord(
            "gateway.x", logging.ERROR, __file__, 1, "failed: %s", ("it",), exc_info=True
        )
        import sys

        record.exc_info = sys.exc_info()
    line = JsonFormatter().format(record)
    assert "\n" not in line
    doc = orjson.loads(line)
    assert (doc["level"], doc["logger"], doc["message"]) == ("error", "gateway.x", "failed: it")
    assert "ValueError: boom" in doc["exc"]


def test_target_redacts_the_token_and_cuts_long_urls() -> None:
    from aiohttp.test_utils import make_mocked_request

    def t(path: str) -> str:
        return target(make_mocked_request("GET", path))

    assert t("/sse/a?token=abc&since=1-0") == "/sse/a?token=REDACTED&since=1-0"
    assert t("/sse/a?since=1-0&token=abc") == "/sse/a?since=1-0&token=REDACTED"
    assert t("/sse/a?mytoken=abc") == "/sse/a?mytoken=abc"
    assert t("/sse/a") == "/sse/a"
    assert len(t("/sse/a?x=" + "y" * 5000)) == 513
