"""Prometheus metrics at ``/metrics``: counted where it is cheap, read at scrape.

Nothing here runs per delivery. What is counted, and where:

* **deliveries** (``streamgate_deliveries_total{transport}``): the hub's sweep
  adds messages x subscribers per transport once per sweep, from counts its
  fan-out keeps on subscribe and unsubscribe (:meth:`Metrics.flushed`); a
  history replay adds what it wrote, once per slice; a per-connection stream
  adds its items.
* **publishes** (``streamgate_messages_published_total``,
  ``streamgate_publish_seconds``): ``ctx.publish`` times the broker's publish
  and hands the figures to :meth:`Metrics.published`, for every publish of
  this gateway (HTTP, batch, WebSocket command, shared sources, and
  ``Gateway.publish`` in an embedding application). No topic
  label: topics are made by clients, an unbounded set.
* **sweep duration** (``streamgate_flush_seconds``): the time the hub's sweep
  of a topic kept the loop busy, its steps summed (two ``perf_counter`` calls
  per step and a bucket increment per sweep).
* Everything else is read when ``/metrics`` is scraped: open streams and the
  bytes queued for them (one pass over ``ctx.sessions``), the disconnect
  reasons the streams count anyway (``ctx.disconnects``), the broker's failed
  operations (``broker.errors``), refused connections, malformed requests, the
  history held, and the process's CPU, memory and descriptors.

The histograms are plain bucket counters (:class:`Buckets`), turned into
Prometheus families at scrape time, as is every other figure: each gateway has
its own :class:`~prometheus_client.CollectorRegistry` (never the global
default one), so several gateways in one process never mix their figures.

Who may read ``/metrics``: anyone when access control is off and no
``--metrics-token`` is set (like ``/healthz``: counts, no topic names); with a
``--metrics-token``, only a request that sends it as ``Authorization: Bearer``;
with access control on and no such token, nobody (403 that says to set one).
"""

from __future__ import annotations

import hmac
from bisect import bisect_left
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from aiohttp import web
from prometheus_client import CollectorRegistry, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from . import errors
from .context import CONTEXT
from .errors import Disconnect, Forbidden, NotFound, Unauthorized
from .responses import json_errors

if TYPE_CHECKING:
    from .context import Context

__all__ = ["FLUSH_BUCKETS", "PUBLISH_BUCKETS", "Buckets", "Metrics", "metrics_handler"]

TRANSPORTS = ("chunked", "sse", "ws")

PUBLISH_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
"""``streamgate_publish_seconds``: tens of microseconds for the memory broker, a
Redis round trip (about a millisecond) for Redis, up to ``--redis-timeout``."""

FLUSH_BUCKETS = (
    0.00001,
    0.000025,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)
"""``streamgate_flush_seconds``: one sweep of a topic's subscribers, a few
microseconds per subscriber (most of it the kernel's send)."""

DISCONNECT_REASONS = tuple(
    sorted({v.reason for v in vars(errors).values() if isinstance(v, Disconnect)})
)
"""Every reason a stream can end with: each series exists from the start, at 0."""


class Buckets:
    """A histogram as plain counters: :meth:`observe` is a bisect and two adds."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: +Inf
        self.total = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # le is inclusive
        self.total += value

    def family(self, name: str, documentation: str) -> HistogramMetricFamily:
        cumulative: list[tuple[str, float]] = []
        running = 0
        for bound, count in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return HistogramMetricFamily(name, documentation, buckets=cumulative, sum_value=self.total)


class Metrics:
    """One gateway's figures and its registry (``ctx.metrics``; None when off)."""

    __slots__ = (
        "ctx",
        "deliveries",
        "flush_seconds",
        "messages_published",
        "publish_seconds",
        "registry",
    )

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.deliveries: dict[str, int] = dict.fromkeys(TRANSPORTS, 0)
        self.messages_published = 0
        self.publish_seconds = Buckets(PUBLISH_BUCKETS)
        self.flush_seconds = Buckets(FLUSH_BUCKETS)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))
        ProcessCollector(registry=self.registry)  # CPU, memory, descriptors, at scrape
        ctx.hub.metrics = self

    # -- counted as it happens (never per delivery) ------------------------------------------

    def flushed(self, counts: dict[str, int], messages: int, seconds: float) -> None:
        """A hub sweep gave ``messages`` to ``counts`` subscribers per transport."""
        deliveries = self.deliveries
        for transport, subscribers in counts.items():
            if subscribers:
                deliveries[transport] = deliveries.get(transport, 0) + subscribers * messages
        self.flush_seconds.observe(seconds)

    def delivered(self, transport: str, messages: int) -> None:
        """Messages written to one subscriber outside a sweep (history, per-connection)."""
        self.deliveries[transport] = self.deliveries.get(transport, 0) + messages

    def published(self, messages: int, seconds: float) -> None:
        """One call to the broker's publish (``ctx.publish``) succeeded."""
        self.messages_published += messages
        self.publish_seconds.observe(seconds)

    # -- who may read them -------------------------------------------------------------------

    def check(self, request: web.BaseRequest) -> None:
        """401/403 unless the request may read the metrics (see the module's docstring)."""
        token = self.ctx.settings.metrics_token
        if token:
            scheme, _, given = request.headers.get("Authorization", "").partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(
                given.strip().encode(), token.encode()
            ):
                raise Unauthorized(
                    "/metrics needs the metrics token: Authorization: Bearer <--metrics-token>",
                    headers={"WWW-Authenticate": 'Bearer realm="streamgate-metrics"'},
                )
        elif self.ctx.auth.enabled:
            raise Forbidden(
                "with access control on, /metrics is read with a token of its own: start the "
                "gateway with --metrics-token and send it as Authorization: Bearer"
            )


