"""The in-memory broker: the embedded default, nothing else to run."""

from __future__ import annotations

import bisect
import time
from collections import deque
from collections.abc import Callable, Sequence

from ..errors import Conflict, NotFound
from ..ids import IdGenerator, Key
from ..message import Message, now_ms
from . import HistoryRead, Listener, TopicInfo

__all__ = ["MemoryBroker"]


class _Topic:
    __slots__ = ("evicted_last", "history", "ids")

    def __init__(self, size: int, clock: Callable[[], float]) -> None:
        self.history: deque[Message] = deque(maxlen=size)
        self.ids = IdGenerator(clock)
        # Key of the newest message that fell out of history: a resume from
        # before it has a gap.
        self.evicted_last: Key | None = None


def _message_key(m: Message) -> Key:
    return m.key


class MemoryBroker:
    """History per topic in a bounded deque; ids from the wall clock.

    Everything happens synchronously on the event loop, so a read and a
    subscription made in the same loop step see exactly the same history.
    """

    def __init__(
        self, *, history_size: int, max_topics: int, clock: Callable[[], float] = time.time
    ) -> None:
        self._history_size = history_size
        self._max_topics = max_topics
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        self._listener: Listener = lambda m: None

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    async def start(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def has_topic(self, topic: str) -> bool:
        return topic in self._topics

    async def watch(self, topic: str) -> None:
        return None  # every publish reaches the listener directly

    def unwatch(self, topic: str) -> None:
        return None

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

    async def create_topic(self, topic: str) -> None:
        self._topic(topic)

    def publish_now(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        """Synchronous publish (the memory broker never waits)."""
        t = self._topic(topic)
        history = t.history
        out = []
        ts = now_ms()
        for data in data_json:
            msg = Message.create(t.ids.next(), topic, data, ts)
            if len(history) == history.maxlen:
                t.evicted_last = history[0].key
            history.append(msg)
            out.append(msg)
            self._listener(msg)
        return out

    async def publish(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        return self.publish_now(topic, data_json)

    def read_now(self, topic: str, since: Key | None, limit: int | None = None) -> HistoryRead:
        t = self._topics.get(topic)
        if t is None:
            raise NotFound(f"unknown topic {topic!r}")
        history = t.history
        start = 0 if since is None else bisect.bisect_right(history, since, key=_message_key)
        stop = len(history) if limit is None else min(len(history), start + limit)
        messages = [history[i] for i in range(start, stop)]
        gap = since is not None and t.evicted_last is not None and since < t.evicted_last
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
