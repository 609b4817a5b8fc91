"""Load generators: raw-socket subscribers and publishers, one epoll loop per process.

They are deliberately light, so the client side is not what limits a figure:

* a subscriber counts deliveries with ``bytes.count(b'"t0":')`` (the bench's one
  data key, once per message whatever the framing: streamgate's envelope, or
  Nchan's bare body in an SSE event, an HTTP chunk or a WebSocket frame) and
  never parses a frame;
  in latency mode it also pulls every ``t0`` with one regex per ``recv()``,
  and times each delivery twice: when the kernel queued the bytes on the
  subscriber's socket (``SO_TIMESTAMPNS``, the receipt the server controls)
  and when this process got them from ``recvmsg()`` (which adds the bench's
  own scheduling on its shared core);
* a WebSocket subscriber answers the server's ping (opcode 0x89: never a byte of
  the bench's ASCII JSON or of its frame headers, lengths are under 126);
* a publisher keeps its connections alive and sends the next POST when the
  previous response is complete (closed loop), or on a fixed schedule (paced).

Each loop has a count and a deadline and stops by itself, also when its
parent dies.
"""

from __future__ import annotations

import base64
import errno
import os
import re
import select
import socket
import struct
import time
from collections import Counter
from dataclasses import dataclass
from multiprocessing.sharedctypes import SynchronizedArray
from multiprocessing.synchronize import Event
from typing import Any

from .common import HOST, PATTERN, raise_nofile

__all__ = [
    "C_BYTES",
    "C_CLOSED",
    "C_CONNECTED",
    "C_DELIVERED",
    "C_FAILED",
    "C_MESSAGES",
    "C_REQUESTS",
    "LAT_BUCKET",
    "LAT_DUMP",
    "LAT_OFF",
    "LAT_ON",
    "SLOTS",
    "PubConfig",
    "SubConfig",
    "publisher_main",
    "request_bytes",
    "slow_reader_main",
    "subscriber_main",
]

# Counter slots per worker in the shared array.
SLOTS = 8
C_CONNECTED, C_DELIVERED, C_BYTES, C_FAILED, C_CLOSED, C_REQUESTS, C_MESSAGES = range(7)

RECV = 1 << 18
T0_RE = re.compile(rb'"t0":([0-9.]+)\}')
LAT_BUCKET = 100.0
"""Latency histogram buckets per millisecond (10 µs)."""
LAT_OFF, LAT_ON, LAT_DUMP = 0, 1, 2
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)
"""Linux: stamp every received segment with the kernel's clock (CLOCK_REALTIME)."""
_ANC = socket.CMSG_SPACE(16)
_TS = struct.Struct("qq")
WS_PING = b"\x89"
WS_PONG = b"\x8a\x80\x00\x00\x00\x00"  # masked (RFC 6455 5.3), empty payload, zero mask


@dataclass(frozen=True, slots=True)
class SubConfig:
    port: int
    transport: str
    """``chunked``, ``sse``, ``ws``, or ``raw`` (no request: the send() floor)."""
    path: str
    conns: int
    mode: str = "count"
    """``count``, ``latency`` or ``idle`` (hold the connection, answer pings)."""
    deadline: float = 0.0
    """time.monotonic() after which the worker stops by itself."""
    spin: float = 0.002
    """Seconds to keep polling without blocking after data arrived (0: always block).

    On loopback, every send() to a subscriber that sleeps in epoll_wait pays for
    waking it up (an IPI and a context switch, charged to the *server*); a remote
    client costs the server no such thing. Spinning briefly while a flush is
    being written spares the server those wake-ups, so the figures measure the
    server, not the bench's colocation. The spin stops 2 ms after the last byte.
    """
    in_flight: int = 100
    """Handshakes outstanding at once (keeps the server's accept queue short)."""
    browser: bool = False
    """Send the headers a browser sends (:func:`browser_headers`), not the fewest."""


