"""Server-Sent Events client for streamgate: a spec-exact decoder and EventSource.

Three layers, each usable on its own:

* :class:`SSEDecoder` is sans-I/O: ``feed(bytes) -> list[Event]``. It follows the
  parsing rules of the WHATWG HTML standard, section "Server-sent events"
  (https://html.spec.whatwg.org/multipage/server-sent-events.html), "Interpreting
  an event stream" -- BOM, CR/LF/CRLF line ends, fields, dispatch -- whatever way
  the bytes are cut.
* :class:`EventSource` is what a browser's ``EventSource`` does, over aiohttp:
  reconnects after the ``retry`` delay (plus jitter), sends ``Last-Event-ID``, and
  fails for good on a status other than 200 or a Content-Type other than
  ``text/event-stream`` (so a 204 stops it, as in a browser).
* :class:`SSEClient` speaks the streamgate protocol (PROTOCOL.md) on top: it yields
  :class:`Message` objects, counts gaps and reconnects, and stops on ``end``.

A gateway with access control wants a token: ``token=`` (on both classes) is a
string, or a callable (sync or async) called before every connection and
reconnection, so an app hands a fresh token each time; it is sent as
``Authorization: Bearer <token>``.

Run it: ``python -m clients.sse http://localhost:8080/sse/ticks`` (``--token
TOKEN`` or ``STREAMGATE_TOKEN`` in the environment for a token).

This file imports nothing from the gateway and nothing else from ``clients/``:
copy it and run it anywhere aiohttp is installed.
"""

from __future__ import annotations

import argparse
import asyncio
import codecs
import contextlib
import inspect
import json
import logging
import os
import random
import re
import signal
import sys
import urllib.parse
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

try:
    import aiohttp
except ModuleNotFoundError as exc:  # run as a script without it: one line, not a traceback
    if __name__ != "__main__":
        raise
    sys.exit(
        f"error: python -m clients.sse needs aiohttp ({exc}): "
        "pip install -e '.[clients]' (or pip install aiohttp)"
    )

__all__ = [
    "Event",
    "EventSource",
    "EventSourceError",
    "Message",
    "SSEClient",
    "SSEDecoder",
    "Stats",
    "StreamError",
    "Token",
    "main",
]

log = logging.getLogger("clients.sse")

TRANSPORT = "sse"
TOKEN_ENV = "STREAMGATE_TOKEN"
CONTROL_TYPES = frozenset({"gap", "goodbye", "end", "stream-error"})

# WHATWG: "Lines must be separated by either a U+000D CARRIAGE RETURN U+000A LINE
# FEED (CRLF) character pair, a single U+000A LINE FEED (LF) character, or a single
# U+000D CARRIAGE RETURN (CR) character."  (str.splitlines would also split on
# U+2028, VT, FF and more, which the spec does not.)
_EOL = re.compile(r"\r\n|\r|\n")

#: A bearer token: a string, or a callable returning one (or an awaitable of one),
#: called before every connection. ``None`` or ``""``: send no Authorization header.
Token = str | Callable[[], str | Awaitable[str | None] | None] | None


# --------------------------------------------------------------------------
# sans-I/O decoder
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Event:
    """One dispatched event, the fields of a DOM ``MessageEvent``.

    ``type`` is the event type (``"message"`` unless an ``event:`` field said
    otherwise), ``data`` the data buffer without its trailing LF, and
    ``last_event_id`` the event source's last event ID string at dispatch time.
    """

    type: str
    data: str
    last_event_id: str = ""


