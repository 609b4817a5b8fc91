"""Resuming per-connection streams far ahead: ``skip``, ``--max-skip``, and a
loop that keeps every other connection moving meanwhile.

Every test runs a real gateway on loopback with real clients. The pace tests
follow the ticking shared topic with a real subscriber and stamp each message
as it arrives: the gateway and the subscriber share the event loop, so a
request that held the loop shows up as a gap between two ticks.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import websockets

from gateway.settings import from_args, from_env
from gateway.sources import PerConnection, count
from tests import sample_sources
from tests.helpers import GatewayUnderTest, start_gateway, wait_for
from tests.wire import open_reader, read_until

TRANSPORTS = ["chunked", "sse", "ws"]
STREAMS = (
    "rows=tests.sample_sources:rows",
    "endless=tests.sample_sources:endless",
)
TICK = 0.05
PACE = 0.5
"""The largest gap between two ticks a subscriber may see (the issue's bound)."""
FAR = 10**12


class Ticks:
    """A real chunked subscriber of ``ticks`` that stamps every message's arrival."""

    def __init__(self, gw: GatewayUnderTest) -> None:
        self.gw = gw
        self.arrivals: list[float] = []
        self.start = 0

    async def follow(self) -> None:
        loop = asyncio.get_running_loop()
        async with open_reader(self.gw.url, "chunked", "ticks") as (_, items):
            async for item in items:
                if not item.is_control:
                    self.arrivals.append(loop.time())

    async def largest_gap(self) -> float:
        """The largest gap since the watch began, once three more ticks came in."""
        seen = len(self.arrivals)
        await wait_for(lambda: len(self.arrivals) >= seen + 3, what="three more ticks")
        window = self.arrivals[self.start :]
        return max(b - a for a, b in itertools.pairwise(window))


@contextlib.asynccontextmanager
async def watching_ticks(gw: GatewayUnderTest) -> AsyncIterator[Ticks]:
    ticks = Ticks(gw)
    task = asyncio.create_task(ticks.follow())
    try:
        await wait_for(lambda: len(ticks.arrivals) >= 3, what="the ticks to flow")
        ticks.start = len(ticks.arrivals) - 1
        yield ticks
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def get_json(gw: GatewayUnderTest, path: str) -> tuple[int, Any]:
    async with gw.session.get(f"{gw.url}{path}") as resp:
        return resp.status, await resp.json(content_type=None)


async def refused(gw: GatewayUnderTest, transport: str, path: str) -> tuple[int, Any]:
    """Status and JSON body of a stream request refused before the stream starts."""
    if transport != "ws":
        return await get_json(gw, f"/{transport}/{path}")
    with pytest.raises(websockets.InvalidStatus) as info:
        async with websockets.connect(f"{gw.ws_url}/ws/{path}"):
            pass
    return info.value.response.status_code, orjson.loads(info.value.response.body)


# -- the loop stays free ---------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_count_resumed_a_trillion_ahead_starts_at_once_and_stalls_no_one(
    transport: str,
) -> None:
    async with start_gateway(tick_interval=TICK) as gw, watching_ticks(gw) as ticks:
        reader = await read_until(gw.url, transport, "count", query=f"n={FAR}&since=0-{FAR - 10}")
        assert reader.ids == [f"0-{i}" for i in range(FAR - 9, FAR + 1)]
        assert [m.obj["data"] for m in reader.messages] == [
            {"n": i} for i in range(FAR - 9, FAR + 1)
        ]
        assert reader.controls == [{"type": "end", "reason": "complete", "last_id": f"0-{FAR}"}]
        gap = await ticks.largest_gap()
        assert gap < PACE, f"a subscriber of ticks waited {gap:.3f}s"


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_stream_without_skip_resumed_near_the_cap_stalls_no_one(transport: str) -> None:
    """The gateway re-runs it ~100,000 items (about a second of CPU at 10 µs an
    item) and lets the other connections run between every 64 of them."""
    async with start_gateway(tick_interval=TICK, streams=STREAMS) as gw:
        cap = gw.settings.max_skip
        assert cap == 100_000
        async with watching_ticks(gw) as ticks:
            reader = await read_until(
                gw.url, transport, "rows", query=f"since=0-{cap - 10}&limit=3&cost=0.00001"
            )
            assert reader.ids == [f"0-{cap - 9}", f"0-{cap - 8}", f"0-{cap - 7}"]
            assert [m.obj["data"]["i"] for m in reader.messages] == [cap - 9, cap - 8, cap - 7]
            gap = await ticks.largest_gap()
            assert gap < PACE, f"a subscriber of ticks waited {gap:.3f}s"


# -- the cap -------------------------------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_resuming_past_the_cap_is_400_bad_id_before_the_stream(transport: str) -> None:
    async with start_gateway(streams=STREAMS) as gw:
        status, body = await refused(gw, transport, "rows?since=0-100001")
        assert (status, body["error"]) == (400, "bad_id")
        assert "rows" in body["message"]
        assert "at most 100000 (--max-skip)" in body["message"]
        assert "cannot skip items itself" in body["message"]
        assert not gw.context.sessions


