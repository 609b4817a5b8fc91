"""The hub: per topic, the local subscribers, and fan-out that encodes once.

Messages published on a topic collect in the topic's log until every
subscriber has them. A *sweep* walks the subscribers a slice at a time and
writes each one everything in the log after its cursor, in one write: the
suffixes are framed once per wire format and the same bytes object goes to
every subscriber that needs that suffix, so there is no per-subscriber Python
work per message. Between slices the event loop runs, so a message published
while a sweep is under way joins it: the subscribers the sweep has not reached
yet get it in this sweep, the ones it has passed get it in the next. A message
thus waits at most about one sweep, never for one sweep to end and then for
its place in the next (Nchan's behaviour, measured in BENCHMARKS.md).

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
from bisect import bisect_right
from collections.abc import Callable, Sequence
from operator import attrgetter
from time import perf_counter
from typing import TYPE_CHECKING, Protocol

from . import errors
from .broker import Broker, unknown_since
from .errors import Disconnect, NotFound
from .framing import FRAMERS, Format, Wire, control_json, http_chunk
from .ids import ZERO, Key, format_id
from .message import Message

if TYPE_CHECKING:
    from .metrics import Metrics

__all__ = ["Batch", "Hub", "Sink", "Subscriber"]

log = logging.getLogger(__name__)

REPLAY_SLICE = 256
"""Messages written per replay step before waiting for the socket to drain."""


class Batch:
    """Messages written together, framed lazily once per :class:`Wire`."""

    __slots__ = ("_framed", "last_key", "messages", "size", "wires")

    def __init__(
        self, messages: Sequence[Message], framed: Callable[[Format], Sequence[bytes]]
    ) -> None:
        self.messages = messages
        self.last_key = messages[-1].key
        self.size = sum(len(m.json) for m in messages)
        self.wires: dict[Wire | None, bytes] = {}
        """The bytes per wire made so far: the sweep reads it before calling a
        sink (a lookup is cheaper than a call, and nearly always hits). Never a
        None key: a sink with no shared wire misses."""
        self._framed = framed
        """Each message already framed for a format (a topic's log keeps them,
        so that a message is framed once however many batches carry it)."""

    def wire(self, wire: Wire) -> bytes:
        """The batch framed for ``wire.fmt``, inside one HTTP chunk if asked."""
        data = self.wires.get(wire)
        if data is None:
            if wire.http_chunked:
                data = http_chunk(self.wire(Wire.of(wire.fmt, False)))
            else:
                data = b"".join(self._framed(wire.fmt))
            self.wires[wire] = data
        return data


class Sink(Protocol):
    """Where a subscriber's bytes go: implemented by the transports."""

    @property
    def transport_name(self) -> str: ...

    closed: bool

    shared_wire: Wire | None
    """The wire whose bytes of a batch this sink takes as they are, with
    :meth:`write` (the sweep's fast path); None while it needs bytes of its own."""

    def write(self, data: bytes) -> None:
        """Write a batch's bytes for ``shared_wire``."""

    def write_batch(self, batch: Batch) -> None:
        """Write a batch, framed for this sink if need be."""

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
        "given",
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
        self.cursor: Key = ZERO
        """The key of the last message written to the sink."""
        self.given: Key = ZERO
        """During the replay: the key of the last live message put in the backlog."""
        self.remaining = limit
        self.state = _REPLAY
        self.backlog: list[Message] | None = None
        """What arrived during the replay; no list at all once live or never needed."""
        self.backlog_bytes = 0
        self.max_backlog_bytes = max_backlog_bytes

    @property
    def live(self) -> bool:
        """Past its replay: the sweeps write to it."""
        return self.state == _LIVE

    def deliver(self, fan: _Fanout) -> None:
        """Called by a sweep: hand over what the topic's log holds past this
        subscriber. The sweep itself does it for a live subscriber with no
        ``limit`` (nearly all of them: see ``Hub._sweep``)."""
        if self.sink.closed:
            return
        if self.state == _LIVE:
            batch = fan.after(self.cursor)
            if batch is None:
                return
            if self.remaining is None:
                self.cursor = batch.last_key
                self.sink.write_batch(batch)
            else:
                self.write(batch.messages)
        elif self.state == _REPLAY:
            batch = fan.after(self.given)
            if batch is None:
                return
            self.given = batch.last_key
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
_key_of = attrgetter("key")


SWEEP_SLICE = 32
"""Subscribers written per step of a sweep before the event loop runs again."""


JOIN_MAX = 256
"""The most messages a sweep takes in as it goes. Past that many in the log,
publishing outpaces the sweeps: the sweep no longer takes new messages in (its
suffixes are framed once, as a flush's were) and runs to its end without
letting the loop run, which paces the publishers as a flush did."""

