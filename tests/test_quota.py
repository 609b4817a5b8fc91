"""Per-client limits: --publish-rate (per token subject, per address without
one; batches count their items; the WebSocket command shares the budget),
--max-connections-per-ip, and X-Forwarded-For believed only from a trusted
proxy. Real gateways on loopback, real clients.

The rates are 2 a second (and a burst of 2), so a refusal expected right after
the burst holds as long as the few requests between take under half a second,
however loaded the machine."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

import jwt
import websockets

from gateway.quota import address_key
from tests.helpers import GatewayUnderTest, start_gateway, wait_for
from tests.test_auth import SECRET, attempt, command


def token(sub: str, **claims: Any) -> dict[str, str]:
    payload = {"sub": sub, "streamgate": {"subscribe": ["*"], "publish": ["*"]}, **claims}
    return {"Authorization": "Bearer " + jwt.encode(payload, SECRET, algorithm="HS256")}


async def post(gw: GatewayUnderTest, headers: dict[str, str], items: int = 0) -> Any:
    """A publish (``items``: a batch of that many); the Answer."""
    path = "POST /topics/news/batch" if items else "POST /topics/news"
    if items:
        async with gw.session.post(
            f"{gw.url}/topics/news/batch", json=list(range(items)), headers=headers
        ) as resp:
            return resp.status, resp.headers.get("Retry-After"), await resp.json()
    answer = await attempt(gw, path, headers)
    return answer.status, answer.headers.get("Retry-After"), answer.body


async def test_publish_rate_per_subject_and_batches_count_their_items() -> None:
    async with start_gateway(auth_key=SECRET, publish_rate=2, topics=("news",)) as gw:
        alice = token("alice")
        for _ in range(2):
            assert (await post(gw, alice))[0] == 201
        status, retry_after, body = await post(gw, alice)
        assert (status, body["error"]) == (429, "rate_limited")
        assert retry_after == "1"
        # Another token with the same subject shares the budget; another subject does not.
        assert (await post(gw, token("alice", jti="second")))[0] == 429
        assert (await post(gw, token("bob")))[0] == 201
        # A batch is admitted while the budget lasts and takes one per item.
        await asyncio.sleep(1.05)  # the bucket is full again: 2
        assert (await post(gw, alice, items=5))[0] == 201  # admitted: 3 in debt
        status, retry_after, _ = await post(gw, alice)
        assert status == 429
        assert int(retry_after) == 2  # (1 - (-3)) / 2 a second
        # Nothing refused was published.
        read = await gw.context.broker.read("news", None, 100)
        assert len(read.messages) == 2 + 1 + 5


async def test_publish_rate_per_address_without_a_token() -> None:
    # No token: an application check lets anyone publish; the address is the key.
    async with start_gateway(
        authorize=lambda r, t, a: True,
        publish_rate=2,
        trusted_proxies=("127.0.0.1",),
        topics=("news",),
    ) as gw:
        for _ in range(2):
            assert (await post(gw, {}))[0] == 201
        assert (await post(gw, {}))[0] == 429
        # Through the trusted proxy (loopback here), another client is another budget.
        other = {"X-Forwarded-For": "203.0.113.7"}
        assert (await post(gw, other))[0] == 201
        # The same client behind the proxy, whatever it wrote to the left of its address.
        spoofed = {"X-Forwarded-For": "198.51.100.1, 203.0.113.7"}
        assert (await post(gw, spoofed))[0] == 201
        assert (await post(gw, spoofed))[0] == 429


async def test_the_ws_publish_command_counts_against_the_subject() -> None:
    async with start_gateway(auth_key=SECRET, publish_rate=2, topics=("news",)) as gw:
        alice = token("alice")
        async with websockets.connect(f"{gw.ws_url}/ws/news", additional_headers=alice) as conn:
            assert (await command(conn, {"type": "publish", "data": 1}))["type"] == "published"
            assert (await post(gw, alice))[0] == 201  # the second, over HTTP
            reply = await command(conn, {"type": "publish", "data": 1, "ref": "r"})
            assert (reply["type"], reply["code"], reply["ref"]) == ("error", "rate_limited", "r")
            assert (await command(conn, {"type": "ping"}))["type"] == "pong"  # still open
        assert (await post(gw, alice))[0] == 429


async def test_max_connections_per_ip() -> None:
    async with (
        start_gateway(
            auth_key=SECRET,
            max_connections_per_ip=2,
            trusted_proxies=("127.0.0.0/8",),
            topics=("news",),
        ) as gw,
        contextlib.AsyncExitStack() as stack,
    ):
        alice = token("alice")
        quota = gw.context.auth.quota
        first = await stack.enter_async_context(gw.session.get(f"{gw.url}/sse/news", headers=alice))
        await stack.enter_async_context(
            websockets.connect(f"{gw.ws_url}/ws/news", additional_headers=alice)
        )
        assert first.status == 200
        for endpoint in ("GET /chunked/news", "GET /sse/news", "WS /ws/news"):
            answer = await attempt(gw, endpoint, alice)
            assert (answer.status, answer.body["error"]) == (429, "too_many_streams"), endpoint
            assert answer.headers["Retry-After"] == "1"
        # HEAD starts no stream and is not counted.
        async with gw.session.head(f"{gw.url}/sse/news", headers=alice) as resp:
            assert resp.status == 200
        # Another client behind the trusted proxy has its own count.
        elsewhere = {**alice, "X-Forwarded-For": "203.0.113.7"}
        assert (await attempt(gw, "GET /sse/news", elsewhere)).status == 200
        # A stream that ends gives its slot back.
        first.close()
        await wait_for(lambda: quota._streams.get("127.0.0.1") == 1, what="a slot back")
        assert (await attempt(gw, "GET /sse/news", alice)).status == 200
        await stack.aclose()
        await wait_for(lambda: not quota._streams, what="no address counted")


async def test_forwarded_for_is_ignored_from_an_untrusted_peer() -> None:
    async with start_gateway(auth_key=SECRET, max_connections_per_ip=1, topics=("news",)) as gw:
        alice = token("alice")
        async with gw.session.get(f"{gw.url}/sse/news", headers=alice) as resp:
            assert resp.status == 200
            spoofed = {**alice, "X-Forwarded-For": "203.0.113.7"}
            assert (await attempt(gw, "GET /sse/news", spoofed)).status == 429


async def test_the_right_most_untrusted_hop_is_the_client() -> None:
    async with start_gateway(
        auth_key=SECRET,
        max_connections_per_ip=1,
        trusted_proxies=("127.0.0.1", "10.0.0.0/8"),
        topics=("news",),
    ) as gw:
        alice = token("alice")
        chain = {**alice, "X-Forwarded-For": "1.1.1.1, 203.0.113.9, 10.1.1.1"}
        async with gw.session.get(f"{gw.url}/sse/news", headers=chain) as resp:
            assert resp.status == 200
            assert gw.context.auth.quota._streams == {"203.0.113.9": 1}
            # What the client writes left of its address changes nothing.
            spoofed = {**alice, "X-Forwarded-For": "9.9.9.9, 203.0.113.9"}
            assert (await attempt(gw, "GET /sse/news", spoofed)).status == 429
            # Two headers are one list.
            split = [("Authorization", alice["Authorization"])]
            split += [("X-Forwarded-For", "9.9.9.9"), ("X-Forwarded-For", "203.0.113.9, 10.2.2.2")]
            async with gw.session.get(f"{gw.url}/sse/news", headers=split) as resp2:
                assert resp2.status == 429


def test_ipv6_clients_are_counted_per_64() -> None:
    assert address_key("2001:db8:1:2:3:4:5:6") == address_key("2001:db8:1:2:ffff::1")
    assert address_key("2001:db8:1:2::1") != address_key("2001:db8:1:3::1")
    assert address_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert address_key("192.0.2.1") == "192.0.2.1"


async def test_limits_follow_access_control_unless_set() -> None:
    async with start_gateway() as gw:
        quota = gw.context.auth.quota
        assert (gw.context.auth.enabled, quota.rate, quota.streams_per_address) == (False, 0, 0)
    async with start_gateway(auth_key=SECRET) as gw:
        quota = gw.context.auth.quota
        assert (quota.rate, quota.burst, quota.streams_per_address) == (100, 100, 256)
    async with start_gateway(auth_key=SECRET, publish_rate=0, max_connections_per_ip=0) as gw:
        quota = gw.context.auth.quota
        assert (quota.rate, quota.streams_per_address) == (0, 0)
    async with start_gateway(publish_rate=2, topics=("news",)) as gw:  # explicit, no auth
        assert gw.context.auth.quota.rate == 2
        for _ in range(2):
            assert (await post(gw, {}))[0] == 201
        assert (await post(gw, {}))[0] == 429


async def test_buckets_are_forgotten_once_full_again() -> None:
    async with start_gateway(auth_key=SECRET, publish_rate=50, topics=("news",)) as gw:
        quota = gw.context.auth.quota
        for name in ("a", "b", "c"):
            assert (await post(gw, token(name)))[0] == 201
        assert quota.publishers <= 3
        started = time.monotonic()
        await asyncio.sleep(0.1)  # one token back in 1/50 s: every bucket is full again
        assert (await post(gw, token("d")))[0] == 201
        assert quota.publishers == 1, time.monotonic() - started
