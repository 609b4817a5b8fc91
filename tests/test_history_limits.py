"""History is bounded in bytes, idle topics expire, and DELETE removes a topic.

Memory broker only; the Redis side of expiry and DELETE is in test_redis_broker.py.
"""

from __future__ import annotations

import asyncio
import gc
import tracemalloc
from collections import deque
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.broker.memory import MESSAGE_OVERHEAD, MemoryBroker
from gateway.settings import HISTORY_ENTRY_SLACK
from tests.helpers import (
    JSON_HEADERS,
    TIMEOUT,
    GatewayUnderTest,
    poll_until,
    spawn_gateway,
    start_gateway,
    wait_for,
)
from tests.wire import read_until

TRANSPORTS = ["chunked", "sse", "ws"]
SMALL = 1024
"""max_message_bytes in the budget tests."""
BUDGET = 16 * (SMALL + HISTORY_ENTRY_SLACK)
"""The least max_history_bytes the settings accept with SMALL: 32 KiB."""


def cost(message: dict[str, Any]) -> int:
    """What the broker accounts for a message (its JSON is orjson-compact)."""
    return len(orjson.dumps(message)) + MESSAGE_OVERHEAD


async def get(gw: GatewayUnderTest, path: str) -> tuple[int, Any]:
    async with gw.session.get(f"{gw.url}{path}") as r:
        return r.status, await r.json()


async def topics(gw: GatewayUnderTest) -> dict[str, dict[str, Any]]:
    status, body = await get(gw, "/topics")
    assert status == 200
    return {t["name"]: t for t in body["topics"]}


async def history_bytes(gw: GatewayUnderTest) -> int:
    status, body = await get(gw, "/healthz")
    assert status == 200
    return int(body["history_bytes"])


async def exists(gw: GatewayUnderTest, topic: str) -> bool:
    status, _ = await get(gw, f"/topics/{topic}/messages?limit=1")
    assert status in (200, 404)
    return status == 200


async def _absent(gw: GatewayUnderTest, *names: str) -> bool:
    return not any([await exists(gw, n) for n in names])


# -- the byte budget ------------------------------------------------------------------------


async def test_the_oldest_messages_of_all_topics_go_first_and_the_budget_holds() -> None:
    sizes = {"a": 20, "b": 300, "c": 700}
    async with start_gateway(
        max_message_bytes=SMALL, max_history_bytes=BUDGET, history_size=1000
    ) as gw:
        published: list[str] = []  # every id, in publish order
        for i in range(120):
            topic = "abc"[i % 3] if i < 60 else "ab"[i % 2]
            published.append(await gw.publish(topic, {"i": i, "pad": "p" * sizes[topic]}))
            assert await history_bytes(gw) <= BUDGET
        retained: list[dict[str, Any]] = []
        for topic in "abc":
            status, doc = await get(gw, f"/topics/{topic}/messages?limit=1000")
            assert status == 200
            retained += doc["messages"]
        order = {id: n for n, id in enumerate(published)}
        retained.sort(key=lambda m: order[m["id"]])
        # What is left is exactly the newest messages, whichever their topic...
        kept = [m["id"] for m in retained]
        assert kept == published[-len(kept) :]
        assert 10 < len(kept) < 60
        # ... accounted exactly, under the budget, and no more was evicted than
        # needed: the next older message (at least its data and overhead) would
        # not have fitted.
        total = sum(cost(m) for m in retained)
        assert total == await history_bytes(gw) <= BUDGET
        assert total + 20 + MESSAGE_OVERHEAD > BUDGET
        # Topic c's messages were all older than the last 60: gone, topic kept.
        listing = await topics(gw)
        assert (listing["c"]["length"], listing["c"]["first_id"]) == (0, None)


