"""The transports against clients we did not write: curl, httpx-sse, aiohttp's WS client.

The README's curl tour is run here as written (with limits so it ends).
"""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import httpx
import orjson
import pytest
from httpx_sse import aconnect_sse

from tests.helpers import TIMEOUT, GatewayUnderTest, wait_for

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


async def curl(*args: str) -> tuple[int, bytes]:
    proc = await asyncio.create_subprocess_exec(
        "curl",
        "-sS",
        "--max-time",
        str(int(TIMEOUT)),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
    return proc.returncode, out


async def test_curl_publish_and_read_ndjson(gateway: GatewayUnderTest) -> None:
    _, out = await curl(
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"hello": "world"}',
        f"{gateway.url}/topics/news",
    )
    published = orjson.loads(out)
    _, out = await curl("-N", f"{gateway.url}/chunked/news?since=0-0&limit=1")
    lines = out.decode().splitlines()
    message = orjson.loads(lines[0])
    assert message["id"] == published["id"]
    assert message["data"] == {"hello": "world"}
    assert orjson.loads(lines[1]) == {"type": "end", "reason": "limit", "last_id": published["id"]}


async def test_curl_json_array_is_a_document(gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_many("news", range(4))
    _, out = await curl("-N", f"{gateway.url}/chunked/news?format=json&limit=3&since=0-0")
    assert [m["id"] for m in orjson.loads(out)] == ids[:3]


async def test_curl_raw_sees_http_chunks(gateway: GatewayUnderTest) -> None:
    """curl --raw shows the transfer coding: size lines, data, the zero chunk."""
    await gateway.publish_many("news", range(2))
    _, out = await curl("-N", "--raw", f"{gateway.url}/chunked/news?since=0-0&limit=2")
    body, rest = b"", out
    while True:
        size_line, _, rest = rest.partition(b"\r\n")
        size = int(size_line, 16)
        if size == 0:
            break
        body += rest[:size]
        assert rest[size : size + 2] == b"\r\n"
        rest = rest[size + 2 :]
    assert body.count(b"\n") == 3  # two messages and the end event


async def test_curl_count_stream_from_the_tour(gateway: GatewayUnderTest) -> None:
    _, out = await curl("-N", f"{gateway.url}/chunked/count?n=5&interval=0.01")
    lines = [orjson.loads(ln) for ln in out.splitlines()]
    assert [m["data"]["n"] for m in lines[:5]] == [1, 2, 3, 4, 5]
    assert lines[5]["type"] == "end"


async def test_curl_sse(gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_many("news", ["a", "b"])
    _, out = await curl("-N", f"{gateway.url}/sse/news?since=0-0&limit=2")
    text = out.decode()
    assert text.startswith(f"retry: 1000\nid: {ids[0]}\n")
    assert [ln[4:] for ln in text.splitlines() if ln.startswith("id: ")] == ids
    assert "event: end\n" in text


async def test_httpx_sse_reads_events_and_resumes_with_last_event_id(
    gateway: GatewayUnderTest,
) -> None:
    ids = await gateway.publish_many("news", [{"i": i} for i in range(5)])
    async with httpx.AsyncClient(timeout=TIMEOUT) as client:
        async with aconnect_sse(client, "GET", f"{gateway.url}/sse/news?since=0-0&limit=2") as es:
            events = [ev async for ev in es.aiter_sse()]
        messages = [ev for ev in events if ev.event == "message"]
        assert [ev.id for ev in messages] == ids[:2]
        assert [orjson.loads(ev.data)["data"] for ev in messages] == [{"i": 0}, {"i": 1}]
        assert events[-1].event == "end"
        assert events[0].retry == 1000
        async with aconnect_sse(
            client,
            "GET",
            f"{gateway.url}/sse/news?limit=3",
            headers={"Last-Event-ID": messages[-1].id},
        ) as es:
            resumed = [ev.id async for ev in es.aiter_sse() if ev.event == "message"]
        assert resumed == ids[2:]


async def test_aiohttp_ws_client_receives_and_publishes(gateway: GatewayUnderTest) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.ws_connect(f"{gateway.ws_url}/ws/news") as ws:
            await wait_for(lambda: gateway.context.hub.subscriber_counts("news")["ws"] == 1)
            await ws.send_str('{"type":"publish","data":[1,2,3]}')
            frames = [orjson.loads((await ws.receive(timeout=TIMEOUT)).data) for _ in range(2)]
    ack, message = sorted(frames, key=lambda f: "type" not in f)
    assert ack["type"] == "published"
    assert message["id"] == ack["id"] and message["data"] == [1, 2, 3]
