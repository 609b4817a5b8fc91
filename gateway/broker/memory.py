"""The in-memory broker: the embedded default, nothing else to run.

History is bounded three ways: ``history_size`` messages per topic, a byte
budget over every topic (``max_history_bytes``), and idle topics expire
(:meth:`MemoryBroker.expire_topics`, driven by the sweep in ``expiry.py``).

The byte budget evicts the globally oldest messages first, once per publish
(after the topic's own bound), until the total fits. Every message gets a
global publish sequence number; a min-heap holds one entry per topic with
history, keyed by the sequence number of that topic's oldest message when the
entry was pushed. A topic's head only moves forward (its own ``history_size``
bound drops the head without touching the heap), so an entry's key is never
above the true head: a popped entry whose key is stale is pushed back with the
current head and the pop tried again. Each publish costs O(log topics)
amortised, with no scan of the topics.
"""

from __future__ import annotations

import bisect
import heapq
import time
from collections import deque
from collections.abc import Callable, Collection, Sequence

from ..errors import Conflict, NotFound
from ..ids import IdGenerator, Key
from ..message import Message, now_ms
from . import HistoryRead, Listener, TopicInfo, resume_gap, unknown_since

__all__ = ["MESSAGE_OVERHEAD", "MemoryBroker"]

MESSAGE_OVERHEAD = 384
"""Bytes a retained message costs beyond ``len(message.json)``, counted against
``max_history_bytes``: the ``Message`` object (5 slots, 80 bytes), its key tuple
(64) and the int of its millisecond or sequence (32), the id string (80), the ts
float (32), the ``bytes`` object's header (33), its slot in the topic's history
deque (8), and the global sequence number (an int, 32, and its slot in a second
deque, 8); sizes as pymalloc rounds them. Measured as the growth of the
process's RSS over 400,000 retained messages of 78-127 bytes, minus their JSON
(CPython 3.11, 64-bit): 363 bytes each when every id has its own millisecond,
380 when bursts share one (the sequence ints are then distinct objects);
rounded up. tests/test_history_limits.py measures it again with tracemalloc.
Per-topic state (about 1.7 KiB: the deques' first blocks, the id generator) is
not counted: ``max_topics`` bounds it."""

_HEAP_SLACK = 64
"""The heap of topic heads is rebuilt when it holds more than twice as many
entries as there are topics, plus this: deleted topics leave stale entries."""


class _Topic:
    __slots__ = ("active", "bytes", "dead", "evicted_last", "history", "ids", "queued", "seqs")

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self.history: deque[Message] = deque(maxlen=size)
        self.seqs: deque[int] = deque(maxlen=size)
        """The global publish sequence number of each message in ``history``."""
        self.ids = IdGenerator(clock)
        # Key of the newest message that fell out of history: a resume from
        # before it has a gap.
        self.evicted_last: Key | None = None
        self.bytes = 0
        """Accounted bytes of this topic's history."""
        self.queued = False
        """Whether the heap of topic heads holds an entry for this topic."""
        self.dead = False
        """Deleted or expired: its heap entry, if any, is stale."""
        self.active = time.monotonic()
        """Last publish, creation, or sweep that found a local subscriber."""


def _message_key(m: Message) -> Key:
    return m.key


def _cost(m: Message) -> int:
    return len(m.json) + MESSAGE_OVERHEAD


