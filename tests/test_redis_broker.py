"""The Redis Streams broker: two gateway replicas on one real Redis.

The test starts its own redis-server on a free port (what a user's machine
needs) and stops it by pid.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiohttp
import orjson
import pytest

from gateway.ids import parse_id
from tests.helpers import (
    JSON_HEADERS,
    TIMEOUT,
    GatewayUnderTest,
    poll_until,
    start_gateway,
    wait_for,
)
from tests.wire import open_reader, read_until

pytestmark = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server is not installed"
)

TRANSPORTS = ["chunked", "sse", "ws"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def redis_server(port: int | None = None) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """A redis-server of the test's own on ``port`` (default: a free one), keeping
    nothing on disk; stopped by pid."""
    port = port or free_port()
    proc = subprocess.Popen(
        [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0", proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            proc.wait(TIMEOUT)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server() as (url, _):
        yield url


@contextlib.asynccontextmanager
async def replicas(
    redis_url: str, prefix: str, **settings: object
) -> AsyncIterator[tuple[GatewayUnderTest, GatewayUnderTest]]:
    common = {"broker": redis_url, "redis_prefix": prefix, **settings}
    async with start_gateway(**common) as a, start_gateway(**common) as b:
        yield a, b


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_publish_on_one_replica_read_on_both(redis_url: str, transport: str) -> None:
    async with replicas(redis_url, f"t1{transport}:", topics=("news",)) as (a, b):
        readers = [
            asyncio.create_task(read_until(gw.url, transport, "news", count=20)) for gw in (a, b)
        ]
        for gw in (a, b):
            await wait_for(lambda gw=gw: gw.context.hub.subscriber_counts("news")[transport] == 1)
        ids = [await (a if i % 2 else b).publish("news", {"i": i}) for i in range(20)]
        ra, rb = [await r for r in readers]
        assert ra.ids == rb.ids == ids
        assert [m.raw for m in ra.messages] == [m.raw for m in rb.messages]  # byte-identical


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_on_the_other_replica_under_concurrent_publishing(
    redis_url: str, transport: str
) -> None:
    async with replicas(redis_url, f"t2{transport}:", history_size=5000) as (a, b):
        await a.publish("news", "first")
        published: list[str] = []
        total = 200

        async def publisher() -> None:
            for i in range(total):
                published.append(await a.publish("news", {"i": i}))

        task = asyncio.create_task(publisher())
        seen: list[str] = []
        last = "0-0"
        rounds = 0
        while len(seen) < total + 1:
            gw = (a, b)[rounds % 2]  # alternate replicas on every reconnect
            rounds += 1
            want = min(37, total + 1 - len(seen))
            reader = await read_until(gw.url, transport, "news", count=want, query=f"since={last}")
            assert not [c for c in reader.controls if c["type"] == "gap"]
            seen += reader.ids
            last = seen[-1]
        await task
        async with a.session.get(f"{a.url}/topics/news/messages?limit=1") as r:
            first = (await r.json())["messages"][0]["id"]
        assert seen == [first, *published]


async def test_gap_is_exact_across_replicas(redis_url: str) -> None:
    async with replicas(redis_url, "t3:", history_size=5) as (a, b):
        ids = await a.publish_batch("news", list(range(12)))
        # Retained: ids[7:]. Resuming after ids[6] misses nothing; before it, a gap.
        for since, gap in ((ids[0], True), (ids[5], True), (ids[6], False), (ids[9], False)):
            expected = ids[max(ids.index(since) + 1, 7) :]
            reader = await read_until(
                b.url, "chunked", "news", count=len(expected), query=f"since={since}"
            )
            gaps = [c for c in reader.controls if c["type"] == "gap"]
            assert bool(gaps) is gap, since
            if gap:
                assert gaps[0]["first_id"] == ids[7]
            assert reader.ids == expected


async def test_topics_and_history_agree_across_replicas(redis_url: str) -> None:
    async with replicas(redis_url, "t4:", history_size=3) as (a, b):
        ids = await a.publish_batch("orders", [{"n": i} for i in range(5)])
        for gw in (a, b):
            async with gw.session.get(f"{gw.url}/topics") as r:
                (orders,) = [t for t in (await r.json())["topics"] if t["name"] == "orders"]
            assert (orders["first_id"], orders["last_id"], orders["length"]) == (
                ids[2],
                ids[4],
                3,
            )
            async with gw.session.get(f"{gw.url}/topics/orders/messages?since={ids[0]}") as r:
                doc = await r.json()
            assert doc["gap"] is True
            assert [m["id"] for m in doc["messages"]] == ids[2:]
        async with b.session.get(f"{b.url}/topics/nope/messages") as r:
            assert r.status == 404


async def test_ws_publish_command_reaches_the_other_replica(redis_url: str) -> None:
    import orjson
    import websockets

    async with replicas(redis_url, "t5:", topics=("news",)) as (a, b):
        task = asyncio.create_task(read_until(b.url, "sse", "news", count=1))
        await wait_for(lambda: b.context.hub.subscriber_counts("news")["sse"] == 1)
        async with websockets.connect(f"{a.ws_url}/ws/news") as ws:
            await ws.send('{"type":"publish","data":"hi"}')
            ack = orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert (await task).ids == [ack["id"]]


def test_a_bad_broker_setting_is_refused() -> None:
    from gateway.settings import Settings

    with pytest.raises(ValueError, match="broker must be"):
        Settings(broker="postgres://x")


async def test_redis_going_away_is_a_503_json_error_not_a_crash() -> None:
    with redis_server() as (url, proc):
        async with start_gateway(broker=url) as gw:
            await gw.publish("news", 1)
            proc.terminate()
            await asyncio.to_thread(proc.wait, TIMEOUT)
            async with gw.session.post(
                f"{gw.url}/topics/news", data=b"2", headers=JSON_HEADERS
            ) as r:
                assert r.status == 503
                assert (await r.json())["error"] == "broker_unavailable"
            async with gw.session.get(f"{gw.url}/healthz") as r:
                assert r.status == 503  # a health check that tells the truth


# -- topic expiry, DELETE and the shared registry ------------------------------------------


async def _exists(gw: GatewayUnderTest, topic: str) -> bool:
    async with gw.session.get(f"{gw.url}/topics/{topic}/messages?limit=1") as r:
        assert r.status in (200, 404)
        return r.status == 200


async def _publish_status(gw: GatewayUnderTest, topic: str) -> int:
    async with gw.session.post(f"{gw.url}/topics/{topic}", data=b"1", headers=JSON_HEADERS) as r:
        return r.status


async def test_idle_topics_expire_but_a_subscriber_on_the_other_replica_keeps_one(
    redis_url: str,
) -> None:
    # A TTL of 1 s, not less: on a loaded machine a stall of the TTL's length
    # between the publishes and the 409 below, or in b's sweep that keeps
    # "held" alive, would expire a topic early (the test failed once at 0.3 s).
    async with replicas(redis_url, "t6:", topic_ttl=1.0, max_topics=3) as (a, b):
        await a.publish("held", 0)
        reader = asyncio.create_task(read_until(b.url, "sse", "held", count=1))
        await wait_for(lambda: b.context.hub.subscriber_counts("held")["sse"] == 1)
        await a.publish("x", 1)
        await a.publish("y", 2)
        assert await _publish_status(b, "z") == 409  # max_topics counts the registry

        async def z_accepted() -> bool:
            return await _publish_status(b, "z") == 201

        await poll_until(z_accepted, what="x and y to expire and free their slots")
        assert not await _exists(a, "x") and not await _exists(b, "y")
        # a's sweep alone would have removed "held"; b refreshes it for its subscriber.
        assert await _exists(a, "held")
        live = await a.publish("held", 1)
        assert (await reader).ids == [live]

        async def held_gone() -> bool:
            return not await _exists(a, "held")

        await poll_until(held_gone, what="held to expire once b's subscriber left")


async def test_a_topic_declared_on_one_replica_does_not_expire_on_the_other(
    redis_url: str,
) -> None:
    common = {"broker": redis_url, "redis_prefix": "t7:", "topic_ttl": 0.3}
    async with start_gateway(**common, topics=("decl",)), start_gateway(**common) as b:
        await b.publish("x", 1)

        async def x_gone() -> bool:
            return not await _exists(b, "x")

        await poll_until(x_gone, what="x to expire")
        assert await _exists(b, "decl")  # idle longer than x; a keeps it


async def test_expiry_rereads_the_score_so_a_publish_in_between_is_kept(redis_url: str) -> None:
    """The sweep lists idle topics, then removes them in a second script; a
    publish between the two must keep its topic and its messages."""
    from gateway.broker.redis import RedisBroker

    broker = RedisBroker(redis_url, history_size=10, max_topics=10, prefix="t8:")
    await broker.start()
    try:
        r = broker.redis
        activity = "t8:topic-activity"
        await broker.publish("late", [b"1"])
        await broker.publish("idle", [b"1"])
        await r.zadd(activity, {"late": 0, "idle": 0})  # both idle since 1970
        listed = await broker._scripts["touch"](keys=[activity], args=[60_000])
        assert sorted(listed) == [b"idle", b"late"]
        await broker.publish("late", [b"2"])  # lands between the listing and the removal
        gone = await broker._scripts["expire"](
            keys=[activity, "t8:t:idle", "t8:t:late"], args=[60_000, "idle", "late"]
        )
        assert gone == [b"idle"]
        assert not await broker.has_topic("idle") and not await r.exists("t8:t:idle")
        assert len((await broker.read("late", None)).messages) == 2
    finally:
        await broker.close()


async def test_a_registry_from_before_the_sorted_set_is_carried_over(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from gateway.broker.redis import RedisBroker

    r = aioredis.from_url(redis_url)
    try:
        await r.sadd("t9:topics", "legacy")
        await r.xadd("t9:t:legacy", {"ts": "1.0", "data": b'"old"'})
        async with start_gateway(broker=redis_url, redis_prefix="t9:") as gw:
            assert await _exists(gw, "legacy")
            assert not await r.exists("t9:topics")
            assert isinstance(gw.context.broker, RedisBroker)
    finally:
        await r.aclose()


async def test_delete_on_one_replica(redis_url: str) -> None:
    async with replicas(redis_url, "t10:") as (a, b):
        ids = await a.publish_many("news", range(3))
        reader = asyncio.create_task(read_until(a.url, "ws", "news", query=f"since={ids[0]}"))
        await wait_for(lambda: a.context.hub.subscriber_counts("news")["ws"] == 1)
        async with a.session.delete(f"{a.url}/topics/news") as r:
            assert (r.status, await r.json()) == (200, {"topic": "news", "deleted": True})
        done = await asyncio.wait_for(reader, TIMEOUT)
        assert done.ids == ids[1:]
        assert done.controls[-1]["reason"] == "topic_deleted" and done.close_code == 1000
        assert not await _exists(b, "news")  # history gone for every replica
        async with b.session.delete(f"{b.url}/topics/news") as r:
            assert (r.status, (await r.json())["error"]) == (404, "unknown_topic")


async def test_redis_maxmemory_bounds_history_a_full_redis_is_a_503_and_delete_recovers() -> None:
    """With Redis the gateway holds no history: Redis's maxmemory is the bound."""
    import redis.asyncio as aioredis

    with redis_server() as (url, _):
        r = aioredis.from_url(url)
        try:
            await r.config_set("maxmemory", "4mb")
            await r.config_set("maxmemory-policy", "noeviction")
        finally:
            await r.aclose()
        async with start_gateway(broker=url, history_size=100_000) as gw:
            body = b'"' + b"x" * 60_000 + b'"'
            statuses = []
            for _ in range(400):  # 24 MB: far past 4 MB
                async with gw.session.post(
                    f"{gw.url}/topics/big", data=body, headers=JSON_HEADERS
                ) as resp:
                    statuses.append(resp.status)
                    if resp.status != 201:
                        assert (await resp.json())["error"] == "broker_unavailable"
                        break
            assert statuses[-1] == 503 and len(statuses) > 5
            async with gw.session.delete(f"{gw.url}/topics/big") as resp:
                assert resp.status == 200
            await gw.publish("big", "fits again")


