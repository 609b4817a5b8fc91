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

The topic registry is a sorted set shared by the replicas,
``<prefix>topic-activity``: topic name -> the Redis server's time (ms) of its
last activity. A publish sets it (in the same script as the XADDs, so the
count against ``max_topics`` and the append are atomic); each replica's sweep
raises it for the topics it has local subscribers for or declared at start,
then removes the topics whose score is older than the TTL with a script that
re-reads the score before the DEL and ZREM, so a publish that came in between
is never lost. Scores come from Redis's clock (``TIME``), never a replica's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Collection, Iterator, Sequence
from typing import Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..errors import Conflict, NotFound, Unavailable
from ..ids import ZERO, Key, format_id, parse_id
from ..message import Message, now_ms
from . import HistoryRead, Listener, TopicInfo, resume_gap, unknown_since

__all__ = ["RedisBroker"]

log = logging.getLogger(__name__)

READ_BLOCK_MS = 50
"""How long one XREAD waits; a newly watched topic joins the next one."""
READ_COUNT = 1000

_NOW_MS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
"""

_ADMIT = """
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
  if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
    return redis.error_reply('TOO_MANY_TOPICS')
  end
end
"""

CREATE_LUA = (
    _NOW_MS
    + _ADMIT
    + """
redis.call('ZADD', KEYS[1], 'NX', now, ARGV[1])
local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
if last[1] then return last[1][1] end
return '0-0'
"""
)
"""KEYS: activity, stream. ARGV: topic, max_topics -> the id of its newest entry."""

PUBLISH_LUA = (
    _NOW_MS
    + _ADMIT
    + """
redis.call('ZADD', KEYS[1], now, ARGV[1])
local ids = {}
for i = 5, #ARGV do
  ids[#ids + 1] = redis.call(
    'XADD', KEYS[2], 'MAXLEN', ARGV[3], '*', 'ts', ARGV[4], 'data', ARGV[i])
end
return ids
"""
)
"""KEYS: activity, stream. ARGV: topic, max_topics, maxlen, ts, data... -> ids."""

TOUCH_LUA = (
    _NOW_MS
    + """
for i = 2, #ARGV do
  redis.call('ZADD', KEYS[1], 'XX', 'GT', now, ARGV[i])
end
return redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
"""
)
"""KEYS: activity. ARGV: ttl_ms, topics to keep... -> names idle for ttl_ms."""

EXPIRE_LUA = (
    _NOW_MS
    + """
local gone = {}
for i = 2, #KEYS do
  local name = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], name)
  if score and tonumber(score) <= now - tonumber(ARGV[1]) then
    redis.call('DEL', KEYS[i])
    redis.call('ZREM', KEYS[1], name)
    gone[#gone + 1] = name
  end
end
return gone
"""
)
"""KEYS: activity, the candidates' streams. ARGV: ttl_ms, the candidates (from
ARGV[2] on, matching KEYS[2] on) -> the names removed. The score is read again
here: a publish since the candidates were listed keeps its topic."""

DELETE_LUA = """
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
return n
"""
"""KEYS: activity, stream. ARGV: topic -> 1 if it was registered."""

MIGRATE_LUA = (
    _NOW_MS
    + """
