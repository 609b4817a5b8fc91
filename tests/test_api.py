"""The JSON API: publish, batch publish, topics, history, health, the page."""

from __future__ import annotations

import orjson

from gateway.ids import parse_id
from tests.helpers import JSON_HEADERS, GatewayUnderTest
from tests.wire import read_until


async def test_publish_returns_201_and_increasing_ids(gateway: GatewayUnderTest) -> None:
    async with gateway.session.post(
        f"{gateway.url}/topics/fresh", data=b'{"a": [1, 2]}', headers=JSON_HEADERS
    ) as r:
        assert r.status == 201
        body = await r.json()
    assert body["topic"] == "fresh"
    ids = [body["id"], *await gateway.publish_many("fresh", range(20))]
    keys = [parse_id(i) for i in ids]
    assert keys == sorted(keys) and len(set(keys)) == len(keys)


async def test_history_is_byte_identical_to_the_streams(gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_many("news", [{"k": "ü"}, [1, 2], "s", None, 3.5])
    stream = await read_until(gateway.url, "chunked", "news", count=5, query="since=0-0")
    async with gateway.session.get(
        f"{gateway.url}/topics/news/messages?since={ids[0]}&limit=3"
    ) as r:
        raw = await r.read()
    doc = orjson.loads(raw)
    assert [m["id"] for m in doc["messages"]] == ids[1:4]
    assert (doc["gap"], doc["first_id"], doc["last_id"]) == (False, ids[0], ids[-1])
    for item in stream.messages[1:4]:
        assert item.raw in raw  # the message object, byte for byte
    async with gateway.session.get(f"{gateway.url}/topics/news/messages") as r:
        assert [m["data"] for m in (await r.json())["messages"]] == [
            {"k": "ü"},
            [1, 2],
            "s",
            None,
            3.5,
        ]


async def test_history_reports_a_gap() -> None:
    from tests.helpers import start_gateway

    async with start_gateway(history_size=2) as gw:
        ids = await gw.publish_many("t", range(5))
        async with gw.session.get(f"{gw.url}/topics/t/messages?since={ids[0]}") as r:
            doc = await r.json()
        assert doc["gap"] is True
        assert [m["id"] for m in doc["messages"]] == ids[3:]


async def test_batch_publish_json_array_and_ndjson(gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_batch("news", [{"i": i} for i in range(5)])
    assert len(ids) == 5
    body = b'{"i": 5}\n\n{"i": 6}\n'
    async with gateway.session.post(
        f"{gateway.url}/topics/news/batch",
        data=body,
        headers={"Content-Type": "application/x-ndjson"},
    ) as r:
        assert r.status == 201
        ids += (await r.json())["ids"]
    async with gateway.session.get(f"{gateway.url}/topics/news/messages") as r:
        doc = await r.json()
    assert [m["id"] for m in doc["messages"]] == ids
    assert [m["data"]["i"] for m in doc["messages"]] == list(range(7))
    batch = f"{gateway.url}/topics/news/batch"
    async with gateway.session.post(batch, data=b'{"a":1}', headers=JSON_HEADERS) as r:
        assert r.status == 400 and (await r.json())["error"] == "bad_json"
    async with gateway.session.post(batch, data=b"[]", headers=JSON_HEADERS) as r:
        assert r.status == 400


async def test_topics_listing(gateway: GatewayUnderTest) -> None:
    ids = await gateway.publish_many("news", range(3))
    async with gateway.session.get(f"{gateway.url}/topics") as r:
        listing = await r.json()
    (news,) = [t for t in listing["topics"] if t["name"] == "news"]
    assert news == {
        "name": "news",
        "kind": "shared",
        "first_id": ids[0],
        "last_id": ids[-1],
        "length": 3,
        "subscribers": {"chunked": 0, "sse": 0, "ws": 0},
    }
    assert {"name": "count", "kind": "per-connection"} in listing["streams"]


async def test_healthz(gateway: GatewayUnderTest) -> None:
    async with gateway.session.get(f"{gateway.url}/healthz") as r:
        assert r.status == 200
        body = await r.json()
    assert body["status"] == "ok" and body["topics"] == 1


async def test_the_page_is_served(gateway: GatewayUnderTest) -> None:
    async with gateway.session.get(f"{gateway.url}/") as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/html")
        assert "<html" in (await r.text()).lower()