class _Collector(Collector):
    """Turns the counters into families, and reads the rest, at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        ctx = m.ctx
        open_streams = dict.fromkeys(TRANSPORTS, 0)
        queued = 0
        for stream in ctx.sessions:
            name = stream.transport_name
            open_streams[name] = open_streams.get(name, 0) + 1
            queued += stream.queued_bytes

        connections = GaugeMetricFamily(
            "streamgate_connections", "Open streams, by transport.", labels=["transport"]
        )
        for name, count in open_streams.items():
            connections.add_metric([name], count)
        yield connections
        yield GaugeMetricFamily(
            "streamgate_queued_bytes",
            "Bytes written by the gateway and not yet taken by the sockets (user space), "
            "over all streams.",
            value=queued,
        )
        yield CounterMetricFamily(
            "streamgate_messages_published",
            "Messages this gateway published (HTTP, batch, WebSocket, sources, Gateway.publish).",
            value=m.messages_published,
        )
        deliveries = CounterMetricFamily(
            "streamgate_deliveries",
            "Messages handed to subscribers: per sweep, messages x the topic's subscribers "
            "on each transport; plus history replayed and per-connection items.",
            labels=["transport"],
        )
        for name, count in m.deliveries.items():
            deliveries.add_metric([name], count)
        yield deliveries
        disconnects = CounterMetricFamily(
            "streamgate_disconnects", "Streams that ended, by reason.", labels=["reason"]
        )
        counted = ctx.disconnects
        for reason in sorted({*DISCONNECT_REASONS, *counted}):
            disconnects.add_metric([reason], counted.get(reason, 0))
        yield disconnects
        yield m.publish_seconds.family(
            "streamgate_publish_seconds", "Time the broker took to publish (one per call)."
        )
        yield m.flush_seconds.family(
            "streamgate_flush_seconds",
            "Time one sweep kept the loop busy: new messages to every subscriber of a topic.",
        )
        yield CounterMetricFamily(
            "streamgate_broker_errors",
            "Broker operations that failed (Redis unreachable or refusing writes, failed reads).",
            value=ctx.broker.errors,
        )
        gate = ctx.gate
        yield CounterMetricFamily(
            "streamgate_refused_connections",
            "Connections answered 503 past --max-connections.",
            value=gate.refused.total if gate else 0,
        )
        yield CounterMetricFamily(
            "streamgate_malformed_requests",
            "Malformed requests answered 400 before any route.",
            value=gate.malformed.total if gate else 0,
        )
        yield GaugeMetricFamily(
            "streamgate_subscribed_topics",
            "Topics with subscribers on this gateway.",
            value=len(ctx.hub.subscribed_topics()),
        )
        history = ctx.broker.history_bytes()
        if history is not None:
            yield GaugeMetricFamily(
                "streamgate_history_bytes",
                "History the memory broker holds, as counted against --max-history-bytes.",
                value=history,
            )


@json_errors
async def metrics_handler(request: web.Request) -> web.Response:
    """``GET /metrics``: the Prometheus text format (OpenMetrics when the scraper
    asks for it in ``Accept``)."""
    ctx = request.app[CONTEXT]
    metrics = ctx.metrics
    if metrics is None:
        raise NotFound("metrics are off on this gateway (--metrics false)", code="not_found")
    metrics.check(request)
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    return web.Response(
        body=encoder(metrics.registry),
        headers={"Content-Type": content_type, "Cache-Control": "no-store"},
    )
