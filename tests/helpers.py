"""Shared test helpers: one timeout constant, and a real gateway on loopback.

``TIMEOUT`` is the one timeout every wait in the suite derives from; slow
machines scale it with ``STREAMGATE_TEST_TIMEOUT_SCALE`` (e.g. ``3``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Any

import aiohttp
import orjson

from gateway.app import Running, running
from gateway.auth import Authorize
from gateway.context import Context
from gateway.settings import Settings

__all__ = [
    "JSON_HEADERS",
    "TIMEOUT",
    "GatewayProcess",
    "GatewayUnderTest",
    "free_port",
    "gateway_argv",
    "poll_until",
    "spawn_gateway",
    "start_gateway",
    "wait_for",
]

TIMEOUT = 10.0 * float(os.environ.get("STREAMGATE_TEST_TIMEOUT_SCALE", "1"))

JSON_HEADERS = {"Content-Type": "application/json"}
"""What a publish must declare (anything else is 415)."""


class GatewayUnderTest:
    """A gateway running in the test's event loop on 127.0.0.1 and a free port."""

    def __init__(self, gw: Running, session: aiohttp.ClientSession) -> None:
        self.running = gw
        self.port = gw.port
        self.url = f"http://127.0.0.1:{gw.port}"
        self.ws_url = f"ws://127.0.0.1:{gw.port}"
        self.session = session

    @property
    def context(self) -> Context:
        return self.running.context

    @property
    def settings(self) -> Settings:
        return self.context.settings

    async def publish(self, topic: str, data: Any) -> str:
        """POST one message over real HTTP; returns its id."""
        async with self.session.post(
            f"{self.url}/topics/{topic}",
            data=orjson.dumps(data),
            headers=JSON_HEADERS,
        ) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return str(body["id"])

    async def publish_many(self, topic: str, items: Iterable[Any]) -> list[str]:
        """POST messages one by one (one request each); returns their ids."""
        return [await self.publish(topic, item) for item in items]

    async def publish_batch(self, topic: str, items: list[Any]) -> list[str]:
        async with self.session.post(f"{self.url}/topics/{topic}/batch", json=items) as resp:
            body = await resp.json()
            assert resp.status == 201, body
            return [str(i) for i in body["ids"]]

    def drop_all(self) -> int:
        """Abort every open streaming connection, as a network failure would."""
        return self.context.drop_all()


@contextlib.asynccontextmanager
async def start_gateway(
    *, authorize: Authorize | None = None, **overrides: Any
) -> AsyncIterator[GatewayUnderTest]:
    """``async with start_gateway(tick_interval=0) as gw:`` — settings by keyword
    (and an embedding application's ``authorize`` check).

    Defaults differ from production where tests need it: port 0 (a free one),
    127.0.0.1, no demo ticks, a short grace.
    """
    values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "tick_interval": 0, "grace": 2.0}
    values.update(overrides)
    settings = Settings(**values)
    async with (
        running(settings, authorize=authorize) as gw,
        aiohttp.ClientSession() as session,
    ):
        yield GatewayUnderTest(gw, session)


async def wait_for(predicate: Callable[[], bool], within: float = TIMEOUT, what: str = "") -> None:
    """Poll a condition on the event loop until it holds or ``within`` seconds pass."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.1f}s waiting for {what or predicate}")
        await asyncio.sleep(0.01)


async def poll_until(
    check: Callable[[], Awaitable[bool]], within: float = TIMEOUT, what: str = ""
) -> None:
    """Like :func:`wait_for`, for a condition that needs I/O (an HTTP request)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"timed out after {within:.1f}s waiting for {what or check}")
        await asyncio.sleep(0.02)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class GatewayProcess:
    """A gateway in a process of its own: its sockets are the server's alone."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"
        self.stderr = b""

    def sockets(self) -> list[tuple[str, int, int]]:
        """The server side of every TCP connection on its port, from ``ss``:
        ``(state, recv_q, send_q)``; the listening socket left out."""
        out = subprocess.run(
            ["ss", "-tanH", f"( sport = :{self.port} )"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = []
        for line in out.splitlines():
            state, recv_q, send_q, *_ = line.split()
            if state != "LISTEN":
                rows.append((state, int(recv_q), int(send_q)))
        return rows

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    async def healthz(self, session: aiohttp.ClientSession) -> dict[str, Any]:
        async with session.get(f"{self.url}/healthz") as r:
            body: dict[str, Any] = await r.json()
            return body


def gateway_argv(port: int, *args: str) -> list[str]:
    """``python -m gateway serve`` on 127.0.0.1 and ``port``, no ticks, plus ``args``."""
    return [
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
        *args,
    ]


@contextlib.asynccontextmanager
async def spawn_gateway(
    *args: str, port: int | None = None, **popen: Any
) -> AsyncIterator[GatewayProcess]:
    """``python -m gateway serve`` on 127.0.0.1 and ``port`` (default: a free
    one), no ticks, plus ``args``; ready when ``/healthz`` answers; stopped (by
    its pid) on exit, its stderr then in ``.stderr``."""
    port = port or free_port()
    proc = await asyncio.create_subprocess_exec(
        *gateway_argv(port, *args),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        **popen,
    )
    gw = GatewayProcess(proc, port)
    stderr = asyncio.ensure_future(proc.stderr.read()) if proc.stderr else None
    try:
        async with aiohttp.ClientSession() as session, asyncio.timeout(TIMEOUT * 3):
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"the gateway exited with {proc.returncode}")
                try:
                    await gw.healthz(session)
                    break
                except aiohttp.ClientConnectionError:
                    await asyncio.sleep(0.05)
        yield gw
    finally:
        if proc.returncode is None:
            proc.terminate()
            try:
                await asyncio.wait_for(proc.wait(), TIMEOUT)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        if stderr is not None:
            gw.stderr = await stderr