async def test_subscribers_arriving_during_a_slow_watch_miss_nothing(redis_url: str) -> None:
    """The history-to-live hand-off with Redis: live messages reach a replica
    only once its broker watches the topic, so a subscriber that arrives while
    the first one's watch() is still on its way must wait for it too (else it
    reads history, goes live, and misses what was published in between)."""
    from gateway.broker.redis import RedisBroker
    from gateway.hub import Hub, Subscriber
    from gateway.ids import parse_id
    from tests.test_hub import RecordingSink

    class SlowWatch(RedisBroker):
        async def watch(self, topic: str) -> None:
            await asyncio.sleep(0.3)  # a slow round trip, on purpose
            await super().watch(topic)

    common = {"history_size": 1000, "max_topics": 10, "prefix": "slowwatch:"}
    local, other = SlowWatch(redis_url, **common), RedisBroker(redis_url, **common)
    await local.start()
    await other.start()
    try:
        hub = Hub(local)
        (first,) = await other.publish("t", [b"0"])
        published: list[str] = []
        sinks = [RecordingSink() for _ in range(4)]
        joining = []
        for i, sink in enumerate(sinks):
            sub = Subscriber(sink, "t", max_backlog_bytes=1 << 20)
            joining.append(asyncio.create_task(hub.subscribe(sub, parse_id(first.id))))
            await asyncio.sleep(0.05)  # the others arrive while the first watch is pending
            published += [m.id for m in await other.publish("t", [str(i).encode()])]
        await asyncio.wait_for(asyncio.gather(*joining), TIMEOUT)
        for i in range(5):  # and live from here on
            published += [m.id for m in await other.publish("t", [str(10 + i).encode()])]
        await wait_for(lambda: all(len(s.ids) >= len(published) for s in sinks))
        await asyncio.sleep(0.2)  # nothing doubled arrives late
        for sink in sinks:
            assert sink.ids == published
    finally:
        await local.close()
        await other.close()


