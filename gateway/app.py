"""Building and running the application: state, background tasks, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import resource
import signal
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from aiohttp import web

from . import errors
from .aiohttp_compat import GatewaySite
from .api import STATIC_DIR, routes
from .auth import Auth, Authorize
from .broker import Broker
from .broker.memory import MemoryBroker
from .context import CONTEXT, Context
from .expiry import expire_topics_forever
from .hub import Hub
from .limits import ConnectionGate, Tally, accept_error_handler, max_connections
from .logs import ACCESS, AccessLog, RequestLog
from .origins import ORIGINS, OriginPolicy
from .responses import name_the_server
from .settings import Settings
from .sources import PerConnection, count, load_target, parse_spec, run_shared, ticks
from .transports.common import validate_topic
from .transports.stream import reset_connection

__all__ = [
    "Running",
    "build_app",
    "local_url",
    "raise_open_files_limit",
    "running",
    "serve",
    "warn_if_open",
]

log = logging.getLogger("gateway")

TICKS = "ticks"


def build_app(settings: Settings, *, authorize: Authorize | None = None) -> web.Application:
    """The aiohttp application for ``settings``, not yet started; ``authorize`` is
    an embedding application's own access check (see :class:`gateway.auth.Auth`)."""
    broker: Broker
    if settings.broker == "memory":
        broker = MemoryBroker(
            history_size=settings.history_size,
            max_topics=settings.max_topics,
            max_history_bytes=settings.max_history_bytes,
        )
    else:
        from .broker.redis import RedisBroker  # redis is an optional dependency

        broker = RedisBroker(
            settings.broker,
            history_size=settings.history_size,
            max_topics=settings.max_topics,
            prefix=settings.redis_prefix,
            timeout=settings.redis_timeout,
        )
    hub = Hub(broker, write_delay=settings.write_delay, flush_hold=settings.flush_hold)
    auth = Auth(settings, authorize=authorize)
    ctx = Context(settings=settings, broker=broker, hub=hub, auth=auth)
    ctx.streams["count"] = PerConnection(count)
    for spec in settings.streams:
        name, target = parse_spec(spec)
        ctx.streams[validate_topic(name)] = PerConnection(load_target(target))
    if settings.tick_interval > 0:
        interval = settings.tick_interval
        ctx.shared[TICKS] = lambda: ticks(interval)
    for spec in settings.sources:
        name, target = parse_spec(spec)
        ctx.shared[validate_topic(name)] = load_target(target)
    extra = {}
    if settings.metrics:  # prometheus-client is imported only then
        from .metrics import Metrics, metrics_handler

        ctx.metrics = Metrics(ctx)
        extra["/metrics"] = metrics_handler
    if settings.access_log:  # the streams' lines; the requests' come from the runner's hook
        ctx.access_log = AccessLog()

    app = web.Application()  # no middleware: see responses.json_errors
    app[CONTEXT] = ctx
    app[ORIGINS] = policy = OriginPolicy.from_settings(settings)
    app.add_routes(routes(extra))
    app.cleanup_ctx.append(auth.lifecycle)
    app.cleanup_ctx.append(_background(ctx))
    app.on_shutdown.append(_say_goodbye)
    app.on_cleanup.append(_drop_owned)
    # A signal, not a middleware: it runs once per response, and no frame of it
    # stays alive for as long as a stream does.
    app.on_response_prepare.append(name_the_server)
    if policy.cors:  # CORS headers for the listed origins; nothing to run otherwise
        app.on_response_prepare.append(policy.on_prepare)
    STATIC_DIR.mkdir(exist_ok=True)
    return app


