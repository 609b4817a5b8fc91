"""The three transports over real loopback sockets, side by side and resumed."""

from __future__ import annotations

import asyncio
import random

import aiohttp
import orjson
import pytest

from tests.helpers import TIMEOUT, GatewayUnderTest, start_gateway, wait_for
from tests.wire import Reader, read_until

TRANSPORTS = ["chunked", "sse", "ws"]


async def wait_subscribed(gw: GatewayUnderTest, topic: str, **expected: int) -> None:
    def ok() -> bool:
        counts = gw.context.hub.subscriber_counts(topic)
        return all(counts[t] >= n for t, n in expected.items())

    await wait_for(ok, what=f"subscribers {expected} on {topic}")


async def test_side_by_side_same_ids_same_bytes(gateway: GatewayUnderTest) -> None:
    n = 60
    tasks = {
        t: asyncio.create_task(read_until(gateway.url, t, "news", count=n)) for t in TRANSPORTS
    }
    await wait_subscribed(gateway, "news", chunked=1, sse=1, ws=1)
    published = await gateway.publish_many("news", [{"i": i, "s": "ü\n\r\0"} for i in range(n)])
    readers = {t: await task for t, task in tasks.items()}
    for t, reader in readers.items():
        assert reader.ids == published, t
    raw = {t: [i.raw for i in r.messages] for t, r in readers.items()}
    assert raw["chunked"] == raw["sse"] == raw["ws"]
    assert [i.sse_id for i in readers["sse"].messages] == published
    first = orjson.loads(raw["ws"][0])
    assert set(first) == {"id", "topic", "ts", "data"}
    assert first["data"] == {"i": 0, "s": "ü\n\r\0"}