async def test_a_resume_from_before_a_budget_eviction_gets_the_gap() -> None:
    async with start_gateway(max_message_bytes=SMALL, max_history_bytes=BUDGET) as gw:
        old = await gw.publish_many("old", [{"i": i, "pad": "o" * 200} for i in range(10)])
        # Publish elsewhere until the budget starts taking "old"'s messages.
        for _ in range(1000):
            await gw.publish("new", {"pad": "n" * 500})
            info = (await topics(gw))["old"]
            if info["length"] < len(old):
                break
        k = old.index(info["first_id"])  # old[:k] were evicted, old[k:] retained
        assert 0 < k < len(old)

        status, doc = await get(gw, f"/topics/old/messages?since={old[0]}")
        assert (status, doc["gap"], doc["first_id"]) == (200, True, old[k])
        assert [m["id"] for m in doc["messages"]] == old[k:]
        # Resuming after the last evicted message misses nothing: no gap.
        status, doc = await get(gw, f"/topics/old/messages?since={old[k - 1]}")
        assert (doc["gap"], [m["id"] for m in doc["messages"]]) == (False, old[k:])

        for transport in ("chunked", "sse"):
            reader = await read_until(
                gw.url, transport, "old", count=len(old) - k, query=f"since={old[0]}"
            )
            assert reader.items[0].obj == {
                "type": "gap",
                "topic": "old",
                "since": old[0],
                "first_id": old[k],
            }, transport
            assert reader.ids == old[k:], transport
        assert reader.items[0].sse_event == "gap"

        # Once all of "old" is gone, the gap says so with first_id null.
        for _ in range(1000):
            await gw.publish("new", {"pad": "n" * 500})
            if (await topics(gw))["old"]["length"] == 0:
                break
        status, doc = await get(gw, f"/topics/old/messages?since={old[-2]}")
        assert (doc["gap"], doc["first_id"], doc["messages"]) == (True, None, [])


def test_the_overhead_constant_covers_what_a_retained_message_costs() -> None:
    count = 20_000
    broker = MemoryBroker(history_size=count, max_topics=10, max_history_bytes=1 << 40)
    payloads = [orjson.dumps({"i": i, "s": "x" * (i % 50)}) for i in range(count)]
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for i, p in enumerate(payloads):
            broker.publish_now(f"t{i % 10}", [p])
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    json_bytes = broker.history_bytes() - count * MESSAGE_OVERHEAD
    per_message = (used - json_bytes) / count
    # tracemalloc sees requested sizes (pymalloc rounds them up: RSS says 363-380
    # bytes, see MESSAGE_OVERHEAD). An orjson output buffer kept unshrunk would
    # alone be 4 KiB per message.
    assert MESSAGE_OVERHEAD / 2 < per_message <= MESSAGE_OVERHEAD, per_message