def browser_headers(cfg: SubConfig) -> str:
    """What Chromium adds to an ``EventSource``, ``fetch()`` or ``WebSocket``
    request of a page served by the server itself (about 600 bytes, a short
    session cookie included). A server that keeps a request's headers for as
    long as its stream lasts holds these for every idle connection; the fewest
    headers measure less than a browser costs. No ``Sec-WebSocket-Extensions``:
    a compressing peer would be measured for its compressor instead."""
    own = f"http://{HOST}:{cfg.port}"
    lines = [
        "Connection: keep-alive" if cfg.transport != "ws" else f"Origin: {own}",
        "Cache-Control: no-cache",
        "Pragma: no-cache",
        "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 "
        "(KHTML, like Gecko) Chrome/120.0.0.0 Safari/537.36",
        'sec-ch-ua: "Chromium";v="120", "Not?A_Brand";v="8"',
        "sec-ch-ua-mobile: ?0",
        'sec-ch-ua-platform: "Linux"',
        "Accept-Encoding: gzip, deflate, br",
        "Accept-Language: en-GB,en;q=0.9,de;q=0.8",
        f"Referer: {own}/",
        "Sec-Fetch-Site: same-origin",
        "Sec-Fetch-Mode: cors" if cfg.transport != "ws" else "Sec-Fetch-Mode: websocket",
        "Sec-Fetch-Dest: empty",
        "Cookie: session=3f9a1c2e7b4d4e0f9a8b7c6d5e4f3a2b; theme=dark",
    ]
    return "".join(line + "\r\n" for line in lines)


def request_bytes(cfg: SubConfig) -> bytes:
    if cfg.transport == "raw":
        return b""
    head = f"GET {cfg.path} HTTP/1.1\r\nHost: {HOST}:{cfg.port}\r\n"
    if cfg.browser:
        head += browser_headers(cfg)
    if cfg.transport == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        head += (
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        )
    elif cfg.transport == "sse":
        head += "Accept: text/event-stream\r\n"
    elif cfg.transport == "chunked":
        # Nchan's http-chunked subscriber answers 403 without it; aiohttp ignores it.
        head += "TE: chunked\r\n"
    return (head + "\r\n").encode()


class _Conn:
    __slots__ = ("head", "leftover", "live", "sock", "tail")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.live = False
        self.head = b""
        self.tail = b""
        self.leftover = b""


def _abort(sock: socket.socket) -> None:
    # RST instead of FIN: no TIME_WAIT left behind by thousands of bench sockets.
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    except OSError:
        pass
    sock.close()