HOLD_FROM = 4
"""Messages that must have arrived during a sweep for the next one to be held."""


class _Fanout:
    __slots__ = (
        "batches",
        "counts",
        "frames",
        "handle",
        "log",
        "next_sweep",
        "reach",
        "subscribers",
        "sweep",
        "watched",
    )

    def __init__(self, watched: asyncio.Future[None]) -> None:
        # A dict as an ordered set: at thousands of entries its table is a
        # third of a set's (a set keeps 2-4 empty slots per entry).
        self.subscribers: dict[Subscriber, None] = {}
        self.counts: dict[str, int] = {"chunked": 0, "sse": 0, "ws": 0}
        """Subscribers per transport, kept on subscribe and unsubscribe: a sweep
        counts its deliveries from these (messages x subscribers), not per
        subscriber, and ``GET /topics`` reads them without a scan."""
        self.log: list[Message] = []
        """Messages some subscriber may not have yet, oldest first."""
        self.frames: dict[Format, list[bytes]] = {}
        """Per format, the log's messages framed one by one (as far as asked)."""
        self.reach = 0
        """How far into the log the sweep under way hands messages out."""
        self.batches: dict[Key, Batch | None] = {}
        """The log after a key, up to the reach, as one batch: cleared whenever
        the reach moves or the log is trimmed."""
        self.handle: asyncio.Handle | None = None
        """The next sweep, or the next step of the one under way."""
        self.sweep: _Sweep | None = None
        self.next_sweep = 0.0
        """Loop time before which a new sweep is held (the adaptive hold)."""
        self.watched: asyncio.Future[None] | None = watched
        """The broker's ``watch()`` of the topic, until it has completed: every
        subscriber that arrives meanwhile waits for the same one."""

    def after(self, key: Key) -> Batch | None:
        """The messages of the log after ``key``, up to the reach, as one batch
        (None: nothing new)."""
        try:
            return self.batches[key]
        except KeyError:
            pass
        log, end = self.log, self.reach
        start = bisect_right(log, key, 0, end, key=_key_of)
        batch = None
        if start < end:
            batch = Batch(log[start:end], lambda fmt: self.framed(fmt)[start:end])
        self.batches[key] = batch
        return batch

    def framed(self, fmt: Format) -> list[bytes]:
        """The log's messages, each framed for ``fmt`` (framed once, when first asked)."""
        pieces = self.frames.get(fmt)
        if pieces is None:
            pieces = self.frames[fmt] = []
        log = self.log
        if len(pieces) < len(log):
            frame = FRAMERS[fmt]
            pieces.extend([frame(m.id, m.json) for m in log[len(pieces) :]])
        return pieces

    def extend_reach(self) -> None:
        """Let the sweep under way hand out what the log holds now (a new
        message joins it), as long as it carries at most ``JOIN_MAX`` messages:
        each move frames the suffixes anew, which must stay cheap."""
        if self.reach < len(self.log) <= JOIN_MAX:
            self.reach = len(self.log)
            self.batches.clear()

    def forget(self, count: int) -> None:
        """Drop the oldest ``count`` messages: every subscriber has them."""
        del self.log[:count]
        for pieces in self.frames.values():
            del pieces[:count]
        self.reach = 0
        self.batches.clear()


