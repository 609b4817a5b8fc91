"""Idle topics expire: the sweep behind ``--topic-ttl``.

A topic with no local subscriber and no publish for ``topic_ttl`` seconds is
removed with its history, which is also what lets ``--max-topics`` recover
after a burst of one-off topics. Topics declared at start (``--topic``, shared
sources such as ``ticks``) never expire. The broker does the bookkeeping
(:meth:`gateway.broker.Broker.expire_topics`); the sweep tells it, each time,
which topics to keep: those declared and those the hub has local subscribers
for. With Redis that refresh is what keeps a topic alive for the subscribers of
every replica.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection

from . import errors
from .context import Context
from .errors import Unavailable

__all__ = ["expire_topics_forever", "sweep_interval"]

log = logging.getLogger(__name__)

MAX_SWEEP_INTERVAL = 60.0
MIN_SWEEP_INTERVAL = 0.05


def sweep_interval(ttl: float) -> float:
    """A quarter of the TTL, between 50 ms (tests) and a minute."""
    return max(MIN_SWEEP_INTERVAL, min(ttl / 4, MAX_SWEEP_INTERVAL))


async def expire_topics_forever(ctx: Context, declared: Collection[str]) -> None:
    """Sweep every :func:`sweep_interval` seconds until cancelled."""
    ttl = ctx.settings.topic_ttl
    interval = sweep_interval(ttl)
    declared = frozenset(declared)
    while True:
        await asyncio.sleep(interval)
        keep = declared.union(ctx.hub.subscribed_topics())
        try:
            expired = await ctx.broker.expire_topics(ttl, keep)
        except Unavailable as exc:
            log.warning("topic expiry skipped: %s", exc.message)
            continue
        for topic in expired:
            # A subscriber that arrived during the sweep (Redis: while the
            # script ran) must not wait on a topic that is gone.
            ctx.hub.end_topic(topic, errors.TOPIC_DELETED)
        if expired:
            log.info("expired %d idle topic(s): %s", len(expired), ", ".join(expired[:10]))
