"""Client scripts under a container's life: started before the gateway (--wait),
stopped with SIGTERM while the gateway stops too (--stop-grace): the gateway's
goodbye reaches them and they exit 0. This is what `docker compose down` does."""

from __future__ import annotations

import asyncio
import signal
import socket
import sys
import time

import pytest

from tests.helpers import TIMEOUT, start_gateway

URLS = {
    "ws": "ws://127.0.0.1:{port}/ws/news",
    "sse": "http://127.0.0.1:{port}/sse/news",
    "chunked": "http://127.0.0.1:{port}/chunked/news",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("transport", sorted(URLS))
async def test_client_waits_for_the_gateway_and_gets_its_goodbye_on_sigterm(
    transport: str,
) -> None:
    port = free_port()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        f"clients.{transport}",
        "--wait",
        "--max-retries",
        "50",
        "--stop-grace",
        str(TIMEOUT),
        URLS[transport].format(port=port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        await asyncio.sleep(0.3)  # the client starts first and retries
        assert proc.returncode is None, "the client gave up before the gateway started"
        async with start_gateway(port=port, topics=("news",)) as gw:
            assert proc.stdout is not None
            async with asyncio.timeout(TIMEOUT * 2):
                while True:
                    # Until the client is connected, what we publish is not for it.
                    msg_id = await gw.publish("news", {"x": 1})
                    try:
                        line = await asyncio.wait_for(proc.stdout.readline(), 1.0)
                    except TimeoutError:
                        continue
                    if line:
                        break
            assert line.split()[:2] == [transport.encode(), msg_id.encode()]
            # compose down: the client and the gateway are stopped together.
            proc.send_signal(signal.SIGTERM)
            started = time.monotonic()
        # Leaving the block shut the gateway down: goodbye to every stream.
        await asyncio.wait_for(proc.wait(), TIMEOUT)
        took = time.monotonic() - started
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    stderr = (await proc.stderr.read()).decode() if proc.stderr else ""
    assert proc.returncode == 0, stderr
    assert "goodbye: reason=shutdown" in stderr, stderr
    assert took < TIMEOUT / 2, "it waited for --stop-grace instead of the goodbye"