def _background(ctx: Context) -> Callable[[web.Application], AsyncIterator[None]]:
    async def background(app: web.Application) -> AsyncIterator[None]:
        await ctx.broker.start()
        ctx.started = True
        sources = ctx.shared
        for name in (*ctx.settings.topics, *sources):
            if name in ctx.streams:
                raise ValueError(f"{name!r} is both a topic and a per-connection stream")
            await ctx.broker.create_topic(validate_topic(name))
        lease = ctx.settings.source_lease
        tasks = [
            asyncio.create_task(
                run_shared(name, factory, ctx.publish, ctx.broker, lease, ctx.sources),
                name=f"source:{name}",
            )
            for name, factory in sources.items()
        ]
        tasks.append(asyncio.create_task(_heartbeats(ctx), name="heartbeats"))
        if ctx.settings.topic_ttl > 0:
            declared = (*ctx.settings.topics, *sources)
            tasks.append(asyncio.create_task(expire_topics_forever(ctx, declared), name="expiry"))
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            ctx.started = False
            await ctx.broker.close()

    return background


HEARTBEAT_SLICES = 16
"""The heartbeat loop serves one slice of the connections each time it wakes
(twice this many times per ``--heartbeat`` interval), so 10,000 WebSockets do
not all get a ping (and answer with a pong) in the same loop turn."""


def heartbeat_slice(stream: object) -> int:
    """The slice a stream's heartbeats belong to, fixed for its life: its
    address, mixed (Fibonacci hashing). Not ``hash() % HEARTBEAT_SLICES``:
    objects of one size sit a fixed stride apart, and at a 256-byte stride
    every stream fell into the same slice."""
    mixed = ((id(stream) >> 4) * 0x9E3779B97F4A7C15) & 0xFFFF_FFFF_FFFF_FFFF
    return (mixed >> 32) % HEARTBEAT_SLICES


async def _heartbeats(ctx: Context) -> None:
    """One loop for every heartbeat (each transport's class says what it is: a
    blank line, a ``: ping`` comment, a ping frame). No connection has a timer
    or a task of its own for it.

    Each connection belongs to one of ``HEARTBEAT_SLICES`` slices
    (:func:`heartbeat_slice`) and is visited twice per interval, when its slice comes
    round; :meth:`~gateway.transports.stream.Stream.beat` decides whether it
    gets a heartbeat.
    """
    loop = asyncio.get_running_loop()
    tick = ctx.settings.heartbeat / (2 * HEARTBEAT_SLICES)
    turn = 0
    while True:
        await asyncio.sleep(tick)
        turn = (turn + 1) % HEARTBEAT_SLICES
        now = loop.time()
        for stream in list(ctx.sessions):
            if heartbeat_slice(stream) == turn:
                stream.beat(now)


async def _say_goodbye(app: web.Application) -> None:
    """Shutdown, step 1: every stream gets a goodbye; wait for most of the grace."""
    ctx = app[CONTEXT]
    for stream in list(ctx.sessions):
        stream.close(errors.SHUTDOWN)
    deadline = time.monotonic() + ctx.settings.grace * 0.6
    # Also the close handshakes of the connections the gateway owns (aiohttp
    # waits for its own handlers, not for these).
    while (ctx.sessions or ctx.owned) and time.monotonic() < deadline:  # noqa: ASYNC110
        await asyncio.sleep(0.02)


async def _drop_owned(app: web.Application) -> None:
    """Shutdown, last step (after aiohttp's own connections): the grace is
    over, so a connection the gateway owns that is still open is reset."""
    for stream in list(app[CONTEXT].owned):
        stream.reset()


@dataclass
class Running:
    """A started gateway: where it listens, and how to stop it."""

    app: web.Application
    runner: web.AppRunner
    port: int

    @property
    def context(self) -> Context:
        return self.app[CONTEXT]


