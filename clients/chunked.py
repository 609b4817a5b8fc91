"""Chunked HTTP client for streamgate: NDJSON or a JSON array, resumed with ``since=``.

* :class:`NDJSONDecoder` is sans-I/O: ``feed(bytes) -> list[bytes]`` returns the
  complete lines, however the bytes were cut into HTTP chunks (a line over many
  chunks, many lines in one chunk); blank heartbeat lines are skipped.
* :class:`JSONArrayDecoder` parses ``format=json`` (one JSON array written item by
  item) incrementally with ijson's push interface: ``feed(bytes) -> items``.
* :class:`ChunkedClient` reads ``GET /chunked/{topic}`` with aiohttp
  (``iter_any``: whatever bytes have arrived), yields :class:`Message` objects,
  and after a dropped connection or a ``goodbye`` reconnects with
  ``since=<last id>``; it stops on ``end`` (PROTOCOL.md).

A gateway with access control wants a token: ``token=`` is a string, or a
callable (sync or async) called before every request, so an app hands a fresh
token each time; it is sent as ``Authorization: Bearer <token>``.

Run it: ``python -m clients.chunked http://localhost:8080/chunked/ticks``
(``--format json`` for the JSON-array form; ``--token TOKEN`` or
``STREAMGATE_TOKEN`` in the environment for a token).

This file imports nothing from the gateway and nothing else from ``clients/``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import inspect
import json
import logging
import os
import random
import signal
import sys
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

try:
    import aiohttp
    import ijson
except ModuleNotFoundError as exc:  # run as a script without it: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(
        f"error: python -m clients.chunked needs aiohttp and ijson ({exc}): "
        "pip install -e '.[clients]' (or pip install aiohttp ijson)"
    )

__all__ = [
    "ChunkedClient",
    "JSONArrayDecoder",
    "Message",
    "NDJSONDecoder",
    "Stats",
    "StreamError",
    "Token",
    "main",
]

log = logging.getLogger("clients.chunked")

TRANSPORT = "chunked"
TOKEN_ENV = "STREAMGATE_TOKEN"

#: A bearer token: a string, or a callable returning one (or an awaitable of one),
#: called before every request. ``None`` or ``""``: send no Authorization header.
Token = str | Callable[[], str | Awaitable[str | None] | None] | None


# --------------------------------------------------------------------------
# sans-I/O decoders
# --------------------------------------------------------------------------


class NDJSONDecoder:
    """Split a byte stream into lines on ``\\n`` only, never on chunk boundaries.

    Returns each complete, non-blank line without its ``\\n`` (a trailing ``\\r``
    is kept; it is JSON whitespace). Blank lines are the heartbeats of
    PROTOCOL.md and carry nothing.
    """

    def __init__(self) -> None:
        self._partial: list[bytes] = []

    @property
    def pending(self) -> bytes:
        """Bytes of the unterminated last line (non-empty at EOF = truncated)."""
        return b"".join(self._partial)

    def feed(self, data: bytes) -> list[bytes]:
        """Consume *data* and return the lines it completes."""
        if b"\n" not in data:
            if data:
                self._partial.append(data)
            return []
        lines = data.split(b"\n")
        if self._partial:
            self._partial.append(lines[0])
            lines[0] = b"".join(self._partial)
            self._partial.clear()
        last = lines.pop()
        if last:
            self._partial.append(last)
        return [line for line in lines if line.strip()]


class JSONArrayDecoder:
    """Incremental parser for one top-level JSON array, item by item (ijson).

    ``feed(bytes)`` returns the items completed so far, as Python values (numbers
    as ``int``/``float``); :meth:`close` checks that the array was complete and
    raises ``ijson.IncompleteJSONError`` if it was cut short.

    *backend* is the ijson backend. The default, ``"python"``, takes any JSON
    number; ``"yajl2_c"`` is about eight times faster but fails with "integer
    overflow" on integers outside ``(-2**63, 2**63)``, which a message's data
    may hold (the gateway's JSON allows up to 64-bit unsigned).
    """

    def __init__(self, backend: str = "python") -> None:
        self._items: list[Any] = ijson.sendable_list()
        parser = ijson.get_backend(backend)
        self._coro = parser.items_coro(self._items, "item", use_float=True)
        self.closed = False

    def feed(self, data: bytes) -> list[Any]:
        """Consume *data* and return the array items it completes."""
        if data:
            self._coro.send(data)
        return self._take()

    def close(self) -> list[Any]:
        """End of input: return the last items, raise if the document is incomplete."""
        if not self.closed:
            self.closed = True
            self._coro.close()
        return self._take()

    def discard(self) -> None:
        """Abandon the document (the connection is gone): no error, no more items."""
        if not self.closed:
            self.closed = True
            with contextlib.suppress(ijson.JSONError):
                self._coro.close()

    def _take(self) -> list[Any]:
        items = list(self._items)
        del self._items[:]
        return items


# --------------------------------------------------------------------------
# the client
# --------------------------------------------------------------------------


class StreamError(Exception):
    """The stream cannot go on: unreachable server, HTTP error, or a bad message.

    ``status`` is the HTTP status of a refused request (401, 403, 404, ...), else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


async def _resolve_token(token: Token) -> str | None:
    """The token for the next request: the string, or what the callable returns now."""
    value = token() if callable(token) else token
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        return None
    if not isinstance(value, str):
        raise StreamError(f"the token callable returned {type(value).__name__}, not a string")
    value = value.strip()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise StreamError("bad token: it holds whitespace or control characters")
    return value or None


def _redact(url: str) -> str:
    """*url* with the value of a ``token=`` query parameter hidden, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    if "token=" not in parts.query:
        return url
    query = [
        (k, "***" if k == "token" else v)
        for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True)
    ]
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


@dataclass(frozen=True, slots=True)
class Message:
    """One streamgate message; ``raw`` is its JSON as received (NDJSON) or re-encoded (JSON)."""

    id: str
    topic: str
    ts: float
    data: Any
    raw: str

    @classmethod
    def from_obj(cls, obj: dict[str, Any], raw: str | None = None) -> Message:
        """Build from a decoded message object."""
        if raw is None:
            raw = json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
        return cls(
            str(obj["id"]), str(obj.get("topic", "")), float(obj["ts"]), obj.get("data"), raw
        )


@dataclass
class Stats:
    """Counters of one client."""

    messages: int = 0
    reconnects: int = 0
    gaps: int = 0
    bytes_received: int = 0


class ChunkedClient:
    """streamgate messages over chunked HTTP (``format`` ``ndjson`` or ``json``).

    ``async for msg in ChunkedClient(url).messages()`` yields :class:`Message`
    objects. Control events go to *on_control* as dicts. After a dropped
    connection (or a body that ends without ``end``) it reconnects with
    jittered exponential backoff; after ``goodbye`` it waits ``reconnect_ms``;
    both resume with ``since=<last id>``. ``end`` (or, for ``format=json``, the
    closing ``]`` without a goodbye) ends the iteration. An HTTP 4xx, or a first
    connection that fails (with *fail_fast*), raises :class:`StreamError`.
    *read_timeout*: seconds without a byte (heartbeats included) after which the
    connection counts as dead and is re-opened.

    *token* (a string, or a callable returning one, sync or async) is sent as
    ``Authorization: Bearer <token>`` on every request; a callable is called
    before each one. After a ``goodbye`` ``token_expired`` the client comes
    back at once (after ``reconnect_ms`` only) and resumes. A 401 is tried once
    more, at once, with a fresh token when *token* is a callable; otherwise, or
    if that fails too, :class:`StreamError` (``status`` 401). 403 stops too.
    """

    transport = TRANSPORT

    def __init__(
        self,
        url: str,
        *,
        since: str | None = None,
        limit: int | None = None,
        format: str | None = None,
        on_control: Callable[[dict[str, Any]], None] | None = None,
        session: aiohttp.ClientSession | None = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        fail_fast: bool = True,
        max_retries: int | None = None,
        read_timeout: float | None = 60.0,
        token: Token = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.last_id: str | None = since if since is not None else query.pop("since", None)
        query.pop("since", None)
        self.limit = limit if limit is not None else _int_or_none(query.pop("limit", None))
        query.pop("limit", None)
        self.format = format or query.get("format", "ndjson")
        if self.format not in ("ndjson", "json"):
            raise ValueError(f"format must be ndjson or json, not {self.format!r}")
        query["format"] = self.format
        self._parts = parts
        self._query = query
        self.on_control = on_control
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.fail_fast = fail_fast
        self.max_retries = max_retries
        self.token = token
        self.stats = Stats()
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=None, sock_connect=10.0, sock_read=read_timeout)
        self._connections = 0

    def url(self) -> str:
        """The URL of the next request: resumes after :attr:`last_id`."""
        query = dict(self._query)
        if self.last_id is not None:
            query["since"] = self.last_id
        if self.limit is not None:
            query["limit"] = str(max(1, self.limit - self.stats.messages))
        return urllib.parse.urlunsplit(self._parts._replace(query=urllib.parse.urlencode(query)))

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Yield messages until the stream ends; raise :class:`StreamError` on failure."""
        own_session = self._session is None
        session = self._session or aiohttp.ClientSession()
        failures = 0
        auth_retried = False  # a 401 was just retried with a fresh token
        try:
            while True:
                hint: float | None = None  # goodbye's reconnect_ms, in seconds
                expired = False  # goodbye token_expired
                got_bytes = False
                # Before every request: a callable hands a fresh token each time.
                headers = {"Cache-Control": "no-cache"}
                token = await _resolve_token(self.token)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                try:
                    async with session.get(
                        self.url(), timeout=self._timeout, headers=headers
                    ) as resp:
                        if resp.status == 204:
                            return
                        if resp.status != 200:
                            body = (await resp.content.read(2048)).decode("utf-8", "replace")
                            text = _http_error_text(resp.status, body)
                            if resp.status == 401 and callable(self.token) and not auth_retried:
                                # Once, at once: the token may have expired since it was handed.
                                auth_retried = True
                                log.info("%s: %s; retrying with a fresh token", TRANSPORT, text)
                                continue
                            if 400 <= resp.status < 500:
                                raise StreamError(text, status=resp.status)
                            raise aiohttp.ClientResponseError(
                                resp.request_info, (), status=resp.status, message=text
                            )
                        auth_retried = False
                        self._connections += 1
                        if self._connections > 1:
                            self.stats.reconnects += 1
                            log.info("%s: reconnected with since=%s", TRANSPORT, self.last_id)
                        decoder: NDJSONDecoder | JSONArrayDecoder
                        decoder = NDJSONDecoder() if self.format == "ndjson" else JSONArrayDecoder()
                        try:
                            async for chunk in resp.content.iter_any():
                                got_bytes = True
                                self.stats.bytes_received += len(chunk)
                                items = _decode(decoder, chunk)
                                for obj, line in items:
                                    kind = self._classify(obj)
                                    if kind == "message":
                                        raw = line.decode("utf-8", "replace") if line else None
                                        msg = Message.from_obj(obj, raw)
                                        self.last_id = msg.id
                                        self.stats.messages += 1
                                        yield msg
                                    elif kind == "end":
                                        return
                                    elif kind == "goodbye":
                                        ms = obj.get("reconnect_ms")
                                        hint = ms / 1000.0 if isinstance(ms, int | float) else 0.0
                                        expired = obj.get("reason") == "token_expired"
                            # The body ended cleanly: complete, or come back?
                            reason = _after_body(decoder, hint)
                            if reason is None:
                                return
                        finally:
                            if isinstance(decoder, JSONArrayDecoder):
                                decoder.discard()  # connection gone: no parse error
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    reason = _describe(exc)
                    if self._connections == 0 and self.fail_fast:
                        url = _redact(self.url())
                        raise StreamError(f"cannot connect to {url}: {reason}") from exc
                failures = 0 if got_bytes else failures + 1
                if self.max_retries is not None and failures > self.max_retries:
                    raise StreamError(f"giving up after {failures} failed attempts: {reason}")
                if expired and hint is not None:
                    # The token ran out, nothing else is wrong: come back at once (after the
                    # server's hint only) with a fresh token, and resume.
                    delay = max(0.0, hint)
                    reason = "token expired"
                elif hint is not None:
                    delay = hint * (1.0 + 0.5 * random.random())
                else:
                    # Full-jitter exponential backoff.
                    cap = min(self.backoff_max, self.backoff_initial * 2 ** min(failures, 16))
                    delay = random.uniform(cap / 2, cap)
                log.info("%s: %s; reconnecting in %.2fs", TRANSPORT, reason, delay)
                await asyncio.sleep(delay)
        finally:
            if own_session:
                await session.close()

    def _classify(self, obj: Any) -> str:
        """``"message"``, or the control type; notifies *on_control* of controls."""
        if not isinstance(obj, dict):
            raise StreamError(f"unexpected item from server: {obj!r}"[:200])
        kind = obj.get("type")
        if kind is None:
            if "id" not in obj or "ts" not in obj:
                raise StreamError(f"not a message: {obj!r}"[:200])
            return "message"
        if kind == "gap":
            self.stats.gaps += 1
        if self.on_control is not None:
            self.on_control(obj)
        return str(kind)


