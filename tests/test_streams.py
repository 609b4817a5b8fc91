"""Per-connection streams on all three transports, and shared sources."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

import aiohttp
import orjson
import pytest
import websockets

from gateway import aiohttp_compat
from gateway.app import heartbeat_slice
from tests import sample_sources
from tests.helpers import TIMEOUT, start_gateway, wait_for
from tests.wire import read_until

TRANSPORTS = ["chunked", "sse", "ws"]
STREAMS = (
    "endless=tests.sample_sources:endless",
    "fails=tests.sample_sources:fails_after",
)


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_count_on_every_transport(transport: str) -> None:
    async with start_gateway() as gw:
        reader = await read_until(gw.url, transport, "count", query="n=5")
        assert reader.ids == ["0-1", "0-2", "0-3", "0-4", "0-5"]
        assert [m.obj["data"] for m in reader.messages] == [{"n": i} for i in range(1, 6)]
        assert reader.controls == [{"type": "end", "reason": "complete", "last_id": "0-5"}]
        if transport == "ws":
            assert reader.close_code == 1000


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_count_resumes_after_since(transport: str) -> None:
    async with start_gateway() as gw:
        reader = await read_until(gw.url, transport, "count", query="n=5&since=0-2&limit=2")
        assert reader.ids == ["0-3", "0-4"]
        assert reader.controls[-1]["reason"] == "limit"


async def test_sse_resume_past_the_end_is_204_so_eventsource_stops() -> None:
    async with start_gateway() as gw:
        url = f"{gw.url}/sse/count?n=3"
        async with gw.session.get(url, headers={"Last-Event-ID": "0-3"}) as resp:
            assert resp.status == 204


@pytest.mark.parametrize("query", ["n=abc", "n=-1", "interval=x", "bogus=1", "since=5-1"])
@pytest.mark.parametrize("transport", ["chunked", "sse"])
async def test_bad_stream_params_are_400_before_the_stream(transport: str, query: str) -> None:
    async with start_gateway() as gw:
        async with gw.session.get(f"{gw.url}/{transport}/count?{query}") as resp:
            assert resp.status == 400
            body = await resp.json()
            assert body["error"] in ("bad_params", "bad_id")


async def test_bad_stream_params_on_ws_are_400_before_upgrade() -> None:
    async with start_gateway() as gw:
        with pytest.raises(websockets.InvalidStatus) as info:
            async with websockets.connect(f"{gw.ws_url}/ws/count?n=abc"):
                pass
        assert info.value.response.status_code == 400


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_a_stream_that_fails_midway_says_so(transport: str) -> None:
    async with start_gateway(streams=STREAMS) as gw:
        reader = await read_until(gw.url, transport, "fails", query="n=2")
        assert reader.ids == ["0-1", "0-2"]
        kinds = [c["type"] for c in reader.controls]
        assert kinds == ["stream-error", "goodbye"]
        assert reader.controls[0]["code"] == "stream_failed"
        assert reader.controls[1]["reason"] == "source_failed"
        if transport == "ws":
            assert reader.close_code == 1011


async def test_stream_is_paced_by_the_client() -> None:
    """While the client does not read, the generator is not advanced."""
    async with start_gateway(streams=STREAMS) as gw:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", gw.port))
        reader, writer = await asyncio.open_connection(sock=sock)
        writer.write(b"GET /chunked/endless HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b'"i":10,'), TIMEOUT)
        # The client stops reading. The generator runs until the socket
        # buffers are full, then waits.
        progress = sample_sources.PROGRESS
        last = -1
        while progress["endless"] != last:
            last = progress["endless"]
            await asyncio.sleep(0.3)
        await asyncio.sleep(0.5)
        assert progress["endless"] == last, "advanced while the client was blocked"
        assert last < 200_000, f"ran {last} items ahead of the reader"
        # Reading again lets it go on.
        for _ in range(200):
            await asyncio.wait_for(reader.read(65536), TIMEOUT)
        await wait_for(lambda: progress["endless"] > last, what="the generator to go on")
        writer.close()
        await wait_for(lambda: not gw.context.sessions, what="the stream to end")


async def test_shared_source_from_module_function() -> None:
    async with start_gateway(sources=("letters=tests.sample_sources:letters",)) as gw:

        async def history() -> list[str]:
            async with gw.session.get(f"{gw.url}/topics/letters/messages") as resp:
                return [m["data"] for m in (await resp.json())["messages"]]

        for _ in range(100):
            if len(await history()) == 3:
                break
            await asyncio.sleep(0.02)
        assert await history() == ["a", "b", "c"]


async def test_ticks_demo_topic_flows() -> None:
    async with start_gateway(tick_interval=0.05) as gw:
        reader = await read_until(gw.url, "chunked", "ticks", count=3)
        ns = [m.obj["data"]["n"] for m in reader.messages]
        assert ns == list(range(ns[0], ns[0] + 3))


async def test_heartbeats_on_every_transport() -> None:
    async with start_gateway(topics=("news",), heartbeat=0.1) as gw:
        reader, writer = await asyncio.open_connection("127.0.0.1", gw.port)
        writer.write(b"GET /chunked/news HTTP/1.1\r\nHost: x\r\n\r\n")
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        # A heartbeat is a chunk holding one LF.
        assert await asyncio.wait_for(reader.readuntil(b"1\r\n\n\r\n"), TIMEOUT)
        writer.close()

        async with aiohttp.ClientSession() as s, s.get(f"{gw.url}/sse/news") as resp:
            seen = b""
            async with asyncio.timeout(TIMEOUT):
                while b": ping\n\n" not in seen:
                    seen += await resp.content.read(100)

        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{gw.ws_url}/ws/news", autoping=False) as ws:
                msg = await ws.receive(timeout=TIMEOUT)
                assert msg.type is aiohttp.WSMsgType.PING
                await ws.pong(msg.data)


async def test_busy_streams_get_no_heartbeat_until_they_fall_idle() -> None:
    """Messages every 20 ms, heartbeats every 100 ms: while the messages flow no
    heartbeat goes out on any transport (they would only cost a write, and a
    WebSocket client's pong); once they stop, the heartbeats come."""
    async with start_gateway(topics=("news",), heartbeat=0.1) as gw:
        async with aiohttp.ClientSession() as s:
            sse = await s.get(f"{gw.url}/sse/news")
            ws = await s.ws_connect(f"{gw.ws_url}/ws/news", autoping=False)
            ids = []
            for n in range(40):  # 0.8 s: eight heartbeat intervals
                ids.append(await gw.publish("news", n))
                await asyncio.sleep(0.02)
            busy = b""
            async with asyncio.timeout(TIMEOUT):
                while f"id: {ids[-1]}".encode() not in busy:
                    busy += await sse.content.read(4096)
                kinds = []
                while True:
                    msg = await ws.receive()
                    kinds.append(msg.type)
                    if msg.type is not aiohttp.WSMsgType.TEXT or ids[-1] in msg.data:
                        break
            assert busy.count(b"id: ") == len(ids)
            assert b": ping" not in busy
            assert kinds == [aiohttp.WSMsgType.TEXT] * len(ids)
            # Idle now: a heartbeat within a few intervals on both.
            async with asyncio.timeout(TIMEOUT):
                idle = b""
                while b": ping\n\n" not in idle:
                    idle += await sse.content.read(100)
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.PING
                await ws.pong(msg.data)
            await ws.close()
            sse.close()
        assert gw.context.disconnects.get("heartbeat_timeout", 0) == 0


async def test_heartbeat_visits_leave_one_heartbeat_per_idle_interval() -> None:
    """The loop visits each stream twice per interval (driven here by hand, the
    loop itself asleep for an hour): a visit after a write leaves nothing, the
    next one a heartbeat, the one after that nothing again. So an idle stream
    gets one heartbeat per interval and no stream a whole interval without a
    byte. A WebSocket ping left unanswered half an interval is not yet a
    timeout; a whole interval is."""
    hour = 3600.0
    async with start_gateway(topics=("news",), heartbeat=hour) as gw:
        async with aiohttp.ClientSession() as s:
            sse = await s.get(f"{gw.url}/sse/news")
            ws = await s.ws_connect(f"{gw.ws_url}/ws/news", autoping=False)
            await wait_for(lambda: len(gw.context.sessions) == 2, what="both streams")
            first = await gw.publish("news", "first")
            got = b""
            async with asyncio.timeout(TIMEOUT):
                while f"id: {first}".encode() not in got:
                    got += await sse.content.read(4096)
                assert first in (await ws.receive_str())
            t0 = asyncio.get_running_loop().time()
            for visit in range(1, 6):  # half an interval apart
                for stream in list(gw.context.sessions):
                    stream.beat(t0 + visit * hour / 2)
            # Visits 2 and 4 left heartbeats: two pings on SSE, before the marker.
            marker = await gw.publish("news", "marker")
            async with asyncio.timeout(TIMEOUT):
                while f"id: {marker}".encode() not in got:
                    got += await sse.content.read(4096)
            assert got.count(b": ping\n\n") == 2
            # The WebSocket got its ping at visit 2 and does not answer: visit 3
            # (half an interval on) lets it be, visit 4 (a whole one) drops it.
            async with asyncio.timeout(TIMEOUT):
                msg = await ws.receive()
                assert msg.type is aiohttp.WSMsgType.PING
                kinds = [msg.type]
                while msg.type is not aiohttp.WSMsgType.CLOSE:
                    msg = await ws.receive()
                    kinds.append(msg.type)
            assert kinds[-1] is aiohttp.WSMsgType.CLOSE and ws.close_code == 1011
            assert kinds.count(aiohttp.WSMsgType.PING) == 1
            sse.close()
        assert gw.context.disconnects.get("heartbeat_timeout", 0) == 1


async def test_every_stream_gets_its_own_first_bytes_from_a_shared_batch() -> None:
    """An SSE stream and a JSON array take a first message; then three more of
    each come, and a second message: the sweep has the first two write the
    shared bytes, and each newcomer still gets first bytes of its own (the
    ``retry:`` field; no separator before the array's first item)."""
    async with start_gateway(topics=("news",)) as gw:
        async with aiohttp.ClientSession() as s:

            async def open_live(n: int) -> tuple[list[Any], list[Any]]:
                total = len(gw.context.sessions) + 2 * n
                sse = [await s.get(f"{gw.url}/sse/news") for _ in range(n)]
                arrays = [await s.get(f"{gw.url}/chunked/news?format=json") for _ in range(n)]
                await wait_for(
                    lambda: (
                        len(gw.context.sessions) == total
                        and all(st.sub is not None and st.sub.live for st in gw.context.sessions)
                    ),
                    what=f"{total} live streams",
                )
                return sse, arrays

            async def read_to(resp: Any, last: str) -> bytes:
                body = b""
                while last.encode() not in body:
                    body += await resp.content.read(4096)
                return body

            old_sse, old_arrays = await open_live(1)
            first = await gw.publish("news", 0)
            sse, arrays = await open_live(3)
            second = await gw.publish("news", 1)
            retry = f"retry: {gw.settings.retry_ms}\n".encode()
            both = [first, second]
            async with asyncio.timeout(TIMEOUT):
                for resp, ids in ((old_sse[0], both), *((r, [second]) for r in sse)):
                    body = await read_to(resp, f"id: {second}")
                    assert body.startswith(retry + f"id: {ids[0]}\n".encode())
                    assert body.count(b"retry:") == 1
                for resp, ids in ((old_arrays[0], both), *((r, [second]) for r in arrays)):
                    body = await read_to(resp, second)
                    assert [item["id"] for item in orjson.loads(body + b"]")] == ids
            for resp in (*old_sse, *sse, *old_arrays, *arrays):
                resp.close()


async def test_websocket_pings_are_spread_over_the_interval() -> None:
    """The heartbeat loop pings one slice of the connections per turn, not all at
    once; every WebSocket still gets a ping each interval and, answering, stays."""
    heartbeat = 0.8
    n = 24
    async with start_gateway(topics=("news",), heartbeat=heartbeat) as gw:
        async with aiohttp.ClientSession() as s:
            sockets = [await s.ws_connect(f"{gw.ws_url}/ws/news", autoping=False) for _ in range(n)]
            loop = asyncio.get_running_loop()
            start = loop.time()
            for _ in range(2):  # two intervals: pings, pongs, nobody dropped
                for ws in sockets:
                    msg = await ws.receive(timeout=heartbeat + TIMEOUT)
                    assert msg.type is aiohttp.WSMsgType.PING
                    await ws.pong(msg.data)
            assert loop.time() - start < 2 * heartbeat + TIMEOUT
            sinks: list[Any] = list(gw.context.sessions)
            assert len(sinks) == n
            # One loop turn stamps all the sinks it pings with the same time.
            assert len({sink.pinged_at for sink in sinks}) > 1
            assert len({heartbeat_slice(sink) for sink in sinks}) > 1
            for ws in sockets:
                await ws.close()
        await wait_for(lambda: not gw.context.sessions, what="the streams to end")
        assert gw.context.disconnects.get("heartbeat_timeout", 0) == 0


async def _open_idle(
    port: int, path: str, n: int
) -> list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
    """``n`` raw connections to ``path``, each past its response headers."""
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET %s HTTP/1.1\r\nHost: x\r\n\r\n" % path.encode())
        await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), TIMEOUT)
        conns.append((reader, writer))
    return conns


