"""HTTP edges: HEAD, HTTP/1.0, WebSocket handshakes that are not, and the errors
aiohttp answers itself, all in the gateway's JSON; over raw loopback sockets."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
import websockets

from tests import sample_sources
from tests.helpers import TIMEOUT, GatewayUnderTest, start_gateway


@pytest.fixture
async def gw() -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(
        topics=("news",), streams=("endless=tests.sample_sources:endless",)
    ) as gw:
        yield gw


async def exchange(port: int, request: bytes, *, until_eof: bool = True) -> bytes:
    """Send raw bytes; read until the server closes (or ``TIMEOUT`` passes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        chunks = []
        async with asyncio.timeout(TIMEOUT):
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                if not until_eof:
                    break
        return b"".join(chunks)
    finally:
        writer.close()


def split_response(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
    return status, headers, body


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/chunked/news", "application/x-ndjson"),
        ("/chunked/news?format=json", "application/json"),
        ("/sse/news", "text/event-stream"),
        ("/chunked/endless", "application/x-ndjson"),
    ],
)
async def test_head_answers_headers_only_and_keeps_the_connection(
    gw: GatewayUnderTest, path: str, content_type: str
) -> None:
    progress = sample_sources.PROGRESS["endless"]
    # HEAD, then a GET on the same connection: the GET's answer must follow the
    # HEAD's headers directly (no body in between, the connection still usable).
    raw = await exchange(
        gw.port,
        f"HEAD {path} HTTP/1.1\r\nHost: x\r\n\r\n"
        "GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode(),
    )
    first, _, second = raw.partition(b"\r\n\r\n")
    assert first.startswith(b"HTTP/1.1 200"), raw
    assert content_type in first.decode()
    assert second.startswith(b"HTTP/1.1 200 OK"), raw
    _, _, body = split_response(second)
    assert orjson.loads(body)["connections"] == 0  # HEAD subscribed to nothing
    assert gw.context.hub.subscriber_counts("news") == {"chunked": 0, "sse": 0, "ws": 0}
    assert sample_sources.PROGRESS["endless"] == progress  # the generator never ran


async def test_head_of_a_bad_topic_is_400_without_a_body(gw: GatewayUnderTest) -> None:
    request = b"HEAD /sse/bad%20name HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    raw = await exchange(gw.port, request)
    status, headers, body = split_response(raw)
    assert status.startswith("HTTP/1.1 400")
    assert headers["content-type"].startswith("application/json")
    assert body == b""


async def test_head_creates_no_topic(gw: GatewayUnderTest) -> None:
    request = b"HEAD /chunked/fresh HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    assert (await exchange(gw.port, request)).startswith(b"HTTP/1.1 200")
    async with gw.session.get(f"{gw.url}/topics/fresh/messages") as resp:
        assert resp.status == 404


@pytest.mark.parametrize("transport", ["chunked", "sse"])
async def test_http10_streams_close_the_connection_at_their_end(
    gw: GatewayUnderTest, transport: str
) -> None:
    ids = await gw.publish_many("news", [1, 2, 3])
    for path in (f"/{transport}/news?since=0-0&limit=2", f"/{transport}/count?n=3"):
        raw = await exchange(
            gw.port, f"GET {path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n".encode()
        )
        status, headers, body = split_response(raw)  # read to EOF: the server closed
        assert status.startswith("HTTP/1.0 200") or status.startswith("HTTP/1.1 200"), raw
        assert "chunked" not in headers.get("transfer-encoding", "")
        assert b'"type":"end"' in body, body
        if "news" in path:
            assert ids[0].encode() in body and ids[1].encode() in body
            assert ids[2].encode() not in body
        else:
            assert body.count(b'"topic":"count"') == 3


async def test_websocket_needs_http11_and_a_handshake(gw: GatewayUnderTest) -> None:
    handshake = (
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    raw = await exchange(gw.port, f"GET /ws/news HTTP/1.0\r\nHost: x\r\n{handshake}".encode())
    status, headers, body = split_response(raw)
    assert " 400 " in status, raw
    assert headers["content-type"].startswith("application/json")
    assert "HTTP/1.1" in orjson.loads(body)["message"]

    async with gw.session.get(f"{gw.url}/ws/news") as resp:  # a plain GET
        assert resp.status == 400
        assert (await resp.json())["error"] == "not_websocket"
    # and a real client still gets in
    async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:
        await ws.send('{"type":"ping"}')
        assert orjson.loads(await ws.recv())["type"] == "pong"


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03 not http at all\r\n\r\n",
        b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n",
        b"POST /topics/news HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
    ],
)
async def test_malformed_requests_get_json_400(gw: GatewayUnderTest, request_bytes: bytes) -> None:
    raw = await exchange(gw.port, request_bytes)
    status, headers, body = split_response(raw)
    assert status.split()[1].startswith("4"), raw
    assert headers["content-type"].startswith("application/json"), raw
    err = orjson.loads(body)
    assert err["error"] == "bad_request" and err["message"]


async def test_malformed_request_logs_are_rate_limited(
    gw: GatewayUnderTest, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    for _ in range(100):
        raw = await exchange(gw.port, b"GET / HTTP/1.1\r\nHost: x\r\nbroken\r\n\r\n")
        assert b" 400 " in raw
    async with gw.session.get(f"{gw.url}/healthz") as resp:
        assert (await resp.json())["malformed_requests"] == 100
    lines = [r for r in caplog.records if r.name.startswith(("gateway", "aiohttp"))]
    assert 1 <= len(lines) <= 2, [r.getMessage() for r in lines]
    assert not any(r.exc_info for r in lines)
