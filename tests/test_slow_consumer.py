"""A client that stops reading: bounded server memory, a reason, resume loses nothing."""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket

import pytest
import websockets

from tests.helpers import TIMEOUT, GatewayUnderTest, start_gateway, wait_for
from tests.wire import read_until

ID_IN_JSON = re.compile(rb'\{"id":"(\d+-\d+)","topic"')
PAYLOAD = {"pad": "x" * 1000}
BATCH = 50


def small_socket() -> socket.socket:
    """A client socket with a tiny receive buffer, so the server feels it quickly."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def connect_small(port: int) -> socket.socket:
    sock = small_socket()
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def flood_until_dropped(gw: GatewayUnderTest, transport: str) -> tuple[list[str], int]:
    """Publish batches until the stalled subscriber is gone; returns ids and peak queue."""
    published: list[str] = []
    peak = 0
    for _ in range(400):  # bounded: at most 400 * 50 KB
        if gw.context.hub.subscriber_counts("news")[transport] == 0:
            break
        published += await gw.publish_batch("news", [PAYLOAD] * BATCH)
        for sink in list(gw.context.sessions):
            if sink.transport_name == transport:
                peak = max(peak, sink.queued_bytes)
        await asyncio.sleep(0.005)
    else:
        raise AssertionError("the stalled subscriber was never disconnected")
    # A few more after the drop, so the resume below has something to fetch.
    published += await gw.publish_batch("news", [PAYLOAD] * 5)
    return published, peak


async def read_ws_to_the_end(ws: websockets.ClientConnection) -> tuple[list[str], bytes]:
    """Read until the server closes: the message ids, and the goodbye frame."""
    got: list[str] = []
    goodbye = b""
    with pytest.raises(websockets.ConnectionClosed):
        async with asyncio.timeout(TIMEOUT):
            while True:
                frame = await ws.recv(decode=False)
                got += [m.decode() for m in ID_IN_JSON.findall(frame)]
                if b'"type":"goodbye"' in frame:
                    goodbye = frame
    return got, goodbye


@pytest.mark.parametrize("transport", ["chunked", "sse"])
async def test_stalled_http_client_is_dropped_with_bounded_queue_then_resumes(
    transport: str,
) -> None:
    limit = 256 * 1024
    async with start_gateway(topics=("news",), max_queue_bytes=limit, history_size=50_000) as gw:
        bystander = asyncio.create_task(read_until(gw.url, "ws", "news", count=10**9))
        sock = await connect_small(gw.port)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(f"GET /{transport}/news HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")[transport] == 1)

        published, peak = await flood_until_dropped(gw, transport)
        # One flush may land on top of a full queue; never more than that.
        assert peak <= limit + BATCH * 1200, peak

        # The client wakes up and reads what it was sent, goodbye last.
        async with asyncio.timeout(TIMEOUT):
            body = b""
            while b'"type":"goodbye"' not in body:
                chunk = await reader.read(65536)
                assert chunk, "connection closed before the goodbye"
                body += chunk
        writer.close()
        assert b'"reason":"slow_consumer"' in body
        assert gw.context.disconnects["slow_consumer"] == 1
        got = [m.decode() for m in ID_IN_JSON.findall(body)]
        assert got == published[: len(got)]
        # Resume from the last id it saw: the rest, no hole, no duplicate.
        rest = await read_until(
            gw.url, transport, "news", until_id=published[-1], query=f"since={got[-1]}"
        )
        assert got + rest.ids == published
        assert not bystander.done(), "a fast reader must not be affected"
        bystander.cancel()


async def test_stalled_ws_client_is_closed_4001_then_resumes() -> None:
    limit = 256 * 1024
    async with start_gateway(topics=("news",), max_queue_bytes=limit, history_size=50_000) as gw:
        sock = await connect_small(gw.port)
        async with websockets.connect(
            f"{gw.ws_url}/ws/news", sock=sock, max_queue=1, max_size=None
        ) as ws:
            await wait_for(lambda: gw.context.hub.subscriber_counts("news")["ws"] == 1)
            published, peak = await flood_until_dropped(gw, "ws")
            assert peak <= limit + BATCH * 1200, peak
            got, goodbye = await read_ws_to_the_end(ws)
        assert ws.close_code == 4001
        assert b'"reason":"slow_consumer"' in goodbye
        assert got == published[: len(got)]
        rest = await read_until(
            gw.url, "ws", "news", until_id=published[-1], query=f"since={got[-1]}"
        )
        assert got + rest.ids == published


async def test_blocked_socket_past_write_timeout_gets_write_timeout_goodbye() -> None:
    async with start_gateway(
        topics=("news",), max_queue_bytes=64 << 20, write_timeout=0.3, history_size=50_000
    ) as gw:
        sock = await connect_small(gw.port)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")["chunked"] == 1)
        published, _ = await flood_until_dropped(gw, "chunked")
        assert gw.context.disconnects["write_timeout"] == 1
        assert gw.context.disconnects["slow_consumer"] == 0
        # The goodbye is queued behind what the client never read; a client
        # that stays blocked past another write_timeout is dropped without it.
        body = b""
        with contextlib.suppress(ConnectionError):
            async with asyncio.timeout(TIMEOUT):
                while chunk := await reader.read(65536):
                    body += chunk
        writer.close()
        if b'"type":"goodbye"' in body:
            assert b'"reason":"write_timeout"' in body
        got = [m.decode() for m in ID_IN_JSON.findall(body)]
        assert got == published[: len(got)]


async def test_ws_client_flooding_pings_without_reading_is_bounded() -> None:
    """Pongs count against the queue bound like everything else."""
    limit = 64 * 1024
    async with start_gateway(topics=("news",), max_queue_bytes=limit) as gw:
        sock = await connect_small(gw.port)
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(
            b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        # Masked client pings (RFC 6455 section 5.3) with 100-byte payloads; never read.
        ping = bytes([0x89, 0x80 | 100]) + b"\0\0\0\0" + b"p" * 100
        peak = 0
        for _ in range(2000):
            if gw.context.disconnects["slow_consumer"]:
                break
            try:
                writer.write(ping * 50)
                await asyncio.wait_for(writer.drain(), TIMEOUT)
            except ConnectionError:
                break
            for sink in list(gw.context.sessions):
                peak = max(peak, sink.queued_bytes)
        writer.close()
        await wait_for(lambda: gw.context.disconnects["slow_consumer"] == 1)
        assert peak <= limit + 50 * 102, peak


async def test_ws_client_stalled_during_replay_leaves_the_hub_and_gets_its_goodbye() -> None:
    limit = 64 * 1024
    async with start_gateway(topics=("news",), max_queue_bytes=limit, history_size=5_000) as gw:
        published: list[str] = []
        for _ in range(100):  # 5 MB of history: more than the socket buffers take
            published += await gw.publish_batch("news", [PAYLOAD] * BATCH)
        sock = await connect_small(gw.port)
        async with websockets.connect(
            f"{gw.ws_url}/ws/news?since=0-0", sock=sock, max_queue=1, max_size=None
        ) as ws:
            # Counted when the subscriber leaves the hub, before the client reads a byte.
            await wait_for(lambda: gw.context.disconnects["slow_consumer"] == 1)
            assert gw.context.hub.subscriber_counts("news")["ws"] == 0
            got, goodbye = await read_ws_to_the_end(ws)
        assert ws.close_code == 4001
        assert b'"reason":"slow_consumer"' in goodbye
        assert got == published[: len(got)]
