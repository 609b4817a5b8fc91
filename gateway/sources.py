"""Sources: shared generators that publish into a topic, and per-connection streams.

* A **shared** source runs once per gateway and publishes every item it yields
  into its topic; every subscriber sees the same messages, with history and
  resume. The demo topic ``ticks`` is one.
* A **per-connection** stream runs once per request, called with the request's
  query parameters, and is paced by the client: the transport waits for the
  socket before asking the generator for the next item. ``count`` is one.

A user names either with ``NAME=module:function``; the function returns an
async iterator (typically it is an ``async def`` generator).
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import logging
import random
import time
import types
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

import orjson

__all__ = [
    "PerConnection",
    "Publish",
    "SourceFactory",
    "StreamFactory",
    "count",
    "load_target",
    "parse_spec",
    "run_shared",
    "run_source",
    "ticks",
]

log = logging.getLogger(__name__)

SourceFactory = Callable[[], AsyncIterator[Any]]
StreamFactory = Callable[..., AsyncIterator[Any]]
Publish = Callable[[str, Sequence[bytes]], Awaitable[object]]


def parse_spec(spec: str) -> tuple[str, str]:
    """``NAME=module:function`` -> ``(NAME, "module:function")``."""
    name, _, target = spec.partition("=")
    return name.strip(), target.strip()


def load_target(target: str) -> Callable[..., AsyncIterator[Any]]:
    """Import ``module:function`` (``module:obj.attr`` works too)."""
    module_name, _, attr_path = target.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for attr in attr_path.split("."):
            obj = getattr(obj, attr)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot load {target!r}: {exc}") from exc
    if not callable(obj):
        raise ValueError(f"{target!r} is not callable")
    return obj  # type: ignore[no-any-return]


class PerConnection:
    """A per-connection stream's factory, with what its signature says, read
    once when it is registered (``inspect`` is slow; requests must not pay):

    * whether it positions itself: a keyword-only ``skip``. Such a stream is
      called with ``skip=<items to skip>`` (0 when not resuming) and yields
      from item ``skip + 1`` on; the gateway then skips nothing itself.
    * how to convert each query parameter: one annotated ``int``, ``float`` or
      ``bool`` (alone or with ``None``) is converted, and a value that does not
      convert is a ``ValueError`` (400 ``bad_params``); any other parameter, and
      one whose annotation admits ``str``, gets the string as it came.
    """

    __slots__ = ("converters", "factory", "takes_skip")

    def __init__(self, factory: StreamFactory) -> None:
        if not callable(factory):
            raise TypeError(f"a per-connection stream must be callable, got {factory!r}")
        self.factory = factory
        self.takes_skip = False
        self.converters: dict[str, Callable[[str], object]] = {}
        try:
            params = inspect.signature(factory).parameters
        except (TypeError, ValueError):  # no signature to read (some builtins)
            return
        skip = params.get("skip")
        self.takes_skip = skip is not None and skip.kind is inspect.Parameter.KEYWORD_ONLY
        try:
            hints = typing.get_type_hints(factory)
        except Exception:  # an annotation that does not resolve: pass strings
            hints = {}
        for name in params:
            convert = _converter(hints.get(name))
            if convert is not None:
                self.converters[name] = convert

    def __call__(self, params: Mapping[str, str], skip: int) -> AsyncIterator[Any]:
        """Start the generator (``ValueError``/``TypeError`` for bad parameters)."""
        args: Mapping[str, object] = params
        if self.converters:
            convert = self.converters
            args = {k: (convert[k](v) if k in convert else v) for k, v in params.items()}
        if self.takes_skip:
            return aiter(self.factory(**args, skip=skip))
        return aiter(self.factory(**args))


def _to_bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {raw!r}")


def _to_int(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"expected an integer, got {raw!r}") from None


def _to_float(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"expected a number, got {raw!r}") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ValueError(f"expected a finite number, got {raw!r}")
    return value


_CONVERTERS: dict[object, Callable[[str], object]] = {
    bool: _to_bool,
    int: _to_int,
    float: _to_float,
}


def _converter(annotation: object) -> Callable[[str], object] | None:
    """The converter for a parameter's annotation, or None (pass the string)."""
    if annotation is None:
        return None
    args = typing.get_args(annotation)
    if args and typing.get_origin(annotation) in (typing.Union, types.UnionType):
        kinds = [a for a in args if a is not type(None)]
        if len(kinds) != 1:
            return None  # str | int and the like: the function converts itself
        annotation = kinds[0]
    return _CONVERTERS.get(annotation)


