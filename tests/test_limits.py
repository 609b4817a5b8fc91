"""Limits a client cannot talk past: request deadlines, the connection limit,
descriptor exhaustion, and one WebSocket publisher's flood; each checked while
normal service goes on."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import resource
import socket
import time

import aiohttp
import orjson
import pytest
import websockets

from tests.helpers import TIMEOUT, spawn_gateway, start_gateway, wait_for
from tests.wire import read_until


async def connect(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def closed_by_server(sock: socket.socket) -> None:
    """Return once the server has closed the connection (EOF or reset)."""
    loop = asyncio.get_running_loop()
    try:
        while await loop.sock_recv(sock, 65536):
            pass
    except ConnectionError:
        pass


async def tick_gaps(url: str, seconds: float) -> list[float]:
    """Read the ticking topic for ``seconds``; the gaps between its messages."""
    arrivals: list[float] = []
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/chunked/ticks") as resp:
            assert resp.status == 200
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                line = await asyncio.wait_for(resp.content.readline(), TIMEOUT)
                if line.strip():
                    arrivals.append(time.monotonic())
    assert len(arrivals) > 3
    return [b - a for a, b in itertools.pairwise(arrivals)]


async def test_slow_and_silent_requests_are_closed_after_the_read_timeout() -> None:
    async with spawn_gateway("--read-timeout", "1", "--tick-interval", "0.05") as gw:
        slowloris = [await connect(gw.port) for _ in range(200)]
        silent = [await connect(gw.port) for _ in range(200)]
        loop = asyncio.get_running_loop()
        request = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 200

        async def trickle() -> None:  # a byte every 0.3 s on each slowloris socket
            for i in range(len(request)):
                for sock in slowloris:
                    if sock.fileno() != -1:
                        try:
                            sock.send(request[i : i + 1])
                        except OSError:
                            pass
                await asyncio.sleep(0.3)

        # A POST whose body never arrives.
        body_sock = await connect(gw.port)
        await loop.sock_sendall(
            body_sock,
            b"POST /topics/news HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b"Content-Length: 100\r\n\r\n{",
        )
        trickler = asyncio.create_task(trickle())
        started = time.monotonic()
        try:
            closing = asyncio.gather(*(closed_by_server(s) for s in slowloris + silent))
            gaps = asyncio.create_task(tick_gaps(gw.url, 2.5))
            await asyncio.wait_for(closing, TIMEOUT * 2)
            took = time.monotonic() - started
            answer = await asyncio.wait_for(loop.sock_recv(body_sock, 4096), TIMEOUT)
            assert max(await gaps) < 0.5  # normal service went on meanwhile
        finally:
            trickler.cancel()
            for sock in (*slowloris, *silent, body_sock):
                sock.close()
        assert took < 1 + TIMEOUT, took  # each held about --read-timeout, not an hour
        status, _, body = answer.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 408"), answer
        assert orjson.loads(body)["error"] == "read_timeout"
        assert [r for r in gw.sockets() if r[0] == "ESTAB"] == []


async def test_websocket_sessions_count_against_max_connections() -> None:
    """A WebSocket's connection leaves aiohttp's count once the stream takes it
    over; the gate counts it still, until the session ends."""
    async with start_gateway(max_connections=3, topics=("news",)) as gw:
        async with contextlib.AsyncExitStack() as stack:
            for _ in range(3):
                await stack.enter_async_context(websockets.connect(f"{gw.ws_url}/ws/news"))
            await wait_for(lambda: len(gw.context.sessions) == 3, what="3 sessions")
            conn = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=conn) as session:
                async with session.get(f"{gw.url}/healthz") as resp:
                    assert resp.status == 503
        await wait_for(lambda: not gw.context.owned)
        async with gw.session.get(f"{gw.url}/healthz") as resp:
            assert resp.status == 200


async def test_past_max_connections_http_gets_503_json_and_websocket_is_refused(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.limits")
    async with start_gateway(max_connections=10, topics=("news",)) as gw:
        held = []
        for _ in range(10):
            sock = await connect(gw.port)
            sock.send(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
            held.append(sock)
        await wait_for(lambda: len(gw.context.sessions) == 10, what="10 streams")
        for _ in range(30):
            conn = aiohttp.TCPConnector(force_close=True)
            async with aiohttp.ClientSession(connector=conn) as session:
                async with session.get(f"{gw.url}/healthz") as resp:
                    assert resp.status == 503
                    assert resp.headers["Retry-After"] == "1"
                    assert (await resp.json())["error"] == "too_many_connections"
        with pytest.raises(websockets.InvalidStatus) as refused:
            await websockets.connect(f"{gw.ws_url}/ws/news", open_timeout=TIMEOUT)
        assert refused.value.response.status_code == 503
        assert gw.context.gate is not None and gw.context.gate.refused.total == 31
        lines = [r for r in caplog.records if "max-connections" in r.getMessage()]
        assert len(lines) == 1, [r.getMessage() for r in lines]

        for sock in held[:5]:
            sock.close()
        await wait_for(lambda: len(gw.context.sessions) == 5, what="5 streams left")
        async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:  # room again
            await ws.send('{"type":"ping"}')
            assert orjson.loads(await ws.recv())["type"] == "pong"
        for sock in held[5:]:
            sock.close()


def _low_file_limit() -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (200, 200))


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
async def test_descriptor_exhaustion_is_one_log_line_not_a_flood(loop: str) -> None:
    """A stream that takes every free descriptor (tests.sample_sources:hold_files)
    makes accept() fail: asyncio's loop would log a traceback per attempt."""
    async with spawn_gateway(
        "--loop",
        loop,
        "--stream",
        "hold=tests.sample_sources:hold_files",
        preexec_fn=_low_file_limit,
    ) as gw:
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{gw.url}/chunked/hold?n=1000") as hold:
                assert hold.status == 200
                await asyncio.wait_for(hold.content.readline(), TIMEOUT)  # files taken
                socks = []
                for _ in range(100):  # the kernel queues them; the gateway cannot accept
                    socks.append(await connect(gw.port))
                await asyncio.sleep(1.5)
                for sock in socks:
                    sock.close()
            await asyncio.sleep(0.5)
            health = await gw.healthz(session)  # the files are back: service goes on
            assert health["status"] == "ok"
    stderr = gw.stderr.decode()
    assert "Traceback" not in stderr, stderr[-3000:]
    lines = [line for line in stderr.splitlines() if "descriptors" in line]
    assert len(lines) <= (2 if loop == "asyncio" else 0), lines


