"""Side-by-side comparison of the streamgate transports on one topic.

``python -m clients.compare http://localhost:8080 --topic ticks --seconds 10``
connects one client per transport at the same moment, all resuming from the
same id (the topic's last id when the run starts), so that every transport is
owed exactly the same messages. After ``--seconds`` it reads the topic's last
id again and lets each client drain up to it, then prints, per transport:
messages received, time to first message, p50/p99 delivery latency
(``now - ts``, both epoch milliseconds on this machine's clock), payload bytes
per message, reconnects, gaps, and whether every transport saw the same id
sequence. ``--plot FILE.png`` draws the latency distributions (matplotlib),
``--json`` prints the figures for machines.

Transports: ``chunked`` (NDJSON), ``json`` (chunked JSON array), ``sse``,
``ws``, and ``sync`` (blocking requests, in a thread).

A gateway with access control: ``--token TOKEN`` (or ``STREAMGATE_TOKEN``), or
``compare(..., token=...)`` with a string or a callable (sync or async) that
every client calls before each of its connections; ``GET /topics`` carries it
too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import math
import os
import sys
import threading
import time
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

try:
    import aiohttp

    from clients.chunked import ChunkedClient
    from clients.sse import SSEClient
    from clients.sync import SyncClient
    from clients.ws import WSClient
except ModuleNotFoundError as exc:  # run as a script without them: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(
        f"error: python -m clients.compare needs every client's dependencies ({exc}): "
        "pip install -e '.[clients]'"
    )

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "TRANSPORTS",
    "Report",
    "TransportResult",
    "compare",
    "latency_figure",
    "latency_ticks",
    "main",
    "plot",
]

TRANSPORTS = ("chunked", "json", "sse", "ws", "sync")
DEFAULT_TRANSPORTS = ("chunked", "sse", "ws")
TOKEN_ENV = "STREAMGATE_TOKEN"

#: A bearer token: a string, or a callable returning one (or an awaitable of one).
Token = str | Callable[[], str | Awaitable[str | None] | None] | None


class _Msg(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def ts(self) -> float: ...


class _Stats(Protocol):
    messages: int
    reconnects: int
    gaps: int
    bytes_received: int


class _AsyncClient(Protocol):
    stats: Any

    def messages(self) -> AsyncGenerator[Any, None]: ...


@dataclass
class TransportResult:
    """What one transport's client saw during a run."""

    name: str
    ids: list[str] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    first_message_ms: float | None = None  # since the clients were started
    reconnects: int = 0
    gaps: int = 0
    bytes_received: int = 0
    error: str | None = None
    ended: bool = False  # the stream ended by itself (end / complete)

    @property
    def messages(self) -> int:
        """Messages received."""
        return len(self.ids)

    def percentile(self, q: float) -> float | None:
        """Nearest-rank percentile of the delivery latency, in ms."""
        if not self.latencies_ms:
            return None
        ordered = sorted(self.latencies_ms)
        rank = max(1, math.ceil(q / 100.0 * len(ordered)))
        return ordered[rank - 1]

    @property
    def bytes_per_message(self) -> float | None:
        """Payload bytes received per message (framing, heartbeats and controls included)."""
        return self.bytes_received / self.messages if self.messages else None

    def figures(self) -> dict[str, Any]:
        """The figures of this transport as JSON-ready values."""
        return {
            "messages": self.messages,
            "first_message_ms": _round(self.first_message_ms),
            "latency_p50_ms": _round(self.percentile(50)),
            "latency_p99_ms": _round(self.percentile(99)),
            "bytes_per_message": _round(self.bytes_per_message),
            "bytes_received": self.bytes_received,
            "reconnects": self.reconnects,
            "gaps": self.gaps,
            "error": self.error,
        }


