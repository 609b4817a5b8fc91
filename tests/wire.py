"""Small readers for the three transports, for the gateway's functional tests.

They use the real client libraries (aiohttp, websockets) and keep the raw
bytes of every message, so tests can compare what each transport carried.
The full-featured clients live in clients/; these stay minimal on purpose.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson
import websockets
from websockets.asyncio.client import ClientConnection

from tests.helpers import TIMEOUT

__all__ = ["Item", "Reader", "open_reader", "read_until"]


@dataclass
class Item:
    """One thing a stream carried: a message or a control event."""

    raw: bytes
    obj: dict[str, Any]
    sse_id: str | None = None
    sse_event: str | None = None

    @property
    def is_control(self) -> bool:
        return "type" in self.obj

    @property
    def id(self) -> str:
        return str(self.obj["id"])


@dataclass
class Reader:
    transport: str
    items: list[Item] = field(default_factory=list)
    close_code: int | None = None
    close_reason: str = ""

    @property
    def messages(self) -> list[Item]:
        return [i for i in self.items if not i.is_control]

    @property
    def ids(self) -> list[str]:
        return [i.id for i in self.messages]

    @property
    def controls(self) -> list[dict[str, Any]]:
        return [i.obj for i in self.items if i.is_control]


async def _ndjson(resp: aiohttp.ClientResponse) -> AsyncIterator[Item]:
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        *lines, buf = buf.split(b"\n")
        for line in lines:
            if line.strip():
                yield Item(line, orjson.loads(line))


async def _sse(resp: aiohttp.ClientResponse) -> AsyncIterator[Item]:
    buf = b""
    async for chunk in resp.content.iter_any():
        buf += chunk
        *blocks, buf = buf.split(b"\n\n")
        for block in blocks:
            fields: dict[str, bytes] = {}
            for line in block.split(b"\n"):
                if line.startswith(b":") or not line:
                    continue
                name, _, value = line.partition(b":")
                fields[name.decode()] = value[1:] if value.startswith(b" ") else value
            if "data" in fields:
                ev = fields.get("event")
                yield Item(
                    fields["data"],
                    orjson.loads(fields["data"]),
                    sse_id=fields["id"].decode() if "id" in fields else None,
                    sse_event=ev.decode() if ev else None,
                )


async def _ws(conn: ClientConnection, reader: Reader) -> AsyncIterator[Item]:
    try:
        async for frame in conn:
            raw = frame.encode() if isinstance(frame, str) else frame
            yield Item(raw, orjson.loads(raw))
    except websockets.ConnectionClosed:
        pass
    finally:
        reader.close_code = conn.close_code
        reader.close_reason = conn.close_reason or ""


@contextlib.asynccontextmanager
async def open_reader(
    base_url: str,
    transport: str,
    topic: str,
    *,
    query: str = "",
    headers: dict[str, str] | None = None,
) -> AsyncIterator[tuple[Reader, AsyncIterator[Item]]]:
    """Connect one transport; yields the reader and an iterator of items."""
    reader = Reader(transport)
    q = f"?{query}" if query else ""
    if transport == "ws":
        url = base_url.replace("http://", "ws://") + f"/ws/{topic}{q}"
        async with websockets.connect(url, additional_headers=headers or {}) as conn:
            yield reader, _ws(conn, reader)
        return
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{base_url}/{transport}/{topic}{q}", headers=headers) as resp:
            assert resp.status == 200, await resp.text()
            yield reader, (_ndjson(resp) if transport == "chunked" else _sse(resp))


async def read_until(
    base_url: str,
    transport: str,
    topic: str,
    *,
    count: int | None = None,
    until_id: str | None = None,
    query: str = "",
    headers: dict[str, str] | None = None,
    started: asyncio.Event | None = None,
    within: float = TIMEOUT,
) -> Reader:
    """Read until ``count`` messages, or the message ``until_id``, or the end."""
    async with asyncio.timeout(within):
        async with open_reader(base_url, transport, topic, query=query, headers=headers) as (
            reader,
            items,
        ):
            if started is not None:
                started.set()
            async for item in items:
                reader.items.append(item)
                # After end/goodbye the server closes: the loop ends by itself.
                if not item.is_control:
                    if count is not None and len(reader.messages) >= count:
                        break
                    if until_id is not None and item.id == until_id:
                        break
    return reader