async def test_idle_sse_streams_get_heartbeats_from_the_one_loop_and_run_no_task() -> None:
    heartbeat = 0.3
    n = 20
    async with start_gateway(topics=("news",), heartbeat=heartbeat) as gw:
        counts = gw.context.hub.subscriber_counts
        # Nothing runs for an idle SSE stream beyond what aiohttp runs for any
        # connection: as many tasks as for idle chunked streams, no ping task
        # (aiohttp-sse's EventSourceResponse would start one per connection).
        tasks_before = len(asyncio.all_tasks())
        chunked = await _open_idle(gw.port, "/chunked/news", n)
        await wait_for(lambda: counts("news")["chunked"] == n)
        tasks_chunked = len(asyncio.all_tasks()) - tasks_before
        loop = asyncio.get_running_loop()
        start = loop.time()
        sse = await _open_idle(gw.port, "/sse/news", n)
        await wait_for(lambda: counts("news")["sse"] == n)
        tasks = asyncio.all_tasks()
        assert len(tasks) - tasks_before - tasks_chunked == tasks_chunked
        assert not [t for t in tasks if "_ping" in getattr(t.get_coro(), "__qualname__", "")]
        # Every idle SSE stream gets the comment within one heartbeat interval.
        for reader, _ in sse:
            await asyncio.wait_for(reader.readuntil(b"\r\n: ping\n\n\r\n"), TIMEOUT)
        assert loop.time() - start < heartbeat + TIMEOUT / 40
        for _, writer in chunked + sse:
            writer.close()
        await wait_for(lambda: not gw.context.sessions, what="the streams to end")


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_idle_streams_own_their_connections_and_keep_nothing_of_aiohttp(
    transport: str,
) -> None:
    """Once the response head is out the stream is its connection's protocol:
    aiohttp's handler, its task and the request are gone (the bulk of an idle
    stream's memory), no task runs for it, and it still gets messages and
    its end."""
    async with start_gateway(topics=("news",)) as gw, aiohttp.ClientSession() as s:
        tasks_before = len(asyncio.all_tasks())
        async with contextlib.AsyncExitStack() as stack:
            if transport == "ws":
                a = await stack.enter_async_context(s.ws_connect(f"{gw.ws_url}/ws/news"))
                await stack.enter_async_context(s.ws_connect(f"{gw.ws_url}/ws/news"))
            else:
                conns = await _open_idle(gw.port, f"/{transport}/news", 2)
                for _, writer in conns:
                    stack.callback(writer.close)
            await wait_for(lambda: gw.context.hub.subscriber_counts("news")[transport] == 2)
            sinks: list[Any] = list(gw.context.sessions)
            for sink in sinks:
                assert sink.transport.get_protocol() is sink
                assert sink._task is None  # nothing runs for an idle stream
                assert getattr(sink, "credentials", None) is None  # the request is let go
            server = gw.running.runner.server
            assert server is not None
            await wait_for(lambda: aiohttp_compat.open_connections(server) == 0)
            assert len(gw.context.owned) == 2
            # No task is left for an idle stream (the client session's own aside).
            await wait_for(lambda: len(asyncio.all_tasks()) <= tasks_before + 2)
            msg_id = await gw.publish("news", 1)
            if transport == "ws":
                msg = await a.receive(timeout=TIMEOUT)
                assert orjson.loads(msg.data)["id"] == msg_id
            else:
                reader = conns[0][0]
                line = await asyncio.wait_for(reader.readuntil(msg_id.encode()), TIMEOUT)
                assert msg_id.encode() in line
        await wait_for(lambda: not gw.context.sessions, what="the streams to end")
        assert gw.context.disconnects["client_gone"] == 2
        await wait_for(lambda: not gw.context.owned)


