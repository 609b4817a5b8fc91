"""The broker: owns ids and history, and hands every new message to a listener.

Two implementations behind one protocol: :mod:`.memory` (the embedded
default) and :mod:`.redis` (Redis Streams, for several replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..ids import ZERO, Key
from ..message import Message

__all__ = ["Broker", "HistoryRead", "Listener", "TopicInfo", "resume_gap", "unknown_since"]

Listener = Callable[[Message], None]


def unknown_since(since: Key | None, last: Key) -> bool:
    """``since`` is newer than any id the topic's current history ever issued:
    it comes from an earlier history whose clock ran ahead of this one's (a
    restart after the clock stepped back). A read then answers as for
    ``since=0-0`` (everything retained), with a gap, so that no message of the
    current history hides behind the client's id."""
    return since is not None and since != ZERO and since > last


def resume_gap(since: Key | None, evicted: Key | None, first: Key | None) -> bool:
    """Whether a resume from ``since`` starts with a ``gap`` event.

    A broker vouches only for the history of the topic's current *epoch*: since
    the topic last came into being (this process's start for the memory
    broker, the stream's creation for Redis; a topic deleted or expired and
    then used again starts a new one). Ids follow the clock, so an id from an
    earlier epoch is older than everything of this one. The answer:

    * ``evicted`` (the newest message that left history) is set: a gap when
      ``since`` is older than it, as ever;
    * nothing evicted in this epoch: a gap when ``since`` is a real id (not
      ``0-0``, "I have nothing") older than the oldest retained message
      (``first``), or when nothing is retained: such an id is not one this
      epoch issued, so messages of an earlier epoch may have been lost.

    Conservative by design: a gap where nothing was really lost is allowed, a
    loss without one is not.
    """
    if since is None:
        return False
    if evicted is not None:
        return since < evicted
    if since == ZERO:
        return False
    return first is None or since < first


@dataclass(frozen=True, slots=True)
class HistoryRead:
    """What :meth:`Broker.read` found after an id."""

    messages: Sequence[Message]
    gap: bool
    """True when messages after ``since`` were evicted from history."""
    first_id: str | None
    last_key: Key


@dataclass(frozen=True, slots=True)
class TopicInfo:
    name: str
    first_id: str | None
    last_id: str | None
    length: int


class Broker(Protocol):
    """Ids, history and the hand-off of new messages to the hub."""

    errors: int
    """Operations that failed since start (Redis unreachable or refusing writes,
    a live read retried); ``streamgate_broker_errors_total``."""

    def set_listener(self, listener: Listener) -> None:
        """Called with every new message, in id order, on the event loop."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def lease(self, name: str, ttl: float, *, renew: bool) -> bool:
        """Take (or, with ``renew``, keep) the lease ``name`` for ``ttl`` seconds;
        True while it is this gateway's. One replica at a time runs each shared
        source (:func:`gateway.sources.run_shared`)."""

    async def release(self, name: str) -> None:
        """Give up the lease ``name`` if it is this gateway's."""

    async def has_topic(self, topic: str) -> bool: ...

    async def create_topic(self, topic: str) -> Key:
        """Make ``topic`` exist (idempotent) and return the id of its newest
        message (``ZERO`` when it has none). Raises Conflict past max_topics.

        A subscription without ``since`` starts from this id, taken before its
        response goes out: whatever is published once the client has seen the
        response is after it, so it is replayed or delivered live, never
        skipped while the hub starts watching the topic."""

    async def publish(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        """Append one message per item, in order; returns them with their ids."""

    async def read(self, topic: str, since: Key | None, limit: int | None = None) -> HistoryRead:
        """Retained messages with id > ``since`` (all when None), oldest first."""

    async def topics(self) -> list[TopicInfo]: ...

    async def watch(self, topic: str) -> None:
        """``topic`` has local subscribers: hand on its new messages from now on.

        Called before the first subscriber reads history, so that the hand-off
        from history to live has no hole.
        """

    def unwatch(self, topic: str) -> None:
        """``topic`` has no local subscriber left."""

    async def delete_topic(self, topic: str) -> bool:
        """Remove ``topic`` and its history; False when there was no such topic."""

    async def expire_topics(self, ttl: float, keep: Collection[str]) -> list[str]:
        """Remove topics with no publish for ``ttl`` seconds; returns their names.

        ``keep`` (topics with local subscribers, topics declared at start) count
        as active now. Called by the sweep (``gateway/expiry.py``).
        """

    def history_bytes(self) -> int | None:
        """Bytes of history this process holds (None: it holds none, as with Redis)."""
