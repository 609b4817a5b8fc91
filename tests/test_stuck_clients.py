"""A client the gateway drops is gone: checked on the server's own sockets.

Clients that stop reading fill the server's buffers; the gateway drops them (as
slow consumers, or when a write stays blocked past ``--write-timeout``), and
then the connection must be closed at the TCP level within ``--write-timeout``:
no ESTABLISHED socket and nothing in the kernel's Send-Q on the server's side
(``ss``), and the descriptors released (``/proc/PID/fd``), even though these
clients never read again. A client that vanishes from a busy stream (no FIN, no
RST, no more ACKs: its link taken away, between network namespaces the test
makes) is dropped by the kernel, within the bound the gateway sets on
unacknowledged bytes.
"""

from __future__ import annotations

import asyncio
import os
import select
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

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


async def test_websockets_that_close_or_reset_leave_nothing_on_the_server() -> None:
    """The gateway owns a WebSocket's connection after the 101: whether the
    client closes it properly (close handshake), just shuts its socket (FIN)
    or resets it (RST), the server's socket and descriptor go, and a close
    handshake the server starts (DELETE of the topic) ends the same way."""
    import websockets

    async with spawn_gateway("--topic", "news", "--heartbeat", "600") as gw:
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            fds_before = gw.open_fds()
            proper = [await websockets.connect(f"{gw.ws_url}/ws/news") for _ in range(5)]
            raw = await stuck_clients(gw.port, "ws", 10)
            ended = [await websockets.connect(f"{gw.ws_url}/ws/news") for _ in range(5)]
            await wait_health(gw, session, lambda h: h["connections"] == 20, TIMEOUT * 2)
            for ws in proper:
                await ws.close()
            for i, sock in enumerate(raw):
                if i % 2:  # RST
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
                sock.close()
            await wait_health(gw, session, lambda h: h["connections"] == 5, TIMEOUT * 2)
            async with session.delete(f"{gw.url}/topics/news") as r:
                assert r.status in (200, 204), await r.text()
            for ws in ended:
                await asyncio.wait_for(ws.wait_closed(), TIMEOUT)
                assert ws.close_code == 1000
            health = await wait_health(gw, session, lambda h: h["connections"] == 0, TIMEOUT)
            assert health["disconnects"] == {"client_gone": 15, "topic_deleted": 5}, health
            deadline = time.monotonic() + TIMEOUT
            while True:
                held = [r for r in gw.sockets() if r[0] in ("ESTAB", "CLOSE-WAIT")]
                if not held:
                    break
                assert time.monotonic() < deadline, f"server sockets still held: {held[:3]}"
                await asyncio.sleep(0.1)
            assert gw.open_fds() <= fds_before + 2
    assert b"Traceback" not in gw.stderr, gw.stderr.decode()


# -- a client that vanishes: no FIN, no RST, no more ACKs -------------------------------------

SERVER_IP = "10.77.0.1"
CLIENT_IP = "10.77.0.2"
VANISH_CLIENT = """
import socket, sys, time
sock = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=20)
sock.sendall(sys.argv[3].encode().decode("unicode_escape").encode("latin-1"))
seen = b""
while b'"ticks"' not in seen:  # a message has arrived: the stream flows
    chunk = sock.recv(4096)
    if not chunk:
        sys.exit("the server closed the stream")
    seen += chunk
print(sock.getsockname()[1], flush=True)
time.sleep(120)  # never closes: the test takes its link away
"""


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, timeout=30)


@pytest.fixture
def two_hosts() -> Iterator[tuple[str, str, str]]:
    """A server and a client network namespace joined by a veth pair, made for
    this test and removed after it: (server netns, client netns, client link)."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        pytest.skip("needs root and iproute2 (network namespaces)")
    tag = f"sgv{os.getpid() % 100_000}"
    server, client, link = f"{tag}s", f"{tag}c", f"{tag}c"
    try:
        _ip("netns", "add", server)
        _ip("netns", "add", client)
        _ip("link", "add", f"{tag}s", "type", "veth", "peer", "name", link)
        _ip("link", "set", f"{tag}s", "netns", server)
        _ip("link", "set", link, "netns", client)
        _ip("-n", server, "addr", "add", f"{SERVER_IP}/30", "dev", f"{tag}s")
        _ip("-n", client, "addr", "add", f"{CLIENT_IP}/30", "dev", link)
        for ns, dev in ((server, f"{tag}s"), (server, "lo"), (client, link), (client, "lo")):
            _ip("-n", ns, "link", "set", dev, "up")
        yield server, client, link
    finally:
        for ns in (server, client):  # takes the veth pair with it
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


def _server_side(netns: str, port: int, client_port: int) -> list[str]:
    """The server's socket of that one connection, as ``ss`` in its namespace sees it."""
    which = f"( sport = :{port} and dport = :{client_port} )"
    out = subprocess.run(
        ["ip", "netns", "exec", netns, "ss", "-tanH", which],
        check=True,
        capture_output=True,
        text=True,
        timeout=30,
    ).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


@pytest.mark.parametrize("transport", ["sse", "ws"])
def test_a_client_that_vanishes_from_a_busy_stream_is_dropped(
    two_hosts: tuple[str, str, str], transport: str
) -> None:
    """A busy stream gets no heartbeat (bytes flow), so no ping finds a peer
    that vanished without a FIN (its link taken away): the kernel does, since
    the gateway bounds how long sent bytes may stay unacknowledged
    (TCP_USER_TIMEOUT, 2 x max(--heartbeat, --write-timeout) = 2 s here).
    Without it the kernel retries for about 15 minutes."""
    server_ns, client_ns, client_link = two_hosts
    port = 8765
    request = REQUESTS[transport].decode().replace("/news", "/ticks")
    serve = ["--host", SERVER_IP, "--port", str(port), "--tick-interval", "0.1"]
    serve += ["--heartbeat", "1", "--write-timeout", "1", "--log-level", "warning"]
    gateway = subprocess.Popen(
        ["ip", "netns", "exec", server_ns, sys.executable, "-m", "gateway", "serve", *serve],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    client = None
    try:
        deadline = time.monotonic() + TIMEOUT * 3
        while True:  # up when the client gets its first message
            if client is not None and client.poll() is not None:
                client = None
            if client is None:
                assert gateway.poll() is None, gateway.stderr.read() if gateway.stderr else ""
                assert time.monotonic() < deadline, "the client never got a message"
                time.sleep(0.2)
                argv = [SERVER_IP, str(port), request.encode("unicode_escape").decode()]
                client = subprocess.Popen(
                    ["ip", "netns", "exec", client_ns, sys.executable, "-c", VANISH_CLIENT, *argv],
                    stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL,
                    text=True,
                )
            assert client.stdout is not None
            ready, _, _ = select.select([client.stdout], [], [], 0.5)
            if ready:
                line = client.stdout.readline()
                if line.strip():
                    client_port = int(line)
                    break
        assert _server_side(server_ns, port, client_port) == ["ESTAB"]
        _ip("-n", client_ns, "link", "set", client_link, "down")  # gone: no FIN, no RST
        vanished = time.monotonic()
        while held := _server_side(server_ns, port, client_port):
            assert time.monotonic() - vanished < 30, f"the server still holds it: {held}"
            time.sleep(0.2)
    finally:
        for proc in (client, gateway):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(TIMEOUT)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    assert gateway.stderr is not None
    assert b"Traceback" not in gateway.stderr.read()
