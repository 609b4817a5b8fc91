"""The plain ``send()`` floor: a tiny loop writing ~100-byte messages to N sockets.

No HTTP, no asyncio, no framing: what one Python process pays per ``send()``
call on this machine, in the same run as the servers. With ``per_send`` > 1
each call carries several messages, the ceiling that coalescing aims at.
"""

from __future__ import annotations

import os
import resource
import socket
import time
from typing import Any

from .common import SERVER_CPUS, raise_nofile

__all__ = ["floor_main", "message"]


def message() -> bytes:
    """A ~100-byte NDJSON line that the subscribers count like a real message."""
    return b'{"id":"1763708400123-0","topic":"bench","ts":1763708400123.456,"data":{"t0":1.000}}\n'


def floor_main(
    listener: socket.socket,
    n: int,
    per_send: int,
    duration: float,
    results: Any,
    interval: float = 0.0,
) -> None:
    """Accept ``n`` connections, then send round-robin for ``duration`` seconds.

    With ``interval``, one round every ``interval`` seconds (a paced publisher):
    what a send() costs when the reader is asleep and must be woken.
    """
    raise_nofile()
    if SERVER_CPUS:  # on the servers' core, like every server under test
        os.sched_setaffinity(0, SERVER_CPUS)
    listener.settimeout(10.0)
    socks: list[socket.socket] = []
    try:
        while len(socks) < n:
            s, _ = listener.accept()
            # As aiohttp does on every connection: without it Nagle holds small
            # writes back while earlier ones are unacknowledged, and send() only
            # copies into the socket buffer, which is not what a server pays.
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.setblocking(False)
            socks.append(s)
        payload = message() * per_send
        sent = blocked = 0
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.monotonic()
        end = t0 + duration
        rounds = 0
        while time.monotonic() < end:
            if interval:
                rounds += 1
                pause = t0 + rounds * interval - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
            for s in socks:
                try:
                    s.send(payload)
                    sent += 1
                except BlockingIOError:
                    blocked += 1
        wall = time.monotonic() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
        results.put({"sends": sent, "blocked": blocked, "cpu": cpu, "wall": wall})
    finally:
        for s in socks:
            s.close()
        listener.close()