@contextlib.asynccontextmanager
async def running(
    settings: Settings, *, authorize: Authorize | None = None
) -> AsyncIterator[Running]:
    """Start the gateway on ``settings.host:port`` and stop it on exit.

    Shutdown takes at most ``settings.grace`` seconds (plus a little): streams
    get their goodbye, handlers get the rest of the grace, then connections
    that are still open (clients that do not read) are dropped.
    """
    from .embed import Gateway  # the public API, built on build_app

    app = Gateway(settings, authorize=authorize).app
    ctx = app[CONTEXT]
    runner = web.AppRunner(
        app,
        handler_cancellation=True,
        shutdown_timeout=max(0.1, settings.grace * 0.3),
        access_log=ACCESS if settings.access_log else None,
        access_log_class=RequestLog,
        # aiohttp closes a connection whose next request head is not complete
        # this long after it connected or after its previous response.
        keepalive_timeout=settings.read_timeout,
    )
    gate = ctx.gate = ConnectionGate(max_connections(settings.max_connections), ctx.owned)
    await runner.setup()
    try:
        site = GatewaySite(
            runner,
            settings.host,
            settings.port,
            wrap=gate.wrap,
            backlog=4096,
            reuse_port=settings.workers > 1,
        )
        await site.start()
        yield Running(app, runner, site.port)
    finally:
        server_obj = runner.server
        await runner.cleanup()
        # Connections still holding unsent bytes (stuck clients) would keep
        # their transports alive; the grace period is over: reset them.
        if server_obj is not None:
            for conn in server_obj.connections:
                if conn.transport is not None:
                    reset_connection(conn.transport)
        gate.close()


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft limit on open files to the hard limit; returns (before, after).

    Every connection is a file descriptor, and the usual soft limit (1024) would
    cap the gateway near a thousand clients whatever the hardware.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, target
    return soft, soft


def local_url(host: str, port: int) -> str:
    """A URL a person on this machine can open for a gateway bound to ``host``:
    the loopback address for the wildcards (``0.0.0.0``: 127.0.0.1; ``::``:
    [::1]), brackets around another IPv6 address."""
    if host in ("", "0.0.0.0"):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


def warn_if_open(settings: Settings, port: int | None = None) -> bool:
    """At start-up: one WARNING line when no access control is configured
    (``--auth-key``, ``--auth-url``), saying who may do what and where the
    gateway listens. Returns whether it warned."""
    if settings.auth_key or settings.auth_url:
        return False
    port = settings.port if port is None else port
    host = settings.host or "0.0.0.0"
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    local = False
    if host in ("0.0.0.0", "::"):
        where += ", every interface: other machines reach it too"
    else:
        try:
            local = host == "localhost" or ipaddress.ip_address(host).is_loopback
        except ValueError:
            local = False
        where += ", this machine only" if local else ""
    log.warning(
        "no access control: anyone who can reach the gateway may publish, delete topics and "
        "read every topic; it listens on %s%s",
        where,
        "" if local else " (--host 127.0.0.1 keeps it to this machine)",
    )
    return True


async def serve(settings: Settings, *, on_ready: Callable[[int], None] | None = None) -> None:
    """Run until SIGTERM or SIGINT, then shut down within the grace period."""
    before, after = raise_open_files_limit()
    if after != before:
        log.info("open files limit raised from %d to %d", before, after)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # asyncio's accept loop logs a traceback for every accept() that finds no
    # free descriptor (thousands a second): one line per interval instead.
    exhausted = Tally("accept() failed: out of file descriptors")
    loop.set_exception_handler(accept_error_handler(exhausted))
    async with running(settings) as gw:
        host = settings.host or "0.0.0.0"
        url = local_url(host, gw.port)
        log.info(
            "streamgate listening on %s (%s event loop): open %s in a browser for the page%s",
            f"[{host}]:{gw.port}" if ":" in host else f"{host}:{gw.port}",
            type(loop).__module__.partition(".")[0],
            url,
            f"; metrics at {url}metrics" if settings.metrics else "",
            extra={"fields": {"url": url}},
        )
        warn_if_open(settings, gw.port)
        if on_ready is not None:
            on_ready(gw.port)
        await stop.wait()
        log.info("shutting down (grace %.1f s)", settings.grace)
    exhausted.close()
    log.info("stopped")