def subscriber_main(
    cfg: SubConfig,
    counters: SynchronizedArray[Any],
    slot: int,
    stop: Event,
    results: Any,
    ctrl: Any,
) -> None:
    """Open ``cfg.conns`` streams and count (or time) what arrives until told to stop.

    ``ctrl.value``: 1 switches latency recording on, 2 sends the histogram to
    ``results`` (``(slot, {bucket: count}, max_ms)``) and switches it off.
    """
    raise_nofile()
    parent = os.getppid()
    base = slot * SLOTS
    ep = select.epoll()
    conns: dict[int, _Conn] = {}
    to_open = cfg.conns
    handshaking = 0
    delivered = nbytes = failed = closed = connected = 0
    flushed = (0, 0, 0, 0, 0)
    latency = cfg.mode == "latency"
    hist: Counter[int] = Counter()
    lat_max = 0.0
    khist: Counter[int] = Counter()
    klat_max = 0.0
    request = request_bytes(cfg)
    is_ws = cfg.transport == "ws"
    count = PATTERN
    plen = len(PATTERN) - 1
    next_check = 0.0
    spin = cfg.spin
    spin_until = 0.0
    poll = ep.poll
    monotonic = time.monotonic
    wall_ms = time.time
    try:
        while True:
            now = monotonic()
            if now >= next_check:
                # Every 10 ms: publish the counters, look at the clock and the parent.
                current = (connected, delivered, nbytes, failed, closed)
                if current != flushed:
                    counters[base + C_CONNECTED] = connected
                    counters[base + C_DELIVERED] = delivered
                    counters[base + C_BYTES] = nbytes
                    counters[base + C_FAILED] = failed
                    counters[base + C_CLOSED] = closed
                    flushed = current
                if now > cfg.deadline or stop.is_set() or os.getppid() != parent:
                    break
                next_check = now + 0.01
                command = ctrl.value
                if command == LAT_ON and not latency:
                    latency = True
                    hist.clear()
                    khist.clear()
                    lat_max = klat_max = 0.0
                    for c in conns.values():
                        c.leftover = b""
                        c.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
                elif command == LAT_DUMP and latency:
                    latency = False
                    results.put((slot, dict(hist), lat_max, dict(khist), klat_max))
                    for c in conns.values():
                        c.tail = b""
                        c.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 0)
            # Open more connections while few handshakes are outstanding.
            while to_open and handshaking < cfg.in_flight:
                to_open -= 1
                sock = socket.socket()
                try:
                    sock.connect((HOST, cfg.port))
                    if request:
                        sock.sendall(request)
                except OSError:
                    failed += 1
                    sock.close()
                    continue
                sock.setblocking(False)
                c = _Conn(sock)
                if not request:
                    c.live = True
                    connected += 1
                else:
                    handshaking += 1
                conns[sock.fileno()] = c
                ep.register(sock.fileno(), select.EPOLLIN)
            events = poll(0.0 if now < spin_until else 0.01)
            if events and spin:
                spin_until = now + spin
            for fd, _ in events:
                c = conns[fd]
                anc: list[tuple[int, int, bytes]] = []
                try:
                    if latency:
                        data, anc, _flags, _addr = c.sock.recvmsg(RECV, _ANC)
                    else:
                        data = c.sock.recv(RECV)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    if c.live:
                        closed += 1
                        connected -= 1
                    else:
                        failed += 1
                        handshaking -= 1
                    ep.unregister(fd)
                    del conns[fd]
                    _abort(c.sock)
                    continue
                if not c.live:
                    c.head += data
                    end = c.head.find(b"\r\n\r\n")
                    if end < 0:
                        continue
                    status = c.head[: c.head.find(b"\r\n")]
                    handshaking -= 1
                    if b" 200" not in status and b" 101" not in status:
                        failed += 1
                        ep.unregister(fd)
                        del conns[fd]
                        _abort(c.sock)
                        continue
                    c.live = True
                    connected += 1
                    data = c.head[end + 4 :]
                    c.head = b""
                    if not data:
                        continue
                nbytes += len(data)
                if latency:
                    # Stamped after this recv: bytes that arrived after poll()
                    # returned must not look older than they are.
                    stamp = wall_ms() * 1000.0
                    # The kernel's stamp is the newest segment's in this read:
                    # older messages read with it get its (later) time.
                    kstamp = stamp
                    for level, kind, raw in anc:
                        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                            sec, nsec = _TS.unpack_from(raw)
                            kstamp = sec * 1000.0 + nsec / 1e6
                    buf = c.leftover + data if c.leftover else data
                    last = 0
                    for m in T0_RE.finditer(buf):
                        t0 = float(m.group(1))
                        lat = stamp - t0
                        if lat < 0.0:
                            lat = 0.0
                        hist[int(lat * LAT_BUCKET)] += 1
                        if lat > lat_max:
                            lat_max = lat
                        lat = kstamp - t0
                        if lat < 0.0:
                            lat = 0.0
                        khist[int(lat * LAT_BUCKET)] += 1
                        if lat > klat_max:
                            klat_max = lat
                        delivered += 1
                        last = m.end()
                    c.leftover = buf[last:][-64:]
                else:
                    delivered += data.count(count)
                    if c.tail:
                        delivered += (c.tail + data[:plen]).count(count)
                    c.tail = data[-plen:]
                if is_ws and WS_PING in data:
                    try:
                        c.sock.send(WS_PONG)
                    except OSError:
                        pass
    finally:
        counters[base + C_CONNECTED] = connected
        counters[base + C_DELIVERED] = delivered
        counters[base + C_BYTES] = nbytes
        counters[base + C_FAILED] = failed
        counters[base + C_CLOSED] = closed
        for c in conns.values():
            _abort(c.sock)
        ep.close()


@dataclass(frozen=True, slots=True)
class PubConfig:
    port: int
    path: str
    """``/topics/bench`` (one message per POST) or ``/topics/bench/batch``."""
    conns: int
    batch: int = 0
    """Messages per request for the batch endpoint (0: one message per POST)."""
    rate: float = 0.0
    """Requests per second on a fixed schedule (0: closed loop, as fast as answered)."""
    max_requests: int = 1_000_000
    deadline: float = 0.0