async def _resume_loop(gw: GatewayUnderTest, transport: str, total: int) -> list[str]:
    """Read, drop, resume with since= (or Last-Event-ID), while a publisher runs."""
    published: list[str] = []

    async def publisher() -> None:
        for i in range(total):
            published.append(await gw.publish("news", {"i": i}))
            if i % 7 == 0:
                await asyncio.sleep(random.uniform(0, 0.003))

    seen: list[str] = []
    pub = asyncio.create_task(publisher())
    last: str | None = None
    rounds = 0
    while True:
        rounds += 1
        want = min(random.randint(5, 40), total - len(seen))
        headers = None
        query = ""
        if last is not None:
            if transport == "sse" and rounds % 2 == 0:
                headers = {"Last-Event-ID": last}
            else:
                query = f"since={last}"
        else:
            query = "since=0-0"
        reader = await read_until(
            gw.url, transport, "news", count=want, query=query, headers=headers
        )
        assert not [c for c in reader.controls if c["type"] == "gap"]
        seen += reader.ids
        if reader.ids:
            last = reader.ids[-1]
        if len(seen) >= total:
            break
        assert rounds < 1000
    await pub
    return seen if seen == published else [*seen, "<published:>", *published]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_under_concurrent_publishing_loses_nothing(transport: str) -> None:
    async with start_gateway(topics=("news",), history_size=5000) as gw:
        total = 400
        seen = await _resume_loop(gw, transport, total)
        assert len(seen) == total, "duplicate or missing ids"
        assert len(set(seen)) == total


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_connect_during_a_burst_then_resume_is_exact(transport: str) -> None:
    """The history-to-live hand-off, racing a publisher that never pauses."""
    async with start_gateway(topics=("news",), history_size=5000) as gw:
        published: list[str] = []
        stop = asyncio.Event()

        async def publisher() -> None:
            i = 0
            while not stop.is_set():
                published.append(await gw.publish("news", {"i": i}))
                i += 1

        pub = asyncio.create_task(publisher())
        await wait_for(lambda: len(published) >= 20, what="some history")
        mid = published[len(published) // 2]
        reader_task = asyncio.create_task(
            read_until(gw.url, transport, "news", count=150, query=f"since={mid}")
        )
        reader = await reader_task
        stop.set()
        await pub
        start = published.index(mid) + 1
        assert reader.ids == published[start : start + 150]


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_gap_then_retained_history(transport: str) -> None:
    async with start_gateway(topics=("news",), history_size=5) as gw:
        ids = await gw.publish_many("news", range(12))
        reader = await read_until(gw.url, transport, "news", count=5, query=f"since={ids[0]}")
        assert reader.items[0].obj == {
            "type": "gap",
            "topic": "news",
            "since": ids[0],
            "first_id": ids[7],
        }
        assert reader.ids == ids[7:]
        if transport == "sse":
            assert reader.items[0].sse_event == "gap"
            assert reader.items[0].sse_id is None  # a control never moves Last-Event-ID


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_limit_ends_with_an_end_event(transport: str, gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_many("news", range(5))
    reader = await read_until(gateway.url, transport, "news", query="since=0-0&limit=3")
    assert reader.ids == ids[:3]
    assert reader.controls[-1] == {"type": "end", "reason": "limit", "last_id": ids[2]}
    if transport == "ws":
        assert reader.close_code == 1000


async def test_json_array_with_limit_is_one_complete_document(gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_many("news", [{"k": i} for i in range(4)])
    async with aiohttp.ClientSession() as s:
        async with s.get(f"{gateway.url}/chunked/news?format=json&limit=3&since=0-0") as resp:
            assert resp.headers["Content-Type"].startswith("application/json")
            body = await asyncio.wait_for(resp.read(), TIMEOUT)
    doc = orjson.loads(body)
    assert [m["id"] for m in doc] == ids[:3]
    assert body.startswith(b"[{") and body.endswith(b"]\n")


async def test_json_array_live_items_and_heartbeats_stay_valid_json() -> None:
    async with start_gateway(topics=("news",), heartbeat=0.05) as gw:
        async with aiohttp.ClientSession() as s:
            async with s.get(f"{gw.url}/chunked/news?format=json&limit=3") as resp:
                await wait_subscribed(gw, "news", chunked=1)
                await asyncio.sleep(0.2)  # let a few heartbeats in before the first item
                ids = [await gw.publish("news", i) for i in range(3)]
                body = await asyncio.wait_for(resp.read(), TIMEOUT)
    assert [m["id"] for m in orjson.loads(body)] == ids
    assert body.startswith(b"[\n")  # heartbeats: whitespace only


async def _raw_get(port: int, path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def _read_headers(reader: asyncio.StreamReader) -> dict[str, str]:
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
    lines = head.decode().split("\r\n")
    assert lines[0] == "HTTP/1.1 200 OK", lines[0]
    return {k.lower(): v for k, _, v in (ln.partition(": ") for ln in lines[1:] if ln)}


async def _read_chunk(reader: asyncio.StreamReader) -> bytes:
    size = int((await asyncio.wait_for(reader.readuntil(b"\r\n"), TIMEOUT))[:-2], 16)
    data = await asyncio.wait_for(reader.readexactly(size + 2), TIMEOUT)
    assert data.endswith(b"\r\n")
    return data[:-2]


@pytest.mark.parametrize(
    ("path", "content_type"),
    [("/chunked/news", "application/x-ndjson"), ("/sse/news", "text/event-stream")],
)
async def test_raw_chunk_framing_and_one_write_per_batch(
    gateway: GatewayUnderTest, path: str, content_type: str
) -> None:
    """A batch published at once reaches a subscriber as one HTTP chunk."""
    reader, writer = await _raw_get(gateway.port, path)
    try:
        headers = await _read_headers(reader)
        assert headers["transfer-encoding"] == "chunked"
        assert headers["content-type"].startswith(content_type)
        assert headers["cache-control"] == "no-cache"
        assert headers["x-accel-buffering"] == "no"
        await wait_subscribed(gateway, "news", **{path.split("/")[1]: 1})
        ids = await gateway.publish_batch("news", [{"i": i} for i in range(10)])
        chunk = await _read_chunk(reader)
        if "sse" in path:
            # The first event of the stream carries the reconnection delay.
            assert chunk.startswith(b"retry: 1000\nid: ")
            assert chunk.count(b"\n\n") == 10
            assert [ln[4:].decode() for ln in chunk.split(b"\n") if ln.startswith(b"id: ")] == ids
        else:
            lines = chunk.split(b"\n")
            assert lines[-1] == b"" and len(lines) == 11
            assert [orjson.loads(ln)["id"] for ln in lines[:-1]] == ids
    finally:
        writer.close()


async def test_chunked_stream_ends_with_the_last_chunk(gateway: GatewayUnderTest) -> None:
    await gateway.publish_many("news", range(2))
    reader, writer = await _raw_get(gateway.port, "/chunked/news?since=0-0&limit=2")
    try:
        await _read_headers(reader)
        # Keep-alive: the body ends with the zero-length chunk, not with a close.
        rest = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n\r\n"), TIMEOUT)
    finally:
        writer.close()
    assert rest.endswith(b"\r\n0\r\n\r\n")
    assert b'"type":"end"' in rest


async def test_three_readers_count_in_topics_listing(gateway: GatewayUnderTest) -> None:
    started = [asyncio.Event() for _ in TRANSPORTS]
    tasks = [
        asyncio.create_task(read_until(gateway.url, t, "news", count=1, started=e))
        for t, e in zip(TRANSPORTS, started, strict=True)
    ]
    await wait_subscribed(gateway, "news", chunked=1, sse=1, ws=1)
    async with gateway.session.get(f"{gateway.url}/topics") as resp:
        listing = await resp.json()
    (news,) = [t for t in listing["topics"] if t["name"] == "news"]
    assert news["subscribers"] == {"chunked": 1, "sse": 1, "ws": 1}
    await gateway.publish("news", 1)
    for task in tasks:
        reader: Reader = await task
        assert len(reader.ids) == 1


async def test_sse_last_event_id_wins_over_a_stale_since(gateway: GatewayUnderTest) -> None:
    """EventSource reconnects to its original URL (old since=) with a newer header."""
    ids = await gateway.publish_many("news", range(6))
    reader = await read_until(
        gateway.url,
        "sse",
        "news",
        count=2,
        query=f"since={ids[0]}",
        headers={"Last-Event-ID": ids[3]},
    )
    assert reader.ids == ids[4:6]
