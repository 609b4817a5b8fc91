"""The running gateway's shared state, stored on the aiohttp app."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from time import perf_counter
from typing import TYPE_CHECKING

from aiohttp import web

from .auth import Auth
from .broker import Broker
from .hub import Hub
from .settings import Settings
from .sources import PerConnection, SourceFactory

if TYPE_CHECKING:
    from .limits import ConnectionGate
    from .logs import AccessLog
    from .message import Message
    from .metrics import Metrics
    from .transports.stream import Stream

__all__ = ["CONTEXT", "Context"]


@dataclass(eq=False)
class Context:
    """Settings, broker, hub, access control, per-connection streams and the open streams."""

    settings: Settings
    broker: Broker
    hub: Hub
    auth: Auth
    """The one access decision (``auth.check``) and the per-client limits (``auth.quota``)."""
    streams: dict[str, PerConnection] = field(default_factory=dict)
    """Per-connection streams by name (``count``, ``--stream``, ``Gateway.stream``)."""
    shared: dict[str, SourceFactory] = field(default_factory=dict)
    """Shared sources by topic (``ticks``, ``--source``, ``Gateway.source``),
    started with the gateway."""
    sessions: dict[Stream, None] = field(default_factory=dict)
    """Every open streaming connection (heartbeats, shutdown, tests); a dict as
    an ordered set, a third of a set's size at thousands of connections."""
    owned: dict[Stream, None] = field(default_factory=dict)
    """Every stream, from the moment it takes its connection over from aiohttp
    until it has closed it (``sessions`` lets go earlier, as the ending
    starts): counted against ``--max-connections``, waited for and then
    dropped at shutdown."""
    disconnects: Counter[str] = field(default_factory=Counter)
    """How many streams ended, by reason (``slow_consumer``, ``limit``, ...)."""
    sources: dict[str, str] = field(default_factory=dict)
    """Each shared source: ``running`` on this gateway, or ``standby`` (another
    replica holds its lease)."""
    started: bool = False
    """Whether the broker is started (the application is running)."""
    gate: ConnectionGate | None = None
    """The connection limit, once the gateway listens."""
    metrics: Metrics | None = None
    """``/metrics``'s counters and registry (``gateway/metrics.py``); None when off."""
    access_log: AccessLog | None = None
    """The streams' access lines (``--access-log``, ``gateway/logs.py``); None when off."""

    async def publish(self, topic: str, data_json: Sequence[bytes]) -> list[Message]:
        """Every publish of the gateway (API, WebSocket, sources, ``Gateway.publish``):
        the broker's, counted and timed when metrics are on."""
        metrics = self.metrics
        started = perf_counter() if metrics is not None else 0.0
        messages = await self.broker.publish(topic, data_json)  # a failure: broker.errors
        if metrics is not None:
            metrics.published(len(messages), perf_counter() - started)
        self.hub.sweep_now(topic)  # the memory broker's messages: written before the answer
        return messages

    def drop_all(self) -> int:
        """Abort every open streaming connection at once (for fault tests)."""
        streams = list(self.sessions)
        for stream in streams:
            stream.transport.abort()
        return len(streams)


CONTEXT = web.AppKey("streamgate", Context)