class SSEDecoder:
    """Incremental ``text/event-stream`` parser (WHATWG "Interpreting an event stream").

    Feed it bytes as they arrive, in pieces of any size; it returns the events
    completed by those bytes. It keeps, across events and across :meth:`reset`
    (a reconnection), the event source's *last event ID string*
    (:attr:`last_event_id`) and *reconnection time* (:attr:`retry`, in ms, or
    ``None`` while the server has not set one).
    """

    def __init__(self, last_event_id: str = "") -> None:
        self.last_event_id: str = last_event_id
        self.retry: int | None = None
        self.reset()

    def reset(self) -> None:
        """Start a new stream (a reconnection): pending bytes and buffers are dropped.

        The last event ID and the reconnection time persist, as they do on an
        ``EventSource`` object, and the id buffer starts from the last event ID
        (what browsers do, so a reconnected stream that dispatches an event
        before sending an ``id:`` does not forget the id).
        """
        # "The stream must then be decoded using UTF-8 decode": invalid bytes become
        # U+FFFD, and one leading BOM is stripped. The incremental utf-8-sig decoder
        # does both, even when the BOM or a character is split across feeds.
        self._decoder = codecs.getincrementaldecoder("utf-8-sig")(errors="replace")
        self._partial: list[str] = []  # text of the unterminated line so far
        self._after_cr = False  # last feed ended in CR: a leading LF is its CRLF pair
        self._data: list[str] = []  # data buffer, one entry per data field
        self._event_type = ""
        self._id_buffer = self.last_event_id

    def feed(self, data: bytes) -> list[Event]:
        """Consume *data* (any slice of the stream) and return the events it completes."""
        text = self._decoder.decode(data)
        if not text:
            return []
        if self._after_cr:
            # A CRLF split across two feeds is one line end, not two.
            self._after_cr = False
            if text[0] == "\n":
                text = text[1:]
                if not text:
                    return []
        events: list[Event] = []
        pos = 0
        for m in _EOL.finditer(text):
            line = text[pos : m.start()]
            if self._partial:
                self._partial.append(line)
                line = "".join(self._partial)
                self._partial.clear()
            pos = m.end()
            event = self._process_line(line)
            if event is not None:
                events.append(event)
        if pos < len(text):
            self._partial.append(text[pos:])
        elif text[-1] == "\r":
            self._after_cr = True
        return events

    def _process_line(self, line: str) -> Event | None:
        # "If the line is empty (a blank line): Dispatch the event."
        if not line:
            return self._dispatch()
        # "If the line starts with a U+003A COLON character (:): Ignore the line."
        if line[0] == ":":
            return None
        colon = line.find(":")
        if colon >= 0:
            # "Collect the characters on the line before the first U+003A COLON
            # character (:), and let field be that string. Collect the characters on
            # the line after the first U+003A COLON character (:), and let value be
            # that string. If value starts with a U+0020 SPACE character, remove it."
            field = line[:colon]
            value = line[colon + 1 :]
            if value[:1] == " ":
                value = value[1:]
        else:
            # "Otherwise, ... process the field using the whole line as the field
            # name, and the empty string as the field value."
            field = line
            value = ""
        if field == "event":
            self._event_type = value
        elif field == "data":
            # "Append the field value to the data buffer, then append a single
            # U+000A LINE FEED (LF) character to the data buffer."
            self._data.append(value)
        elif field == "id":
            # "If the field value does not contain U+0000 NULL, then set the last
            # event ID buffer to the field value. Otherwise, ignore the field."
            if "\0" not in value:
                self._id_buffer = value
        elif field == "retry":
            # "If the field value consists of only ASCII digits, then interpret the
            # field value as an integer in base ten, and set the event stream's
            # reconnection time to that integer. Otherwise, ignore the field."
            if value and value.isascii() and value.isdigit():
                self.retry = int(value)
        # "Otherwise: The field is ignored."
        return None

    def _dispatch(self) -> Event | None:
        # 1. "Set the last event ID string of the event source to the value of the
        #    last event ID buffer. The buffer does not get reset."
        self.last_event_id = self._id_buffer
        # 2. "If the data buffer is an empty string, set the data buffer and the
        #    event type buffer to the empty string and return."
        if not self._data:
            self._event_type = ""
            return None
        # 3. "If the data buffer's last character is a U+000A LINE FEED (LF)
        #    character, then remove the last character from the data buffer."
        #    (Joining the data fields with LF is exactly that.)
        data = "\n".join(self._data)
        # 5./6. The event's type is the event type buffer, or "message" if empty.
        event = Event(self._event_type or "message", data, self.last_event_id)
        # 7. "Set the data buffer and the event type buffer to the empty string."
        self._data = []
        self._event_type = ""
        return event