def _post(cfg: PubConfig) -> bytes:
    if cfg.batch:
        one = b'{"t0":%.3f}' % (time.time() * 1000.0)
        body = b"[" + b",".join([one] * cfg.batch) + b"]"
    else:
        body = b'{"t0":%.3f}' % (time.time() * 1000.0)
    return b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n" % (
        cfg.path.encode(),
        HOST.encode(),
    ) + b"Content-Length: %d\r\n\r\n%s" % (len(body), body)


_CL = re.compile(rb"(?i)\r\ncontent-length:\s*(\d+)")


def publisher_main(
    cfg: PubConfig, counters: SynchronizedArray[Any], slot: int, stop: Event
) -> None:
    """POST until told to stop, the deadline, or ``max_requests``; count answers."""
    parent = os.getppid()
    base = slot * SLOTS
    ep = select.epoll()
    socks: dict[int, socket.socket] = {}
    bufs: dict[int, bytes] = {}
    sent = ok = failed = messages = 0
    per_request = cfg.batch or 1
    interval = 1.0 / cfg.rate if cfg.rate else 0.0
    start = time.monotonic()
    idle: list[int] = []
    try:
        for _ in range(cfg.conns):
            s = socket.create_connection((HOST, cfg.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks[s.fileno()] = s
            bufs[s.fileno()] = b""
            ep.register(s.fileno(), select.EPOLLIN)
            idle.append(s.fileno())
        next_check = 0.0
        while True:
            now = time.monotonic()
            if now >= next_check:
                if now > cfg.deadline or stop.is_set() or os.getppid() != parent:
                    break
                next_check = now + 0.05
            # Send on every idle connection (paced: only when the schedule says so).
            while idle and sent < cfg.max_requests:
                if interval and now < start + sent * interval:
                    break
                fd = idle.pop()
                try:
                    socks[fd].send(_post(cfg))
                except OSError:
                    failed += 1
                    continue
                sent += 1
            if sent >= cfg.max_requests and len(idle) == cfg.conns:
                break
            timeout = 0.05
            if interval and idle:
                timeout = max(0.0, min(0.05, start + sent * interval - time.monotonic()))
            for fd, _ in ep.poll(timeout):
                try:
                    data = socks[fd].recv(65536)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EAGAIN:
                        failed += 1
                    data = b""
                if not data:
                    ep.unregister(fd)
                    continue
                buf = bufs[fd] + data
                # Responses are small and complete; parse each one in the buffer.
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    m = _CL.search(buf, 0, end + 2)
                    length = int(m.group(1)) if m else 0
                    if len(buf) < end + 4 + length:
                        break
                    # 2xx: Nchan answers 202 when the channel has no subscriber yet.
                    if buf[9:10] == b"2":
                        ok += 1
                        messages += per_request
                    else:
                        failed += 1
                    buf = buf[end + 4 + length :]
                    idle.append(fd)
                bufs[fd] = buf
            counters[base + C_REQUESTS] = ok
            counters[base + C_MESSAGES] = messages
            counters[base + C_FAILED] = failed
    finally:
        counters[base + C_REQUESTS] = ok
        counters[base + C_MESSAGES] = messages
        counters[base + C_FAILED] = failed
        for s in socks.values():
            s.close()
        ep.close()


def slow_reader_main(
    port: int, path: str, chunk: int, pause: float, deadline: float, counters: Any
) -> None:
    """One deliberately slow reader: ``chunk`` bytes every ``pause`` seconds, small buffer."""
    parent = os.getppid()
    sock = socket.socket()
    # A small receive buffer, so the kernel does not soak up the stream for us.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)
    sock.connect((HOST, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n".encode())
    sock.settimeout(1.0)
    items = nbytes = 0
    tail = b""
    try:
        while time.monotonic() < deadline and os.getppid() == parent:
            try:
                data = sock.recv(chunk)
            except TimeoutError:
                continue
            if not data:
                break
            nbytes += len(data)
            items += data.count(b'"n":') + (tail + data[:3]).count(b'"n":')
            tail = data[-3:]
            counters[C_DELIVERED] = items
            counters[C_BYTES] = nbytes
            time.sleep(pause)
    finally:
        _abort(sock)
