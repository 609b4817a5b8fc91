"""Bad input: each gets a clear error, and every other stream carries on."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
import websockets

from tests.helpers import JSON_HEADERS, TIMEOUT, GatewayUnderTest, start_gateway, wait_for
from tests.wire import read_until


@pytest.fixture
async def gw() -> AsyncIterator[GatewayUnderTest]:
    async with start_gateway(topics=("news",), max_message_bytes=1024) as gw:
        yield gw


async def get_json(
    session: aiohttp.ClientSession, method: str, url: str, **kw: object
) -> tuple[int, dict[str, object]]:
    async with session.request(method, url, **kw) as resp:  # type: ignore[arg-type]
        assert resp.headers["Content-Type"].startswith("application/json"), await resp.text()
        return resp.status, await resp.json()


async def test_unknown_topic_history_is_404_json(gw: GatewayUnderTest) -> None:
    status, body = await get_json(gw.session, "GET", gw.url + "/topics/nope/messages")
    assert (status, body["error"]) == (404, "unknown_topic")
    assert "nope" in str(body["message"])


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_a_stream_of_a_topic_not_yet_published_to_waits_for_its_first_message(
    gw: GatewayUnderTest, transport: str
) -> None:
    reader = asyncio.create_task(read_until(gw.url, transport, "fresh", count=1))
    await wait_for(lambda: gw.context.hub.subscriber_counts("fresh")[transport] == 1)
    first = await gw.publish("fresh", {"first": True})
    assert (await reader).ids == [first]


async def test_subscribing_counts_against_the_topic_limit() -> None:
    async with start_gateway(max_topics=1, topics=("news",)) as gw:
        status, body = await get_json(gw.session, "GET", gw.url + "/chunked/other")
        assert (status, body["error"]) == (409, "too_many_topics")


ILLEGAL = ["bad%20name", "a%0Ab", "a%0Db", "a%00b", "-lead", "x" * 129, "%C3%BC"]


@pytest.mark.parametrize("name", ILLEGAL)
@pytest.mark.parametrize(
    ("method", "prefix", "suffix"),
    [
        ("GET", "/chunked/", ""),
        ("GET", "/sse/", ""),
        ("POST", "/topics/", ""),
        ("GET", "/topics/", "/messages"),
    ],
)
async def test_illegal_topic_names_are_400(
    gw: GatewayUnderTest, name: str, method: str, prefix: str, suffix: str
) -> None:
    url = gw.url + prefix + name + suffix
    async with gw.session.request(method, aiohttp.client.URL(url, encoded=True), data=b"1") as resp:
        body = await resp.json()
        assert (resp.status, body["error"]) == (400, "bad_topic"), body
        assert "illegal topic name" in body["message"]


@pytest.mark.parametrize("name", ["a%0Ab", "a%0D%0Aevent:%20x", "a%00b"])
async def test_newline_in_topic_cannot_reach_ws_or_sse_framing(
    gw: GatewayUnderTest, name: str
) -> None:
    url = aiohttp.client.URL(f"{gw.url}/sse/{name}", encoded=True)
    async with gw.session.get(url) as resp:
        assert resp.status == 400
        assert (await resp.json())["error"] == "bad_topic"
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{gw.ws_url}/ws/{name}"):
            pass
    assert info.value.response.status_code == 400


@pytest.mark.parametrize("since", ["abc", "1", "1-", "-1-0", "1-2-3", "1-2%0A", "0-" + "9" * 21])
@pytest.mark.parametrize("transport", ["chunked", "sse"])
async def test_malformed_since_is_400_json(
    gw: GatewayUnderTest, transport: str, since: str
) -> None:
    url = aiohttp.client.URL(f"{gw.url}/{transport}/news?since={since}", encoded=True)
    status, body = await get_json(gw.session, "GET", url)
    assert (status, body["error"]) == (400, "bad_id")


async def test_malformed_last_event_id_is_400(gw: GatewayUnderTest) -> None:
    status, body = await get_json(
        gw.session, "GET", f"{gw.url}/sse/news", headers={"Last-Event-ID": "nonsense"}
    )
    assert (status, body["error"]) == (400, "bad_id")


async def test_malformed_since_on_ws_is_400_before_upgrade(gw: GatewayUnderTest) -> None:
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{gw.ws_url}/ws/news?since=1-x"):
            pass
    assert info.value.response.status_code == 400
    assert orjson.loads(info.value.response.body)["error"] == "bad_id"


@pytest.mark.parametrize(
    ("query", "code"),
    [("limit=0", "bad_limit"), ("limit=x", "bad_limit"), ("format=xml", "bad_format")],
)
async def test_bad_query_values(gw: GatewayUnderTest, query: str, code: str) -> None:
    status, body = await get_json(gw.session, "GET", f"{gw.url}/chunked/news?{query}")
    assert (status, body["error"]) == (400, code)


@pytest.mark.parametrize("body", [b"", b"{", b"not json", b"\xff\xfe", b"[1,]", b"NaN"])
async def test_publish_body_not_json_is_400(gw: GatewayUnderTest, body: bytes) -> None:
    status, reply = await get_json(
        gw.session, "POST", f"{gw.url}/topics/news", data=body, headers=JSON_HEADERS
    )
    assert (status, reply["error"]) == (400, "bad_json")


async def test_publish_too_large_is_413_with_and_without_length(gw: GatewayUnderTest) -> None:
    big = b'"' + b"x" * 2000 + b'"'
    status, reply = await get_json(
        gw.session, "POST", f"{gw.url}/topics/news", data=big, headers=JSON_HEADERS
    )
    assert (status, reply["error"]) == (413, "too_large")

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked upload
        for _ in range(10):
            yield b" " * 200
        yield b"1"

    status, reply = await get_json(
        gw.session, "POST", f"{gw.url}/topics/news", data=chunks(), headers=JSON_HEADERS
    )
    assert (status, reply["error"]) == (413, "too_large")
    async with gw.session.get(f"{gw.url}/topics/news/messages") as resp:
        assert (await resp.json())["messages"] == []  # nothing was published


async def test_ws_bad_frames_get_errors_and_the_connection_survives(gw: GatewayUnderTest) -> None:
    bystander = asyncio.create_task(read_until(gw.url, "sse", "news", count=3))
    await wait_for(lambda: gw.context.hub.subscriber_counts("news")["sse"] == 1)
    async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:

        async def reply() -> dict[str, object]:
            while True:
                obj = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
                if "type" in obj:
                    return obj  # type: ignore[no-any-return]

        await ws.send("not json")
        assert (await reply())["code"] == "bad_json"
        await ws.send(b"\x00binary")
        assert (await reply())["code"] == "binary_not_supported"
        await ws.send("[1, 2]")
        assert (await reply())["code"] == "bad_command"
        await ws.send('{"type": "launch"}')
        assert (await reply())["code"] == "bad_command"
        await ws.send('{"type": "publish"}')
        assert (await reply())["code"] == "bad_command"
        await ws.send(orjson.dumps({"type": "publish", "data": "x" * 1100, "ref": 7}).decode())
        assert await reply() == {
            "type": "error",
            "code": "too_large",
            "message": "data is over 1024 bytes",
            "ref": 7,
        }
        # Still open and working: a ping, then a publish everyone sees.
        await ws.send('{"type": "ping", "ref": "a"}')
        assert await reply() == {"type": "pong", "ref": "a"}
        ids = []
        for i in range(3):
            await ws.send(orjson.dumps({"type": "publish", "data": {"i": i}}).decode())
            ack = await reply()
            assert ack["type"] == "published"
            ids.append(ack["id"])
    assert (await bystander).ids == ids


async def test_ws_oversized_frame_closes_1009_and_others_carry_on(gw: GatewayUnderTest) -> None:
    bystander = asyncio.create_task(read_until(gw.url, "ws", "news", count=1))
    await wait_for(lambda: gw.context.hub.subscriber_counts("news")["ws"] == 1)
    async with websockets.connect(f"{gw.ws_url}/ws/news", max_size=None) as ws:
        await ws.send("x" * 10_000)
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert ws.close_code == 1009
    msg_id = await gw.publish("news", "still here")
    assert (await bystander).ids == [msg_id]


def _client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """One client frame (RFC 6455 section 5.2), masked with a fixed key unless told not to."""
    assert len(payload) < 126
    head = bytes([(0x80 if fin else 0) | opcode, (0x80 if mask else 0) | len(payload)])
    if not mask:
        return head + payload
    key = b"\x01\x02\x03\x04"
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def _raw_ws(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    assert head.startswith(b"HTTP/1.1 101")
    return reader, writer


async def _server_frame(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    first, length = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
    assert length < 126  # what these tests draw from the server
    return first & 0x0F, await asyncio.wait_for(reader.readexactly(length), TIMEOUT)


async def test_ws_fragments_are_put_together_around_a_ping(gw: GatewayUnderTest) -> None:
    reader, writer = await _raw_ws(gw.port)
    try:
        command = b'{"type":"ping","ref":"frag"}'
        writer.write(
            _client_frame(0x1, command[:10], fin=False)
            + _client_frame(0x9, b"between")  # a control frame may come between fragments
            + _client_frame(0x0, command[10:20], fin=False)
            + _client_frame(0x0, command[20:])
        )
        # Both answered; the pong may wait for the command that came in with it.
        frames = dict([await _server_frame(reader), await _server_frame(reader)])
        assert frames[0xA] == b"between"
        assert orjson.loads(frames[0x1]) == {"type": "pong", "ref": "frag"}
    finally:
        writer.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (_client_frame(0x1, b'{"type":"ping"}', mask=False), 1002),  # clients must mask
        (_client_frame(0x3, b"x"), 1002),  # a reserved opcode
        (_client_frame(0x0, b"x"), 1002),  # a continuation of nothing
        (_client_frame(0x1, b'{"type":"\xff"}'), 1007),  # not UTF-8
    ],
)
async def test_ws_frames_that_break_rfc_6455_are_closed_with_its_code(
    gw: GatewayUnderTest, frame: bytes, code: int
) -> None:
    bystander = asyncio.create_task(read_until(gw.url, "ws", "news", count=1))
    await wait_for(lambda: gw.context.hub.subscriber_counts("news")["ws"] == 1)
    reader, writer = await _raw_ws(gw.port)
    try:
        writer.write(frame)
        opcode, payload = await _server_frame(reader)
        assert (opcode, int.from_bytes(payload[:2], "big")) == (0x8, code)
        assert await asyncio.wait_for(reader.read(), TIMEOUT) == b""  # the server closed it
    finally:
        writer.close()
    await wait_for(lambda: gw.context.hub.subscriber_counts("news")["ws"] == 1)
    msg_id = await gw.publish("news", "still here")
    assert (await bystander).ids == [msg_id]


async def test_publish_to_a_stream_name_is_409(gw: GatewayUnderTest) -> None:
    status, body = await get_json(
        gw.session, "POST", f"{gw.url}/topics/count", data=b"1", headers=JSON_HEADERS
    )
    assert (status, body["error"]) == (409, "not_a_topic")


async def test_topic_limit_is_409() -> None:
    async with start_gateway(max_topics=2) as gw:
        for name in ("a", "b"):
            await gw.publish(name, 1)
        status, body = await get_json(
            gw.session, "POST", f"{gw.url}/topics/c", data=b"1", headers=JSON_HEADERS
        )
        assert (status, body["error"]) == (409, "too_many_topics")


async def test_unknown_route_and_method_are_json(gw: GatewayUnderTest) -> None:
    status, body = await get_json(gw.session, "GET", f"{gw.url}/nowhere")
    assert status == 404 and "error" in body
    async with gw.session.put(f"{gw.url}/topics/news", data=b"1") as resp:
        assert resp.status == 405 and "error" in await resp.json()
        assert resp.headers["Allow"] == "POST, DELETE"


async def test_405_names_the_allowed_methods(gw: GatewayUnderTest) -> None:
    async with gw.session.put(f"{gw.url}/chunked/news") as resp:
        assert resp.status == 405
        assert resp.headers["Allow"] == "GET"
        assert (await resp.json())["error"] == "method_not_allowed"
