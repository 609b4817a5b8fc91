"""What a web page on another origin can make a browser do to the gateway, over
real loopback sockets: publishing needs a JSON Content-Type, so no form and no
``no-cors`` fetch can publish.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.helpers import TIMEOUT, GatewayUnderTest, start_gateway

# -- publishing: JSON only ---------------------------------------------------------------------

REFUSED_TYPES = [
    "text/plain",
    "text/plain;charset=UTF-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/octet-stream",
    "application/json, text/plain",  # not one media type
    "application/jsonx",
    None,  # no Content-Type at all
]


async def _history(gw: GatewayUnderTest, topic: str) -> list[Any]:
    async with gw.session.get(f"{gw.url}/topics/{topic}/messages") as resp:
        assert resp.status == 200
        return [m["data"] for m in (await resp.json())["messages"]]


async def _post(
    gw: GatewayUnderTest, path: str, body: bytes, content_type: str | None
) -> tuple[int, dict[str, Any]]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    async with gw.session.post(
        gw.url + path, data=body, headers=headers, skip_auto_headers=["Content-Type"]
    ) as resp:
        assert resp.headers["Content-Type"].startswith("application/json")
        return resp.status, await resp.json()


@pytest.mark.parametrize("content_type", REFUSED_TYPES)
@pytest.mark.parametrize(
    ("path", "body"), [("/topics/news", b'{"x":1}'), ("/topics/news/batch", b'[{"x":1}]')]
)
async def test_publish_without_a_json_content_type_is_415_and_publishes_nothing(
    gateway: GatewayUnderTest, path: str, body: bytes, content_type: str | None
) -> None:
    status, reply = await _post(gateway, path, body, content_type)
    assert (status, reply["error"]) == (415, "unsupported_media_type")
    assert "Content-Type: application/json" in reply["message"]
    if content_type is None:
        assert "no Content-Type" in reply["message"]
    else:
        assert repr(content_type) in reply["message"]
    if path.endswith("/batch"):
        assert "application/x-ndjson" in reply["message"]
    assert await _history(gateway, "news") == []


async def test_json_and_ndjson_content_types_are_accepted(gateway: GatewayUnderTest) -> None:
    for content_type in ("application/json", "application/json; charset=utf-8", "Application/JSON"):
        status, reply = await _post(gateway, "/topics/news", b'{"x":1}', content_type)
        assert status == 201, reply
    status, reply = await _post(gateway, "/topics/news/batch", b"[2, 3]", "application/json")
    assert status == 201, reply
    for content_type in ("application/x-ndjson", "application/x-ndjson; charset=utf-8"):
        status, reply = await _post(gateway, "/topics/news/batch", b"4\n5\n", content_type)
        assert status == 201, reply
    assert await _history(gateway, "news") == [{"x": 1}] * 3 + [2, 3, 4, 5, 4, 5]
    # One message is JSON; NDJSON lines are a batch.
    status, reply = await _post(gateway, "/topics/news", b"6\n", "application/x-ndjson")
    assert (status, reply["error"]) == (415, "unsupported_media_type")


async def test_a_refused_body_leaves_the_connection_usable(gateway: GatewayUnderTest) -> None:
    """The 415 comes before the body is read; the connection still serves the next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        body = b'{"x":1}'
        writer.write(
            b"POST /topics/news HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
        )
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        async with asyncio.timeout(TIMEOUT):
            first = await reader.readuntil(b"\r\n\r\n")
            assert first.startswith(b"HTTP/1.1 415 "), first
            length = int(first.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            await reader.readexactly(length)
            second = await reader.readuntil(b"\r\n\r\n")
            assert second.startswith(b"HTTP/1.1 200 "), second
    finally:
        writer.close()
    assert await _history(gateway, "news") == []


# -- Server: no version ------------------------------------------------------------------------


async def _raw(port: int, request: bytes) -> bytes:
    """Send raw bytes; the response head (and what came with it)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(TIMEOUT):
            return await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()


def _server_header(head: bytes) -> list[str]:
    lines = head.decode("latin-1").split("\r\n")[1:]
    return [
        v.strip() for k, _, v in (line.partition(":") for line in lines) if k.lower() == "server"
    ]


@pytest.mark.parametrize(
    ("request_bytes", "status"),
    [
        (b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /sse/news HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"HEAD /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /topics HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /static/app.js HTTP/1.1\r\nHost: x\r\n\r\n", 200),
        (b"GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /static/nope.js HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"GET /chunked/nope HTTP/1.1\r\nHost: x\r\n\r\n", 404),
        (b"PUT /topics/news HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 405),
        (b"POST /topics/news HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n", 415),
        (b"GET /ws/news HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # no handshake
        (b"GET / HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n", 400),  # malformed
        (b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # too long
        (
            b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            101,
        ),
    ],
)
async def test_every_answer_says_server_streamgate_without_a_version(
    gateway: GatewayUnderTest, request_bytes: bytes, status: int
) -> None:
    head = await _raw(gateway.port, request_bytes)
    assert head.split(b" ")[1] == str(status).encode(), head
    assert _server_header(head) == ["streamgate"], head


async def test_the_refusal_past_max_connections_names_no_version_either() -> None:
    async with start_gateway(max_connections=1, topics=("news",)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            head = await _raw(gw.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        finally:
            writer.close()
    assert head.startswith(b"HTTP/1.1 503 "), head
    assert _server_header(head) == ["streamgate"], head
