"""The Redis Streams broker: several gateway replicas serve the same topics.

Each topic is a Redis Stream (``<prefix>t:<topic>``); Redis assigns the ids
(``XADD *``), so an id means the same message on every replica, and the
message JSON is built from the entry's fields (id, topic, ts, data) the same
way everywhere: byte-identical on every replica and transport.

One reader task per gateway runs ``XREAD BLOCK`` over the topics that have
local subscribers, from the last id it handed on, and gives every entry to the
hub. A replica's own publishes come back the same way, so every replica
behaves alike. When a topic gets its first local subscriber, the reader's start
position is the stream's last id *before* the subscriber reads history, so the
hub's cursor hand-off (see hub.py) sees no hole.

History is ``XADD MAXLEN = history_size + 1`` (exact trimming): the oldest entry
is not served but kept as the marker of what was evicted, which makes gap
detection exact (Redis does not record the last trimmed id). The gateway
process holds no history here: Redis's ``maxmemory`` and that MAXLEN bound it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import Conflict, NotFound, Unavailable
from ..ids import ZERO, Key, format_id, parse_id
from ..message import Message, now_ms
from . import HistoryRead, Listener, TopicInfo

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)

READ_BLOCK_MS = 50
"""How long one XREAD waits; a newly watched topic joins the next one."""
READ_COUNT = 1000


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@contextlib.contextmanager
def _guard() -> Iterator[None]:
    """Redis unreachable: a 503 JSON error for the request, not a 500."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise Unavailable(f"the Redis broker is unreachable: {exc}") from exc


class _Window:
    """One consistent look at a topic's stream."""

    __slots__ = ("first_id", "gap", "last_key", "length", "messages")

    def __init__(
        self, messages: list[Message], gap: bool, first_id: str | None, last_key: Key, length: int
    ) -> None:
        self.messages = messages
        self.gap = gap
        self.first_id = first_id
        self.last_key = last_key
        self.length = length

    @property
    def last_id(self) -> str | None:
        return None if self.last_key == ZERO else format_id(self.last_key)