@dataclass
class Report:
    """The result of one comparison run."""

    topic: str
    seconds: float
    since: str | None
    until: str | None
    results: list[TransportResult]

    @property
    def same_ids(self) -> bool:
        """Whether every transport received the very same id sequence."""
        seqs = [r.ids for r in self.results]
        return all(s == seqs[0] for s in seqs[1:])

    def to_json(self) -> dict[str, Any]:
        """The report as a JSON-ready dict."""
        return {
            "topic": self.topic,
            "seconds": self.seconds,
            "since": self.since,
            "until": self.until,
            "same_ids": self.same_ids,
            "transports": {r.name: r.figures() for r in self.results},
        }

    def table(self) -> str:
        """The report as a text table."""
        head = ("transport", "msgs", "first ms", "p50 ms", "p99 ms", "B/msg", "reconn", "gaps")
        rows = [head]
        for r in self.results:
            rows.append(
                (
                    r.name,
                    str(r.messages),
                    _fmt(r.first_message_ms),
                    _fmt(r.percentile(50), 2),
                    _fmt(r.percentile(99), 2),
                    _fmt(r.bytes_per_message),
                    str(r.reconnects),
                    str(r.gaps),
                )
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            "  ".join(
                c.ljust(w) if i == 0 else c.rjust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        lines.insert(1, "  ".join("-" * w for w in widths))
        for r in self.results:
            if r.error:
                lines.append(f"{r.name}: error: {r.error}")
        span = f"ids after {self.since}" if self.since else "ids from the start"
        if self.until:
            span += f" up to {self.until}"
        verdict = "yes" if self.same_ids else "NO"
        counts = sorted({r.messages for r in self.results})
        lines.append(f"same id sequence on every transport: {verdict} ({span}; counts {counts})")
        return "\n".join(lines)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _key(message_id: str) -> tuple[int, int]:
    ms, _, seq = message_id.partition("-")
    return int(ms), int(seq)


async def _bearer(token: Token) -> dict[str, str]:
    """The Authorization header for *token* (called now if it is a callable)."""
    value = token() if callable(token) else token
    if inspect.isawaitable(value):
        value = await value
    return {"Authorization": f"Bearer {value.strip()}"} if value and value.strip() else {}


def _sync_token(
    token: Token, loop: asyncio.AbstractEventLoop
) -> str | Callable[[], str | None] | None:
    """*token* for the sync client's thread: an async callable is run on *loop*."""
    if not callable(token):
        return token
    fn = token

    def fresh() -> str | None:
        value = fn()
        if inspect.isawaitable(value):
            awaitable = value

            async def wait() -> str | None:
                return await awaitable

            return asyncio.run_coroutine_threadsafe(wait(), loop).result()
        return value

    return fresh


async def _topic_state(
    session: aiohttp.ClientSession, base: str, topic: str, token: Token = None
) -> tuple[str, Any]:
    """``("shared", last_id)`` or ``("per-connection", None)``; StreamError-like ValueError."""
    async with session.get(f"{base}/topics", headers=await _bearer(token)) as resp:
        if resp.status != 200:
            text = " ".join((await resp.text()).split())[:300]
            with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                err = json.loads(text)
                text = str(err["error"]) + (f": {err['message']}" if err.get("message") else "")
            raise ValueError(f"GET /topics: HTTP {resp.status}" + (f" {text}" if text else ""))
        listing = await resp.json()
    for entry in listing.get("topics", []):
        if entry.get("name") == topic:
            return "shared", entry.get("last_id")
    for entry in listing.get("streams", []):
        if entry.get("name") == topic:
            return "per-connection", None
    raise ValueError(f"unknown topic {topic!r} (GET /topics does not list it)")


def _make_client(name: str, base: str, topic: str, since: str | None, token: Token = None) -> Any:
    q = urllib.parse.quote(topic, safe="")
    ws_base = "ws" + base[4:] if base.startswith("http") else base
    if name == "chunked":
        return ChunkedClient(f"{base}/chunked/{q}", since=since, token=token)
    if name == "json":
        return ChunkedClient(f"{base}/chunked/{q}", since=since, format="json", token=token)
    if name == "sse":
        # A short reconnection time as a floor; the server's retry: wins anyway.
        return SSEClient(f"{base}/sse/{q}", since=since, token=token)
    if name == "ws":
        return WSClient(f"{ws_base}/ws/{q}", since=since, token=token)
    if name == "sync":
        sync_token = _sync_token(token, asyncio.get_running_loop())
        return SyncClient(f"{base}/chunked/{q}", since=since, token=sync_token)
    raise ValueError(f"unknown transport {name!r}; choose from {', '.join(TRANSPORTS)}")


class _Run:
    """Bookkeeping shared by the consumers of one run."""

    def __init__(self, results: list[TransportResult], t0: float) -> None:
        self.results = results
        self.t0 = t0
        self.target: tuple[int, int] | None = None
        self.reached = {r.name: asyncio.Event() for r in results}
        self.loop = asyncio.get_running_loop()

    def record(
        self, res: TransportResult, msg: _Msg, now_ms: float | None = None, now: float | None = None
    ) -> None:
        """Note one message received at *now_ms* (epoch) / *now* (perf_counter)."""
        if now_ms is None:
            now_ms = time.time() * 1000.0
        if res.first_message_ms is None:
            now = time.perf_counter() if now is None else now
            res.first_message_ms = (now - self.t0) * 1000.0
        res.ids.append(msg.id)
        res.latencies_ms.append(now_ms - msg.ts)

    def check(self, res: TransportResult) -> None:
        """Mark *res* done if it has reached the target id."""
        if self.target is not None and res.ids and _key(res.ids[-1]) >= self.target:
            self.reached[res.name].set()


async def _consume(run: _Run, res: TransportResult, client: _AsyncClient) -> None:
    try:
        async with contextlib.aclosing(client.messages()) as stream:
            async for msg in stream:
                run.record(res, msg)
                run.check(res)
        res.ended = True
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # any failure is a figure of the report
        res.error = str(exc) or type(exc).__name__
    finally:
        _copy_stats(res, client.stats)
        run.reached[res.name].set()


def _consume_sync(run: _Run, res: TransportResult, client: SyncClient) -> None:
    def done() -> None:
        run.reached[res.name].set()

    try:
        stream: Iterator[Any] = client.messages()
        for msg in stream:
            # Time the message here, in the reading thread, not when the loop gets to it.
            stamp = (time.time() * 1000.0, time.perf_counter())
            run.loop.call_soon_threadsafe(_record_and_check, run, res, msg, stamp)
        res.ended = not client.closed
    except Exception as exc:
        res.error = str(exc) or type(exc).__name__
    finally:
        _copy_stats(res, client.stats)
        run.loop.call_soon_threadsafe(done)


def _record_and_check(
    run: _Run, res: TransportResult, msg: _Msg, stamp: tuple[float, float]
) -> None:
    run.record(res, msg, *stamp)
    run.check(res)


def _copy_stats(res: TransportResult, stats: _Stats) -> None:
    res.reconnects = stats.reconnects
    res.gaps = stats.gaps
    res.bytes_received = stats.bytes_received


async def compare(
    base_url: str,
    topic: str,
    seconds: float,
    *,
    transports: Sequence[str] = DEFAULT_TRANSPORTS,
    since: str | None = None,
    drain_timeout: float = 5.0,
    progress: Callable[[float, list[TransportResult]], None] | None = None,
    progress_interval: float = 1.0,
    token: Token = None,
) -> Report:
    """Run one client per transport for *seconds* and return the :class:`Report`.

    On a shared topic every client starts after *since* (default: the topic's
    last id now) and, once the time is up, is allowed *drain_timeout* seconds
    to reach the topic's last id at that moment, so the sequences are
    comparable. On a per-connection stream each client gets its own run of the
    stream, stopped when the time is up. Raises ``ValueError`` for a bad URL or
    an unknown topic, ``aiohttp.ClientError`` / ``OSError`` if the gateway is
    unreachable.

    *token* (a string, or a callable returning one, sync or async) goes to every
    client, which calls a callable before each of its connections (the sync
    client's thread has an async callable run on this loop), and to the
    ``GET /topics`` requests.
    """
    base = base_url.rstrip("/")
    parts = urllib.parse.urlsplit(base)
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("",):
        raise ValueError(f"bad URL {base_url!r}: expected the gateway's base URL, http://HOST:PORT")
    for name in transports:
        if name not in TRANSPORTS:
            raise ValueError(f"unknown transport {name!r}; choose from {', '.join(TRANSPORTS)}")
    async with aiohttp.ClientSession() as session:
        kind, last_id = await _topic_state(session, base, topic, token)
        if kind == "shared" and since is None:
            since = last_id or "0-0"
        results = [TransportResult(name) for name in transports]
        clients = [_make_client(name, base, topic, since, token) for name in transports]
        run = _Run(results, time.perf_counter())
        tasks: list[asyncio.Task[None]] = []
        threads: list[threading.Thread] = []
        for res, client in zip(results, clients, strict=True):
            if isinstance(client, SyncClient):
                t = threading.Thread(
                    target=_consume_sync, args=(run, res, client), daemon=True, name="compare-sync"
                )
                threads.append(t)
                t.start()
            else:
                tasks.append(asyncio.create_task(_consume(run, res, client), name=res.name))
        try:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + seconds
            all_ended = asyncio.gather(*(e.wait() for e in run.reached.values()))
            while loop.time() < deadline and not all_ended.done():
                await asyncio.wait(
                    [all_ended], timeout=min(progress_interval, deadline - loop.time())
                )
                if progress is not None:
                    progress(time.perf_counter() - run.t0, results)
            until: str | None = None
            if kind == "shared" and not all_ended.done():
                _, until = await _topic_state(session, base, topic, token)
                if until is not None:
                    run.target = _key(until)
                    for res in results:
                        run.check(res)
                    await asyncio.wait([all_ended], timeout=drain_timeout)
            if not all_ended.done():
                all_ended.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await all_ended
        finally:
            for task in tasks:
                task.cancel()
            for client in clients:
                if isinstance(client, SyncClient):
                    client.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            for t in threads:
                await asyncio.to_thread(t.join, drain_timeout)
    return Report(topic, seconds, since, until, results)


def latency_ticks(lo: float, hi: float) -> list[float] | None:
    """Tick values for a log latency axis spanning *lo*..*hi* ms: 1-2-5 in each decade
    (only the decades when that makes more than a dozen), or ``None`` when the span is too
    narrow for three of those; every value reads as a plain number of ms (0.5, 1, 2, 5, 10)."""
    if not 0 < lo < hi:
        return None
    first, last = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    for subs in ((1, 2, 5), (1,)):
        ticks = [
            float(f"{m}e{e}")  # exact decimal values: 0.3, not 0.30000000000000004
            for e in range(first, last + 1)
            for m in subs
            if lo <= float(f"{m}e{e}") <= hi
        ]
        if len(ticks) <= 12:
            return ticks if len(ticks) >= 3 else None
    return ticks


def _ms_label(value: float, _pos: int | None = None) -> str:
    """A latency tick label: the plain number of ms, ``0.5``, ``1``, ``250``."""
    return f"{value:.6g}"


def latency_figure(report: Report) -> Figure:
    """The latency distribution of each transport (ECDF), as a matplotlib Figure: nothing
    is written, and no pyplot state is touched. The latency axis is in ms, with plain
    labels (log scale when every latency is positive)."""
    from matplotlib.figure import Figure  # lazily: only --plot needs matplotlib
    from matplotlib.ticker import (
        FixedLocator,
        FuncFormatter,
        MaxNLocator,
        NullFormatter,
        NullLocator,
    )

    fig = Figure(figsize=(8, 4.5), layout="tight")
    ax = fig.subplots()
    for r in report.results:
        if not r.latencies_ms:
            continue
        xs = sorted(r.latencies_ms)
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(
            xs, ys, where="post", label=f"{r.name} (n={len(xs)}, p50 {r.percentile(50):.2f} ms)"
        )
    ax.set_xlabel("delivery latency, ms (receive time - message ts)")
    ax.set_ylabel("fraction of messages")
    ax.set_title(f"streamgate: topic {report.topic}, {report.seconds:g} s")
    if any(r.latencies_ms for r in report.results):
        lo = min(min(r.latencies_ms) for r in report.results if r.latencies_ms)
        if lo > 0:
            ax.set_xscale("log")
            # matplotlib's log axis reads 6×10⁻¹…10⁰: plain ms instead, on 1-2-5 ticks, or
            # on round values in between when the span is narrower than that.
            ticks = latency_ticks(*ax.get_xlim())
            if ticks is not None:
                ax.xaxis.set_major_locator(FixedLocator(ticks))
            else:
                ax.xaxis.set_major_locator(MaxNLocator(nbins=6, steps=[1, 2, 2.5, 5, 10]))
                ax.xaxis.set_minor_locator(NullLocator())
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.xaxis.set_major_formatter(FuncFormatter(_ms_label))
        ax.legend(loc="lower right")
    ax.grid(True, alpha=0.3)
    return fig


def plot(report: Report, path: str) -> None:
    """Draw the latency distribution of each transport (ECDF) into *path* (PNG)."""
    latency_figure(report).savefig(path, dpi=100)


def _progress_printer(seconds: float) -> Callable[[float, list[TransportResult]], None]:
    tty = sys.stderr.isatty()

    def show(elapsed: float, results: list[TransportResult]) -> None:
        counts = "  ".join(f"{r.name} {r.messages}" for r in results)
        line = f"[{min(elapsed, seconds):5.1f}/{seconds:g}s] {counts}"
        if tty:
            print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)
        else:
            print(line, file=sys.stderr, flush=True)

    return show


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.compare",
        description="Receive one topic over every transport at once and compare them.",
    )
    p.add_argument("url", help="the gateway's base URL, e.g. http://localhost:8080")
    p.add_argument("--topic", default="ticks", help="topic or per-connection stream (ticks)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to receive (10)")
    p.add_argument(
        "--transports",
        default=",".join(DEFAULT_TRANSPORTS),
        help=f"comma-separated, from {','.join(TRANSPORTS)} (default %(default)s)",
    )
    p.add_argument("--since", help="start every client after this id (default: now)")
    p.add_argument("--drain", type=float, default=5.0, help="seconds allowed to catch up (5)")
    p.add_argument("--plot", metavar="FILE.png", help="draw the latency distributions")
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress on stderr")
    p.add_argument(
        "--token",
        help=f"bearer token, sent as Authorization: Bearer (default: ${TOKEN_ENV})",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _build_parser().parse_args(argv)
    transports = [t.strip() for t in args.transports.split(",") if t.strip()]
    if args.seconds <= 0:
        print("error: --seconds must be positive", file=sys.stderr)
        return 2
    if args.plot:
        # Said now, not after the run.
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError as exc:
            print(
                f"error: --plot needs matplotlib ({exc}): pip install -e '.[clients]'",
                file=sys.stderr,
            )
            return 1
    progress = None if args.quiet else _progress_printer(args.seconds)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    try:
        report = asyncio.run(
            compare(
                args.url,
                args.topic,
                args.seconds,
                transports=transports,
                since=args.since,
                drain_timeout=args.drain,
                progress=progress,
                token=token or None,
            )
        )
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        print(
            f"\nerror: {exc}" if progress and sys.stderr.isatty() else f"error: {exc}",
            file=sys.stderr,
        )
        return 2 if str(exc).startswith("bad URL") or "transport" in str(exc) else 1
    except (aiohttp.ClientError, OSError) as exc:
        print(f"error: cannot reach {args.url}: {exc}", file=sys.stderr)
        return 1
    if progress is not None and sys.stderr.isatty():
        print(file=sys.stderr)
    if args.json:
        print(json.dumps(report.to_json(), indent=2))
    else:
        print(report.table())
    if args.plot:
        plot(report, args.plot)
        if not args.json:
            print(f"latency plot written to {args.plot}")
    return 1 if any(r.error for r in report.results) else 0


if __name__ == "__main__":
    sys.exit(main())