async def test_ws_publish_command_reaches_other_transports() -> None:
    async with start_gateway(topics=("news",)) as gw:
        task = asyncio.create_task(read_until(gw.url, "chunked", "news", count=1))
        await wait_for(lambda: gw.context.hub.subscriber_counts("news")["chunked"] == 1)
        async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:
            await ws.send(orjson.dumps({"type": "publish", "data": {"hi": 1}, "ref": 1}).decode())
            async with asyncio.timeout(TIMEOUT):  # its own message may come first (PROTOCOL)
                while (ack := orjson.loads(await ws.recv())).get("type") != "published":
                    assert ack["data"] == {"hi": 1}
        assert ack["ref"] == 1
        reader = await task
        assert reader.ids == [ack["id"]]
        assert reader.messages[0].obj["data"] == {"hi": 1}


async def test_ws_client_that_never_answers_pings_is_dropped() -> None:
    async with start_gateway(topics=("news",), heartbeat=0.1) as gw:
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"{gw.ws_url}/ws/news", autoping=False) as ws:
                kinds = []
                async with asyncio.timeout(TIMEOUT):
                    while True:
                        msg = await ws.receive()
                        kinds.append(msg.type)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            break
                        if msg.type is aiohttp.WSMsgType.TEXT:
                            assert orjson.loads(msg.data)["reason"] == "heartbeat_timeout"
                assert aiohttp.WSMsgType.PING in kinds
                assert ws.close_code == 1011
        assert gw.context.disconnects["heartbeat_timeout"] == 1


async def test_ws_client_answering_pings_stays_and_client_pings_get_pongs() -> None:
    async with start_gateway(topics=("news",), heartbeat=0.05) as gw:
        async with websockets.connect(f"{gw.ws_url}/ws/news") as ws:  # answers pings itself
            await asyncio.sleep(0.5)  # ten heartbeats
            pong = await ws.ping(b"hello")
            await asyncio.wait_for(pong, TIMEOUT)
            msg_id = await gw.publish("news", 1)
            assert orjson.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))["id"] == msg_id
        assert gw.context.disconnects["heartbeat_timeout"] == 0
