"""WebSocket client for streamgate, on the ``websockets`` library (asyncio API).

:class:`WSClient` connects to ``/ws/{topic}``, yields one :class:`Message` per
text frame, and keeps the stream going across disconnections: it reconnects
with ``since=<last id seen>`` after a close that means "come back" and stops
after one that means "do not" (RFC 6455 section 7.4 codes, as PROTOCOL.md uses
them):

=====================  ===================================================
close code             client does
=====================  ===================================================
1000                   stop: the stream is complete (an ``end`` preceded it)
4003 (token expired)   reconnect at once (after ``reconnect_ms``), fresh token
1001, 4000-4499        reconnect after the ``goodbye`` hint and resume
1011, 1012, 1013       reconnect with backoff and resume
1006 (no close frame)  reconnect with backoff and resume (abrupt drop)
1008, 1009, 4500-4999  stop with an error (policy, too big, "do not retry")
HTTP 401 at handshake  with a token callable: once more with a fresh token;
                       else stop with an error
HTTP 4xx at handshake  stop with an error (403 forbidden, bad id, unknown topic)
=====================  ===================================================

Backoff is exponential with jitter. A gateway with access control wants a
token: ``token=`` is a string, or a callable (sync or async) called before
every connection, so an app hands a fresh token each time; it is sent as
``Authorization: Bearer <token>``. Run it:
``python -m clients.ws ws://localhost:8080/ws/ticks [--token TOKEN]``
(or ``STREAMGATE_TOKEN`` in the environment).

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
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
except ModuleNotFoundError as exc:  # run as a script without it: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(
        f"error: python -m clients.ws needs websockets 13 or newer ({exc}): "
        "pip install -e '.[clients]' (or pip install 'websockets>=13')"
    )

__all__ = ["Message", "Stats", "StreamError", "Token", "WSClient", "main", "should_reconnect"]

log = logging.getLogger("clients.ws")

TRANSPORT = "ws"
TOKEN_ENV = "STREAMGATE_TOKEN"
# Close code of a stream whose token expired (PROTOCOL.md): come back at once.
CLOSE_TOKEN_EXPIRED = 4003

#: A bearer token: a string, or a callable returning one (or an awaitable of one),
#: called before every connection. ``None`` or ``""``: send no Authorization header.
Token = str | Callable[[], str | Awaitable[str | None] | None] | None


class StreamError(Exception):
    """The stream cannot go on: unreachable server, refused handshake, or a final close."""

    def __init__(self, message: str, *, status: int | None = None, code: int | None = None):
        super().__init__(message)
        self.status = status  # HTTP status of a refused handshake
        self.code = code  # WebSocket close code


@dataclass(frozen=True, slots=True)
class Message:
    """One streamgate message; ``raw`` is the text frame exactly as received."""

    id: str
    topic: str
    ts: float
    data: Any
    raw: str

    @classmethod
    def from_obj(cls, obj: dict[str, Any], raw: str) -> Message:
        """Build from a decoded message object and its JSON text."""
        return cls(
            str(obj["id"]), str(obj.get("topic", "")), float(obj["ts"]), obj.get("data"), raw
        )


@dataclass
class Stats:
    """Counters of one client."""

    messages: int = 0
    reconnects: int = 0
    gaps: int = 0
    bytes_received: int = 0  # text frame payload bytes


async def _resolve_token(token: Token) -> str | None:
    """The token for the next connection: the string, or what the callable returns now."""
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


def should_reconnect(code: int) -> bool:
    """Whether a close *code* from the server means "reconnect and resume"."""
    if code == 1000:  # normal closure: PROTOCOL.md "stream complete"
        return False
    if code in (1001, 1005, 1006, 1011, 1012, 1013, 1014):
        # going away, no status, abnormal (no close frame), internal error,
        # service restart, try again later, bad gateway: transient.
        return True
    # 4000-4499: "reconnect and resume" (4001/4002 slow consumer);
    # 4500-4999: "do not reconnect"; 1002/1003/1007/1008/1009/1010: a client
    # or protocol problem that a retry would only repeat.
    return 4000 <= code <= 4499


class WSClient:
    """streamgate messages over WebSocket, resuming with ``since=``.

    ``async for msg in WSClient(url).messages()`` yields :class:`Message`
    objects; control frames (``gap``, ``goodbye``, ``error``, ``pong``,
    ``published``) go to *on_control* as dicts. The iteration ends after
    ``end`` / close 1000 and raises :class:`StreamError` on a final failure.
    Use ``contextlib.aclosing`` when you may leave the loop early.

    *token* (a string, or a callable returning one, sync or async) is sent as
    ``Authorization: Bearer <token>`` on every handshake; a callable is called
    before each one. After a ``goodbye`` ``token_expired`` (close 4003) the
    client reconnects at once, after the ``reconnect_ms`` hint only, and
    resumes. A handshake refused with 401 is tried once more, at once, with a
    fresh token when *token* is a callable; otherwise, or if that fails too,
    :class:`StreamError` (``status`` 401). 403 stops with a ``StreamError``.
    """

    transport = TRANSPORT

    def __init__(
        self,
        url: str,
        *,
        since: str | None = None,
        limit: int | None = None,
        on_control: Callable[[dict[str, Any]], None] | None = None,
        backoff_initial: float = 0.25,
        backoff_max: float = 10.0,
        fail_fast: bool = True,
        max_retries: int | None = None,
        open_timeout: float = 10.0,
        max_size: int | None = 4 * 1024 * 1024,
        token: Token = None,
    ) -> None:
        parts = urllib.parse.urlsplit(url)
        query = dict(urllib.parse.parse_qsl(parts.query))
        self.last_id: str | None = since if since is not None else query.pop("since", None)
        query.pop("since", None)
        self.limit = limit if limit is not None else _int_or_none(query.pop("limit", None))
        query.pop("limit", None)
        self._parts = parts
        self._query = query
        self.on_control = on_control
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.fail_fast = fail_fast
        self.max_retries = max_retries
        self.open_timeout = open_timeout
        self.max_size = max_size
        self.token = token
        self.stats = Stats()
        self.close_code: int | None = None  # of the last connection
        self._connections = 0

    def url(self) -> str:
        """The URL of the next handshake: resumes after :attr:`last_id`."""
        query = dict(self._query)
        if self.last_id is not None:
            query["since"] = self.last_id
        if self.limit is not None:
            query["limit"] = str(max(1, self.limit - self.stats.messages))
        return urllib.parse.urlunsplit(self._parts._replace(query=urllib.parse.urlencode(query)))

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Yield messages until the stream ends; raise :class:`StreamError` on failure."""
        failures = 0
        auth_retried = False  # a 401 was just retried with a fresh token
        while True:
            hint: float | None = None  # goodbye's reconnect_ms, in seconds
            expired = False  # goodbye token_expired, or close 4003
            got_frames = False
            # Before every connection: a callable hands a fresh token each time.
            token = await _resolve_token(self.token)
            headers = {"Authorization": f"Bearer {token}"} if token else None
            try:
                # No compression: the gateway declines permessage-deflate anyway.
                async with connect(
                    self.url(),
                    compression=None,
                    open_timeout=self.open_timeout,
                    max_size=self.max_size,
                    additional_headers=headers,
                ) as ws:
                    auth_retried = False
                    self._connections += 1
                    if self._connections > 1:
                        self.stats.reconnects += 1
                        log.info("%s: reconnected with since=%s", TRANSPORT, self.last_id)
                    try:
                        while True:
                            frame = await ws.recv(decode=False)
                            got_frames = True
                            self.stats.bytes_received += len(frame)
                            try:
                                raw = frame.decode()
                                obj = json.loads(raw)
                            except ValueError as exc:
                                raise StreamError(f"bad frame from server: {exc}") from exc
                            if not isinstance(obj, dict):
                                raise StreamError(f"unexpected frame from server: {raw[:200]}")
                            kind = obj.get("type")
                            if kind is None:
                                msg = Message.from_obj(obj, raw)
                                self.last_id = msg.id
                                self.stats.messages += 1
                                yield msg
                                continue
                            if kind == "gap":
                                self.stats.gaps += 1
                            elif kind == "goodbye":
                                ms = obj.get("reconnect_ms")
                                hint = ms / 1000.0 if isinstance(ms, int | float) else None
                                expired = obj.get("reason") == "token_expired"
                            if self.on_control is not None:
                                self.on_control(obj)
                            if kind == "end":
                                return  # closes with 1000
                    except ConnectionClosed as exc:
                        # RFC 6455 7.1.5: no Close frame received means code 1006.
                        code = exc.rcvd.code if exc.rcvd is not None else 1006
                        why = exc.rcvd.reason if exc.rcvd is not None else "connection dropped"
                self.close_code = code
                expired = expired or code == CLOSE_TOKEN_EXPIRED
                if code == 1000:
                    return
                if not should_reconnect(code):
                    raise StreamError(f"server closed the connection: {code} {why}", code=code)
                reason = f"closed {code} {why}".rstrip()
            except InvalidStatus as exc:
                status = exc.response.status_code
                text = _http_error_text(status, bytes(exc.response.body or b""))
                if status == 401 and callable(self.token) and not auth_retried:
                    # Once, at once: the token may have expired since it was handed.
                    auth_retried = True
                    log.info("%s: %s; retrying with a fresh token", TRANSPORT, text)
                    continue
                if 400 <= status < 500 or (self._connections == 0 and self.fail_fast):
                    raise StreamError(f"handshake refused: {text}", status=status) from None
                reason = f"handshake refused: {text}"
            except InvalidURI as exc:
                raise StreamError(f"bad URL: {exc}") from None
            except (OSError, TimeoutError, InvalidHandshake) as exc:
                reason = _describe(exc)
                if self._connections == 0 and self.fail_fast:
                    raise StreamError(f"cannot connect to {_redact(self.url())}: {reason}") from exc
            failures = 0 if got_frames else failures + 1
            if self.max_retries is not None and failures > self.max_retries:
                raise StreamError(f"giving up after {failures} failed attempts: {reason}")
            if expired:
                # The token ran out, nothing else is wrong: come back at once (after the
                # server's hint only) with a fresh token, and resume.
                delay = max(0.0, hint or 0.0)
                reason = "token expired"
            elif hint is not None:
                delay = hint * (1.0 + 0.5 * random.random())
            else:
                # Exponential backoff with jitter, so that clients dropped together
                # do not come back together.
                cap = min(self.backoff_max, self.backoff_initial * 2 ** min(failures, 16))
                delay = random.uniform(cap / 2, cap)
            log.info("%s: %s; reconnecting in %.2fs", TRANSPORT, reason, delay)
            await asyncio.sleep(delay)


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _http_error_text(status: int, body: bytes) -> str:
    """``HTTP 401 unauthorized: <message>`` from a JSON error body, on one line."""
    text = body.decode("utf-8", "replace")
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        err = json.loads(text)
        message = err.get("message")
        text = str(err["error"]) + (f": {message}" if message else "")
    text = " ".join(text.split())[:300]
    return f"HTTP {status}" + (f" {text}" if text else "")


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def stream_url(url: str, topic: str | None) -> str:
    """The ws:// URL from a stream URL, or from a base URL and a topic; ValueError if bad.

    ``http://`` and ``https://`` are accepted and mapped to ``ws://`` and ``wss://``.
    """
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"bad URL {url!r}: {exc}") from None
    scheme = {"http": "ws", "https": "wss"}.get(parts.scheme, parts.scheme)
    if scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"bad URL {url!r}: expected ws://HOST:PORT/ws/TOPIC")
    path = parts.path
    if topic is not None:
        if path not in ("", "/"):
            raise ValueError("give either a stream URL or a base URL with --topic, not both")
        path = "/ws/" + urllib.parse.quote(topic, safe="")
    elif path in ("", "/"):
        raise ValueError(f"URL {url!r} names no topic: use ws://HOST:PORT/ws/TOPIC or --topic")
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.ws",
        description="Print the messages of a streamgate topic received over WebSocket.",
    )
    p.add_argument("url", help="stream URL (ws://localhost:8080/ws/ticks) or base URL + --topic")
    p.add_argument("--topic", help="topic name, when URL is the gateway's base URL")
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
    client = WSClient(
        url,
        since=args.since,
        limit=args.limit,
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
    # websockets logs every failed handshake itself; our own notes say enough.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_run(args, url))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