# --------------------------------------------------------------------------
# EventSource over aiohttp
# --------------------------------------------------------------------------


class EventSourceError(Exception):
    """The connection failed for good (WHATWG "fail the connection").

    ``status`` is the HTTP status (``None`` when the server was unreachable),
    ``content_type`` the response's media type, ``body`` a short excerpt of it.
    """

    def __init__(
        self, message: str, *, status: int | None = None, content_type: str = "", body: str = ""
    ) -> None:
        super().__init__(message)
        self.status = status
        self.content_type = content_type
        self.body = body


class EventSource:
    """An ``EventSource`` (WHATWG) over aiohttp, as an async iterator of :class:`Event`.

    ``async for event in EventSource(url).events()`` yields every dispatched
    event across reconnections, like the ``message``/named-event listeners of a
    browser's EventSource. Behaviour, after the spec:

    * the request carries ``Accept: text/event-stream``, ``Cache-Control:
      no-cache`` and, when the last event ID is not empty, ``Last-Event-ID``;
    * a response other than 200 with ``text/event-stream`` fails the connection
      for good: :class:`EventSourceError` is raised (a 204 does so too);
    * a network error or the end of the response body makes it reconnect after
      the reconnection time (the last ``retry:`` field, else *reconnection_time*
      ms) times a random factor in ``[1, 1 + jitter)``; after consecutive
      failures the delay doubles, up to *max_delay* seconds.

    Differences from a browser, all optional: with *fail_fast* (the default) a
    first connection that cannot be made at all raises instead of retrying, and
    *max_retries* bounds consecutive failed attempts. *token* (a string, or a
    callable returning one, sync or async, called before every connection) is
    sent as ``Authorization: Bearer <token>``, which a browser's EventSource
    cannot do; with a callable, a 401 is tried once more at once with a fresh
    token before it fails the connection. :attr:`url` may be changed between
    connections, and :meth:`reconnect_in` sets the delay before the next one.
    Call :meth:`close` to stop (``readyState`` CLOSED).
    """

    CONNECTING = 0
    OPEN = 1
    CLOSED = 2

    def __init__(
        self,
        url: str,
        *,
        last_event_id: str = "",
        session: aiohttp.ClientSession | None = None,
        headers: dict[str, str] | None = None,
        reconnection_time: int = 3000,
        jitter: float = 0.5,
        max_delay: float = 10.0,
        fail_fast: bool = True,
        max_retries: int | None = None,
        connect_timeout: float | None = 10.0,
        read_timeout: float | None = None,
        token: Token = None,
    ) -> None:
        self.url = url
        self.token = token
        self.ready_state = self.CONNECTING
        self.reconnection_time = reconnection_time  # ms, overridden by "retry:"
        self.jitter = jitter
        self.max_delay = max_delay
        self.fail_fast = fail_fast
        self.max_retries = max_retries
        self.bytes_received = 0
        self.connections = 0  # successful opens
        self._decoder = SSEDecoder(last_event_id)
        self._session = session
        self._headers = dict(headers or {})
        self._timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=connect_timeout, sock_read=read_timeout
        )
        self._closed = asyncio.Event()
        self._response: aiohttp.ClientResponse | None = None
        self._next_delay: float | None = None

    @property
    def last_event_id(self) -> str:
        """The last event ID string (sent back as ``Last-Event-ID``)."""
        return self._decoder.last_event_id

    @property
    def reconnects(self) -> int:
        """How many times the stream was re-opened after the first connection."""
        return max(0, self.connections - 1)

    def reconnect_in(self, seconds: float) -> None:
        """Wait *seconds* (no jitter, no backoff) before the next reconnection only.

        For a server that says when to come back, e.g. streamgate's ``goodbye``
        ``token_expired``: the stream is fine, only its token ran out.
        """
        self._next_delay = max(0.0, seconds)

    def close(self) -> None:
        """Stop: no further event is yielded and no reconnection is made.

        May be called from the consuming loop or from another task: the open
        response, if any, is closed so that a pending read ends at once.
        """
        self.ready_state = self.CLOSED
        self._closed.set()
        if self._response is not None:
            self._response.close()

    async def events(self) -> AsyncGenerator[Event, None]:
        """Yield events until :meth:`close` is called or the connection fails for good."""
        own_session = self._session is None
        session = self._session or aiohttp.ClientSession()
        failures = 0
        auth_retried = False  # a 401 was just retried with a fresh token
        try:
            while self.ready_state != self.CLOSED:
                got_bytes = False
                self.ready_state = self.CONNECTING
                # Before every connection: a callable hands a fresh token each time.
                try:
                    token = await _resolve_token(self.token)
                except BaseException:
                    self.close()
                    raise
                try:
                    headers = {
                        "Accept": "text/event-stream",
                        "Cache-Control": "no-cache",
                        **self._headers,
                    }
                    if token:
                        headers["Authorization"] = f"Bearer {token}"
                    if self.last_event_id:
                        headers["Last-Event-ID"] = self.last_event_id
                    async with session.get(
                        self.url, headers=headers, timeout=self._timeout
                    ) as resp:
                        self._response = resp
                        # "if res's status is not 200, or if res's `Content-Type` is
                        # not `text/event-stream`, then fail the connection."
                        if resp.status != 200 or resp.content_type != "text/event-stream":
                            # An error body is short and complete; a 200 may be an endless
                            # stream of something else: do not wait for it.
                            body = ""
                            if resp.status != 200:
                                body = (await resp.content.read(2048)).decode("utf-8", "replace")
                            if resp.status == 401 and callable(self.token) and not auth_retried:
                                # Once, at once: the token may have expired since it was handed.
                                auth_retried = True
                                log.info("sse: HTTP 401; retrying with a fresh token")
                                continue
                            self.close()
                            raise EventSourceError(
                                _http_error_text(resp.status, resp.content_type, body),
                                status=resp.status,
                                content_type=resp.content_type,
                                body=body,
                            )
                        self.ready_state = self.OPEN
                        auth_retried = False
                        self.connections += 1
                        if self.connections > 1:
                            log.info("sse: reconnected, Last-Event-ID %r", self.last_event_id)
                        self._decoder.reset()
                        async for chunk in resp.content.iter_any():
                            got_bytes = True
                            self.bytes_received += len(chunk)
                            for event in self._decoder.feed(chunk):
                                yield event
                                if self.ready_state == self.CLOSED:
                                    return  # close() was called by the consumer
                            if self._decoder.retry is not None:
                                self.reconnection_time = self._decoder.retry
                    reason = "stream ended"
                except (aiohttp.ClientError, OSError, TimeoutError) as exc:
                    if self.ready_state == self.CLOSED:
                        return
                    reason = _describe(exc)
                    if self.connections == 0 and self.fail_fast:
                        self.close()
                        url = _redact(self.url)
                        raise EventSourceError(f"cannot connect to {url}: {reason}") from exc
                finally:
                    self._response = None
                if self.ready_state == self.CLOSED:
                    return
                failures = 0 if got_bytes else failures + 1
                if self.max_retries is not None and failures > self.max_retries:
                    self.close()
                    raise EventSourceError(f"giving up after {failures} failed attempts: {reason}")
                if self._next_delay is not None:
                    delay, self._next_delay = self._next_delay, None
                else:
                    delay = self._delay(failures)
                log.info("sse: %s; reconnecting in %.2fs", reason, delay)
                self.ready_state = self.CONNECTING
                # Wait out the delay, but wake at once if close() is called.
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), delay)
        finally:
            if own_session:
                await session.close()

    def _delay(self, failures: int) -> float:
        base = self.reconnection_time / 1000.0
        if failures > 1:
            # WHATWG, "reestablish the connection": "if the previous attempt failed,
            # then user agents might introduce an exponential backoff delay to avoid
            # overloading a potentially already overloaded server". The server's
            # retry stays the floor.
            base = max(base, min(self.max_delay, base * 2 ** min(failures - 1, 16)))
        return base * (1.0 + random.random() * self.jitter)