@pytest.mark.parametrize(
    "path", ["/topics/news/messages", "/chunked/news", "/sse/news", "/ws/news"]
)
async def test_ids_redis_cannot_take_are_400_before_anything_starts(
    redis_url: str, path: str
) -> None:
    async with start_gateway(broker=redis_url, redis_prefix="bigid:", topics=("news",)) as gw:
        async with gw.session.get(f"{gw.url}{path}?since=18446744073709551616-0") as resp:
            assert resp.status == 400
            assert (await resp.json())["error"] == "bad_id"


async def test_redis_stalled_answers_503_in_time_recovers_and_never_holds_shutdown() -> None:
    """Redis frozen with SIGSTOP for 10 s: every request is answered within the
    timeout (503), delivery resumes by itself after SIGCONT, and a SIGTERM while
    Redis is frozen again still ends the gateway within its grace."""
    import signal

    from tests.helpers import spawn_gateway

    timeout, grace = 1.0, 3.0
    with redis_server() as (url, redis):
        async with spawn_gateway(
            "--broker",
            url,
            "--redis-timeout",
            str(timeout),
            "--topic",
            "news",
            "--grace",
            str(grace),
        ) as gw:
            conn = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=conn) as session:

                async def publish(n: int) -> tuple[int, float]:
                    started = time.monotonic()
                    async with session.post(f"{gw.url}/topics/news", json={"n": n}) as r:
                        return r.status, time.monotonic() - started

                reader = asyncio.create_task(_read_until_n(session, gw.url, 2))
                await poll_until(
                    lambda: _subscribed(session, gw.url), what="the reader to subscribe"
                )
                assert (await publish(1))[0] == 201
                redis.send_signal(signal.SIGSTOP)
                try:
                    stalled_until = time.monotonic() + 10
                    while time.monotonic() < stalled_until:
                        status, took = await publish(0)
                        assert status == 503, status
                        assert took < timeout + 2.0, f"a publish took {took:.1f} s"
                        async with session.get(f"{gw.url}/healthz") as r:
                            assert r.status == 503
                finally:
                    redis.send_signal(signal.SIGCONT)
                deadline = time.monotonic() + TIMEOUT
                while (await publish(2))[0] != 201:  # the first may meet a dead connection
                    assert time.monotonic() < deadline, "publishing did not recover"
                got = await asyncio.wait_for(reader, TIMEOUT * 2)
                # A publish that timed out may still land once Redis runs again (its
                # command was in Redis's socket buffer): 503 means "not confirmed".
                assert got[0] == 1 and got[-1] == 2 and set(got[1:-1]) <= {0}, got

                redis.send_signal(signal.SIGSTOP)
                try:
                    started = time.monotonic()
                    gw.proc.send_signal(signal.SIGTERM)
                    await asyncio.wait_for(gw.proc.wait(), grace + TIMEOUT)
                    took = time.monotonic() - started
                finally:
                    redis.send_signal(signal.SIGCONT)
        assert gw.proc.returncode == 0, gw.stderr.decode()[-2000:]
        assert took < grace + timeout + 2.0, f"shutdown took {took:.1f} s"


