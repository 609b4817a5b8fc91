"""Never a silent loss across a restart: a resume the broker cannot vouch for
(its id is older than the topic's current history, or the history is gone)
starts with a gap event, then replays what is kept, then goes live."""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import orjson
import pytest

from tests.helpers import (
    TIMEOUT,
    GatewayProcess,
    free_port,
    poll_until,
    spawn_gateway,
    start_gateway,
    wait_for,
)
from tests.wire import read_until

TRANSPORTS = ["chunked", "sse", "ws"]


async def publish(gw: GatewayProcess, session: aiohttp.ClientSession, data: Any) -> str:
    async with session.post(
        f"{gw.url}/topics/news",
        data=orjson.dumps(data),
        headers={"Content-Type": "application/json"},
    ) as r:
        assert r.status == 201, await r.text()
        return str((await r.json())["id"])


async def subscribed(gw: GatewayProcess, session: aiohttp.ClientSession) -> bool:
    async with session.get(f"{gw.url}/topics") as r:
        topics = (await r.json())["topics"]
    return any(t["name"] == "news" and sum(t["subscribers"].values()) == 1 for t in topics)


@pytest.mark.parametrize("declared", [False, True], ids=["published-topic", "declared-topic"])
@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resume_after_a_memory_gateway_restart(transport: str, declared: bool) -> None:
    port = free_port()
    args = ("--topic", "news") if declared else ()
    async with aiohttp.ClientSession() as session:
        async with spawn_gateway(*args, port=port) as gw:
            old = [await publish(gw, session, i) for i in range(5)]
        async with spawn_gateway(*args, port=port) as gw:
            # The client read up to the third message; 4 and 5 died with the process.
            reader = asyncio.create_task(
                read_until(gw.url, transport, "news", query=f"since={old[2]}", count=2)
            )
            await poll_until(lambda: subscribed(gw, session), what="the resume to subscribe")
            new = [await publish(gw, session, i) for i in (10, 11)]
            got = await asyncio.wait_for(reader, TIMEOUT)
            assert got.controls[0] == {
                "type": "gap",
                "topic": "news",
                "since": old[2],
                "first_id": None,
            }
            assert got.ids == new  # then live
            # From an id of this epoch on, nothing is lost and no gap is claimed.
            again = await read_until(gw.url, transport, "news", query=f"since={new[0]}", count=1)
            assert again.ids == new[1:] and again.controls == []
            async with session.get(f"{gw.url}/topics/news/messages?since={old[2]}") as r:
                doc = await r.json()
            assert doc["gap"] is True and [m["id"] for m in doc["messages"]] == new


async def test_a_fresh_subscriber_from_the_start_is_told_of_no_gap() -> None:
    async with start_gateway() as gw:
        reader = asyncio.create_task(read_until(gw.url, "sse", "news", query="since=0-0", count=1))
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")["sse"] == 1)
        first = await gw.publish("news", 1)
        got = await reader
        assert got.ids == [first] and got.controls == []


async def test_an_id_newer_than_anything_this_history_issued_is_a_gap_then_everything() -> None:
    """A gateway restarted after its clock stepped back issues ids older than the
    ones its clients hold: a resume with such an id must not hide the new
    messages behind it."""
    async with start_gateway() as gw:
        first = await gw.publish("news", 1)
        ahead = "99999999999999-0"  # from a history whose clock ran ahead
        for transport in TRANSPORTS:
            got = await read_until(gw.url, transport, "news", query=f"since={ahead}", count=1)
            assert got.controls[0]["type"] == "gap" and got.ids == [first], transport
        async with gw.session.get(f"{gw.url}/topics/news/messages?since={ahead}") as r:
            doc = await r.json()
        assert doc["gap"] is True and [m["id"] for m in doc["messages"]] == [first]
        # and live messages reach such a subscriber too
        reader = asyncio.create_task(
            read_until(gw.url, "sse", "news", query=f"since={ahead}", count=2)
        )
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")["sse"] == 1)
        second = await gw.publish("news", 2)
        assert (await reader).ids == [first, second]