# -- built-ins -----------------------------------------------------------------------


async def ticks(interval: float = 1.0) -> AsyncIterator[dict[str, Any]]:
    """The demo shared source: a numbered random walk, one item per ``interval``.

    Paced against a fixed schedule so the rate does not drift with load.
    """
    start = time.monotonic()
    value = 100.0
    n = 0
    while True:
        n += 1
        value = round(value + random.uniform(-1, 1), 4)
        yield {"n": n, "value": value}
        delay = start + n * interval - time.monotonic()
        await asyncio.sleep(max(0.0, delay))


COUNT_MAX = 10**12


async def count(
    n: str | int = 10, interval: str | float = 0, *, skip: int = 0
) -> AsyncIterator[dict[str, int]]:
    """The tutorials' classic: count from 1 to ``n``, ``interval`` seconds apart.

    Resuming after item ``skip`` starts at ``skip + 1`` at once, however far.
    """
    try:
        total = int(n)
        pause = float(interval)
    except ValueError:
        raise ValueError(
            f"n must be an integer and interval a number, got n={n!r} interval={interval!r}"
        ) from None
    if not 0 <= total <= COUNT_MAX:
        raise ValueError(f"n must be between 0 and {COUNT_MAX}")
    if not 0 <= pause <= 3600:
        raise ValueError("interval must be between 0 and 3600 seconds")
    for i in range(skip + 1, total + 1):
        yield {"n": i}
        if pause:
            await asyncio.sleep(pause)


# -- running shared sources --------------------------------------------------------------


async def run_source(name: str, factory: SourceFactory, publish: Publish) -> None:
    """Publish everything ``factory()`` yields into topic ``name``, forever.

    A source that raises is logged and restarted with backoff (1 s doubling to
    30 s); one that finishes is left finished.
    """
    backoff = 1.0
    while True:
        try:
            async for item in factory():
                await publish(name, [orjson.dumps(item)])
                backoff = 1.0
            log.info("source %r finished", name)
            return
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("source %r failed; restarting in %.0f s", name, backoff)
        await asyncio.sleep(backoff * random.uniform(0.8, 1.2))
        backoff = min(backoff * 2, 30.0)


# -- one replica at a time ------------------------------------------------------------------


class Lease(Protocol):
    """What :func:`run_shared` needs of the broker (gateway.broker.Broker)."""

    async def lease(self, name: str, ttl: float, *, renew: bool) -> bool: ...

    async def release(self, name: str) -> None: ...


async def run_shared(
    name: str,
    factory: SourceFactory,
    publish: Publish,
    broker: Lease,
    ttl: float,
    state: dict[str, str],
) -> None:
    """Run a shared source on one replica at a time.

    The replica that takes the lease ``source:<name>`` runs the source and
    renews the lease every third of ``ttl``; the others try to take it as
    often, so when the holder dies (or loses Redis) another one runs the
    source within about ``ttl``. A holder that cannot renew stops the source
    before its lease can have run out, so two never run at once. ``state``
    says, per source, ``running`` or ``standby`` (``/healthz``). With the
    memory broker the lease is always this process's.
    """
    lease = f"source:{name}"
    step = ttl / 3
    loop = asyncio.get_running_loop()
    state[name] = "standby"
    while True:
        if not await _lease(broker, lease, ttl, renew=False):
            await asyncio.sleep(step)
            continue
        held_until = loop.time() + ttl
        state[name] = "running"
        log.info("source %r runs on this gateway", name)
        task = asyncio.create_task(run_source(name, factory, publish), name=f"run:{name}")
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=step)
                if done:  # the source finished: nothing more to hold
                    await _release(broker, lease)
                    return
                kept = await _lease(broker, lease, ttl, renew=True)
                if kept:
                    held_until = loop.time() + ttl
                # Lost it, or could not renew it for most of its life: stop
                # before another replica may have taken it over.
                if kept is False or held_until - loop.time() < step:
                    log.warning("source %r: lease lost; another gateway takes over", name)
                    break
        except asyncio.CancelledError:  # shutdown: hand over now, not at expiry
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await _release(broker, lease)
            raise
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            state[name] = "standby"


async def _lease(broker: Lease, name: str, ttl: float, *, renew: bool) -> bool | None:
    """The lease call; None when the broker could not answer."""
    try:
        return await broker.lease(name, ttl, renew=renew)
    except Exception as exc:  # Unavailable, or anything the client raises
        log.debug("lease %r: %s", name, exc)
        return None


async def _release(broker: Lease, name: str) -> None:
    with contextlib.suppress(Exception):
        await broker.release(name)
