"""SIGTERM: every stream gets a goodbye, and the process exits within its grace."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time

import aiohttp

from tests.helpers import TIMEOUT
from tests.wire import read_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_sigterm_goodbye_on_every_transport_and_exit_within_grace() -> None:
    port, grace = free_port(), 3.0
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--tick-interval",
        "0",
        "--topic",
        "news",
        "--grace",
        str(grace),
        "--max-queue-bytes",
        str(512 << 20),
        "--write-timeout",
        "600",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with asyncio.timeout(TIMEOUT * 3):
                while True:
                    try:
                        async with session.get(f"{url}/healthz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientConnectionError:
                        await asyncio.sleep(0.05)

            readers = [
                asyncio.create_task(read_until(url, t, "news", count=10**9, within=TIMEOUT * 6))
                for t in ("chunked", "sse", "ws")
            ]
            # A stuck client: connects, never reads, and holds unsent bytes.
            stuck = socket.socket()
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.setblocking(False)
            await asyncio.get_running_loop().sock_connect(stuck, ("127.0.0.1", port))
            stuck.send(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                async with session.get(f"{url}/healthz") as r:
                    if (await r.json())["connections"] == 4:
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
            stuck.close()
            results = [await r for r in readers]
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
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