for _, name in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  redis.call('ZADD', KEYS[2], 'NX', now, name)
end
return redis.call('DEL', KEYS[1])
"""
)
"""KEYS: the old ``topics`` set, activity. Moves a registry from before the
sorted set (its topics count as active from now)."""


RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
"""KEYS: the lease; ARGV: our replica id, ttl ms. 1 when still ours (and extended)."""

RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""
"""KEYS: the lease; ARGV: our replica id. Gives it up only if it is ours."""


def _s(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
        self,
        url: str,
        *,
        history_size: int,
        max_topics: int,
        prefix: str = "streamgate:",
        timeout: float = 2.0,
    ) -> None:
        self._url = url
        self._timeout = timeout
        self._replica = uuid.uuid4().hex
        """This gateway's name in the leases it holds."""
        self._history_size = history_size
        self._max_topics = max_topics
        self._prefix = prefix
        self._activity_key = prefix + "topic-activity"
        self._listener: Listener = lambda m: None
        self._redis: aioredis.Redis | None = None
        self._reader_redis: aioredis.Redis | None = None
        self._positions: dict[str, str] = {}  # watched topic -> last id handed on
        self._reader: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._scripts: dict[str, AsyncScript] = {}
        self.errors = 0
        """Operations that failed: answered 503, or a live read retried (/metrics)."""

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Redis unreachable or full: a 503 JSON error for the request, not a 500
        (and one more in :attr:`errors`)."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            self.errors += 1
            raise Unavailable(f"the Redis broker is unreachable: {exc}") from exc
        except OutOfMemoryError as exc:
            self.errors += 1
            raise Unavailable(f"the Redis broker refuses writes (maxmemory): {exc}") from exc

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
        # Every command gets an answer or an error within the timeout, whatever
        # Redis does (gone, stalled, restarting): a request is then a 503, and
        # the next one tries a fresh connection.
        timeouts = {
            "socket_connect_timeout": self._timeout,
            "health_check_interval": max(1.0, self._timeout * 5),
        }
        self._redis = aioredis.from_url(self._url, socket_timeout=self._timeout, **timeouts)
        self._reader_redis = aioredis.from_url(
            self._url, socket_timeout=self._timeout + READ_BLOCK_MS / 1000, **timeouts
        )
        await self._redis.ping()  # fail at start-up, not at the first publish
        for name, lua in (
            ("create", CREATE_LUA),
            ("publish", PUBLISH_LUA),
            ("touch", TOUCH_LUA),
            ("expire", EXPIRE_LUA),
            ("delete", DELETE_LUA),
            ("migrate", MIGRATE_LUA),
            ("renew", RENEW_LUA),
            ("release", RELEASE_LUA),
        ):
            self._scripts[name] = self._redis.register_script(lua)
        await self._scripts["migrate"](keys=[self._prefix + "topics", self._activity_key])
        self._reader = asyncio.create_task(self._read_forever(), name="redis-reader")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        for client in (self._redis, self._reader_redis):
            if client is not None:
                with contextlib.suppress(TimeoutError, RedisConnectionError, OSError):
                    async with asyncio.timeout(self._timeout):
                        await client.aclose()

    # -- leases (one replica runs each shared source) ---------------------------------

    async def lease(self, name: str, ttl: float, *, renew: bool) -> bool:
        """Take (``renew`` False) or keep (True) the lease ``name`` for ``ttl``
        seconds; True while it is this replica's. Raises Unavailable when Redis
        cannot say."""
        key, ms = f"{self._prefix}lease:{name}", max(1, int(ttl * 1000))
        with self._guard():
            if renew:
                return bool(await self._scripts["renew"](keys=[key], args=[self._replica, ms]))
            return bool(await self.redis.set(key, self._replica, nx=True, px=ms))

    async def release(self, name: str) -> None:
        """Give the lease up at once (shutdown), if it is this replica's."""
        with self._guard():
            await self._scripts["release"](
                keys=[f"{self._prefix}lease:{name}"], args=[self._replica]
            )

    # -- topics ------------------------------------------------------------------------

    async def has_topic(self, topic: str) -> bool:
        with self._guard():
            return await self.redis.zscore(self._activity_key, topic) is not None

    @contextlib.contextmanager
    def _admitting(self) -> Iterator[None]:
        """The scripts' refusal past max_topics, as the 409 the memory broker gives."""
        try:
            yield
        except ResponseError as exc:
            if "TOO_MANY_TOPICS" not in str(exc):
                raise
            raise Conflict(
                f"the gateway holds {self._max_topics} topics already (--max-topics)",
                code="too_many_topics",
            ) from None

    async def create_topic(self, topic: str) -> Key:
        with self._guard(), self._admitting():
            last = await self._scripts["create"](
                keys=[self._activity_key, self._key(topic)], args=[topic, self._max_topics]
            )
        return parse_id(_s(last))

    async def topics(self) -> list[TopicInfo]:
        with self._guard():
            names = sorted(_s(n) for n in await self.redis.zrange(self._activity_key, 0, -1))
            out = []
            for name in names:
                w = await self._window(name, None, 0)
                out.append(TopicInfo(name, w.first_id, w.last_id, w.length))
            return out

    async def delete_topic(self, topic: str) -> bool:
        with self._guard():
            n = await self._scripts["delete"](
                keys=[self._activity_key, self._key(topic)], args=[topic]
            )
        return bool(n)

    async def expire_topics(self, ttl: float, keep: Collection[str]) -> list[str]:
        ttl_ms = max(1, round(ttl * 1000))
        with self._guard():
            idle = await self._scripts["touch"](keys=[self._activity_key], args=[ttl_ms, *keep])
            if not idle:
                return []
            names = [_s(n) for n in idle]
            gone = await self._scripts["expire"](
                keys=[self._activity_key, *(self._key(n) for n in names)], args=[ttl_ms, *names]
            )
        return [_s(n) for n in gone]

    def history_bytes(self) -> int | None:
        return None  # history lives in Redis (its maxmemory and MAXLEN bound it)

    # -- publish and read -----------------------------------------------------------------

    async def publish(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        ts = now_ms()
        with self._guard(), self._admitting():
            ids = await self._scripts["publish"](
                keys=[self._activity_key, self._key(topic)],
                args=[topic, self._max_topics, self._history_size + 1, repr(ts), *data_json],
            )
        pairs = zip(ids, data_json, strict=True)
        return [Message.create(parse_id(_s(i)), topic, d, ts) for i, d in pairs]

    async def read(self, topic: str, since: Key | None, limit: int | None = None) -> HistoryRead:
        if not await self.has_topic(topic):
            raise NotFound(f"unknown topic {topic!r}")
        with self._guard():
            w = await self._window(topic, since, limit)
            if unknown_since(since, w.last_key):  # rare: read again, everything
                w = await self._window(topic, None, limit)
                return HistoryRead(w.messages, True, w.first_id, w.last_key)
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
        first_key = parse_id(first_id) if first_id is not None else None
        last_key = parse_id(_s(tail[0][0])) if tail else ZERO
        messages = [self._message(topic, e) for e in entries]
        if marker is not None:
            messages = [m for m in messages if m.key > marker]
        if limit is not None:
            messages = messages[:limit]
        gap = resume_gap(since, marker, first_key)
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
        with self._guard():
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
        failing = False
        while True:
            if not self._positions:
                self._wake.clear()
                await self._wake.wait()
                continue
            streams: dict[Any, Any] = {self._key(t): p for t, p in self._positions.items()}
            try:
                reply: Any = await r.xread(streams, count=READ_COUNT, block=READ_BLOCK_MS)
            except (RedisConnectionError, RedisTimeoutError, ResponseError, OSError) as exc:
                self.errors += 1
                if not failing:
                    log.warning("redis read failed (%s); retrying every 0.5 s", exc)
                failing = True
                await asyncio.sleep(0.5)
                continue
            if failing:
                log.warning("redis read works again")
                failing = False
            for key, entries in reply or ():
                topic = _s(key)[cut:]
                if topic not in self._positions:
                    continue  # unwatched while we read
                for entry in entries:
                    msg = self._message(topic, entry)
                    self._positions[topic] = msg.id
                    self._listener(msg)