async def flood(ws_url: str, seconds: float) -> tuple[int, list[dict[str, object]], set[int]]:
    """Publish over a WebSocket as fast as it goes, without waiting for replies,
    for ``seconds``; reconnect whenever the gateway closes the connection."""
    replies: list[dict[str, object]] = []
    codes: set[int] = set()
    sent = 0
    command = orjson.dumps({"type": "publish", "data": {"x": 1}}).decode()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        async with websockets.connect(f"{ws_url}/ws/news", max_queue=None) as ws:

            async def read(ws: websockets.ClientConnection = ws) -> None:
                with contextlib.suppress(websockets.ConnectionClosed):
                    async for frame in ws:
                        replies.append(orjson.loads(frame))

            reading = asyncio.create_task(read())
            with contextlib.suppress(websockets.ConnectionClosed):
                while time.monotonic() < deadline:
                    for _ in range(100):
                        await ws.send(command)
                        sent += 1
                    await asyncio.sleep(0)
            await ws.close()
            await asyncio.wait_for(reading, TIMEOUT)
            if ws.close_code is not None:
                codes.add(ws.close_code)
    return sent, replies, codes


@pytest.mark.parametrize("rate", ["1000", "0"])
async def test_one_websocket_publisher_cannot_starve_the_others(rate: str) -> None:
    async with spawn_gateway(
        "--tick-interval", "0.05", "--topic", "news", "--ws-publish-rate", rate
    ) as gw:
        gaps, (sent, replies, codes) = await asyncio.gather(
            tick_gaps(gw.url, 3.0), flood(gw.ws_url, 2.5)
        )
    assert max(gaps) < 0.5, max(gaps)
    published = sum(1 for r in replies if r.get("type") == "published")
    assert published > 0
    if rate == "0":
        assert published == sent  # no limit: every publish taken
        return
    limited = [r for r in replies if r.get("code") == "rate_limited"]
    assert limited, replies[-3:]
    assert 1008 in codes, (sent, codes)
    ends = [r for r in replies if r.get("type") == "end"]
    assert ends and all(r["reason"] == "rate_limited" for r in ends), ends


async def test_publishing_within_the_rate_is_never_refused() -> None:
    async with start_gateway(topics=("news",), ws_publish_rate=200) as gw:
        async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:
            for i in range(150):  # within the burst
                await ws.send(orjson.dumps({"type": "publish", "data": i, "ref": i}).decode())
            frames = [orjson.loads(await ws.recv()) for _ in range(300)]
    replies = [f for f in frames if "type" in f]  # the rest: the messages themselves
    assert [r["type"] for r in replies] == ["published"] * 150


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_a_stream_outlives_the_read_timeout(transport: str) -> None:
    """The read timeout bounds a request, not the response: a stream runs on."""
    async with start_gateway(read_timeout=0.3, tick_interval=0.05) as gw:
        got = await read_until(gw.url, transport, "ticks", count=25, within=TIMEOUT)
    assert len(got.ids) == 25  # 1.25 s of ticks, four read timeouts long
    assert got.controls == []
