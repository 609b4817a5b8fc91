"""The contract of gateway/aiohttp_compat.py, item by item, against the installed
aiohttp and aiohttp-sse: an upgrade that changes a private part the gateway
leans on fails here, loudly, before it can break a stream quietly."""

from __future__ import annotations

import asyncio
import inspect

import aiohttp
import aiohttp_sse
import orjson
import pytest
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http_writer import StreamWriter
from aiohttp.web_protocol import RequestHandler

from gateway import aiohttp_compat
from tests.helpers import TIMEOUT, start_gateway


def test_aiohttp_is_the_major_version_the_contract_was_written_for() -> None:
    assert aiohttp.__version__.split(".")[0] == "3", aiohttp.__version__


async def test_1_stream_writer_says_whether_it_chunks() -> None:
    writer = StreamWriter(BaseProtocol(asyncio.get_running_loop()), asyncio.get_running_loop())
    assert writer.chunked is False
    writer.enable_chunking()
    assert writer.chunked is True


def test_2_and_3_sites_and_servers() -> None:
    assert "_server" in web.BaseSite.__slots__
    assert "self._server.close()" in inspect.getsource(web.BaseSite.stop)
    assert "self._connections" in inspect.getsource(web.Server.__init__)


def test_4_request_handler_can_be_adopted() -> None:
    assert not hasattr(RequestHandler, "__dict__") or "__slots__" in vars(RequestHandler)
    params = list(inspect.signature(RequestHandler.handle_error).parameters)
    assert params == ["self", "request", "status", "exc", "message"]


def test_5_taking_a_connection_over() -> None:
    assert "_message_tail" in RequestHandler.__slots__
    lost = inspect.getsource(RequestHandler.connection_lost)
    assert "self.force_close()" in lost  # which closes self.transport, unless it is None
    assert "self.transport.close()" in inspect.getsource(RequestHandler.force_close)
    assert "self._manager.connection_lost(self, exc)" in lost
    assert "_manager" in RequestHandler.__slots__
    assert "self._connections.pop(handler, None)" in inspect.getsource(web.Server.connection_lost)
    assert "self._task_handler.cancel()" in lost
    # An upgrade request's later bytes wait in the tail while no parser is set.
    assert "self._message_tail += data" in inspect.getsource(RequestHandler.data_received)


async def test_5_frames_sent_with_the_handshake_reach_the_stream() -> None:
    """A client that sends a command in the same segment as its handshake (RFC 6455
    says to wait for the 101; some do not): aiohttp keeps those bytes as the
    tail, and the stream that takes the connection over reads them."""
    async with start_gateway(topics=("news",)) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            command = b'{"type":"ping","ref":7}'
            frame = bytes([0x81, 0x80 | len(command)]) + b"\0\0\0\0" + command  # zero mask
            writer.write(
                b"GET /ws/news HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                b"Sec-WebSocket-Version: 13\r\n\r\n" + frame
            )
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert head.startswith(b"HTTP/1.1 101")
            assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=" in head  # RFC's example
            first, length = await asyncio.wait_for(reader.readexactly(2), TIMEOUT)
            assert first == 0x81
            reply = await asyncio.wait_for(reader.readexactly(length), TIMEOUT)
            assert orjson.loads(reply) == {"type": "pong", "ref": 7}
        finally:
            writer.close()


def test_6_aiohttp_sse_internals() -> None:
    source = inspect.getsource(aiohttp_sse.EventSourceResponse)
    assert "self._allow_all_methods" in source
    assert "self._req" in source


async def test_5_a_stream_owns_its_connection_and_closes_it_at_its_end() -> None:
    """The stream's response says so (``Connection: close``); aiohttp forgets the
    connection at once; the stream's end (its limit) closes it on the server's
    side."""
    async with start_gateway(topics=("news",)) as gw:
        await gw.publish("news", 1)
        await gw.publish("news", 2)
        server = gw.running.runner.server
        assert server is not None
        before = aiohttp_compat.open_connections(server)  # the publisher's
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        try:
            writer.write(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
            assert b"Connection: close" in head
            (stream,) = gw.context.sessions
            assert stream.transport.get_protocol() is stream
            assert aiohttp_compat.open_connections(server) == before
            reader2, writer2 = await asyncio.open_connection("127.0.0.1", gw.port)
            writer2.write(b"GET /chunked/news?since=0-0&limit=2 HTTP/1.1\r\nHost: x\r\n\r\n")
            body = await asyncio.wait_for(reader2.read(), TIMEOUT)  # read to the server's FIN
            assert body.endswith(b"0\r\n\r\n") and b'"data":2' in body
            writer2.close()
            assert not reader.at_eof()  # the open stream was not touched
            await gw.publish("news", 3)
            assert b'"data":3' in await asyncio.wait_for(reader.readuntil(b"\n\r\n"), TIMEOUT)
        finally:
            writer.close()


async def test_every_item_works_together_on_a_real_gateway() -> None:
    """The site, the connection count, the adopted handler (a malformed request
    answered in JSON), chunked framing, the connections taken over and the SSE
    response, over real sockets."""
    async with start_gateway(topics=("news",), max_connections=50) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"NOT HTTP\r\n\r\n")
        raw = await asyncio.wait_for(reader.read(), TIMEOUT)
        writer.close()
        assert b"application/json" in raw
        assert orjson.loads(raw.partition(b"\r\n\r\n")[2])["error"] == "bad_request"

        async with gw.session.ws_connect(f"{gw.ws_url}/ws/news") as ws1:
            async with gw.session.ws_connect(f"{gw.ws_url}/ws/news") as ws2:
                streams = list(gw.context.sessions)
                assert len(streams) == 2
                for stream in streams:  # taken over: the stream is the protocol
                    assert stream.transport.get_protocol() is stream
                server = gw.running.runner.server
                assert server is not None
                assert aiohttp_compat.open_connections(server) == 0
                await gw.publish("news", 1)
                assert (await ws1.receive_json())["data"] == 1
                assert (await ws2.receive_json())["data"] == 1

        async with gw.session.get(f"{gw.url}/sse/news?since=0-0&limit=1") as resp:
            assert resp.headers["Content-Type"].startswith("text/event-stream")
            assert resp.headers["Transfer-Encoding"] == "chunked"
            body = await resp.read()
            assert b"data: " in body and b"event: end" in body


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_sse_method_rule(method: str) -> None:
    resp = aiohttp_sse.EventSourceResponse()
    assert aiohttp_compat.sse_allows_method(resp, method) is (method == "GET")