class MemoryBroker:
    """History per topic in a bounded deque; ids from the wall clock.

    Everything happens synchronously on the event loop, so a read and a
    subscription made in the same loop step see exactly the same history.
    """

    def __init__(
        self,
        *,
        history_size: int,
        max_topics: int,
        max_history_bytes: int | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._history_size = history_size
        self._max_topics = max_topics
        self._max_bytes = max_history_bytes
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        self._listener: Listener = lambda m: None
        self._seq = 0
        self._bytes = 0
        self._heads: list[tuple[int, _Topic]] = []
        """Min-heap of (sequence number of a topic's head when pushed, topic)."""
        self.errors = 0
        """Operations that failed: none, in memory (the Broker protocol's figure)."""

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def lease(self, name: str, ttl: float, *, renew: bool) -> bool:
        return True  # one process: every lease is its own

    async def release(self, name: str) -> None:
        return None

    async def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    async def watch(self, topic: str) -> None:
        return None  # every publish reaches the listener directly

    def unwatch(self, topic: str) -> None:
        return None

    def history_bytes(self) -> int:
        """Bytes of history accounted against ``max_history_bytes``."""
        return self._bytes

    def _topic(self, topic: str) -> _Topic:
        t = self._topics.get(topic)
        if t is None:
            if len(self._topics) >= self._max_topics:
                raise Conflict(
                    f"the gateway holds {self._max_topics} topics already (--max-topics)",
                    code="too_many_topics",
                )
            t = self._topics[topic] = _Topic(self._history_size, self._clock)
        return t

    async def create_topic(self, topic: str) -> Key:
        return self._topic(topic).ids.last

    def publish_now(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        """Synchronous publish (the memory broker never waits)."""
        t = self._topic(topic)
        t.active = time.monotonic()
        history, seqs, ids = t.history, t.seqs, t.ids
        full = history.maxlen
        seq = self._seq
        delta = 0
        out = []
        ts = now_ms()
        for data in data_json:
            msg = Message.create(ids.next(), topic, data, ts)
            if len(history) == full:
                head = history[0]  # the append below drops it (and its seq)
                t.evicted_last = head.key
                delta -= len(head.json) + MESSAGE_OVERHEAD
            seq += 1
            history.append(msg)
            seqs.append(seq)
            delta += len(msg.json) + MESSAGE_OVERHEAD
            out.append(msg)
        self._seq = seq
        t.bytes += delta
        self._bytes += delta
        if not t.queued and history:
            heapq.heappush(self._heads, (seqs[0], t))
            t.queued = True
        # Once per publish, after the topic's own bound: no eviction is spent on
        # a message that the rest of the batch pushes out of its topic anyway.
        budget = self._max_bytes
        while budget is not None and self._bytes > budget:
            self._evict_oldest()
        listener = self._listener
        for msg in out:
            listener(msg)
        return out

    def _evict_oldest(self) -> None:
        """Drop the oldest retained message of all topics."""
        heads = self._heads
        while heads:
            seq, t = heads[0]
            if t.dead or not t.history:
                heapq.heappop(heads)
                t.queued = False
                continue
            head_seq = t.seqs[0]
            if head_seq != seq:  # the topic's own bound moved its head: refresh
                heapq.heapreplace(heads, (head_seq, t))
                continue
            msg = t.history.popleft()
            t.seqs.popleft()
            t.evicted_last = msg.key
            cost = _cost(msg)
            t.bytes -= cost
            self._bytes -= cost
            if t.history:
                heapq.heapreplace(heads, (t.seqs[0], t))
            else:
                heapq.heappop(heads)
                t.queued = False
            return
        raise AssertionError("history bytes are accounted but no topic holds any")

    async def publish(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        return self.publish_now(topic, data_json)

    def read_now(self, topic: str, since: Key | None, limit: int | None = None) -> HistoryRead:
        t = self._topics.get(topic)
        if t is None:
            raise NotFound(f"unknown topic {topic!r}")
        history = t.history
        unknown = unknown_since(since, t.ids.last)
        if unknown:
            start = 0
        else:
            start = 0 if since is None else bisect.bisect_right(history, since, key=_message_key)
        stop = len(history) if limit is None else min(len(history), start + limit)
        messages = [history[i] for i in range(start, stop)]
        gap = unknown or resume_gap(since, t.evicted_last, history[0].key if history else None)
        first_id = history[0].id if history else None
        return HistoryRead(messages, gap, first_id, t.ids.last)

    async def read(self, topic: str, since: Key | None, limit: int | None = None) -> HistoryRead:
        return self.read_now(topic, since, limit)

    async def topics(self) -> list[TopicInfo]:
        return [
            TopicInfo(
                name,
                t.history[0].id if t.history else None,
                t.history[-1].id if t.history else None,
                len(t.history),
            )
            for name, t in self._topics.items()
        ]

    # -- removing topics ---------------------------------------------------------------

    def _remove(self, topic: str) -> bool:
        t = self._topics.pop(topic, None)
        if t is None:
            return False
        t.dead = True
        self._bytes -= t.bytes
        t.history.clear()
        t.seqs.clear()
        t.bytes = 0
        if len(self._heads) > 2 * len(self._topics) + _HEAP_SLACK:
            # Bounded whatever the churn of topics: drop the stale entries.
            live = [e for e in self._heads if not e[1].dead]
            heapq.heapify(live)
            self._heads = live
        return True

    async def delete_topic(self, topic: str) -> bool:
        """Remove ``topic`` and its history; False when there was no such topic."""
        return self._remove(topic)

    async def expire_topics(self, ttl: float, keep: Collection[str]) -> list[str]:
        """Remove the topics idle for ``ttl`` seconds; returns their names.

        Topics in ``keep`` (local subscribers, declared at start) count as
        active now. One pass over the topics: the sweep runs at most a few
        times per ``ttl``, never per publish.
        """
        now = time.monotonic()
        keep = set(keep)
        for name in keep:
            t = self._topics.get(name)
            if t is not None:
                t.active = now
        idle = [
            name for name, t in self._topics.items() if now - t.active >= ttl and name not in keep
        ]
        for name in idle:
            self._remove(name)
        return idle
