"""SIGTERM: every stream gets a goodbye, and the process exits within its grace."""

from __future__ import annotations

import asyncio
import signal
import socket
import time

import aiohttp

from tests.helpers import TIMEOUT, spawn_gateway
from tests.wire import read_until


async def test_sigterm_goodbye_on_every_transport_and_exit_within_grace() -> None:
    grace = 3.0
    async with spawn_gateway(
        "--topic",
        "news",
        "--grace",
        str(grace),
        "--max-queue-bytes",
        str(512 << 20),
        "--write-timeout",
        "600",
    ) as gw:
        proc, url = gw.proc, gw.url
        async with aiohttp.ClientSession() as session:
            readers = [
                asyncio.create_task(read_until(url, t, "news", count=10**9, within=TIMEOUT * 6))
                for t in ("chunked", "sse", "ws")
            ]
            # Stuck clients: connect, never read, and hold unsent bytes; the
            # WebSocket one never answers the close handshake either.
            stuck = []
            for request in (
                b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n",
                b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n",
            ):
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.setblocking(False)
                await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
                sock.send(request)
                stuck.append(sock)
            while True:
                async with session.get(f"{url}/healthz") as r:
                    if (await r.json())["connections"] == 5:
                        break
                await asyncio.sleep(0.05)
            pad = "x" * 1000
            for _ in range(60):  # ~6 MB: more than the stuck socket's buffers hold
                async with session.post(f"{url}/topics/news/batch", json=[pad] * 100) as r:
                    assert r.status == 201

            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            await asyncio.wait_for(proc.wait(), grace + TIMEOUT)
            elapsed = time.monotonic() - started
            for sock in stuck:
                sock.close()
            results = [await r for r in readers]
    stderr = gw.stderr.decode()
    assert proc.returncode == 0, stderr
    assert elapsed < grace + 1.5, f"took {elapsed:.1f}s with a grace of {grace}s"
    for reader in results:
        assert len(reader.ids) == 6000, reader.transport
        goodbye = reader.controls[-1]
        assert goodbye["type"] == "goodbye", reader.transport
        assert goodbye["reason"] == "shutdown"
        assert goodbye["reconnect_ms"] == 1000
        assert goodbye["last_id"] == reader.ids[-1]
    ws = results[2]
    assert ws.close_code == 1001
    assert results[1].items[-1].sse_event == "goodbye"
    assert "Traceback" not in stderr, stderr