async def test_the_cap_is_exact_and_set_by_max_skip() -> None:
    async with start_gateway(streams=STREAMS, max_skip=100) as gw:
        reader = await read_until(gw.url, "chunked", "endless", query="since=0-100&limit=1")
        assert reader.ids == ["0-101"]
        assert reader.messages[0].obj["data"]["i"] == 101
        status, body = await get_json(gw, "/chunked/endless?since=0-101")
        assert (status, body["error"]) == (400, "bad_id")
        assert "at most 100 (--max-skip)" in body["message"]


async def test_max_skip_zero_still_resumes_streams_that_skip_themselves() -> None:
    async with start_gateway(streams=STREAMS, max_skip=0) as gw:
        reader = await read_until(gw.url, "chunked", "count", query="n=5&since=0-3")
        assert reader.ids == ["0-4", "0-5"]
        status, body = await get_json(gw, "/chunked/endless?since=0-1")
        assert (status, body["error"]) == (400, "bad_id")


# -- exactly the right items --------------------------------------------------------


@pytest.mark.parametrize("transport", TRANSPORTS)
@pytest.mark.parametrize("since", [0, 1, 6, 7])
async def test_count_resumed_gives_exactly_the_items_after_since(
    transport: str, since: int
) -> None:
    async with start_gateway() as gw:
        if since == 7 and transport == "sse":  # resumed past the end: 204, EventSource stops
            async with gw.session.get(f"{gw.url}/sse/count?n=7&since=0-7") as resp:
                assert resp.status == 204
            return
        reader = await read_until(gw.url, transport, "count", query=f"n=7&since=0-{since}")
        assert reader.ids == [f"0-{i}" for i in range(since + 1, 8)]
        assert [m.obj["data"] for m in reader.messages] == [{"n": i} for i in range(since + 1, 8)]
        last = "0-7" if since < 7 else None
        assert reader.controls == [{"type": "end", "reason": "complete", "last_id": last}]


async def test_count_resumed_past_a_20_digit_id_ends_at_once() -> None:
    async with start_gateway() as gw:
        since = f"0-{2**64 - 1}"  # the largest id there is
        reader = await read_until(gw.url, "chunked", "count", query=f"n={FAR}&since={since}")
        assert reader.ids == []
        assert reader.controls == [{"type": "end", "reason": "complete", "last_id": None}]
        async with gw.session.get(f"{gw.url}/sse/count?n={FAR}&since={since}") as resp:
            assert resp.status == 204


async def test_a_stream_without_skip_is_re_run_and_skipped_by_the_gateway() -> None:
    async with start_gateway(streams=STREAMS) as gw:
        reader = await read_until(gw.url, "chunked", "endless", query="since=0-500&limit=2")
        assert reader.ids == ["0-501", "0-502"]
        assert [m.obj["data"]["i"] for m in reader.messages] == [501, 502]
        assert sample_sources.PROGRESS["endless"] >= 502


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_skip_in_the_query_is_not_passed_to_the_stream(transport: str) -> None:
    async with start_gateway() as gw:
        reader = await read_until(gw.url, transport, "count", query="n=3&skip=2")
        assert reader.ids == ["0-1", "0-2", "0-3"]


# -- the parameter ------------------------------------------------------------------------


async def _kw_skip(*, skip: int = 0) -> AsyncIterator[int]:
    yield skip


async def _positional_skip(skip: int = 0) -> AsyncIterator[int]:
    yield skip


class _Unhashable:
    __hash__ = None  # type: ignore[assignment]

    def __call__(self, *, skip: int = 0) -> AsyncIterator[int]:
        return _kw_skip(skip=skip)


def test_only_a_keyword_only_skip_counts() -> None:
    assert PerConnection(count).takes_skip
    assert PerConnection(_kw_skip).takes_skip
    assert PerConnection(_Unhashable()).takes_skip
    assert not PerConnection(_positional_skip).takes_skip
    assert not PerConnection(sample_sources.endless).takes_skip  # **params would swallow it
    assert not PerConnection(sample_sources.rows).takes_skip
    assert not PerConnection(len).takes_skip  # type: ignore[arg-type]


async def test_count_starts_after_skip_in_constant_time() -> None:
    items = [i async for i in count(FAR, skip=FAR - 2)]
    assert items == [{"n": FAR - 1}, {"n": FAR}]
    assert [i async for i in count(3, skip=5)] == []


def test_max_skip_is_a_flag_and_a_variable() -> None:
    assert from_env({}).max_skip == 100_000
    assert from_env({"STREAMGATE_MAX_SKIP": "7"}).max_skip == 7
    assert from_args(["--max-skip", "9"], {}).max_skip == 9
    with pytest.raises(ValueError, match="max_skip"):
        from_env({"STREAMGATE_MAX_SKIP": "-1"})


async def _annotated(
    a: int, b: float | None = None, c: bool = False, d: str | int = "x", e: object = None
) -> AsyncIterator[object]:
    yield (a, b, c, d, e)


async def test_parameters_are_converted_by_their_annotations() -> None:
    stream = PerConnection(_annotated)
    assert sorted(stream.converters) == ["a", "b", "c"]  # str | int and object: as given
    params = {"a": "7", "b": "2.5", "c": "off", "d": "5", "e": "y"}
    assert await anext(stream(params, 0)) == (7, 2.5, False, "5", "y")
    for bad in ({"a": "7.0"}, {"a": "1", "b": "inf"}, {"a": "1", "c": "maybe"}):
        with pytest.raises(ValueError):
            stream(bad, 0)
