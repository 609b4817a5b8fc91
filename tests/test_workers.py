"""``streamgate serve --workers N``: N processes on one port (SO_REUSEPORT) sharing Redis.

Proven from the server's side: ``ss`` shows one listening socket per worker pid
and the connections spread over them; every subscriber, whichever worker holds
it, gets every message; the parent's SIGTERM stops them all; a worker killed
with SIGKILL stops the rest.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest

from tests.helpers import JSON_HEADERS, TIMEOUT, free_port, gateway_argv, poll_until
from tests.wire import read_until

REDIS = "redis://127.0.0.1:6379/0"


def _owners(port: int, state: str) -> dict[int, int]:
    """pid -> sockets in ``state`` on ``port`` (server side), from ``ss -p``."""
    out = subprocess.run(
        ["ss", "-tanpH", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    owners: dict[int, int] = {}
    for line in out.splitlines():
        if line.split()[0] == state:
            for pid in re.findall(r"pid=(\d+)", line):
                owners[int(pid)] = owners.get(int(pid), 0) + 1
    return owners


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@contextlib.asynccontextmanager
async def workers(*args: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        *gateway_argv(port, "--grace", "2", *args),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        if "--workers" in args:
            count = int(args[args.index("--workers") + 1])
            await poll_until(
                lambda: asyncio.sleep(0, len(_owners(port, "LISTEN")) == count),
                within=TIMEOUT * 3,
                what=f"{count} listening workers",
            )
        yield proc, port
    finally:
        if proc.returncode is None:
            proc.kill()  # by pid; the workers follow (their parent's SIGKILL is not passed on)
            await proc.wait()
        for pid in _owners(port, "LISTEN"):
            os.kill(pid, signal.SIGKILL)


async def test_the_memory_broker_refuses_more_than_one_worker() -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--workers",
        "2",
        "--port",
        str(free_port()),
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2
    assert b"needs a shared broker" in stderr


async def test_two_workers_share_the_port_and_every_subscriber_gets_every_message() -> None:
    prefix = f"workers-{uuid.uuid4().hex[:8]}:"
    async with workers("--workers", "2", "--broker", REDIS, "--redis-prefix", prefix) as (
        proc,
        port,
    ):
        pids = set(_owners(port, "LISTEN"))
        assert proc.pid not in pids  # the parent only waits
        url = f"http://127.0.0.1:{port}"
        started = [asyncio.Event() for _ in range(24)]
        readers = [
            asyncio.create_task(read_until(url, "chunked", "news", count=5, started=s))
            for s in started
        ]
        for s in started:
            await s.wait()
        # 24 connections over two SO_REUSEPORT sockets: both workers hold some
        # (all on one would happen once in 2^23).
        await poll_until(
            lambda: asyncio.sleep(0, sum(_owners(port, "ESTAB").values()) >= 24),
            what="24 established streams",
        )
        holders = _owners(port, "ESTAB")
        assert set(holders) == pids, holders
        ids = []
        async with aiohttp.ClientSession() as http:
            for i in range(5):
                async with http.post(
                    f"{url}/topics/news", data=f'{{"i":{i}}}', headers=JSON_HEADERS
                ) as resp:
                    assert resp.status == 201, await resp.text()
                    ids.append((await resp.json())["id"])
        for reader in readers:
            assert (await reader).ids == ids
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(TIMEOUT):
            await proc.wait()
        assert proc.returncode == 0, await proc.stderr.read() if proc.stderr else b""
        assert _owners(port, "LISTEN") == {}
        for pid in pids:
            assert not _alive(pid)


async def test_a_worker_killed_stops_the_others_and_the_parent_says_so() -> None:
    prefix = f"workers-{uuid.uuid4().hex[:8]}:"
    async with workers("--workers", "2", "--broker", REDIS, "--redis-prefix", prefix) as (
        proc,
        port,
    ):
        victim, other = sorted(_owners(port, "LISTEN"))
        os.kill(victim, signal.SIGKILL)
        async with asyncio.timeout(TIMEOUT):
            await proc.wait()
        assert proc.returncode == 1
        stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
        assert f"pid {victim}) ended by itself" in stderr, stderr
        assert not _alive(other)
        assert _owners(port, "LISTEN") == {}


@pytest.mark.parametrize("argv", [["--workers", "0"], ["--workers", "2", "--port", "0"]])
async def test_bad_worker_settings_are_refused(argv: list[str]) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway",
        "serve",
        "--broker",
        REDIS,
        *argv,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await asyncio.wait_for(proc.communicate(), TIMEOUT)
    assert proc.returncode == 2 and b"workers" in stderr, stderr
