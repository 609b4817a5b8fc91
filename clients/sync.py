"""Blocking chunked-HTTP client for streamgate, on ``requests`` (``stream=True``).

The contrast the tutorials draw: no event loop, one thread blocked in
``iter_lines`` while the NDJSON stream (``GET /chunked/{topic}``) trickles in.
:class:`SyncClient` yields one :class:`Message` per line, skips the blank
heartbeat lines, and after a dropped connection or a ``goodbye`` reconnects
with ``since=<last id>``; it stops on ``end`` (PROTOCOL.md).

A gateway with access control wants a token: ``token=`` is a string, or a
(plain) callable called before every request, so an app hands a fresh token
each time; it is sent as ``Authorization: Bearer <token>``.

Run it: ``python -m clients.sync http://localhost:8080/chunked/ticks``
(``--token TOKEN`` or ``STREAMGATE_TOKEN`` in the environment for a token).

This file imports nothing from the gateway and nothing else from ``clients/``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import random
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any

try:
    import requests
except ModuleNotFoundError as exc:  # run as a script without it: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(
        f"error: python -m clients.sync needs requests ({exc}): "
        "pip install -e '.[clients]' (or pip install requests)"
    )

__all__ = ["Message", "Stats", "StreamError", "SyncClient", "Token", "main"]

log = logging.getLogger("clients.sync")

TRANSPORT = "sync"
TOKEN_ENV = "STREAMGATE_TOKEN"

#: A bearer token: a string, or a callable returning one, called before every
#: request. ``None`` or ``""``: send no Authorization header.
Token = str | Callable[[], str | None] | None


class StreamError(Exception):
    """The stream cannot go on: unreachable server, HTTP error, or a bad message.

    ``status`` is the HTTP status of a refused request (401, 403, 404, ...), else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _resolve_token(token: Token) -> str | None:
    """The token for the next request: the string, or what the callable returns now."""
    value = token() if callable(token) else token
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
    """One streamgate message; ``raw`` is its JSON line exactly as received."""

    id: str
    topic: str
    ts: float
    data: Any
    raw: str


@dataclass
class Stats:
    """Counters of one client."""

    messages: int = 0
    reconnects: int = 0
    gaps: int = 0
    bytes_received: int = 0  # body bytes, counted per line (+1 for its LF)