async def _resolve_token(token: Token) -> str | None:
    """The token for the next connection: the string, or what the callable returns now."""
    value = token() if callable(token) else token
    if inspect.isawaitable(value):
        value = await value
    if value is None:
        return None
    if not isinstance(value, str):
        raise EventSourceError(f"the token callable returned {type(value).__name__}, not a string")
    value = value.strip()
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        raise EventSourceError("bad token: it holds whitespace or control characters")
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


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if text != type(exc).__name__ else text


def _http_error_text(status: int, content_type: str, body: str) -> str:
    """``HTTP 401 unauthorized: <message>`` from a JSON error body, on one line."""
    detail = body
    with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
        err = json.loads(body)
        message = err.get("message")
        detail = str(err["error"]) + (f": {message}" if message else "")
    detail = " ".join(detail.split())[:300]
    if status == 200:
        return f"not an event stream (Content-Type {content_type or 'missing'!s})"
    return f"HTTP {status}" + (f" {detail}" if detail else "")


# --------------------------------------------------------------------------
# streamgate protocol on top of EventSource
# --------------------------------------------------------------------------


class StreamError(Exception):
    """The stream cannot go on: unreachable server, HTTP error, or a bad message.

    ``status`` is the HTTP status of a refused request (401, 403, 404, ...), else ``None``.
    """

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class Message:
    """One streamgate message; ``raw`` is its JSON exactly as received."""

    id: str
    topic: str
    ts: float
    data: Any
    raw: str

    @classmethod
    def parse(cls, raw: str) -> Message:
        """Parse a message's JSON text; raises ``ValueError`` if it is not one."""
        obj = json.loads(raw)
        if not isinstance(obj, dict) or "id" not in obj or "type" in obj:
            raise ValueError(f"not a message: {raw[:200]!r}")
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


