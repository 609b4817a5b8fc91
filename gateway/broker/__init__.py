"""The broker: owns ids and history, and hands every new message to a listener.

Two implementations behind one protocol: :mod:`.memory` (the embedded
default) and :mod:`.redis` (Redis Streams, for several replicas).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

from ..ids import Key
from ..message import Message

__all__ = ["Broker", "HistoryRead", "Listener", "TopicInfo"]

Listener = Callable[[Message], None]


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

    def set_listener(self, listener: Listener) -> None:
        """Called with every new message, in id order, on the event loop."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    async def has_topic(self, topic: str) -> bool: ...

    async def create_topic(self, topic: str) -> None:
        """Make ``topic`` exist (idempotent). Raises Conflict past max_topics."""

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