def _decode(decoder: NDJSONDecoder | JSONArrayDecoder, chunk: bytes) -> list[Any]:
    """``(object, raw line or None)`` pairs completed by *chunk*."""
    try:
        if isinstance(decoder, NDJSONDecoder):
            return [(json.loads(line), line) for line in decoder.feed(chunk)]
        return [(obj, None) for obj in decoder.feed(chunk)]
    except (ValueError, ijson.JSONError) as exc:
        raise StreamError(f"bad JSON from server: {exc}") from exc


def _after_body(decoder: NDJSONDecoder | JSONArrayDecoder, hint: float | None) -> str | None:
    """Why to reconnect after a body that ended cleanly, or None if the stream is over."""
    if isinstance(decoder, JSONArrayDecoder):
        try:
            decoder.close()
        except ijson.JSONError:
            return "JSON array cut short"
        # A complete array ends the stream, unless a goodbye asked us back.
        return None if hint is None else "goodbye"
    # NDJSON: `end` returned already; a body without one was cut or said goodbye.
    return "goodbye" if hint is not None else "stream ended without end"


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _http_error_text(status: int, body: str) -> str:
    """``HTTP 401 unauthorized: <message>`` from a JSON error body, on one line."""
    detail = body
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        err = json.loads(body)
        message = err.get("message")
        detail = str(err["error"]) + (f": {message}" if message else "")
    detail = " ".join(detail.split())[:300]
    return f"HTTP {status}" + (f" {detail}" if detail else "")


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def stream_url(url: str, topic: str | None) -> str:
    """The chunked URL from a stream URL, or from a base URL and a topic; ValueError if bad."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"bad URL {url!r}: {exc}") from None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad URL {url!r}: expected http://HOST:PORT/chunked/TOPIC")
    path = parts.path
    if topic is not None:
        if path not in ("", "/"):
            raise ValueError("give either a stream URL or a base URL with --topic, not both")
        path = "/chunked/" + urllib.parse.quote(topic, safe="")
    elif path in ("", "/"):
        raise ValueError(
            f"URL {url!r} names no topic: use http://HOST:PORT/chunked/TOPIC or --topic"
        )
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.chunked",
        description="Print the messages of a streamgate topic received over chunked HTTP.",
    )
    p.add_argument(
        "url", help="stream URL (http://localhost:8080/chunked/ticks) or base URL + --topic"
    )
    p.add_argument("--topic", help="topic name, when URL is the gateway's base URL")
    p.add_argument("--format", choices=["ndjson", "json"], help="wire format (default ndjson)")
    p.add_argument("--since", help="resume after this message id")
    p.add_argument("--limit", type=_positive_int, help="ask the server to end after N messages")
    p.add_argument("--count", type=_positive_int, help="stop after N messages")
    p.add_argument("--json", action="store_true", help="print each message's raw JSON")
    p.add_argument(
        "--token",
        help=f"bearer token, sent as Authorization: Bearer (default: ${TOKEN_ENV})",
    )
    p.add_argument("--max-retries", type=int, help="give up after N failed reconnections")
    p.add_argument(
        "--wait",
        action="store_true",
        help="retry the first connection too, for a client started before its server",
    )
    p.add_argument(
        "--stop-grace",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="on SIGTERM, keep reading up to SECONDS for the server's goodbye, then exit 0",
    )
    return p


def _note(obj: dict[str, Any]) -> None:
    fields = " ".join(f"{k}={v}" for k, v in obj.items() if k != "type")
    print(f"# {TRANSPORT} {obj.get('type')}: {fields}", file=sys.stderr, flush=True)


async def _run(args: argparse.Namespace, url: str) -> int:
    # SIGTERM (docker stop, compose down) with --stop-grace: stop reconnecting,
    # keep reading until the server's own goodbye arrives (it is being stopped
    # too), print it, and exit 0; exit anyway after SECONDS.
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    stopping = False
    goodbye_seen = False  # the server said goodbye since the last message

    def note(obj: dict[str, Any]) -> None:
        nonlocal goodbye_seen
        _note(obj)
        if obj.get("type") in ("goodbye", "end"):
            goodbye_seen = True
            if stopping and task is not None:
                task.cancel()

    def on_term() -> None:
        nonlocal stopping
        stopping = True
        if task is not None:
            # The goodbye may have been read before this signal was.
            loop.call_later(0 if goodbye_seen else args.stop_grace, task.cancel)

    loop.add_signal_handler(signal.SIGTERM, on_term)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    client = ChunkedClient(
        url,
        since=args.since,
        limit=args.limit,
        format=args.format,
        on_control=note,
        max_retries=args.max_retries,
        fail_fast=not args.wait,
        token=token or None,
    )
    received = 0
    try:
        async with contextlib.aclosing(client.messages()) as stream:
            async for msg in stream:
                if args.json:
                    line = msg.raw
                else:
                    data = json.dumps(msg.data, separators=(",", ":"), ensure_ascii=False)
                    line = f"{TRANSPORT} {msg.id} {data}"
                sys.stdout.write(line + "\n")
                sys.stdout.flush()
                received += 1
                goodbye_seen = False
                if args.count is not None and received >= args.count:
                    break
    except asyncio.CancelledError:
        if stopping:
            return 0
        raise
    except StreamError as exc:
        hint = ""
        if exc.status == 401 and not token:
            hint = f" (no token given: use --token or {TOKEN_ENV})"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        url = stream_url(args.url, args.topic)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="# %(message)s", stream=sys.stderr)
    try:
        return asyncio.run(_run(args, url))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
