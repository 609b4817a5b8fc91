"""The hub: per topic, the local subscribers, and fan-out that encodes once.

Messages published on a topic collect in a pending batch; the batch is flushed
once per event-loop turn (or after ``write_delay`` seconds when configured). A
flush frames the batch once per wire format and hands the same bytes object to
every subscriber on that format: one write per subscriber per flush, however
many messages the batch holds, and no per-subscriber Python work per message.

A subscriber starts in *replay*: it is registered first (so live messages are
buffered, never missed), then history after its ``since`` is written, paced by
its socket, then the buffer is written and it goes *live*. Its cursor (the key
of the last message written) filters out anything it already has, which makes
the hand-off from history to live free of duplicates and holes whatever the
broker's timing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from . import errors
from .broker import Broker, unknown_since
from .errors import Disconnect, NotFound
from .framing import Format, control_json, encode_messages, http_chunk
from .ids import ZERO, Key, format_id
from .message import Message

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Batch", "Hub", "Sink", "Subscriber"]

log = logging.getLogger(__name__)

REPLAY_SLICE = 256
"""Messages written per replay step before waiting for the socket to drain."""


class Batch:
    """Messages flushed together, framed lazily once per (format, http-chunked)."""

    __slots__ = ("_cache", "first_key", "last_key", "messages", "size")

    def __init__(self, messages: Sequence[Message]) -> None:
        self.messages = messages
        self.first_key = messages[0].key
        self.last_key = messages[-1].key
        self.size = sum(len(m.json) for m in messages)
        self._cache: dict[tuple[Format, bool], bytes] = {}

    def wire(self, fmt: Format, http_chunked: bool) -> bytes:
        """The batch framed for ``fmt``, inside one HTTP chunk if asked."""
        key = (fmt, http_chunked)
        data = self._cache.get(key)
        if data is None:
            if http_chunked:
                data = http_chunk(self.wire(fmt, False))
            else:
                data = encode_messages(fmt, [(m.id, m.json) for m in self.messages])
            self._cache[key] = data
        return data


class Sink(Protocol):
    """Where a subscriber's bytes go: implemented by the transports."""

    @property
    def transport_name(self) -> str: ...

    closed: bool

    def write_batch(self, batch: Batch) -> None:
        """Write the shared bytes of a batch (fast path)."""

    def write_messages(self, messages: Sequence[Message]) -> None:
        """Frame and write messages for this sink alone (replay, slices)."""

    def write_control(self, type: str, obj_json: bytes) -> None: ...

    async def drain(self) -> None:
        """Wait until the socket takes more (raises on write timeout)."""

    def close(self, reason: Disconnect) -> None: ...


_REPLAY, _LIVE, _CLOSED = 0, 1, 2


class Subscriber:
    """A sink subscribed to one topic, with its cursor and replay buffer."""

    __slots__ = (
        "backlog",
        "backlog_bytes",
        "cursor",
        "max_backlog_bytes",
        "remaining",
        "sink",
        "state",
        "topic",
    )

    def __init__(
        self, sink: Sink, topic: str, *, limit: int | None = None, max_backlog_bytes: int
    ) -> None:
        self.sink = sink
        self.topic = topic
        self.cursor: Key = (0, 0)
        self.remaining = limit
        self.state = _REPLAY
        self.backlog: list[Message] | None = None
        """What arrived during the replay; no list at all once live or never needed."""
        self.backlog_bytes = 0
        self.max_backlog_bytes = max_backlog_bytes

    def deliver(self, batch: Batch) -> None:
        """Called by the hub once per flush."""
        if self.sink.closed:
            return
        if self.state == _LIVE:
            if self.remaining is None and batch.first_key > self.cursor:
                self.cursor = batch.last_key
                self.sink.write_batch(batch)
            else:
                self.write(batch.messages)
        elif self.state == _REPLAY:
            if self.backlog is None:
                self.backlog = []
            self.backlog.extend(batch.messages)
            self.backlog_bytes += batch.size
            if self.backlog_bytes > self.max_backlog_bytes:
                self.sink.close(errors.SLOW_CONSUMER)

    def write(self, messages: Sequence[Message]) -> int:
        """Write messages after the cursor, honouring ``limit``; returns how many."""
        messages = [m for m in messages if m.key > self.cursor]
        if not messages:
            return 0
        if self.remaining is not None:
            messages = messages[: self.remaining]
            self.remaining -= len(messages)
        self.cursor = messages[-1].key
        self.sink.write_messages(messages)
        if self.remaining == 0:
            self.sink.close(errors.LIMIT_REACHED)
        return len(messages)

    @property
    def last_id(self) -> str | None:
        return None if self.cursor == (0, 0) else format_id(self.cursor)