class RedisBroker:
    """History and ids in Redis Streams; implements :class:`gateway.broker.Broker`."""

    def __init__(
        self, url: str, *, history_size: int, max_topics: int, prefix: str = "streamgate:"
    ) -> None:
        self._url = url
        self._history_size = history_size
        self._max_topics = max_topics
        self._prefix = prefix
        self._topics_key = prefix + "topics"
        self._listener: Listener = lambda m: None
        self._redis: aioredis.Redis | None = None
        self._reader_redis: aioredis.Redis | None = None
        self._positions: dict[str, str] = {}  # watched topic -> last id handed on
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()

    def _key(self, topic: str) -> str:
        return f"{self._prefix}t:{topic}"

    @property
    def redis(self) -> aioredis.Redis:
        if self._redis is None:
            raise RuntimeError("the Redis broker is not started")
        return self._redis

    def set_listener(self, listener: Listener) -> None:
        self._listener = listener

    async def start(self) -> None:
        self._redis = aioredis.from_url(self._url)
        self._reader_redis = aioredis.from_url(self._url)
        await self._redis.ping()  # fail at start-up, not at the first publish
        self._reader = asyncio.create_task(self._read_forever(), name="redis-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for client in (self._redis, self._reader_redis):
            if client is not None:
                await client.aclose()

    # -- topics ------------------------------------------------------------------------

    async def has_topic(self, topic: str) -> bool:
        with _guard():
            return bool(await self.redis.sismember(self._topics_key, topic))

    async def create_topic(self, topic: str) -> None:
        with _guard():
            r = self.redis
            if await r.sismember(self._topics_key, topic):
                return
            if await r.scard(self._topics_key) >= self._max_topics:
                raise Conflict(
                    f"the gateway holds {self._max_topics} topics already (--max-topics)",
                    code="too_many_topics",
                )
            await r.sadd(self._topics_key, topic)

    async def topics(self) -> list[TopicInfo]:
        with _guard():
            names = sorted(_s(n) for n in await self.redis.smembers(self._topics_key))
            out = []
            for name in names:
                w = await self._window(name, None, 0)
                out.append(TopicInfo(name, w.first_id, w.last_id, w.length))
            return out

    def history_bytes(self) -> int | None:
        return None  # history lives in Redis (its maxmemory and MAXLEN bound it)

    # -- publish and read -----------------------------------------------------------------

    async def publish(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        await self.create_topic(topic)
        ts = now_ms()
        with _guard():
            pipe = self.redis.pipeline(transaction=False)
            for data in data_json:
                pipe.xadd(
                    self._key(topic),
                    {"ts": repr(ts), "data": data},
                    maxlen=self._history_size + 1,
                    approximate=False,
                )
            ids = await pipe.execute()
        pairs = zip(ids, data_json, strict=True)
        return [Message.create(parse_id(_s(i)), topic, d, ts) for i, d in pairs]

    async def read(self, topic: str, since: Key | None, limit: int | None = None) -> HistoryRead:
        if not await self.has_topic(topic):
            raise NotFound(f"unknown topic {topic!r}")
        with _guard():
            w = await self._window(topic, since, limit)
        return HistoryRead(w.messages, w.gap, w.first_id, w.last_key)

    async def _window(self, topic: str, since: Key | None, limit: int | None) -> _Window:
        key = self._key(topic)
        pipe = self.redis.pipeline(transaction=True)  # one consistent snapshot
        pipe.xlen(key)
        pipe.xrange(key, "-", "+", count=2)
        pipe.xrevrange(key, "+", "-", count=1)
        start = "-" if since is None else "(" + format_id(since)
        pipe.xrange(key, start, "+", count=None if limit is None else limit + 1)
        length, head, tail, entries = await pipe.execute()
        marker: Key | None = None
        if length > self._history_size:  # the oldest entry marks what was evicted
            marker = parse_id(_s(head[0][0]))
            head = head[1:]
        first_id = _s(head[0][0]) if head else None
        last_key = parse_id(_s(tail[0][0])) if tail else ZERO
        messages = [self._message(topic, e) for e in entries]
        if marker is not None:
            messages = [m for m in messages if m.key > marker]
        if limit is not None:
            messages = messages[:limit]
        gap = since is not None and marker is not None and since < marker
        return _Window(messages, gap, first_id, last_key, min(length, self._history_size))

    @staticmethod
    def _message(topic: str, entry: Any) -> Message:
        entry_id, fields = entry
        fields = {_s(k): v for k, v in fields.items()}
        data, ts = bytes(fields["data"]), float(_s(fields["ts"]))
        return Message.create(parse_id(_s(entry_id)), topic, data, ts)

    # -- live ------------------------------------------------------------------------------

    async def watch(self, topic: str) -> None:
        """Start handing on ``topic``'s new entries, from its current last id."""
        if topic in self._positions:
            return
        with _guard():
            tail = await self.redis.xrevrange(self._key(topic), "+", "-", count=1)
        if topic in self._positions:  # watched meanwhile
            return
        self._positions[topic] = _s(tail[0][0]) if tail else "0-0"
        self._wake.set()

    def unwatch(self, topic: str) -> None:
        self._positions.pop(topic, None)

    async def _read_forever(self) -> None:
        assert self._reader_redis is not None
        r = self._reader_redis
        cut = len(self._prefix) + 2
        while True:
            if not self._positions:
                self._wake.clear()
                await self._wake.wait()
                continue
            streams: dict[Any, Any] = {self._key(t): p for t, p in self._positions.items()}
            try:
                reply: Any = await r.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
            except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError) as exc:
                log.warning("redis read failed (%s); retrying", exc)
                await asyncio.sleep(0.5)
                continue
            for key, entries in reply or ():
                topic = _s(key)[cut:]
                if topic not in self._positions:
                    continue  # unwatched while we read
                for entry in entries:
                    msg = self._message(topic, entry)
                    self._positions[topic] = msg.id
                    self._listener(msg)
