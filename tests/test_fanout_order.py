"""A publish writes the topic's first subscribers before it answers the
publisher (the sweep begins inside the publish, as Nchan's fan-out does).

Seen on one real WebSocket that both subscribes and publishes: its frames
arrive in the order the gateway wrote them, so the message before the
``published`` reply means the subscribers were written first."""

from __future__ import annotations

import orjson
import websockets

from tests.helpers import spawn_gateway


async def test_a_publish_is_written_to_the_subscribers_before_it_is_answered() -> None:
    async with (
        spawn_gateway("--topic", "news") as gw,
        websockets.connect(f"{gw.ws_url}/ws/news") as ws,
    ):
        await ws.send(orjson.dumps({"type": "publish", "data": "live?", "ref": 0}).decode())
        got = [orjson.loads(await ws.recv()) for _ in range(2)]  # the stream is live now
        assert {frame.get("type", "message") for frame in got} == {"published", "message"}
        for ref in range(1, 6):
            await ws.send(orjson.dumps({"type": "publish", "data": ref, "ref": ref}).decode())
            message, reply = orjson.loads(await ws.recv()), orjson.loads(await ws.recv())
            assert message["data"] == ref, (message, reply)
            assert reply["type"] == "published" and reply["id"] == message["id"]