class SyncClient:
    """streamgate messages over chunked HTTP (NDJSON), blocking.

    ``for msg in SyncClient(url).messages(): ...`` yields :class:`Message`
    objects; control events go to *on_control*. Reconnects after a drop with
    jittered exponential backoff (after ``goodbye``: its ``reconnect_ms``), and
    resumes with ``since=``. :meth:`close` may be called from another thread to
    stop a blocked reader. *read_timeout*: seconds without a byte (heartbeats
    included) after which the connection counts as dead and is re-opened.

    *token* (a string, or a callable returning one) is sent as
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
        on_control: Callable[[dict[str, Any]], None] | None = None,
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
        limit_text = query.pop("limit", None)
        self.limit = limit if limit is not None else (int(limit_text) if limit_text else None)
        query["format"] = "ndjson"
        self._parts = parts
        self._query = query
        self.on_control = on_control
        self.backoff_initial = backoff_initial
        self.backoff_max = backoff_max
        self.fail_fast = fail_fast
        self.max_retries = max_retries
        self.read_timeout = read_timeout
        self.token = token
        self.stats = Stats()
        self._connections = 0
        self._closed = threading.Event()
        self._response: requests.Response | None = None

    def url(self) -> str:
        """The URL of the next request: resumes after :attr:`last_id`."""
        query = dict(self._query)
        if self.last_id is not None:
            query["since"] = self.last_id
        if self.limit is not None:
            query["limit"] = str(max(1, self.limit - self.stats.messages))
        return urllib.parse.urlunsplit(self._parts._replace(query=urllib.parse.urlencode(query)))

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed.is_set()

    def close(self) -> None:
        """Stop, from any thread: the blocked read is woken by shutting the socket down."""
        self._closed.set()
        resp = self._response
        if resp is None:
            return
        # Closing a socket does not wake a recv() blocked on it in another thread;
        # shutdown() does. Reach the socket through urllib3's connection.
        conn = getattr(resp.raw, "_connection", None) or getattr(resp.raw, "connection", None)
        sock = getattr(conn, "sock", None)
        if isinstance(sock, socket.socket):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def messages(self) -> Generator[Message, None, None]:
        """Yield messages until the stream ends; raise :class:`StreamError` on failure."""
        failures = 0
        auth_retried = False  # a 401 was just retried with a fresh token
        session = requests.Session()
        try:
            while not self._closed.is_set():
                hint: float | None = None
                expired = False  # goodbye token_expired
                got_bytes = False
                # Before every request: a callable hands a fresh token each time.
                headers = {"Accept": "application/x-ndjson", "Cache-Control": "no-cache"}
                token = _resolve_token(self.token)
                if token:
                    headers["Authorization"] = f"Bearer {token}"
                try:
                    with session.get(
                        self.url(),
                        stream=True,
                        timeout=(10.0, self.read_timeout),
                        headers=headers,
                    ) as resp:
                        self._response = resp
                        if resp.status_code == 204:
                            return
                        if resp.status_code != 200:
                            status = resp.status_code
                            text = _http_error_text(status, resp.text[:2048])
                            if status == 401 and callable(self.token) and not auth_retried:
                                # Once, at once: the token may have expired since it was handed.
                                auth_retried = True
                                log.info("%s: %s; retrying with a fresh token", TRANSPORT, text)
                                continue
                            if 400 <= status < 500:
                                raise StreamError(text, status=status)
                            raise requests.ConnectionError(text)
                        auth_retried = False
                        self._connections += 1
                        if self._connections > 1:
                            self.stats.reconnects += 1
                            log.info("%s: reconnected with since=%s", TRANSPORT, self.last_id)
                        # chunk_size=None: hand over data as it arrives, not in 512-byte
                        # blocks. iter_lines splits on line ends, never on chunk ends.
                        for line in resp.iter_lines(chunk_size=None):  # type: ignore[call-overload]
                            got_bytes = True
                            self.stats.bytes_received += len(line) + 1
                            if not line.strip():
                                continue  # heartbeat
                            try:
                                obj = json.loads(line)
                            except ValueError as exc:
                                raise StreamError(f"bad JSON from server: {exc}") from exc
                            if not isinstance(obj, dict):
                                raise StreamError(f"unexpected line from server: {line[:200]!r}")
                            kind = obj.get("type")
                            if kind is None:
                                msg = Message(
                                    str(obj["id"]),
                                    str(obj.get("topic", "")),
                                    float(obj["ts"]),
                                    obj.get("data"),
                                    line.decode("utf-8", "replace"),
                                )
                                self.last_id = msg.id
                                self.stats.messages += 1
                                yield msg
                                continue
                            if kind == "gap":
                                self.stats.gaps += 1
                            if self.on_control is not None:
                                self.on_control(obj)
                            if kind == "end":
                                return
                            if kind == "goodbye":
                                ms = obj.get("reconnect_ms")
                                hint = ms / 1000.0 if isinstance(ms, int | float) else 0.0
                                expired = obj.get("reason") == "token_expired"
                    reason = "goodbye" if hint is not None else "stream ended without end"
                except requests.RequestException as exc:
                    if self._closed.is_set():
                        return
                    reason = f"{type(exc).__name__}: {exc}"
                    if self._connections == 0 and self.fail_fast:
                        url = _redact(self.url())
                        raise StreamError(f"cannot connect to {url}: {reason}") from exc
                finally:
                    self._response = None
                if self._closed.is_set():
                    return
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
                    cap = min(self.backoff_max, self.backoff_initial * 2 ** min(failures, 16))
                    delay = random.uniform(cap / 2, cap)
                log.info("%s: %s; reconnecting in %.2fs", TRANSPORT, reason, delay)
                if self._closed.wait(delay):
                    return
        finally:
            session.close()


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
    if parts.scheme not in ("http", "https") or not parts.hostname:
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
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.sync",
        description="Print the messages of a streamgate topic, read with blocking requests.",
    )
    p.add_argument(
        "url", help="stream URL (http://localhost:8080/chunked/ticks) or base URL + --topic"
    )
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
    return p


def _note(obj: dict[str, Any]) -> None:
    fields = " ".join(f"{k}={v}" for k, v in obj.items() if k != "type")
    print(f"# {TRANSPORT} {obj.get('type')}: {fields}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _build_parser().parse_args(argv)
    try:
        url = stream_url(args.url, args.topic)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="# %(message)s", stream=sys.stderr)
    token = args.token if args.token is not None else os.environ.get(TOKEN_ENV)
    client = SyncClient(
        url,
        since=args.since,
        limit=args.limit,
        on_control=_note,
        max_retries=args.max_retries,
        fail_fast=not args.wait,
        token=token or None,
    )
    received = 0
    stream = client.messages()
    try:
        for msg in stream:
            if args.json:
                line = msg.raw
            else:
                data = json.dumps(msg.data, separators=(",", ":"), ensure_ascii=False)
                line = f"{TRANSPORT} {msg.id} {data}"
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
            received += 1
            if args.count is not None and received >= args.count:
                break
    except StreamError as exc:
        hint = ""
        if exc.status == 401 and not token:
            hint = f" (no token given: use --token or {TOKEN_ENV})"
        print(f"error: {exc}{hint}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    finally:
        stream.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