class SSEClient:
    """streamgate messages over SSE, resuming with ``Last-Event-ID``.

    ``async for msg in SSEClient(url).messages()`` yields :class:`Message`
    objects; control events (``gap``, ``goodbye``, ``error``) go to *on_control*
    as dicts; ``end`` (or a 204 on reconnection) ends the iteration; an
    unrecoverable failure raises :class:`StreamError`. *since* is sent as the
    initial ``Last-Event-ID``; afterwards the EventSource tracks the id itself.
    *read_timeout*: seconds without a byte (heartbeats included) after which the
    connection counts as dead and is re-opened. Use ``contextlib.aclosing``
    when you may leave the loop early.

    *token* (a string, or a callable returning one, sync or async) goes to the
    :class:`EventSource`: sent as ``Authorization: Bearer <token>`` on every
    connection, a callable called before each one. After a ``goodbye``
    ``token_expired`` the client comes back at once (after ``reconnect_ms``,
    not the ``retry`` delay) and resumes with ``Last-Event-ID``. A 401 is tried
    once more with a fresh token when *token* is a callable; otherwise, or if
    that fails too, :class:`StreamError` (``status`` 401). 403 stops too.
    """

    transport = TRANSPORT

    def __init__(
        self,
        url: str,
        *,
        since: str | None = None,
        limit: int | None = None,
        on_control: Callable[[dict[str, Any]], None] | None = None,
        session: aiohttp.ClientSession | None = None,
        reconnection_time: int = 3000,
        fail_fast: bool = True,
        max_retries: int | None = None,
        read_timeout: float | None = 60.0,
        token: Token = None,
    ) -> None:
        # A since= in the URL would win over Last-Event-ID on every reconnection
        # (PROTOCOL.md), replaying the same messages again: move it to the header.
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query))
        if since is None:
            since = query.pop("since", None)
        else:
            query.pop("since", None)
        self.limit = limit if limit is not None else _int_or_none(query.pop("limit", None))
        self._base_url = _replace_query(url, query)
        self.on_control = on_control
        self.stats = Stats()
        self.source = EventSource(
            self._url(),
            last_event_id=since or "",
            session=session,
            reconnection_time=reconnection_time,
            fail_fast=fail_fast,
            max_retries=max_retries,
            read_timeout=read_timeout,
            token=token,
        )

    @property
    def last_id(self) -> str | None:
        """Id of the last message received (or the starting ``since``)."""
        return self.source.last_event_id or None

    def _url(self) -> str:
        if self.limit is None:
            return self._base_url
        # On a reconnection ask only for what is still missing.
        remaining = max(1, self.limit - self.stats.messages)
        return _replace_query(self._base_url, {"limit": str(remaining)}, merge=True)

    async def messages(self) -> AsyncGenerator[Message, None]:
        """Yield messages until the stream ends; raise :class:`StreamError` on failure."""
        source = self.source
        try:
            async for event in source.events():
                self.stats.reconnects = source.reconnects
                self.stats.bytes_received = source.bytes_received
                if event.type == "message":
                    try:
                        msg = Message.parse(event.data)
                    except (ValueError, KeyError, TypeError) as exc:
                        raise StreamError(f"bad message from server: {exc}") from exc
                    self.stats.messages += 1
                    if self.limit is not None:
                        source.url = self._url()
                    yield msg
                elif event.type in CONTROL_TYPES:
                    try:
                        obj = json.loads(event.data)
                    except ValueError:
                        obj = {"type": event.type, "data": event.data}
                    if event.type == "gap":
                        self.stats.gaps += 1
                    elif (
                        event.type == "goodbye"
                        and isinstance(obj, dict)
                        and obj.get("reason") == "token_expired"
                    ):
                        # Only the token ran out: back at once (the server's hint, not its
                        # retry: delay), with a fresh token, resuming with Last-Event-ID.
                        ms = obj.get("reconnect_ms")
                        source.reconnect_in(ms / 1000.0 if isinstance(ms, int | float) else 0.0)
                    if self.on_control is not None:
                        self.on_control(obj)
                    if event.type == "end":
                        # PROTOCOL.md: "After an `end` event the page should call close()".
                        source.close()
                        return
        except EventSourceError as exc:
            if exc.status == 204:
                # A per-connection stream resumed past its end: complete.
                return
            raise StreamError(str(exc), status=exc.status) from exc
        finally:
            self.stats.reconnects = source.reconnects
            self.stats.bytes_received = source.bytes_received
            source.close()


