"""End to end: the real gateway with a real key, the real clients of clients/, and
tokens made by PyJWT that expire while the stream runs. Each stream ends at the
token's ``exp`` with ``goodbye`` ``token_expired`` (WebSocket close 4003); the
client gets a fresh token from its callable, resumes, and loses nothing."""

from __future__ import annotations

import asyncio
import time

import jwt
import pytest

from tests.helpers import TIMEOUT, start_gateway, wait_for
from tests.test_clients import collect, make_client

SECRET = "a-test-secret-of-at-least-32-bytes!"
LIFETIME = 1.2  # seconds: each token expires while its stream is open


class FreshTokens:
    """What an app hands its client: a new short-lived token on every call."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        claims = {
            "sub": "reader",
            "exp": time.time() + LIFETIME,
            "streamgate": {"subscribe": ["news"]},
        }
        return jwt.encode(claims, SECRET, algorithm="HS256")


@pytest.mark.parametrize("kind", ["chunked", "sse", "ws", "sync"])
async def test_stream_ends_at_exp_and_the_client_resumes_with_a_fresh_token(kind: str) -> None:
    publisher = jwt.encode({"sub": "app", "streamgate": {"publish": ["news"]}}, SECRET)
    headers = {"Authorization": f"Bearer {publisher}", "Content-Type": "application/json"}
    async with start_gateway(auth_key=SECRET, auth_leeway=0, topics=("news",)) as gw:
        tokens = FreshTokens()
        client = make_client(kind, gw, "news", since="0-0", token=tokens)
        reading = asyncio.create_task(collect(client, 40))
        await wait_for(lambda: sum(gw.context.hub.subscriber_counts("news").values()) == 1)
        published = []
        for i in range(40):  # 40 messages over about three token lifetimes
            async with gw.session.post(f"{gw.url}/topics/news", json=i, headers=headers) as r:
                assert r.status == 201, await r.text()
                published.append((await r.json())["id"])
            await asyncio.sleep(3 * LIFETIME / 40)
        msgs, _ = await asyncio.wait_for(reading, TIMEOUT)
        expired = gw.context.disconnects["token_expired"]
    assert [m.id for m in msgs] == published  # nothing lost, nothing twice
    assert expired >= 2  # the gateway ended the stream at each exp
    assert tokens.calls >= expired + 1  # and each reconnection had a fresh token
