"""What the metrics cost, in process: ``python -m bench.metricscost``.

Timings of the gateway's own objects (``build_app``'s context, its hub and
memory broker), metrics on and off, best of 7 repeats, so that what else the
machine runs weighs as little as it can:

* a publish with no subscriber (``ctx.publish``: the broker's, and with
  metrics the counting and timing around it);
* a publish and its flush to N subscribers whose sinks frame the shared batch
  and write nowhere (the hub's whole per-flush work, without sockets), per
  message;
* a scrape of ``/metrics`` (the registry's text) with 10,000 open streams.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from prometheus_client.exposition import generate_latest

from gateway.app import build_app
from gateway.context import CONTEXT, Context
from gateway.errors import Disconnect
from gateway.framing import Format, Wire
from gateway.hub import Batch, Subscriber
from gateway.message import Message
from gateway.settings import Settings

PUBLISHES = 20_000
FLUSHES = 500


class NullSink:
    """A subscriber's sink that frames what the hub gives it and sends nothing."""

    transport_name = "ws"
    closed = False
    shared_wire: Wire | None = Wire.of(Format.WS, False)

    def write(self, data: bytes) -> None: ...

    def write_batch(self, batch: Batch) -> None:
        batch.wire(Wire.of(Format.WS, False))

    def write_messages(self, messages: Sequence[Message]) -> None: ...

    def write_control(self, type: str, obj_json: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self, reason: Disconnect) -> None: ...


class IdleStream:
    transport_name = "sse"
    queued_bytes = 0


def context(metrics: bool) -> Context:
    return build_app(Settings(tick_interval=0, metrics=metrics))[CONTEXT]


async def best(fn: Any, count: int, repeat: int = 7) -> float:
    """Microseconds per call of ``await fn()``, the best of ``repeat`` runs."""
    shortest = float("inf")
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(count):
            await fn()
        shortest = min(shortest, (time.perf_counter() - started) / count)
    return shortest * 1e6


async def publish_cost(metrics: bool) -> float:
    ctx = context(metrics)
    await ctx.broker.create_topic("t")
    return await best(lambda: ctx.publish("t", [b"1"]), PUBLISHES)


async def flush_cost(metrics: bool, n: int) -> float:
    ctx = context(metrics)
    await ctx.broker.create_topic("t")
    for _ in range(n):
        await ctx.hub.subscribe(Subscriber(NullSink(), "t", max_backlog_bytes=1 << 20), None)

    async def one() -> None:
        await ctx.publish("t", [b'{"n":1}'])
        await asyncio.sleep(0)  # the flush runs in this loop turn

    return await best(one, FLUSHES)


async def main() -> None:
    for metrics in (False, True, False, True):
        print(
            f"metrics {'on ' if metrics else 'off'}: publish, no subscriber "
            f"{await publish_cost(metrics):6.2f} us; publish and flush to 1 subscriber "
            f"{await flush_cost(metrics, 1):6.2f} us, to 1,000 "
            f"{await flush_cost(metrics, 1000):8.2f} us"
        )
    ctx = context(True)
    for _ in range(10_000):
        ctx.sessions[IdleStream()] = None  # type: ignore[index]
    assert ctx.metrics is not None
    registry = ctx.metrics.registry
    shortest = float("inf")
    for _ in range(7):
        started = time.perf_counter()
        generate_latest(registry)
        shortest = min(shortest, time.perf_counter() - started)
    print(f"a scrape with 10,000 open streams: {shortest * 1e3:.2f} ms")


if __name__ == "__main__":
    asyncio.run(main())