def test_eviction_order_matches_a_reference_model_with_per_topic_bounds() -> None:
    """Per-topic bounds move heads behind the heap's back (stale entries); the
    budget must still take the globally oldest messages, and no more than needed."""
    history_size, budget = 4, 6000
    broker = MemoryBroker(history_size=history_size, max_topics=10, max_history_bytes=budget)
    model: dict[str, deque[tuple[int, str, int]]] = {}  # topic -> (seq, id, cost)
    seq = 0
    pattern = "aaaaaaaaabcbcbcbcddddddddddaebebebebcccccccccccccadadadad" * 3
    for n, topic in enumerate(pattern):
        batch = [orjson.dumps("x" * (17 * (n + i) % 400)) for i in range(1 + n % 5 // 4 * 6)]
        for msg in broker.publish_now(topic, batch):  # one message, or a batch of 7
            seq += 1
            q = model.setdefault(topic, deque())
            if len(q) == history_size:
                q.popleft()
            q.append((seq, msg.id, len(msg.json) + MESSAGE_OVERHEAD))
        # The budget applies once per publish, after the topic's own bound: no
        # eviction is spent on a message the same batch pushes out anyway.
        while sum(c for d in model.values() for _, _, c in d) > budget:
            oldest = min((d for d in model.values() if d), key=lambda d: d[0][0])
            oldest.popleft()
        for name, d in model.items():
            assert [m.id for m in broker.read_now(name, None).messages] == [i for _, i, _ in d]
        assert broker.history_bytes() == sum(c for d in model.values() for _, _, c in d)
        assert broker.history_bytes() <= budget


async def test_the_heap_of_topic_heads_stays_bounded_under_topic_churn() -> None:
    broker = MemoryBroker(history_size=10, max_topics=5, max_history_bytes=BUDGET)
    for n in range(2000):
        broker.publish_now(f"t{n}", [b"1"])
        broker.publish_now("steady", [b"2"])
        assert await broker.expire_topics(0, keep=["steady"]) == [f"t{n}"]
        assert len(broker._heads) <= 2 * 5 + 64
    assert await broker.expire_topics(0, keep=[]) == ["steady"]
    assert broker.history_bytes() == 0
    # Still consistent afterwards: the budget keeps the newest, across topics.
    published = []
    for n in range(200):
        published += broker.publish_now(f"u{n % 3}", [orjson.dumps("y" * 500)])
        assert broker.history_bytes() <= BUDGET
    kept = sorted(
        (m for t in ("u0", "u1", "u2") for m in broker.read_now(t, None).messages),
        key=published.index,
    )
    assert kept == published[-len(kept) :] and len(kept) > 10
    assert broker.history_bytes() == sum(len(m.json) + MESSAGE_OVERHEAD for m in kept)


# -- RSS of a real gateway process -------------------------------------------------------------


def rss(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


RSS_SLACK = 32 << 20
"""What the process may hold beyond its baseline and the budget: a batch
request in flight (a 1 MiB body, its parsed items, their JSON and the message
JSON: about 4 MiB), the allocator's freed but kept blocks, aiohttp's buffers.
Measured: 6-10 MiB (README, "Limits and timeouts")."""


@pytest.mark.parametrize(
    ("item", "per_batch", "budget"),
    [
        pytest.param("x" * 63_000, 16, 64 << 20, id="64KiB-messages"),
        pytest.param({"n": 12345, "s": "y" * 40}, 10_000, 32 << 20, id="small-messages"),
    ],
)
async def test_rss_stays_under_baseline_plus_budget(item: Any, per_batch: int, budget: int) -> None:
    body = orjson.dumps([item] * per_batch)
    per_message = len(orjson.dumps(item)) + 60 + MESSAGE_OVERHEAD  # 60: a short envelope
    batches = 3 * budget // (per_message * per_batch) + 1  # three budgets' worth
    async with (
        spawn_gateway(
            "--history-size",
            "1000000",  # the budget, not the per-topic count, is what binds
            "--max-history-bytes",
            str(budget),
        ) as gw,
        aiohttp.ClientSession() as session,
    ):
        baseline = rss(gw.pid)
        peak = baseline
        async with asyncio.timeout(TIMEOUT * 6):
            for n in range(batches):
                async with session.post(
                    f"{gw.url}/topics/t{n % 40}/batch",
                    data=body,
                    headers={"Content-Type": "application/json"},
                ) as r:
                    assert r.status == 201, await r.text()
                peak = max(peak, rss(gw.pid))
            accounted = (await gw.healthz(session))["history_bytes"]
    assert budget - per_message * per_batch < accounted <= budget  # the budget did bind
    assert peak <= baseline + budget + RSS_SLACK, (
        f"RSS {peak >> 20} MiB: baseline {baseline >> 20} MiB + budget {budget >> 20} MiB "
        f"+ {(peak - baseline - budget) / 2**20:.1f} MiB"
    )


# -- idle topics expire ----------------------------------------------------------------------------


async def test_an_idle_topic_expires_and_frees_its_slot_but_a_declared_one_stays() -> None:
    async with start_gateway(topic_ttl=0.2, max_topics=3, topics=("declared",)) as gw:
        await gw.publish("a", 1)
        await gw.publish("b", 2)
        async with gw.session.post(f"{gw.url}/topics/c", data=b"3", headers=JSON_HEADERS) as r:
            assert (r.status, (await r.json())["error"]) == (409, "too_many_topics")

        async def c_accepted() -> bool:
            async with gw.session.post(f"{gw.url}/topics/c", data=b"3", headers=JSON_HEADERS) as r:
                assert r.status in (201, 409)
                return r.status == 201

        await poll_until(c_accepted, what="a free topic slot")
        await poll_until(lambda: _absent(gw, "a", "b"), what="a and b to expire with their history")
        listing = await topics(gw)
        assert "declared" in listing  # idle since start, and still there
        assert "a" not in listing and "b" not in listing
        # A subscription makes the topic again (with a new history), and waits.
        async with gw.session.get(f"{gw.url}/chunked/a") as r:
            assert r.status == 200
            assert "a" in await topics(gw)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_topic_with_a_subscriber_does_not_expire(transport: str) -> None:
    async with start_gateway(topic_ttl=0.2) as gw:
        await gw.publish("held", 0)
        reader = asyncio.create_task(read_until(gw.url, transport, "held", count=1))
        await wait_for(lambda: gw.context.hub.subscriber_counts("held")[transport] == 1)
        await gw.publish("control", 0)  # published after "held"
        await poll_until(lambda: _absent(gw, "control"), what="the control topic to expire")
        assert await exists(gw, "held")
        live = await gw.publish("held", 1)
        assert (await reader).ids == [live]
        await poll_until(lambda: _absent(gw, "held"), what="held to expire, once unwatched")


# -- DELETE /topics/{topic} ------------------------------------------------------------------


async def test_delete_answers(gateway: GatewayUnderTest) -> None:
    gw = gateway
    await gw.publish_many("news", range(3))
    async with gw.session.delete(f"{gw.url}/topics/news") as r:
        assert (r.status, await r.json()) == (200, {"topic": "news", "deleted": True})
    async with gw.session.delete(f"{gw.url}/topics/news") as r:
        assert (r.status, (await r.json())["error"]) == (404, "unknown_topic")
    async with gw.session.delete(f"{gw.url}/topics/bad%20name") as r:
        assert (r.status, (await r.json())["error"]) == (400, "bad_topic")
    async with gw.session.delete(f"{gw.url}/topics/count") as r:
        assert (r.status, (await r.json())["error"]) == (409, "not_a_topic")
    assert (await get(gw, "/topics/news/messages"))[0] == 404
    assert "news" not in await topics(gw)
    assert await history_bytes(gw) == 0
    # Publishing creates it again, with none of the old history.
    new = await gw.publish("news", "again")
    assert (await get(gw, "/topics/news/messages"))[1]["messages"][0]["id"] == new


async def test_delete_ends_every_local_subscriber_with_topic_deleted(
    gateway: GatewayUnderTest,
) -> None:
    gw = gateway
    ids = await gw.publish_many("news", range(3))
    readers = {
        t: asyncio.create_task(read_until(gw.url, t, "news", query=f"since={ids[0]}"))
        for t in TRANSPORTS
    }
    await wait_for(
        lambda: all(gw.context.hub.subscriber_counts("news")[t] == 1 for t in TRANSPORTS)
    )
    async with gw.session.delete(f"{gw.url}/topics/news") as r:
        assert r.status == 200
    done = {t: await asyncio.wait_for(task, TIMEOUT) for t, task in readers.items()}
    for t, reader in done.items():
        assert reader.ids == ids[1:], t
        assert reader.controls[-1] == {
            "type": "end",
            "reason": "topic_deleted",
            "last_id": ids[-1],
        }, t
    assert done["sse"].items[-1].sse_event == "end"
    assert (done["ws"].close_code, done["ws"].close_reason) == (1000, "topic_deleted")
    await wait_for(lambda: not gw.context.sessions, what="every stream to be closed")
    assert gw.context.disconnects["topic_deleted"] == 3
    assert gw.context.hub.subscribed_topics() == []