def _int_or_none(value: str | None) -> int | None:
    return int(value) if value is not None and value.isdigit() else None


def _replace_query(url: str, params: dict[str, str], *, merge: bool = False) -> str:
    parts = urllib.parse.urlsplit(url)
    query = dict(urllib.parse.parse_qsl(parts.query)) if merge else {}
    query.update(params)
    return urllib.parse.urlunsplit(parts._replace(query=urllib.parse.urlencode(query)))


# --------------------------------------------------------------------------
# command line
# --------------------------------------------------------------------------


def stream_url(url: str, topic: str | None) -> str:
    """The SSE URL from a stream URL, or from a base URL and a topic; ValueError if bad."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as exc:
        raise ValueError(f"bad URL {url!r}: {exc}") from None
    scheme = {"ws": "http", "wss": "https"}.get(parts.scheme, parts.scheme)
    if scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"bad URL {url!r}: expected http://HOST:PORT/sse/TOPIC")
    path = parts.path
    if topic is not None:
        if path not in ("", "/"):
            raise ValueError("give either a stream URL or a base URL with --topic, not both")
        path = "/sse/" + urllib.parse.quote(topic, safe="")
    elif path in ("", "/"):
        raise ValueError(f"URL {url!r} names no topic: use http://HOST:PORT/sse/TOPIC or --topic")
    return urllib.parse.urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m clients.sse",
        description="Print the messages of a streamgate topic received over Server-Sent Events.",
    )
    p.add_argument("url", help="stream URL (http://localhost:8080/sse/ticks) or base URL + --topic")
    p.add_argument("--topic", help="topic name, when URL is the gateway's base URL")
    p.add_argument("--since", help="resume after this message id (sent as Last-Event-ID)")
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
    client = SSEClient(
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
    try:
        return asyncio.run(_run(args, url))
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into e.g. `head`: stop quietly.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