_NOT_THERE = object()


class _Fanout:
    __slots__ = ("counts", "flush_handle", "next_flush", "pending", "subscribers", "watched")

    def __init__(self, watched: asyncio.Future[None]) -> None:
        # A dict as an ordered set: at thousands of entries its table is a
        # third of a set's (a set keeps 2-4 empty slots per entry).
        self.subscribers: dict[Subscriber, None] = {}
        self.counts: dict[str, int] = {"chunked": 0, "sse": 0, "ws": 0}
        """Subscribers per transport, kept on subscribe and unsubscribe: a flush
        counts its deliveries from these (messages x subscribers), not per
        subscriber, and ``GET /topics`` reads them without a scan."""
        self.pending: list[Message] = []
        self.flush_handle: asyncio.Handle | None = None
        self.next_flush = 0.0
        """Loop time before which a new flush is held (the adaptive hold)."""
        self.watched: asyncio.Future[None] | None = watched
        """The broker's ``watch()`` of the topic, until it has completed: every
        subscriber that arrives meanwhile waits for the same one."""


class Hub:
    """Fan-out of broker messages to the local subscribers of each topic."""

    def __init__(
        self, broker: Broker, *, write_delay: float = 0.0, flush_hold: float = 0.0
    ) -> None:
        self.broker = broker
        self.write_delay = write_delay
        self.flush_hold = flush_hold
        self._fanouts: dict[str, _Fanout] = {}
        self.metrics: Metrics | None = None
        """Set by :class:`gateway.metrics.Metrics` when metrics are on: each flush
        then adds its deliveries and its duration there (once per flush)."""
        broker.set_listener(self.dispatch)

    # -- publishing side -------------------------------------------------------

    def dispatch(self, message: Message) -> None:
        """Queue a new message for its topic's next flush (never blocks)."""
        fan = self._fanouts.get(message.topic)
        if fan is None or not fan.subscribers:
            return
        fan.pending.append(message)
        if fan.flush_handle is None:
            loop = asyncio.get_running_loop()
            if self.write_delay > 0:
                fan.flush_handle = loop.call_later(self.write_delay, self._flush, fan)
                return
            held = fan.next_flush - loop.time()
            if held > 0:  # flushes back to back: this one gathers what comes meanwhile
                fan.flush_handle = loop.call_later(held, self._flush, fan)
            else:
                fan.flush_handle = loop.call_soon(self._flush, fan)

    def _flush(self, fan: _Fanout) -> None:
        fan.flush_handle = None
        pending, fan.pending = fan.pending, []
        if not pending:
            return
        started = perf_counter()
        batch = Batch(pending)
        for sub in tuple(fan.subscribers):
            try:
                sub.deliver(batch)
            except Exception:  # one broken subscriber must not stop the others
                log.exception("delivery to a subscriber of %r failed", sub.topic)
                sub.sink.close(errors.INTERNAL_ERROR)
        took = perf_counter() - started
        metrics = self.metrics
        if metrics is not None:  # per flush, never per subscriber
            metrics.flushed(fan.counts, len(pending), took)
        if self.flush_hold > 0:
            # The adaptive hold: the next flush of this topic waits as long as
            # this one took (at most flush_hold). A flush that is cheap (few
            # subscribers) or rare (a quiet topic) is never held; when flushes
            # are costly and back to back, each carries what arrived while it
            # was held, so the sends per message fall as the load rises.
            fan.next_flush = asyncio.get_running_loop().time() + min(took, self.flush_hold)

    # -- subscribing side ------------------------------------------------------

    async def subscribe(self, sub: Subscriber, since: Key | None) -> None:
        """Replay history after ``since`` (if given), then make ``sub`` live.

        The subscriber is registered before history is read, so nothing
        published meanwhile is missed; its cursor drops what it already has.
        """
        fan = self._fanouts.get(sub.topic)
        if fan is None:
            watch = asyncio.ensure_future(self.broker.watch(sub.topic))
            fan = self._fanouts[sub.topic] = _Fanout(watch)
        fan.subscribers[sub] = None
        name = sub.sink.transport_name
        fan.counts[name] = fan.counts.get(name, 0) + 1
        watched = fan.watched
        if watched is not None:
            # Live messages reach the hub only once the broker watches the
            # topic; history read before that would leave a hole. Later
            # subscribers wait for the first one's watch, not skip it.
            await asyncio.shield(watched)
            fan.watched = None
        try:
            read = await self.broker.read(sub.topic, since)
        except NotFound:  # deleted or expired since the request was checked
            sub.sink.close(errors.TOPIC_DELETED)
            return
        if since is None:
            sub.cursor = read.last_key
        else:
            # An id this history never issued (unknown_since): the read answered
            # from the start, and no live message may hide behind that id.
            sub.cursor = ZERO if unknown_since(since, read.last_key) else since
            if read.gap:
                sub.sink.write_control(
                    "gap",
                    control_json(
                        "gap", topic=sub.topic, since=format_id(since), first_id=read.first_id
                    ),
                )
            messages = read.messages
            for start in range(0, len(messages), REPLAY_SLICE):
                if sub.sink.closed:
                    return
                written = sub.write(messages[start : start + REPLAY_SLICE])
                if self.metrics is not None:
                    self.metrics.delivered(name, written)
                await sub.sink.drain()
        # Go live: what arrived during the replay, then the shared batches.
        while sub.backlog and not sub.sink.closed:
            backlog, sub.backlog, sub.backlog_bytes = sub.backlog, None, 0
            sub.write(backlog)
            await sub.sink.drain()
        if not sub.sink.closed:
            sub.state = _LIVE

    def unsubscribe(self, sub: Subscriber) -> None:
        sub.state = _CLOSED
        fan = self._fanouts.get(sub.topic)
        if fan is not None:
            if fan.subscribers.pop(sub, _NOT_THERE) is not _NOT_THERE:
                fan.counts[sub.sink.transport_name] -= 1
            if not fan.subscribers:
                if fan.flush_handle is not None:
                    fan.flush_handle.cancel()
                if fan.watched is not None:  # nobody left to wait for it
                    fan.watched.cancel()
                del self._fanouts[sub.topic]
                self.broker.unwatch(sub.topic)

    def subscribed_topics(self) -> list[str]:
        """The topics that have local subscribers now (the topic expiry keeps them)."""
        return list(self._fanouts)

    def end_topic(self, topic: str, reason: Disconnect = errors.TOPIC_DELETED) -> int:
        """End every local subscriber of ``topic``; returns how many there were.

        Each sink's close() makes its transport write the ``end`` event (WebSocket:
        close 1000) and unsubscribe, as for any other disconnect.
        """
        fan = self._fanouts.get(topic)
        if fan is None:
            return 0
        subs = tuple(fan.subscribers)
        for sub in subs:
            sub.sink.close(reason)
        return len(subs)

    def subscriber_counts(self, topic: str) -> dict[str, int]:
        fan = self._fanouts.get(topic)
        return dict(fan.counts) if fan is not None else {"chunked": 0, "sse": 0, "ws": 0}