class _Sweep:
    """One walk over a topic's subscribers, as they were when it began."""

    __slots__ = ("busy", "given", "position", "walk")

    def __init__(self, fan: _Fanout) -> None:
        self.walk = tuple(fan.subscribers)
        self.position = 0
        self.given = len(fan.log)
        """The log's length when the sweep began: by its end, every subscriber
        has these messages, and they leave the log."""
        self.busy = 0.0
        """Seconds the sweep's steps took, summed (not the time between them)."""


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
        """Set by :class:`gateway.metrics.Metrics` when metrics are on: each sweep
        then adds its deliveries and its duration there (once per sweep)."""
        broker.set_listener(self.dispatch)

    # -- publishing side -------------------------------------------------------

    def dispatch(self, message: Message) -> None:
        """Add a new message to its topic's log and see that a sweep takes it (never blocks)."""
        fan = self._fanouts.get(message.topic)
        if fan is None or not fan.subscribers:
            return
        fan.log.append(message)
        if fan.handle is None:  # no sweep under way, none due: one starts
            self._schedule(fan)

    def _schedule(self, fan: _Fanout) -> None:
        loop = asyncio.get_running_loop()
        if self.write_delay > 0:
            fan.handle = loop.call_later(self.write_delay, self._sweep, fan)
            return
        held = fan.next_sweep - loop.time()
        if held > 0:  # sweeps back to back: this one gathers what comes meanwhile
            fan.handle = loop.call_later(held, self._sweep, fan)
        else:
            fan.handle = loop.call_soon(self._sweep, fan)

    def sweep_now(self, topic: str) -> None:
        """Begin the sweep that a publish has just made due, now rather than at
        the next loop turn: called once a publish call has handed all its
        messages over, so that the first subscribers are written before the
        publisher is answered (as Nchan does). A held sweep stays held."""
        fan = self._fanouts.get(topic)
        if (
            fan is None
            or fan.handle is None  # nothing due
            or fan.sweep is not None  # under way: its next step is due anyway
            or self.write_delay > 0
            or fan.next_sweep > asyncio.get_running_loop().time()  # held
        ):
            return
        fan.handle.cancel()
        self._sweep(fan)

    def _sweep(self, fan: _Fanout) -> None:
        """One step of a sweep: the next slice of subscribers (a new sweep if none)."""
        sweep = fan.sweep
        if sweep is None:
            if not fan.log:
                fan.handle = None
                return
            sweep = fan.sweep = _Sweep(fan)
            fan.reach = sweep.given
        else:
            fan.extend_reach()
        started = perf_counter()
        walk = sweep.walk
        position = sweep.position
        batches = fan.batches  # the same dict for the whole step (cleared, never replaced)
        seen: Key | None = None  # the last cursor looked up, its batch, and its bytes
        batch = None
        wires: dict[Wire | None, bytes] = {}
        while position < len(walk):
            end = position + SWEEP_SLICE
            for sub in walk[position:end]:
                try:
                    if sub.state == _LIVE and sub.remaining is None:
                        # Subscriber.deliver's usual case, here: a call is about a
                        # tenth of a delivery's instructions. Nearly every live
                        # subscriber holds the same cursor (the one key object the
                        # last sweep left), so it is looked up once (a tuple's hash
                        # is computed anew each time), and without after(). A closed
                        # sink is not asked about: its write() drops the bytes.
                        cursor = sub.cursor
                        if cursor is not seen:
                            try:
                                batch = batches[cursor]
                            except KeyError:
                                batch = fan.after(cursor)
                            if batch is not None:
                                wires = batch.wires
                            seen = cursor
                        if batch is not None:
                            sub.cursor = batch.last_key
                            # The bytes its wire shares, when framed already: written
                            # here, a call less than write_batch.
                            sink = sub.sink
                            data = wires.get(sink.shared_wire)
                            if data is not None:
                                sink.write(data)
                            else:
                                sink.write_batch(batch)
                    else:
                        sub.deliver(fan)
                except Exception:  # one broken subscriber must not stop the others
                    log.exception("delivery to a subscriber of %r failed", sub.topic)
                    sub.sink.close(errors.INTERNAL_ERROR)
            position = end
            if position < len(walk) and len(fan.log) <= JOIN_MAX:
                # The loop runs between steps, so that a message published
                # meanwhile joins this sweep. Past JOIN_MAX messages publishing
                # outpaces the sweep: it goes on to its end in one go, and the
                # publishers wait for it, as they did for a flush.
                sweep.position = position
                sweep.busy += perf_counter() - started
                fan.handle = asyncio.get_running_loop().call_soon(self._sweep, fan)
                return
        sweep.busy += perf_counter() - started
        # The sweep is over: every subscriber has what the log held when it
        # began. What came since has reached the subscribers the sweep had not
        # passed yet; a next sweep takes it to the others.
        fan.sweep = None
        fan.forget(sweep.given)
        metrics = self.metrics
        if metrics is not None:  # per sweep, never per subscriber
            metrics.flushed(fan.counts, sweep.given, sweep.busy)
        if self.flush_hold > 0 and (len(fan.log) >= HOLD_FROM or sweep.given > JOIN_MAX):
            # The adaptive hold. Several messages came while this sweep ran, or
            # it began with more than it may take in: publishing outpaces the
            # sweeps, so the next one waits as long as this one kept the loop
            # busy (at most flush_hold) and carries what arrives meanwhile: the
            # sends per message fall as the load rises. Otherwise the next
            # sweep is not held, so a message waits at most about one sweep.
            fan.next_sweep = asyncio.get_running_loop().time() + min(sweep.busy, self.flush_hold)
        fan.handle = None
        if fan.log:
            self._schedule(fan)

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
        if fan.log:  # published before it came: the history read below has them
            sub.given = fan.log[-1].key
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
                if fan.handle is not None:
                    fan.handle.cancel()
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
