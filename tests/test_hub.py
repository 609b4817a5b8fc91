"""The hub with recording sinks: encode once, one write per sweep, race-free resume."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import orjson
import pytest

from gateway import errors
from gateway.broker.memory import MemoryBroker
from gateway.errors import Disconnect
from gateway.framing import Format, Wire, encode_messages
from gateway.hub import HOLD_FROM, JOIN_MAX, SWEEP_SLICE, Batch, Hub, Subscriber
from gateway.ids import ZERO, parse_id
from gateway.message import Message
from tests.helpers import wait_for


class RecordingSink:
    """Implements gateway.hub.Sink and records every call (no shared wire: every
    batch comes through write_batch)."""

    shared_wire = None

    def __init__(self, transport_name: str = "sse", fmt: Format = Format.SSE) -> None:
        self.transport_name = transport_name
        self.fmt = fmt
        self.closed = False
        self.reason: Disconnect | None = None
        self.writes: list[bytes] = []
        self.ids: list[str] = []
        self.controls: list[dict[str, object]] = []
        self.gate: asyncio.Event | None = None  # when set, drain() waits for it

    def write_batch(self, batch: Batch) -> None:
        self.writes.append(batch.wire(Wire.of(self.fmt, False)))
        self.ids.extend(m.id for m in batch.messages)

    def write_messages(self, messages: Sequence[Message]) -> None:
        self.writes.append(b"".join(m.json for m in messages))
        self.ids.extend(m.id for m in messages)

    def write_control(self, type: str, obj_json: bytes) -> None:
        self.controls.append(orjson.loads(obj_json))

    async def drain(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    def close(self, reason: Disconnect) -> None:
        if not self.closed:
            self.closed, self.reason = True, reason


async def settle() -> None:
    """Let call_soon flushes run."""
    for _ in range(3):
        await asyncio.sleep(0)


def make(history_size: int = 100) -> tuple[MemoryBroker, Hub]:
    broker = MemoryBroker(history_size=history_size, max_topics=10)
    return broker, Hub(broker)


def pub(broker: MemoryBroker, topic: str, *items: object) -> list[str]:
    return [m.id for m in broker.publish_now(topic, [orjson.dumps(i) for i in items])]


async def subscribe(
    hub: Hub, sink: RecordingSink, topic: str = "t", since: str | None = None, **kw: int
) -> Subscriber:
    sub = Subscriber(sink, topic, max_backlog_bytes=kw.pop("max_backlog_bytes", 1 << 20), **kw)
    await hub.subscribe(sub, None if since is None else parse_id(since))
    return sub


async def test_one_encoding_and_one_write_per_flush_for_every_subscriber() -> None:
    broker, hub = make()
    await broker.create_topic("t")
    sinks = [RecordingSink() for _ in range(50)]
    for sink in sinks:
        await subscribe(hub, sink)
    ids = pub(broker, "t", 1, 2, 3)  # three messages in one loop turn
    await settle()
    first = sinks[0].writes[0]
    for sink in sinks:
        assert sink.ids == ids
        assert len(sink.writes) == 1  # one write carrying all three
        assert sink.writes[0] is first  # the very same bytes object, encoded once


async def test_replay_after_since_then_live_without_duplicates() -> None:
    broker, hub = make()
    ids = pub(broker, "t", *range(5))
    sink = RecordingSink()
    await subscribe(hub, sink, since=ids[1])
    ids += pub(broker, "t", 5, 6)
    await settle()
    assert sink.ids == ids[2:]


async def test_subscribe_between_publish_and_flush_gets_no_duplicate() -> None:
    broker, hub = make()
    await broker.create_topic("t")
    early = RecordingSink()
    await subscribe(hub, early)
    ids = pub(broker, "t", "a", "b")  # pending: not flushed yet
    late = RecordingSink()
    await subscribe(hub, late, since="0-0")  # replays a, b from history
    await settle()  # now the flush carrying a, b happens
    assert late.ids == ids
    assert early.ids == ids


async def test_live_messages_during_a_slow_replay_arrive_once_in_order() -> None:
    broker, hub = make(history_size=1000)
    ids = pub(broker, "t", *range(600))  # more than one replay slice
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    task = asyncio.create_task(subscribe(hub, sink, since="0-0"))
    for round in range(5):  # publish while the replay waits on the socket
        await asyncio.sleep(0)
        ids += pub(broker, "t", f"live{round}")
        await settle()
    sink.gate.set()
    await asyncio.wait_for(task, 5)
    ids += pub(broker, "t", "after")
    await settle()
    assert sink.ids == ids
    assert len(set(sink.ids)) == len(sink.ids)


async def test_live_only_subscription_skips_history() -> None:
    broker, hub = make()
    pub(broker, "t", 1, 2)
    sink = RecordingSink()
    await subscribe(hub, sink)
    later = pub(broker, "t", 3)
    await settle()
    assert sink.ids == later


async def test_limit_ends_the_subscription_exactly() -> None:
    broker, hub = make()
    ids = pub(broker, "t", 1, 2)
    sink = RecordingSink()
    sub = await subscribe(hub, sink, since="0-0", limit=3)
    ids += pub(broker, "t", 3, 4, 5)
    await settle()
    assert sink.ids == ids[:3]
    assert sink.reason is errors.LIMIT_REACHED
    assert sub.last_id == ids[2]


async def test_gap_is_announced_then_retained_history_replayed() -> None:
    broker, hub = make(history_size=3)
    ids = pub(broker, "t", *range(10))
    sink = RecordingSink()
    await subscribe(hub, sink, since=ids[0])
    assert sink.controls == [{"type": "gap", "topic": "t", "since": ids[0], "first_id": ids[7]}]
    assert sink.ids == ids[7:]


async def test_no_gap_when_since_is_inside_history() -> None:
    broker, hub = make(history_size=3)
    ids = pub(broker, "t", *range(10))
    sink = RecordingSink()
    await subscribe(hub, sink, since=ids[7])
    assert sink.controls == []
    assert sink.ids == ids[8:]


async def test_backlog_overflow_during_replay_disconnects_as_slow_consumer() -> None:
    broker, hub = make()
    pub(broker, "t", "x")
    sink = RecordingSink()
    sink.gate = asyncio.Event()
    task = asyncio.create_task(subscribe(hub, sink, since="0-0", max_backlog_bytes=200))
    await asyncio.sleep(0)
    for _ in range(10):
        pub(broker, "t", "y" * 50)
        await settle()
    assert sink.reason is errors.SLOW_CONSUMER
    sink.gate.set()
    await asyncio.wait_for(task, 5)


async def test_a_failing_subscriber_does_not_stop_the_others() -> None:
    broker, hub = make()
    await broker.create_topic("t")

    class Broken(RecordingSink):
        def write_batch(self, batch: Batch) -> None:
            raise RuntimeError("boom")

    broken, good = Broken(), RecordingSink()
    await subscribe(hub, broken)
    await subscribe(hub, good)
    ids = pub(broker, "t", 1)
    await settle()
    assert good.ids == ids
    assert broken.closed


async def test_subscriber_counts_per_transport() -> None:
    broker, hub = make()
    await broker.create_topic("t")
    subs = [
        await subscribe(hub, RecordingSink("ws", Format.WS)),
        await subscribe(hub, RecordingSink("sse")),
        await subscribe(hub, RecordingSink("sse")),
    ]
    assert hub.subscriber_counts("t") == {"chunked": 0, "sse": 2, "ws": 1}
    for sub in subs:
        hub.unsubscribe(sub)
    assert hub.subscriber_counts("t") == {"chunked": 0, "sse": 0, "ws": 0}


@pytest.mark.parametrize("write_delay", [0.0, 0.02])
async def test_write_delay_coalesces_publishes_across_loop_turns(write_delay: float) -> None:
    broker = MemoryBroker(history_size=100, max_topics=10)
    hub = Hub(broker, write_delay=write_delay)
    await broker.create_topic("t")
    sink = RecordingSink()
    await subscribe(hub, sink)
    ids: list[str] = []
    for i in range(5):
        ids += pub(broker, "t", i)
        await asyncio.sleep(0)
    await asyncio.sleep(write_delay + 0.05)
    assert sink.ids == ids
    assert len(sink.writes) == (1 if write_delay else 5)


async def test_end_topic_closes_its_local_subscribers_only() -> None:
    broker, hub = make()
    for topic in ("t", "u"):
        await broker.create_topic(topic)
    on_t = [await subscribe(hub, RecordingSink(), "t") for _ in range(3)]
    on_u = await subscribe(hub, RecordingSink(), "u")
    assert sorted(hub.subscribed_topics()) == ["t", "u"]
    assert hub.end_topic("t") == 3
    assert [s.sink.reason for s in on_t] == [errors.TOPIC_DELETED] * 3
    assert not on_u.sink.closed
    for sub in on_t:  # what each transport does once its sink is closed
        hub.unsubscribe(sub)
    assert hub.subscribed_topics() == ["u"]
    assert hub.end_topic("t") == 0


async def test_subscribing_to_a_topic_deleted_meanwhile_ends_with_topic_deleted() -> None:
    broker, hub = make()
    await broker.create_topic("t")
    assert await broker.delete_topic("t")  # between the request's check and the subscription
    sink = RecordingSink()
    sub = await subscribe(hub, sink, "t", since="0-0")
    assert sink.reason is errors.TOPIC_DELETED
    assert sink.ids == [] and sink.controls == []
    hub.unsubscribe(sub)


class CostlySink(RecordingSink):
    """A sink whose every write blocks the loop (a sweep over many sockets)."""

    def write_batch(self, batch: Batch) -> None:
        time.sleep(0.03)
        super().write_batch(batch)


async def live_sinks(
    hub: Hub, n: int, sink: type[RecordingSink] = RecordingSink
) -> list[RecordingSink]:
    sinks = [sink() for _ in range(n)]
    for s in sinks:
        await subscribe(hub, s)
    assert not any(s.closed for s in sinks)
    return sinks


async def test_a_message_published_during_a_sweep_joins_it() -> None:
    broker, hub = make()
    await broker.create_topic("t")
    sinks = await live_sinks(hub, 3 * SWEEP_SLICE)
    ids = pub(broker, "t", "a")
    await asyncio.sleep(0)  # one loop turn: the sweep's first step, one slice
    assert [len(s.writes) for s in sinks] == [1] * SWEEP_SLICE + [0] * 2 * SWEEP_SLICE
    ids += pub(broker, "t", "b")  # while the sweep is under way
    await settle()
    passed, ahead = sinks[:SWEEP_SLICE], sinks[SWEEP_SLICE:]
    for sink in sinks:
        assert sink.ids == ids  # each once, in order
    for sink in passed:  # a in the first sweep, b in the next
        assert len(sink.writes) == 2 and sink.writes[1] is passed[0].writes[1]
    for sink in ahead:  # both in one write, the same bytes for all of them
        assert len(sink.writes) == 1 and sink.writes[0] is ahead[0].writes[0]
    a, b = (await broker.read("t", ZERO)).messages
    assert passed[0].writes == [encode_messages(Format.SSE, [(m.id, m.json)]) for m in (a, b)]
    assert ahead[0].writes == [encode_messages(Format.SSE, [(m.id, m.json) for m in (a, b)])]


async def test_a_flood_past_join_max_is_swept_in_one_go_as_a_flush_was() -> None:
    broker, hub = make(history_size=1000)
    await broker.create_topic("t")
    sinks = await live_sinks(hub, 3 * SWEEP_SLICE)
    ids = pub(broker, "t", *range(JOIN_MAX + 1))
    await asyncio.sleep(0)  # one loop turn: the whole sweep, one write each
    for sink in sinks:
        assert sink.ids == ids and len(sink.writes) == 1


async def test_a_subscriber_that_comes_during_a_sweep_misses_nothing_and_gets_nothing_twice() -> (
    None
):
    broker, hub = make()
    await broker.create_topic("t")
    sinks = await live_sinks(hub, 2 * SWEEP_SLICE)
    ids = pub(broker, "t", "a", "b")
    await asyncio.sleep(0)  # the sweep is under way
    late, resumed = RecordingSink(), RecordingSink()
    joining = [
        asyncio.create_task(subscribe(hub, late)),
        asyncio.create_task(subscribe(hub, resumed, since="0-0")),
    ]
    ids += pub(broker, "t", "c")
    await asyncio.wait_for(asyncio.gather(*joining), 5)
    ids += pub(broker, "t", "d")
    await settle()
    assert resumed.ids == ids
    assert late.ids == ids[3:]  # from its arrival on: c came before it subscribed
    for sink in sinks:
        assert sink.ids == ids


async def test_the_hold_waits_only_when_messages_outpace_the_sweeps() -> None:
    broker = MemoryBroker(history_size=100, max_topics=10)
    hub = Hub(broker, flush_hold=0.2)
    await broker.create_topic("t")
    # A sweep of two steps: the first subscriber's write takes 30 ms.
    first, *rest = await live_sinks(hub, 1, CostlySink) + await live_sinks(hub, SWEEP_SLICE)
    published = pub(broker, "t", 0)
    await asyncio.sleep(0)  # the first step
    published += pub(broker, "t", *range(1, 1 + HOLD_FROM))  # outpacing the sweep
    await settle()
    assert rest[-1].ids == published  # the sweep under way took them to the rest
    assert first.ids == published[:1]  # held: the last sweep was busy for 30 ms
    hub.sweep_now("t")  # what a publish calls: a held sweep stays held
    assert first.ids == published[:1]
    await wait_for(lambda: first.ids == published, what="the held sweep")
    assert len(first.writes) == 2  # one write for all that arrived
    await asyncio.sleep(0.1)  # quiet for longer than a sweep takes
    published += pub(broker, "t", "quiet")
    hub.sweep_now("t")  # not held: written at once, before any loop turn
    assert first.ids == published
    await settle()  # the rest of that sweep
    published += pub(broker, "t", "next")
    await asyncio.sleep(0)
    published += pub(broker, "t", "one")  # one message during a sweep: no hold
    await settle()
    assert first.ids == published and len(first.writes) == 5


async def test_without_the_hold_every_message_is_swept_at_once() -> None:
    broker = MemoryBroker(history_size=100, max_topics=10)
    hub = Hub(broker, flush_hold=0.0)
    sink = CostlySink()
    await broker.create_topic("t")
    await hub.subscribe(Subscriber(sink, "t", max_backlog_bytes=1 << 20), None)
    assert not sink.closed
    for i in range(3):
        broker.publish_now("t", [b"%d" % i])
        await settle()
    assert len(sink.writes) == 3


async def test_every_subscriber_gets_every_message_once_in_order_whatever_the_interleaving() -> (
    None
):
    """Small and large publishes (past JOIN_MAX) between the steps of sweeps,
    subscribers that come and resume meanwhile: each sink sees each id once, in order."""
    import random

    rng = random.Random(7)
    broker, hub = make(history_size=100_000)
    hub.flush_hold = 0.001
    await broker.create_topic("t")
    sinks = await live_sinks(hub, 3 * SWEEP_SLICE + 5)
    ids: list[str] = []
    joined: list[tuple[RecordingSink, str | None, int, asyncio.Task[Subscriber]]] = []
    for round in range(200):
        size = rng.choice([1, 1, 2, 3, JOIN_MAX // 2, JOIN_MAX + 7])
        ids += pub(broker, "t", *(f"{round}.{i}" for i in range(size)))
        if round % 40 == 13:  # a subscriber that resumes from the start, and one from now on
            for since in ("0-0", None):
                sink = RecordingSink()
                task = asyncio.create_task(subscribe(hub, sink, since=since))
                joined.append((sink, since, len(ids), task))
        for _ in range(rng.randrange(3)):
            await asyncio.sleep(0)
    await asyncio.gather(*(task for *_, task in joined))
    await wait_for(lambda: all(s.ids == ids for s in sinks), what="every message everywhere")
    for sink, since, published, _ in joined:
        if since is not None:
            assert sink.ids == ids
        else:  # what came after it subscribed, nothing twice
            skipped = len(ids) - len(sink.ids)
            assert skipped >= published and sink.ids == ids[skipped:]
