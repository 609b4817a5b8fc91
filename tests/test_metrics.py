"""``/metrics``: scraped over real HTTP and read with prometheus-client's own
parser; the figures match what the test's clients did."""

from __future__ import annotations

import asyncio
import shutil

import aiohttp
import orjson
import pytest
import websockets
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import JSON_HEADERS, TIMEOUT, GatewayUnderTest, start_gateway, wait_for
from tests.test_slow_consumer import PAYLOAD, connect_small, flood_until_dropped
from tests.wire import read_until

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

SECRET = "s" * 32


async def scrape(gw: GatewayUnderTest, headers: dict[str, str] | None = None) -> Samples:
    async with gw.session.get(f"{gw.url}/metrics", headers=headers) as r:
        text = await r.text()
        assert r.status == 200, text
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def by_transport(samples: Samples, name: str) -> dict[str, float]:
    return {t: value(samples, name, transport=t) for t in ("chunked", "sse", "ws")}


async def test_connections_publishes_and_deliveries_match_what_the_clients_did() -> None:
    async with start_gateway(topics=("news",)) as gw:
        counts = gw.context.hub.subscriber_counts
        readers = [
            asyncio.create_task(read_until(gw.url, t, "news", count=4))
            for t in ("chunked", "chunked", "sse", "ws")
        ]
        await wait_for(lambda: counts("news") == {"chunked": 2, "sse": 1, "ws": 1})
        async with websockets.connect(f"{gw.ws_url}/ws/news") as publisher:
            await wait_for(lambda: counts("news")["ws"] == 2)
            first = await scrape(gw)
            assert by_transport(first, "streamgate_connections") == {
                "chunked": 2,
                "sse": 1,
                "ws": 2,
            }
            assert value(first, "streamgate_messages_published_total") == 0
            assert value(first, "streamgate_queued_bytes") == 0

            await gw.publish("news", 1)  # one POST
            await gw.publish_batch("news", [2, 3])  # one batch of two
            await publisher.send(orjson.dumps({"type": "publish", "data": 4}).decode())
            seen = []
            async with asyncio.timeout(TIMEOUT):  # it is a subscriber too: wait for its own
                while 4 not in seen:
                    frame = orjson.loads(await publisher.recv())
                    if "data" in frame:
                        seen.append(frame["data"])
            assert seen == [1, 2, 3, 4]
            for reader in readers:
                assert [i.obj["data"] for i in (await reader).messages] == [1, 2, 3, 4]

            after = await scrape(gw)
            assert value(after, "streamgate_messages_published_total") == 4
            # messages x subscribers, per transport
            assert by_transport(after, "streamgate_deliveries_total") == {
                "chunked": 4 * 2,
                "sse": 4 * 1,
                "ws": 4 * 2,
            }
            # three calls to the broker: the POST, the batch, the WebSocket command
            assert value(after, "streamgate_publish_seconds_count") == 3
            assert value(after, "streamgate_publish_seconds_bucket", le="+Inf") == 3
            assert value(after, "streamgate_publish_seconds_sum") > 0
            flushes = value(after, "streamgate_flush_seconds_count")
            assert 1 <= flushes <= 3  # one per batch: at most one per publish here
            assert value(after, "streamgate_flush_seconds_bucket", le="0.1") <= flushes
            assert value(after, "streamgate_subscribed_topics") == 1

        await wait_for(lambda: not gw.context.sessions)
        end = await scrape(gw)
        assert by_transport(end, "streamgate_connections") == {"chunked": 0, "sse": 0, "ws": 0}
        assert value(end, "streamgate_disconnects_total", reason="client_gone") == 5
        assert value(end, "streamgate_disconnects_total", reason="slow_consumer") == 0
        assert value(end, "streamgate_broker_errors_total") == 0
        assert value(end, "process_resident_memory_bytes") > 0
        assert value(end, "streamgate_history_bytes") == gw.context.broker.history_bytes()


async def test_disconnect_reasons_limit_complete_and_a_slow_consumer() -> None:
    limit = 256 * 1024
    async with start_gateway(topics=("news",), max_queue_bytes=limit, history_size=50_000) as gw:
        counts = gw.context.hub.subscriber_counts
        # An end at the client's limit.
        limited = asyncio.create_task(read_until(gw.url, "sse", "news", query="limit=2"))
        await wait_for(lambda: counts("news")["sse"] == 1)
        await gw.publish_batch("news", [1, 2, 3])
        reader = await limited
        assert reader.controls[-1]["reason"] == "limit"
        # A per-connection stream that runs out: three items, each a delivery.
        done = await read_until(gw.url, "chunked", "count", query="n=3")
        assert done.controls[-1]["reason"] == "complete"
        await wait_for(lambda: not gw.context.sessions)
        middle = await scrape(gw)
        assert value(middle, "streamgate_disconnects_total", reason="limit") == 1
        assert value(middle, "streamgate_disconnects_total", reason="complete") == 1
        assert value(middle, "streamgate_deliveries_total", transport="chunked") == 3

        # A client that stops reading: bytes queue up in user space, then it is dropped.
        sock = await connect_small(gw.port)
        _, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_for(lambda: counts("news")["chunked"] == 1)
        queued = 0.0
        for _ in range(400):  # bounded (20 MB): until the kernel's buffers are full
            await gw.publish_batch("news", [PAYLOAD] * 50)
            queued = value(await scrape(gw), "streamgate_queued_bytes")
            if queued or not gw.context.sessions:
                break
        assert 0 < queued <= limit + 50 * 1200
        await flood_until_dropped(gw, "chunked")
        writer.close()
        await wait_for(lambda: not gw.context.sessions)
        end = await scrape(gw)
        assert value(end, "streamgate_disconnects_total", reason="slow_consumer") == 1
        assert value(end, "streamgate_disconnects_total", reason="limit") == 1
        assert value(end, "streamgate_queued_bytes") == 0
        assert value(end, "streamgate_connections", transport="chunked") == 0