async def _read_until_n(session: aiohttp.ClientSession, url: str, last: int) -> list[int]:
    """Follow the topic over chunked HTTP until the message with ``n == last``."""
    got: list[int] = []
    async with session.get(f"{url}/chunked/news") as resp:
        async for line in resp.content:
            if line.strip():
                obj = orjson.loads(line)
                if "type" not in obj:
                    got.append(obj["data"]["n"])
                    if got[-1] == last:
                        return got
    raise AssertionError(f"the stream ended before n={last}: {got}")


async def _subscribed(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(f"{url}/topics") as r:
        topics = (await r.json())["topics"]
    return any(t["name"] == "news" and t["subscribers"]["chunked"] == 1 for t in topics)


# -- one shared source, however many replicas --------------------------------------------------


async def _tick_numbers(gw: GatewayUnderTest) -> list[int]:
    async with gw.session.get(f"{gw.url}/topics/ticks/messages?limit=1000") as r:
        return [m["data"]["n"] for m in (await r.json())["messages"]]


@pytest.mark.parametrize("replicas", [2, 3])
async def test_a_shared_source_runs_on_one_replica_at_a_time(redis_url: str, replicas: int) -> None:
    settings = {
        "broker": redis_url,
        "redis_prefix": f"lease{replicas}:",
        "tick_interval": 0.05,
        "source_lease": 1.0,
    }
    async with contextlib.AsyncExitStack() as stack:
        gws = [await stack.enter_async_context(start_gateway(**settings)) for _ in range(replicas)]
        await asyncio.sleep(1.5)
        states = [gw.context.sources["ticks"] for gw in gws]
        assert sorted(states) == ["running"] + ["standby"] * (replicas - 1), states
        numbers = await _tick_numbers(gws[0])
    # One source: 1, 2, 3, ... (two would interleave: 1, 1, 2, 2, ...).
    assert len(numbers) >= 10
    assert numbers == list(range(1, len(numbers) + 1)), numbers


async def test_the_source_moves_to_another_replica_when_its_holder_is_killed() -> None:
    import signal

    from tests.helpers import spawn_gateway

    lease = 1.0
    with redis_server() as (url, _):
        args = ("--broker", url, "--tick-interval", "0.05", "--source-lease", str(lease))
        async with (
            spawn_gateway(*args) as a,
            spawn_gateway(*args) as b,
            aiohttp.ClientSession() as session,
        ):

            async def state(gw: Any) -> str:
                return str((await gw.healthz(session))["sources"]["ticks"])

            await poll_until(
                lambda: _one_running(state, a, b), what="one replica to run the source"
            )
            holder, other = (a, b) if await state(a) == "running" else (b, a)
            async with session.get(f"{other.url}/topics/ticks/messages?limit=1000") as r:
                before = [m["id"] for m in (await r.json())["messages"]]
            holder.proc.send_signal(signal.SIGKILL)  # no goodbye, no release
            await holder.proc.wait()
            await poll_until(lambda: _is_running(state, other), what="the other to take over")
            await asyncio.sleep(0.5)
            async with session.get(f"{other.url}/topics/ticks/messages?limit=1000") as r:
                after = [m["id"] for m in (await r.json())["messages"]]
    keys = [parse_id(i) for i in after]
    assert keys == sorted(set(keys))  # ids only ever increase, none twice
    assert after[: len(before)] == before and len(after) > len(before) + 3


async def _one_running(state: Any, *gws: Any) -> bool:
    states = [await state(gw) for gw in gws]
    return sorted(states) == ["running", "standby"]


async def _is_running(state: Any, gw: Any) -> bool:
    return bool(await state(gw) == "running")


# -- a history that starts anew: the resume gets its gap ---------------------------------------


def _assert_gap_then(got: Any, *, since: str, new: str) -> None:
    """A gap (nothing after ``since`` survives), then the new message. The new
    message may beat the subscriber's history read (it is counted before it
    reads): the gap then names it as the first id held, which is as true."""
    (gap,) = got.controls[:1]
    assert gap in (
        {"type": "gap", "topic": "news", "since": since, "first_id": None},
        {"type": "gap", "topic": "news", "since": since, "first_id": new},
    )
    assert got.ids == [new]


async def _resume_after(gw: GatewayUnderTest, transport: str, since: str) -> Any:
    reader = asyncio.create_task(
        read_until(gw.url, transport, "news", query=f"since={since}", count=1)
    )
    await wait_for(lambda: gw.context.hub.subscriber_counts("news")[transport] == 1)
    new = await gw.publish("news", {"after": True})
    got = await asyncio.wait_for(reader, TIMEOUT)
    return got, new


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_after_the_redis_stream_is_deleted(redis_url: str, transport: str) -> None:
    import redis.asyncio as aioredis

    prefix = f"deleted{transport}:"
    async with start_gateway(broker=redis_url, redis_prefix=prefix) as gw:
        old = [await gw.publish("news", i) for i in range(5)]
        r = aioredis.from_url(redis_url)
        await r.delete(f"{prefix}t:news")  # behind the gateway's back
        await r.aclose()
        got, new = await _resume_after(gw, transport, old[2])
    _assert_gap_then(got, since=old[2], new=new)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_after_redis_restarts_empty(transport: str) -> None:
    port = free_port()
    with contextlib.ExitStack() as first:
        url, _ = first.enter_context(redis_server(port))
        async with start_gateway(broker=url, redis_timeout=1.0) as gw:
            old = [await gw.publish("news", i) for i in range(5)]
            first.close()  # Redis is gone, with all it held
            with redis_server(port):  # a new, empty one on the same port

                async def healthy() -> bool:
                    async with gw.session.get(f"{gw.url}/healthz") as r:
                        return r.status == 200

                await poll_until(healthy, what="the gateway to use the new Redis")
                got, new = await _resume_after(gw, transport, old[2])
    _assert_gap_then(got, since=old[2], new=new)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_message_published_once_the_response_is_seen_is_never_skipped(
    redis_url: str, transport: str
) -> None:
    """A stream without ``since`` on a topic new to this replica: the response
    goes out, the client publishes at once (here on the other replica), and the
    replica's watch of the topic is still on its way to Redis. The message must
    arrive, without a gap; "from now" is fixed before the response, not after
    the watch (which skipped it)."""
    async with replicas(redis_url, f"fromnow{transport}:") as (a, b):
        for i in range(10):
            topic = f"fresh{i}"
            async with open_reader(a.url, transport, topic) as (_, items):
                msg_id = await b.publish(topic, {"i": i})
                async with asyncio.timeout(TIMEOUT):
                    first = await anext(items)
                assert not first.is_control and first.id == msg_id, first.obj
