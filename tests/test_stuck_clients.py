"""A client the gateway drops is gone: checked on the server's own sockets.

Clients that stop reading fill the server's buffers; the gateway drops them (as
slow consumers, or when a write stays blocked past ``--write-timeout``), and
then the connection must be closed at the TCP level within ``--write-timeout``:
no ESTABLISHED socket and nothing in the kernel's Send-Q on the server's side
(``ss``), and the descriptors released (``/proc/PID/fd``), even though these
clients never read again.
"""

from __future__ import annotations

import asyncio
import socket
import time

import aiohttp
import pytest

from tests.helpers import TIMEOUT, GatewayProcess, spawn_gateway

REQUESTS = {
    "chunked": b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n",
    "sse": b"GET /sse/news HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n",
    "ws": (
        b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ),
}
ITEM = "x" * 16_000
WRITE_TIMEOUT = 2.0


async def stuck_clients(port: int, transport: str, n: int) -> list[socket.socket]:
    """``n`` connections that send their request and never read a byte."""
    loop = asyncio.get_running_loop()
    socks = []
    for _ in range(n):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        await loop.sock_sendall(sock, REQUESTS[transport])
        socks.append(sock)
    return socks


async def wait_health(
    gw: GatewayProcess, session: aiohttp.ClientSession, check: object, within: float
) -> dict[str, object]:
    deadline = time.monotonic() + within
    while True:
        health = await gw.healthz(session)
        if check(health):  # type: ignore[operator]
            return health
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting; /healthz says {health}")
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
@pytest.mark.parametrize(
    ("reason", "n", "queue"),
    [("slow_consumer", 200, 64 << 10), ("write_timeout", 50, 256 << 20)],
)
async def test_dropped_stuck_clients_leave_nothing_on_the_server(
    transport: str, reason: str, n: int, queue: int
) -> None:
    async with spawn_gateway(
        "--topic",
        "news",
        "--write-timeout",
        str(WRITE_TIMEOUT),
        "--max-queue-bytes",
        str(queue),
        "--heartbeat",
        "600",
    ) as gw:
        # No keep-alive: the test's own requests leave no connection behind.
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            fds_before = gw.open_fds()
            socks = await stuck_clients(gw.port, transport, n)
            try:
                await wait_health(gw, session, lambda h: h["connections"] == n, TIMEOUT * 2)
                # Publish until every stuck client has been dropped (bounded).
                for _ in range(400):
                    health = await gw.healthz(session)
                    dropped = health["disconnects"].get(reason, 0)
                    if dropped >= n:
                        break
                    async with session.post(f"{gw.url}/topics/news/batch", json=[ITEM] * 16) as r:
                        assert r.status == 201, await r.text()
                    await asyncio.sleep(0.05 if reason == "slow_consumer" else 0.5)
                else:
                    raise AssertionError(f"not all were dropped: {health}")
                assert health["connections"] == 0, health
                # Within --write-timeout of the verdict (+2 s), nothing is left.
                deadline = time.monotonic() + WRITE_TIMEOUT + 2.0
                while True:
                    rows = gw.sockets()
                    held = [r for r in rows if r[0] == "ESTAB" or r[2] > 0]
                    if not held:
                        break
                    assert time.monotonic() < deadline, (
                        f"{len(held)} server sockets still held, e.g. {held[:3]}"
                    )
                    await asyncio.sleep(0.1)
                assert gw.open_fds() <= fds_before + 2
            finally:
                for sock in socks:
                    sock.close()
    assert b"Traceback" not in gw.stderr, gw.stderr.decode()
