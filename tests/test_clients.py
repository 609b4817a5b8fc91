"""The clients in clients/ against the real gateway over loopback.

In-process first (the Python API each client exposes), then the scripts as
subprocesses. Every transport gets a drop-and-resume test: the gateway aborts
the connection mid-stream, the client reconnects by itself, and the ids it
yields are exactly the published ones, nothing missing, nothing doubled.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from clients.chunked import ChunkedClient
from clients.sse import Event, EventSource, EventSourceError, SSEClient
from clients.sync import SyncClient
from clients.ws import WSClient
from tests.helpers import TIMEOUT, GatewayUnderTest, start_gateway, wait_for

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["chunked", "json", "sse", "ws", "sync"]


def make_client(kind: str, gw: GatewayUnderTest, topic: str, **kw: Any) -> Any:
    """A client of *kind* with fast reconnection, for tests."""
    if kind == "chunked":
        return ChunkedClient(f"{gw.url}/chunked/{topic}", backoff_initial=0.05, **kw)
    if kind == "json":
        return ChunkedClient(f"{gw.url}/chunked/{topic}", format="json", backoff_initial=0.05, **kw)
    if kind == "sse":
        return SSEClient(f"{gw.url}/sse/{topic}", **kw)
    if kind == "ws":
        return WSClient(f"{gw.ws_url}/ws/{topic}", backoff_initial=0.05, **kw)
    if kind == "sync":
        return SyncClient(f"{gw.url}/chunked/{topic}", backoff_initial=0.05, **kw)
    raise AssertionError(kind)


async def iterate(client: Any) -> AsyncIterator[Any]:
    """The client's messages as an async iterator; the sync client runs in a thread."""
    if not isinstance(client, SyncClient):
        async with contextlib.aclosing(client.messages()) as stream:
            async for msg in stream:
                yield msg
        return
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

    def run() -> None:
        try:
            for msg in client.messages():
                loop.call_soon_threadsafe(queue.put_nowait, ("msg", msg))
            loop.call_soon_threadsafe(queue.put_nowait, ("end", None))
        except BaseException as exc:
            loop.call_soon_threadsafe(queue.put_nowait, ("error", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        while True:
            kind, value = await queue.get()
            if kind == "end":
                return
            if kind == "error":
                raise value
            yield value
    finally:
        client.close()
        await asyncio.to_thread(thread.join, TIMEOUT)


async def collect(
    client: Any, count: int | None = None, on_message: Any = None
) -> tuple[list[Any], bool]:
    """Messages until *count* are in or the stream ends by itself; (messages, ended)."""
    out: list[Any] = []
    async with asyncio.timeout(TIMEOUT):
        async for msg in iterate(client):
            out.append(msg)
            if on_message is not None:
                await on_message(len(out))
            if count is not None and len(out) >= count:
                return out, False
    return out, True


@pytest.mark.parametrize("kind", KINDS)
async def test_client_receives_what_was_published(kind: str) -> None:
    async with start_gateway(topics=("news",)) as gw:
        data = [{"i": i, "s": "ü\n\r\0", "f": 1.5e300, "big": 2**63 - 1} for i in range(20)]
        before = await gw.publish_many("news", data[:10])
        client = make_client(kind, gw, "news", since="0-0")

        async def publish_rest(n: int) -> None:
            if n == 10:  # the replay is in: the rest goes out live
                after.extend(await gw.publish_many("news", data[10:]))

        after: list[str] = []
        msgs, ended = await collect(client, 20, publish_rest)
        assert not ended
        assert [m.id for m in msgs] == before + after
        assert [m.data for m in msgs] == data
        assert all(m.topic == "news" and m.ts > 0 for m in msgs)
        async with gw.session.get(f"{gw.url}/topics/news/messages") as resp:
            stored = await resp.json()
        assert [json.loads(m.raw) for m in msgs] == stored["messages"]
        assert all("\n" not in m.raw for m in msgs)
        assert client.stats.messages == 20
        assert client.stats.bytes_received > sum(len(m.raw) for m in msgs) // 2
        assert client.stats.reconnects == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_client_drop_and_resume(kind: str) -> None:
    """Drop every connection mid-stream; the client resumes alone, nothing lost or doubled."""
    async with start_gateway(topics=("news",), retry_ms=50) as gw:
        published = await gw.publish_many("news", [{"i": i} for i in range(60)])
        client = make_client(kind, gw, "news", since="0-0")
        dropped: list[int] = []

        async def drop_then_publish(n: int) -> None:
            if n == 25:
                # Mid-stream: the gateway has written more than we have read.
                dropped.append(gw.drop_all())
                published.extend(await gw.publish_many("news", [{"i": i} for i in range(60, 120)]))

        msgs, _ = await collect(client, 120, drop_then_publish)
        assert dropped and dropped[0] >= 1
        assert [m.id for m in msgs] == published  # in order, none missing, none twice
        assert client.stats.reconnects >= 1
        assert client.stats.gaps == 0


@pytest.mark.parametrize("kind", KINDS)
async def test_client_resumes_again_and_again(kind: str) -> None:
    """Several drops while a publisher runs concurrently."""
    async with start_gateway(topics=("news",), retry_ms=20) as gw:
        total = 150
        published: list[str] = []

        last_drop = asyncio.Event()

        async def publisher() -> None:
            for i in range(total):
                if i == total - 10:
                    # The tail goes out after the last drop: resuming is a must.
                    await last_drop.wait()
                published.append(await gw.publish("news", {"i": i}))
                if i % 10 == 0:
                    await asyncio.sleep(0)

        client = make_client(kind, gw, "news", since="0-0")
        pub = asyncio.create_task(publisher())

        async def drop_now_and_then(n: int) -> None:
            if n % 40 == 0:
                gw.drop_all()
            if n == 120:
                last_drop.set()

        try:
            msgs, _ = await collect(client, total, drop_now_and_then)
        except BaseException:
            pub.cancel()
            raise
        # The last message may reach us before its POST returned its id.
        await asyncio.wait_for(pub, TIMEOUT)
        assert [m.id for m in msgs] == published
        assert client.stats.reconnects >= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_client_stops_at_limit(kind: str) -> None:
    async with start_gateway(topics=("news",)) as gw:
        ids = await gw.publish_many("news", [{"i": i} for i in range(8)])
        controls: list[dict[str, Any]] = []
        client = make_client(kind, gw, "news", since="0-0", limit=5, on_control=controls.append)
        msgs, ended = await collect(client)
        assert ended
        assert [m.id for m in msgs] == ids[:5]
        if kind != "json":  # the JSON array has no end event: the closing ] is the end
            assert controls[-1]["type"] == "end" and controls[-1]["last_id"] == ids[4]


@pytest.mark.parametrize("kind", KINDS)
async def test_client_per_connection_stream_ends(kind: str) -> None:
    async with start_gateway() as gw:
        url_client = make_client(kind, gw, "count?n=7")
        msgs, ended = await collect(url_client)
        assert ended
        assert [m.data for m in msgs] == [{"n": i} for i in range(1, 8)]
        assert [m.id for m in msgs] == [f"0-{i}" for i in range(1, 8)]


@pytest.mark.parametrize("kind", KINDS)
async def test_client_resumes_per_connection_stream(kind: str) -> None:
    """A dropped per-connection stream resumes with since=0-<n> and skips what was seen."""
    async with start_gateway(retry_ms=20) as gw:
        client = make_client(kind, gw, "count?n=100&interval=0.005")

        async def drop(n: int) -> None:
            if n == 30:
                gw.drop_all()

        msgs, ended = await collect(client, on_message=drop)
        assert ended
        assert [m.data["n"] for m in msgs] == list(range(1, 101))
        assert client.stats.reconnects >= 1


@pytest.mark.parametrize("kind", KINDS)
async def test_client_counts_gap(kind: str) -> None:
    async with start_gateway(topics=("news",), history_size=5) as gw:
        ids = await gw.publish_many("news", [{"i": i} for i in range(12)])
        controls: list[dict[str, Any]] = []
        client = make_client(kind, gw, "news", since=ids[0], on_control=controls.append)
        msgs, _ = await collect(client, 5)
        assert [m.id for m in msgs] == ids[-5:]
        assert client.stats.gaps == 1
        assert controls[0]["type"] == "gap" and controls[0]["first_id"] == ids[-5]


@pytest.mark.parametrize("kind", KINDS)
async def test_client_errors_are_clear(kind: str) -> None:
    async with start_gateway(topics=("news",)) as gw:
        for topic, since, text in [("news", "abc", "400"), ("-lead", None, "400")]:
            client = make_client(kind, gw, topic, since=since)
            with pytest.raises(Exception, match=text) as info:
                await collect(client)
            assert type(info.value).__name__ == "StreamError"
        # Nobody listens on a port just freed.
        gw.url = gw.ws_url = f"http://127.0.0.1:{_free_port()}"
        if kind == "ws":
            gw.ws_url = gw.url.replace("http", "ws")
        client = make_client(kind, gw, "news")
        with pytest.raises(Exception, match="cannot connect") as info:
            await collect(client)
        assert type(info.value).__name__ == "StreamError"


async def test_sse_sends_last_event_id_and_stops_on_204() -> None:
    """EventSource semantics: the id is sent back; 204 on reconnection stops it for good."""
    async with start_gateway(retry_ms=20) as gw:
        client = SSEClient(f"{gw.url}/sse/count?n=3", since="0-3")
        msgs, ended = await collect(client)
        assert ended and msgs == []
        assert client.source.ready_state == client.source.CLOSED


async def test_event_source_fails_for_good_on_wrong_content_type() -> None:
    async with start_gateway(topics=("news",)) as gw:
        await gw.publish("news", {"i": 0})
        source = EventSource(f"{gw.url}/chunked/news?since=0-0")
        with pytest.raises(EventSourceError) as info:
            async with asyncio.timeout(TIMEOUT):
                async for _ in source.events():
                    pass
        assert info.value.status == 200
        assert info.value.content_type == "application/x-ndjson"
        assert source.ready_state == EventSource.CLOSED
        assert source.connections == 0


async def test_event_source_resumes_with_last_event_id_after_server_retry() -> None:
    """Raw EventSource: Last-Event-ID on reconnection, delay from the server's retry:."""
    async with start_gateway(topics=("news",), retry_ms=40) as gw:
        ids = await gw.publish_many("news", [{"i": i} for i in range(3)])
        source = EventSource(f"{gw.url}/sse/news", last_event_id=ids[0])
        events: list[Event] = []
        async with asyncio.timeout(TIMEOUT):
            async for event in source.events():
                events.append(event)
                if len(events) == 2:
                    gw.drop_all()
                    ids.append(await gw.publish("news", {"i": 3}))
                if len(events) == 3:
                    source.close()
        assert [e.last_event_id for e in events] == ids[1:]
        assert [json.loads(e.data)["id"] for e in events] == ids[1:]
        assert {e.type for e in events} == {"message"}
        assert source.reconnection_time == 40
        assert source.reconnects == 1
        assert source.last_event_id == ids[-1]


async def test_ws_close_codes_policy() -> None:
    from clients.ws import should_reconnect

    for code in (1001, 1006, 1011, 1012, 1013, 4000, 4001, 4002, 4499):
        assert should_reconnect(code), code
    for code in (1000, 1002, 1003, 1007, 1008, 1009, 1010, 4500, 4999):
        assert not should_reconnect(code), code


# -- the scripts ----------------------------------------------------------------------


SCRIPTS = {
    "chunked": ("clients.chunked", "chunked", []),
    "json": ("clients.chunked", "chunked", ["--format", "json"]),
    "sse": ("clients.sse", "sse", []),
    "ws": ("clients.ws", "ws", []),
    "sync": ("clients.sync", "sync", []),
}


class Script:
    """A client script running as a subprocess; stdout read line by line."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []

    async def readline(self) -> str | None:
        assert self.proc.stdout is not None
        raw = await self.proc.stdout.readline()
        if not raw:
            return None
        line = raw.decode().rstrip("\n")
        self.lines.append(line)
        return line

    async def finish(self) -> tuple[int, str]:
        """Read to the end; (exit status, stderr)."""
        async with asyncio.timeout(TIMEOUT):
            while await self.readline() is not None:
                pass
            assert self.proc.stderr is not None
            err = (await self.proc.stderr.read()).decode()
            return await self.proc.wait(), err


@contextlib.asynccontextmanager
async def script(module: str, *args: str) -> AsyncIterator[Script]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        module,
        *args,
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield Script(proc)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            await proc.wait()


@pytest.mark.parametrize("kind", list(SCRIPTS))
async def test_script_prints_messages(kind: str) -> None:
    module, label, extra = SCRIPTS[kind]
    async with start_gateway(topics=("news",)) as gw:
        ids = await gw.publish_many("news", [{"i": i, "s": "é"} for i in range(6)])
        async with script(
            module, gw.url, "--topic", "news", "--since", "0-0", "--count", "5", *extra
        ) as s:
            status, err = await s.finish()
        assert status == 0, err
        assert s.lines == [f'{label} {ids[i]} {{"i":{i},"s":"é"}}' for i in range(5)]
        async with script(
            module, f"{gw.url}/x/news", "--since", "0-0", "--count", "2", "--json", *extra
        ) as s:
            status, err = await s.finish()
        # A stream URL is taken as is: /x/news is not an endpoint.
        assert status == 1 and "404" in err and "Traceback" not in err


@pytest.mark.parametrize("kind", list(SCRIPTS))
async def test_script_json_output_is_raw_message(kind: str) -> None:
    module, _, extra = SCRIPTS[kind]
    path = {"chunked": "chunked", "json": "chunked", "sync": "chunked", "sse": "sse", "ws": "ws"}[
        kind
    ]
    async with start_gateway(topics=("news",)) as gw:
        await gw.publish_many("news", [{"i": i} for i in range(3)])
        base = gw.ws_url if kind == "ws" else gw.url
        async with script(module, f"{base}/{path}/news?since=0-0&limit=3", "--json", *extra) as s:
            status, err = await s.finish()
        assert status == 0, err
        async with gw.session.get(f"{gw.url}/topics/news/messages") as resp:
            stored = (await resp.json())["messages"]
        assert [json.loads(line) for line in s.lines] == stored
        if kind != "json":
            raw = await (await gw.session.get(f"{gw.url}/chunked/news?since=0-0&limit=3")).read()
            assert "\n".join(s.lines).encode() == b"\n".join(raw.split(b"\n")[:3])
        assert "end" in err or kind == "json"


@pytest.mark.parametrize("kind", list(SCRIPTS))
async def test_script_drop_and_resume(kind: str) -> None:
    module, _, extra = SCRIPTS[kind]
    async with start_gateway(topics=("news",), retry_ms=50) as gw:
        published = await gw.publish_many("news", [{"i": i} for i in range(30)])
        async with script(
            module, gw.url, "--topic", "news", "--since", "0-0", "--count", "60", *extra
        ) as s:
            async with asyncio.timeout(TIMEOUT):
                while len(s.lines) < 10:
                    assert await s.readline() is not None
            assert gw.drop_all() >= 1
            published += await gw.publish_many("news", [{"i": i} for i in range(30, 60)])
            status, err = await s.finish()
        assert status == 0, err
        assert [line.split(" ")[1] for line in s.lines] == published
        assert "reconnect" in err


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.parametrize("kind", list(SCRIPTS))
async def test_script_errors(kind: str) -> None:
    module, _, extra = SCRIPTS[kind]
    async with start_gateway(topics=("news",)) as gw:
        cases = [
            ([f"{gw.url}/x/news"], 1, "404"),
            ([gw.url, "--topic", "news", "--since", "1-2-3"], 1, "400"),
            ([f"http://127.0.0.1:{_free_port()}", "--topic", "news"], 1, "cannot connect"),
            (["ftp://example/x", "--topic", "news"], 2, "bad URL"),
            (["http://127.0.0.1:99999/x"], 2, "bad URL"),
            ([gw.url], 2, "names no topic"),
        ]
        for args, want, text in cases:
            async with script(module, *args, *extra) as s:
                status, err = await s.finish()
            assert status == want, (args, err)
            assert text in err, (args, err)
            assert err.startswith("error: "), err
            assert "Traceback" not in err


@pytest.mark.parametrize(
    ("module", "needs"),
    [
        ("clients.ws", "websockets 13 or newer"),
        ("clients.sse", "aiohttp"),
        ("clients.chunked", "aiohttp and ijson"),
        ("clients.sync", "requests"),
        ("clients.compare", "every client's dependencies"),
    ],
)
async def test_script_without_its_dependencies_says_what_to_install(
    module: str, needs: str
) -> None:
    """A client run where its packages are not installed: ``python -S`` leaves out
    site-packages, and so every third-party package. One line naming the pip command."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-S",
        "-m",
        module,
        f"http://127.0.0.1:{_free_port()}/chunked/news",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(TIMEOUT):
        out, err = await proc.communicate()
    assert proc.returncode == 1
    assert out == b""
    lines = err.decode().splitlines()
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"error: python -m {module} needs {needs} (No module named ")
    assert "pip install -e '.[clients]'" in lines[0]


@pytest.mark.parametrize("kind", list(SCRIPTS))
async def test_script_waits_for_the_gateway(kind: str) -> None:
    """--wait: a client started before its gateway retries the first connection (without
    it: 'cannot connect', status 1, test_script_errors), then reads once the gateway is up."""
    module, label, extra = SCRIPTS[kind]
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    async with script(
        module, url, "--topic", "news", "--since", "0-0", "--count", "3", "--wait", *extra
    ) as s:
        assert s.proc.stderr is not None
        notes: list[str] = []
        async with asyncio.timeout(TIMEOUT):
            # Its first attempt failed, and it is trying again rather than giving up.
            while not any("reconnecting in" in note for note in notes):
                line = await s.proc.stderr.readline()
                assert line, f"the client exited ({await s.proc.wait()}): {notes}"
                notes.append(line.decode())
        assert s.proc.returncode is None
        async with start_gateway(topics=("news",), port=port) as gw:
            ids = await gw.publish_many("news", [{"i": i} for i in range(3)])
            status, err = await s.finish()
    assert status == 0, [*notes, err]
    assert s.lines == [f'{label} {ids[i]} {{"i":{i}}}' for i in range(3)]
    assert "Traceback" not in "".join(notes) + err


@pytest.mark.parametrize("kind", KINDS)
async def test_client_follows_goodbye_to_restarted_gateway(kind: str) -> None:
    """Server shutdown: goodbye (WS close 1001), the client keeps retrying and resumes."""
    controls: list[dict[str, Any]] = []
    received: asyncio.Queue[Any] = asyncio.Queue()

    async def consume(client: Any) -> None:
        async for msg in iterate(client):
            received.put_nowait(msg)

    async with start_gateway(topics=("news",), retry_ms=50) as gw1:
        port = gw1.port
        first = await gw1.publish("news", {"i": 0})
        client = make_client(kind, gw1, "news", since="0-0", on_control=controls.append)
        task = asyncio.create_task(consume(client))
        try:
            assert (await asyncio.wait_for(received.get(), TIMEOUT)).id == first
        except BaseException:
            task.cancel()
            raise
    try:
        # gw1 is gone after saying goodbye; the client is retrying with backoff.
        await wait_for(lambda: any(c["type"] == "goodbye" for c in controls), what="goodbye")
        assert not task.done()
        async with start_gateway(topics=("news",), port=port, retry_ms=50) as gw2:
            restarted = await gw2.publish("news", {"i": 1})
            msg = await asyncio.wait_for(received.get(), TIMEOUT)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert msg.id == restarted and msg.data == {"i": 1}
    assert client.stats.reconnects >= 1
