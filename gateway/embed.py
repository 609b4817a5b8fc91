"""The public API: streamgate as an object, inside your own aiohttp application.

``streamgate serve`` is built on this same class (``app.running`` makes a
:class:`Gateway` and serves its :attr:`~Gateway.app`); nothing here is a
second path to the broker or the hub.

::

    gw = Gateway(history_size=500, heartbeat=10)
    app = web.Application()
    gw.attach(app, prefix="/stream")

    @gw.stream("squares")
    async def squares(n: int = 10):
        for i in range(n):
            yield {"i": i, "sq": i * i}

    async def order_created(request):
        return web.json_response({"id": await gw.publish("orders", {"id": 42})})
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any, TypeVar

import orjson
from aiohttp import web

from .app import build_app
from .auth import Authorize
from .context import CONTEXT, Context
from .errors import NotFound, PayloadTooLarge
from .settings import Settings
from .sources import PerConnection
from .transports.common import validate_topic

__all__ = ["Gateway"]

F = TypeVar("F", bound=Callable[..., AsyncIterator[Any]])


class Gateway:
    """One gateway: its settings, its broker, hub and routes, in an aiohttp
    application of its own (:attr:`app`) that you mount into yours with
    :meth:`attach`, or serve as it is.

    ``settings`` (a :class:`~gateway.settings.Settings`) or keyword arguments
    named as its fields (``history_size=500``, ``broker="redis://..."``; the
    same as the ``--history-size`` flags) give the configuration; keywords
    override the fields of ``settings``. An unknown name is a ``TypeError``, a
    bad value a ``ValueError``. ``host`` and ``port`` only matter to
    ``streamgate serve``: attached, the gateway answers where your app listens.

    ``authorize`` is your application's own access check: an async (or plain)
    callable ``(request, topic, action) -> bool``, ``action`` being
    ``"subscribe"`` or ``"publish"`` (which ``DELETE /topics/{t}`` also
    needs). It is asked for every stream and HTTP publish that a token
    (``auth_key``) has not already decided; False is 403. The request is the
    one your middlewares saw, so a session of yours is at hand. It is one
    source of the single access decision, with tokens and ``auth_url``
    (give ``authorize`` or ``auth_url``, not both). :meth:`publish` from your
    own code is not checked: it is you. In ``authorize``, ``request.app`` is the
    gateway's application (mounted in yours): read your app's keys through
    ``request.config_dict``, which sees both.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        *,
        authorize: Authorize | None = None,
        **options: Any,
    ) -> None:
        base = settings if settings is not None else Settings()
        try:
            self.settings = dataclasses.replace(base, **_as_settings(options))
        except TypeError as exc:
            known = ", ".join(f.name for f in dataclasses.fields(Settings))
            raise TypeError(f"{exc}; the settings are: {known}") from None
        self.app: web.Application = build_app(self.settings, authorize=authorize)
        """The gateway's own aiohttp application (its routes, start and stop)."""
        self.context: Context = self.app[CONTEXT]
        self._mounted: str | None = None

    # -- mounting -------------------------------------------------------------------------------

    def attach(self, app: web.Application, prefix: str = "/stream") -> None:
        """Mount the gateway under ``prefix`` of ``app``: its routes (streams,
        publish, topics, the page at ``prefix + "/"``) and its start and stop,
        which then follow ``app``'s (``on_startup``, ``on_shutdown``,
        ``on_cleanup``). Your middlewares run before its handlers.

        Run ``app`` with ``handler_cancellation=True`` (``web.run_app`` or
        ``AppRunner``): a stream whose client went away is then ended at once;
        without it, at its next heartbeat.
        """
        if self._mounted is not None:
            raise RuntimeError(f"this gateway is already attached at {self._mounted!r}")
        if not prefix.startswith("/") or prefix.rstrip("/") == "":
            raise ValueError(
                f"prefix must be a path such as '/stream', got {prefix!r} (to serve the gateway "
                "at the root, run Gateway.app itself)"
            )
        prefix = prefix.rstrip("/")
        page = prefix + "/"

        async def to_the_page(request: web.Request) -> web.StreamResponse:
            # The page's links are relative: it must be at prefix + "/".
            query = request.rel_url.query_string
            raise web.HTTPPermanentRedirect(page + (f"?{query}" if query else ""))

        app.router.add_get(prefix, to_the_page)  # before the sub-app, which would 404 it
        app.add_subapp(prefix, self.app)
        self._mounted = prefix

    # -- what the gateway serves -----------------------------------------------------------

    def stream(self, name: str) -> Callable[[F], F]:
        """Register a per-connection stream: ``GET /{transport}/{name}?a=1`` calls
        the decorated async generator with the query parameters as keyword
        arguments, once per connection, paced by the client. A parameter
        annotated ``int``, ``float`` or ``bool`` is converted (a bad value is 400
        ``bad_params``); a keyword-only ``skip`` lets the stream resume itself
        (``since=0-<n>`` calls it with ``skip=n``)."""
        topic = validate_topic(name)

        def register(factory: F) -> F:
            if topic in self.context.shared:
                raise ValueError(f"{topic!r} is a shared source already, not a stream")
            self.context.streams[topic] = PerConnection(factory)
            return factory

        return register

    def source(self, name: str) -> Callable[[F], F]:
        """Register a shared source: the decorated async generator (no arguments)
        runs once per gateway (once over all replicas on a Redis broker) while
        the application runs, and every item it yields is published to topic
        ``name``, with history and resume like any other message. Register it
        before the application starts."""
        topic = validate_topic(name)

        def register(factory: F) -> F:
            if self.context.started:
                raise RuntimeError("register sources before the application starts")
            if topic in self.context.streams:
                raise ValueError(f"{topic!r} is a per-connection stream already, not a source")
            self.context.shared[topic] = factory
            return factory

        return register

    # -- publishing from Python -----------------------------------------------------------

    async def publish(self, topic: str, data: object) -> str:
        """Publish ``data`` (any value orjson serialises) to ``topic``; returns the
        message's id once the broker has it (the subscribers get it right after)."""
        (msg_id,) = await self.publish_many(topic, (data,))
        return msg_id

    async def publish_many(self, topic: str, items: Iterable[object]) -> list[str]:
        """Publish every item of ``items`` to ``topic`` as one batch (consecutive
        ids, one broker round trip); returns their ids in order."""
        ctx = self.context
        topic = validate_topic(topic)
        if topic in ctx.streams:
            raise NotFound(f"{topic!r} is a per-connection stream; it cannot be published to")
        if not ctx.started:
            raise RuntimeError(
                "the gateway is not running yet: publish once the application has started "
                "(from a handler, or a task started in on_startup or later)"
            )
        limit = ctx.settings.max_message_bytes
        data = []
        for item in items:
            try:
                raw = orjson.dumps(item)
            except TypeError as exc:  # not serialisable, or nested too deep
                raise TypeError(f"cannot publish {type(item).__name__}: {exc}") from None
            if len(raw) > limit:
                raise PayloadTooLarge(
                    f"a message of {len(raw)} bytes is over max_message_bytes ({limit})"
                )
            data.append(raw)
        if not data:
            return []
        return [m.id for m in await ctx.publish(topic, data)]


def _as_settings(options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments as Settings fields: a list where a tuple is kept."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