async def test_a_replayed_history_counts_its_deliveries() -> None:
    async with start_gateway(topics=("news",)) as gw:
        ids = await gw.publish_batch("news", list(range(5)))
        reader = await read_until(gw.url, "ws", "news", count=3, query=f"since={ids[1]}")
        assert [i.obj["data"] for i in reader.messages] == [2, 3, 4]
        samples = await scrape(gw)
        assert value(samples, "streamgate_deliveries_total", transport="ws") == 3
        assert value(samples, "streamgate_messages_published_total") == 5


async def test_metrics_off_is_a_json_404_and_the_rest_works() -> None:
    async with start_gateway(metrics=False) as gw:
        assert gw.context.metrics is None
        assert gw.context.hub.metrics is None
        async with gw.session.get(f"{gw.url}/metrics") as r:
            assert r.status == 404
            assert (await r.json())["error"] == "not_found"
        await gw.publish("news", 1)
        async with gw.session.get(f"{gw.url}/healthz") as r:
            assert r.status == 200


async def test_metrics_route_answers_like_every_other_path() -> None:
    async with start_gateway() as gw:
        async with gw.session.post(f"{gw.url}/metrics", data=b"{}", headers=JSON_HEADERS) as r:
            assert r.status == 405
            assert r.headers["Allow"] == "GET"
            assert (await r.json())["error"] == "method_not_allowed"
        # A scraper that asks for OpenMetrics gets it.
        accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
        async with gw.session.get(f"{gw.url}/metrics", headers=accept) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("application/openmetrics-text")
            assert (await r.text()).rstrip().endswith("# EOF")


async def test_with_access_control_metrics_need_their_own_token() -> None:
    async with start_gateway(auth_key=SECRET) as gw:
        async with gw.session.get(f"{gw.url}/metrics") as r:
            assert r.status == 403
            body = await r.json()
            assert body["error"] == "forbidden" and "--metrics-token" in body["message"]
    async with start_gateway(auth_key=SECRET, metrics_token="m3trics") as gw:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "m3trics"}):
            async with gw.session.get(f"{gw.url}/metrics", headers=headers) as r:
                assert r.status == 401, headers
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert (await r.json())["error"] == "unauthorized"
        samples = await scrape(gw, {"Authorization": "Bearer m3trics"})
        assert value(samples, "streamgate_messages_published_total") == 0


async def test_a_metrics_token_is_asked_for_without_access_control_too() -> None:
    async with start_gateway(metrics_token="m3trics") as gw:
        async with gw.session.get(f"{gw.url}/metrics") as r:
            assert r.status == 401
        await scrape(gw, {"Authorization": "bearer m3trics"})  # the scheme in any case


async def test_two_gateways_in_one_process_keep_their_own_figures() -> None:
    async with start_gateway() as a, start_gateway() as b:
        assert a.context.metrics is not None and b.context.metrics is not None
        assert a.context.metrics.registry is not b.context.metrics.registry
        await a.publish("news", 1)
        await a.publish("news", 2)
        await b.publish("news", 3)
        assert value(await scrape(a), "streamgate_messages_published_total") == 2
        assert value(await scrape(b), "streamgate_messages_published_total") == 1


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="redis-server is not installed")
async def test_broker_errors_count_a_redis_that_went_away() -> None:
    from tests.test_redis_broker import redis_server

    with redis_server() as (url, proc):
        async with start_gateway(broker=url) as gw:
            await gw.publish("news", 1)
            assert value(await scrape(gw), "streamgate_broker_errors_total") == 0
            proc.terminate()
            await asyncio.to_thread(proc.wait, TIMEOUT)
            for _ in range(2):
                async with gw.session.post(
                    f"{gw.url}/topics/news", data=b"2", headers=JSON_HEADERS
                ) as r:
                    assert r.status == 503
            samples = await scrape(gw)  # answered without Redis
            assert value(samples, "streamgate_broker_errors_total") >= 2
            assert value(samples, "streamgate_messages_published_total") == 1
            assert ("streamgate_history_bytes", ()) not in samples  # Redis holds it


async def test_attached_under_a_prefix_metrics_count_gateway_publish() -> None:
    from aiohttp import web

    from gateway import Gateway

    gw = Gateway(tick_interval=0, grace=2.0, metrics_token="m3trics", topics=("news",))
    app = web.Application()
    gw.attach(app, prefix="/stream")
    runner = web.AppRunner(app, handler_cancellation=True)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    base = f"http://127.0.0.1:{port}/stream"
    try:
        reader = asyncio.create_task(read_until(base, "sse", "news", count=2))
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")["sse"] == 1)
        await gw.publish("news", 1)
        await gw.publish_many("news", [2])
        assert [i.obj["data"] for i in (await reader).messages] == [1, 2]
        async with aiohttp.ClientSession() as session:
            headers = {"Authorization": "Bearer m3trics"}
            async with session.get(f"{base}/metrics", headers=headers) as r:
                assert r.status == 200
                text = await r.text()
            async with session.get(f"http://127.0.0.1:{port}/metrics") as r:
                assert r.status == 404  # the host's root is the host's
    finally:
        await runner.cleanup()
    samples: Samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    assert value(samples, "streamgate_messages_published_total") == 2
    assert value(samples, "streamgate_deliveries_total", transport="sse") == 2
