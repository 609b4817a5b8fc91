"""The benchmark harness's own checks (fast; the measurement is ``python -m bench --quick``).

The same load generator drives the gateway and the baseline, so both must put
the same message JSON on the wire: compact, keys in the same order, the bench's
``"t0":`` exactly once per message on every transport.
"""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import os
import time
from collections.abc import Callable

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from bench import cost, nchan, report, run
from bench.baseline import build_app
from bench.common import HOST, PATTERN
from bench.servers import KINDS, Server, gateway_kind
from tests.helpers import JSON_HEADERS, TIMEOUT, start_gateway

NCHAN = nchan.locate()
"""nginx with the Nchan module here, or why not (the tests never install it)."""

KEYS = ["id", "topic", "ts", "data"]


async def _first_line(session: aiohttp.ClientSession, url: str, publish: str) -> bytes:
    async with session.get(url) as resp:
        assert resp.status == 200
        # Publish once the stream is open, until the first message arrives.
        async with session.post(
            publish, data=b'{"t0":1763708400123.456}', headers=JSON_HEADERS
        ) as posted:
            assert posted.status == 201
        return await asyncio.wait_for(resp.content.readline(), TIMEOUT)


@pytest.mark.parametrize("which", ["gateway", "baseline"])
async def test_same_message_shape_on_chunked(which: str) -> None:
    async with aiohttp.ClientSession() as session:
        if which == "gateway":
            async with start_gateway(topics=("bench",)) as gw:
                line = await _first_line(
                    session, f"{gw.url}/chunked/bench", f"{gw.url}/topics/bench"
                )
        else:
            server = TestServer(build_app(), host="127.0.0.1")
            await server.start_server()
            try:
                url = f"http://127.0.0.1:{server.port}"
                line = await _first_line(session, f"{url}/chunked/bench", f"{url}/topics/bench")
            finally:
                await server.close()
    assert line.endswith(b"\n") and b" " not in line
    assert line.count(PATTERN) == 1
    obj = json.loads(line)
    assert list(obj) == KEYS
    assert obj["topic"] == "bench" and obj["data"] == {"t0": 1763708400123.456}


async def test_baseline_sse_and_ws_frames() -> None:
    server = TestServer(build_app(), host="127.0.0.1")
    await server.start_server()
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{url}/ws/bench") as ws:
                await asyncio.sleep(0.05)  # subscribed once the handler runs
                async with session.post(
                    f"{url}/topics/bench/batch", data=b'[{"t0":1.5}]', headers=JSON_HEADERS
                ) as r:
                    assert r.status == 201
                    assert len((await r.json())["ids"]) == 1
                text = await asyncio.wait_for(ws.receive_str(), TIMEOUT)
                assert list(json.loads(text)) == KEYS and text.count('"t0":') == 1
    finally:
        await server.close()


def _fan(server: str, transport: str, mode: str, rate: float) -> report.Row:
    return {
        "scenario": "fanout",
        "server": server,
        "label": server,
        "transport": transport,
        "n": 1000,
        "mode": mode,
        "deliveries_per_s": rate,
        "server_us_per_delivery": 1.0,
        "server_cpu": 1.0,
        "limited_by": "server",
    }


def test_targets_are_judged_against_the_same_run() -> None:
    rows = [
        _fan("baseline", "chunked", "single", 50_000),
        _fan("gateway", "chunked", "single", 210_000),
        _fan("gateway-wd2", "chunked", "single", 190_000),
        _fan("gateway", "chunked", "burst", 1_200_000),
    ]
    verdicts = {what: met for what, met, _ in report.check_targets(rows)}
    assert verdicts["fan-out N=1000, 1 msg/POST, chunked: ≥ 4× baseline"] is True
    assert verdicts["bursts N=1000, chunked: ≥ 1,000,000 deliveries/s"] is True
    rows[1]["deliveries_per_s"] = 150_000
    verdicts = {what: met for what, met, _ in report.check_targets(rows)}
    # The best gateway setting counts: 190,000 / 50,000 = 3.8× is short of 4×.
    assert verdicts["fan-out N=1000, 1 msg/POST, chunked: ≥ 4× baseline"] is False


def test_publishing_is_judged_against_the_bare_handler_and_sse_at_one_subscriber_is_not() -> None:
    rows: list[report.Row] = [
        {"scenario": "publish", "server": "gateway", "requests_per_s": 7_000.0},
        {"scenario": "publish", "server": "bare", "requests_per_s": 10_000.0},
        {"scenario": "publish", "server": "gateway", "requests_per_s": 8_100.0},
    ]
    for n in (1, 100):
        peer = _fan("starlette", "sse", "single", 10_000)
        peer["n"] = n
        mine = _fan("gateway", "sse", "single", 20_000)
        mine["n"] = n
        rows += [peer, mine]
    verdicts = {what: met for what, met, _ in report.check_targets(rows)}
    assert verdicts["publish, no subscriber: ≥ 0.8× a bare aiohttp handler (201)"] is True
    assert verdicts["SSE N=100 single: ≥ 3× starlette"] is False
    assert not any(what.startswith("SSE N=1 ") for what in verdicts)
    rows[2]["requests_per_s"] = 7_900.0
    verdicts = {what: met for what, met, _ in report.check_targets(rows)}
    assert verdicts["publish, no subscriber: ≥ 0.8× a bare aiohttp handler (201)"] is False


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_bench_subscribers_count_every_delivery(transport: str) -> None:
    """The bench's raw-socket subscribers count exactly what the gateway sends.

    They never parse frames, so a framing change that broke their counting would
    silently skew every figure; this pins it on all three transports.
    """
    from bench import load
    from bench.run import start_subscribers
    from tests.helpers import wait_for

    async with start_gateway(topics=("bench",)) as gw:
        subs = start_subscribers(
            gw.port, transport, f"/{transport}/bench", 3, 1, mode="count", lifetime=TIMEOUT * 3
        )
        try:
            await wait_for(lambda: subs.total(load.C_CONNECTED) == 3, what="3 subscribers")
            await wait_for(
                lambda: sum(gw.context.hub.subscriber_counts("bench").values()) == 3,
                what="3 subscriptions",
            )
            for i in range(5):
                await gw.publish("bench", {"t0": 1763708400123.456 + i})
            await gw.publish_batch("bench", [{"t0": 1.5}] * 10)
            await wait_for(lambda: subs.total(load.C_DELIVERED) == 3 * 15, what="45 deliveries")
            await asyncio.sleep(0.1)
            assert subs.total(load.C_DELIVERED) == 45
            assert subs.total(load.C_FAILED) == 0 and subs.total(load.C_CLOSED) == 0
        finally:
            subs.stop()


@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_idle_subscribers_with_a_browsers_headers_hold_their_streams(transport: str) -> None:
    """``--browser-headers``: the idle clients send what Chromium sends (the
    WebSocket's ``Origin`` is the server's own, which the gateway takes), and
    every one of them holds a live stream, so the memory measured is theirs."""
    from bench import load
    from bench.run import start_subscribers
    from tests.helpers import wait_for

    async with start_gateway(topics=("bench",)) as gw:
        cfg = load.SubConfig(gw.port, transport, f"/{transport}/bench", 1, browser=True)
        head = load.request_bytes(cfg)
        assert b"\r\nUser-Agent: Mozilla/5.0" in head and b"\r\nCookie: " in head
        fewest = load.request_bytes(dataclasses.replace(cfg, browser=False))
        assert len(head) > len(fewest) + 500
        subs = start_subscribers(
            gw.port,
            transport,
            f"/{transport}/bench",
            3,
            1,
            mode="idle",
            lifetime=TIMEOUT * 3,
            browser=True,
        )
        try:
            await wait_for(lambda: subs.total(load.C_CONNECTED) == 3, what="3 subscribers")
            await wait_for(
                lambda: sum(gw.context.hub.subscriber_counts("bench").values()) == 3,
                what="3 subscriptions",
            )
            assert subs.total(load.C_FAILED) == 0 and subs.total(load.C_CLOSED) == 0
        finally:
            subs.stop()


@pytest.mark.skipif(run.latsub_binary() is None, reason="no C compiler to build bench/latsub.c")
@pytest.mark.parametrize("transport", ["chunked", "sse", "ws"])
async def test_c_latency_subscribers_time_every_delivery(transport: str) -> None:
    """bench/latsub.c against a real gateway: every message on every stream is
    counted once, and timed at the socket and in the process."""
    cfg = run.Config(latency_seconds=5.0)
    binary = run.latsub_binary()
    assert binary is not None
    async with start_gateway(topics=("bench",)) as gw:
        subs = await asyncio.to_thread(run._CSubscribers, binary, gw.port, transport, 3, cfg)
        try:
            subs.latency_start()
            await asyncio.sleep(0.2)
            for _ in range(10):
                t0 = time.time() * 1000.0
                body = b'{"t0":%.3f}' % t0
                async with gw.session.post(
                    f"{gw.url}/topics/bench", data=body, headers=JSON_HEADERS
                ) as posted:
                    assert posted.status == 201
            await asyncio.sleep(0.3)
            results = await asyncio.to_thread(subs.latency_results)
            delivered, hist, lat_max, khist, klat_max = results
        finally:
            subs.stop()
    assert delivered == 30
    assert sum(hist.values()) == sum(khist.values()) == 30
    # Loopback: every delivery well under a second, the socket no later than the process.
    assert 0 < klat_max <= lat_max < 1000


def _post(port: int, body: bytes) -> int:
    conn = http.client.HTTPConnection(HOST, port, timeout=TIMEOUT)
    try:
        conn.request("POST", "/topics/bench", body, JSON_HEADERS)
        resp = conn.getresponse()
        resp.read()
        return resp.status
    finally:
        conn.close()


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.mark.skipif(isinstance(NCHAN, str), reason=f"Nchan not available: {NCHAN}")
def test_nchan_is_started_serves_every_transport_and_is_stopped_by_pid() -> None:
    """The harness starts nginx with Nchan (master and one worker), the bench's raw
    subscribers count every message on all three transports (only those published
    after they subscribed), and stopping it leaves none of its processes."""
    from bench import load
    from bench.run import start_subscribers

    server = Server(KINDS["nchan"]).start()
    fleets = {}
    try:
        pids = server.pids()
        assert pids[0] == server.pid and len(pids) == 2  # the master, then its worker
        assert server.memory_pids() == pids[1:]
        prefix = server.prefix
        assert os.path.isfile(os.path.join(prefix, "nginx.conf"))
        # No subscriber yet: 202, and nobody will get this one.
        assert _post(server.port, b'{"t0":1.5}') == 202
        for t in ("chunked", "sse", "ws"):
            fleets[t] = start_subscribers(
                server.port, t, f"/{t}/bench", 1, 1, mode="count", lifetime=TIMEOUT * 3
            )
        for t, fleet in fleets.items():
            _until(lambda f=fleet: f.total(load.C_CONNECTED) == 1, f"the {t} subscriber")
        _until(lambda: b"subscribers: 3\n" in server.get("/healthz")[1], "3 Nchan subscribers")
        for i in range(5):
            assert _post(server.port, b'{"t0":%d.5}' % i) == 201
        for t, fleet in fleets.items():
            _until(lambda f=fleet: f.total(load.C_DELIVERED) >= 5, f"5 messages on {t}")
        time.sleep(0.1)
        for t, fleet in fleets.items():
            assert fleet.total(load.C_DELIVERED) == 5, t
            assert fleet.total(load.C_FAILED) == 0 and fleet.total(load.C_CLOSED) == 0, t
    finally:
        for fleet in fleets.values():
            fleet.stop()
        server.stop()
    assert not [pid for pid in pids if os.path.exists(f"/proc/{pid}")]
    assert not os.path.exists(prefix)


def test_nchan_config_keeps_every_path_in_its_dir() -> None:
    setup = nchan.Setup("/usr/sbin/nginx", "/usr/lib/nginx/modules/ngx_nchan_module.so", "1.22.1")
    text = nchan.config(setup, "/tmp/bench-nchan-x", 8099, 20000)
    assert "daemon off;" in text and "worker_processes 1;" in text
    assert "load_module /usr/lib/nginx/modules/ngx_nchan_module.so;" in text
    assert "worker_rlimit_nofile 20000;" in text and "worker_connections 19936;" in text
    assert "access_log off;" in text
    for directive in (
        "pid",
        "error_log",
        "client_body_temp_path",
        "proxy_temp_path",
        "fastcgi_temp_path",
        "uwsgi_temp_path",
        "scgi_temp_path",
    ):
        lines = [ln.split() for ln in text.splitlines() if ln.split()[:1] == [directive]]
        assert len(lines) == 1 and lines[0][1].startswith("/tmp/bench-nchan-x/"), directive
    for kind in ("eventsource", "websocket", "http-chunked"):
        assert f"nchan_subscriber {kind};" in text
    assert text.count("nchan_subscriber_first_message newest;") == 3
    assert "listen 127.0.0.1:8099" in text


def test_nchan_batch_rows_say_not_applicable() -> None:
    rows = [
        _fan("gateway", "sse", "single", 200_000),
        _fan("nchan", "sse", "single", 100_000),
        _fan("gateway", "sse", "burst", 1_000_000),
        {
            "scenario": "na",
            "server": "nchan",
            "transport": "sse",
            "n": 1000,
            "mode": "burst",
            "reason": run.NO_BATCH,
        },
    ]
    table = report.nchan_table(rows)
    assert "| sse | 1000 | 1 msg/POST, 8 conns | 100,000" in table and "**2.0×**" in table
    assert f"n/a ({run.NO_BATCH})" in table


def test_ab_variants_take_their_environment_to_the_server() -> None:
    from bench import ab
    from bench.servers import Server

    for env, status in (([], 200), (["STREAMGATE_METRICS=false"], 404)):
        server = Server(ab._variant("B", None, env)).start()
        try:
            assert server.get("/metrics")[0] == status
        finally:
            server.stop()


def test_ab_table_ratios_per_round_and_median(capsys: pytest.CaptureFixture[str]) -> None:
    import argparse

    from bench import ab

    rows = [
        {
            "side": side,
            "round": r,
            "transport": "ws",
            "n": 100,
            "mode": "single",
            "deliveries_per_s": rate,
            "server_us_per_delivery": us,
        }
        for side, r, rate, us in (
            ("A", 1, 1000.0, 1.0),
            ("B", 1, 500.0, 2.0),
            ("A", 2, 1000.0, 1.0),
            ("B", 2, 900.0, 1.2),
            ("A", 3, 1000.0, 1.0),
            ("B", 3, 1100.0, 0.9),
        )
    ]
    args = argparse.Namespace(transports=["ws"], ns=[100])
    ab._table({"A": "on", "B": "off"}, rows, args)
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("| ws | 100 | 1"))
    assert "| 0.50, 0.90, 1.10 | **0.90** | 1.00 → 1.20 |" in line


def test_ab_latency_table_sets_each_round_against_nchan(capsys: pytest.CaptureFixture[str]) -> None:
    """``bench.ab --latency --nchan``: each ratio is taken within a round, and
    the median of the rounds is the figure (not a ratio of medians)."""
    import argparse

    from bench import ab

    rows = [
        {
            "side": side,
            "round": r,
            "transport": "sse",
            "n": 1000,
            "scenario": "latency",
            "sock_p50_ms": p99 / 2,
            "sock_p99_ms": p99,
            "server_us_per_delivery": 8.0,
        }
        for side, r, p99 in (
            ("A", 1, 12.0),
            ("B", 1, 10.0),
            ("N", 1, 8.0),
            ("A", 2, 9.0),
            ("B", 2, 9.0),
            ("N", 2, 10.0),
            ("A", 3, 20.0),
            ("B", 3, 10.0),
            ("N", 3, 10.0),
        )
    ]
    args = argparse.Namespace(transports=["sse"], ns=[1000], latency=True)
    ab._table({"A": "before", "B": "now", "N": "Nchan"}, rows, args)
    out = capsys.readouterr().out.splitlines()
    assert any(x.startswith("| sse | 1000 | 1 | 6.00 / 12.00, 8.00 |") for x in out)
    last = next(x for x in out if x.startswith("| sse | 1000 | 3 |"))
    # B/A: 0.83, 1.00, 0.50; A/N: 1.50, 0.90, 2.00; B/N: 1.25, 0.90, 1.00.
    assert "| 0.83, 1.00, 0.50 (**0.83**) | 1.50, 0.90, 2.00 (**1.50**) |" in last
    assert last.endswith("| 1.25, 0.90, 1.00 (**1.00**) |")


@pytest.mark.skipif(cost.available() is not None, reason=str(cost.available()))
def test_instructions_per_post_are_counted() -> None:
    """callgrind's counts come from the requests alone (zeroed after the warm-up,
    dumped after the last answer): the gateway, which parses, stores and
    answers with an id, executes more per POST than the bare handler, and both
    counts are those of a request, far below a server's start-up."""
    gateway = cost.measure_cost(gateway_kind(0.0), requests=200, warmup=50)
    bare = cost.measure_cost(KINDS["bare"], requests=200, warmup=50)
    assert 20_000 < bare["instructions_per_request"] < gateway["instructions_per_request"]
    assert gateway["instructions_per_request"] < 2_000_000


@pytest.mark.skipif(cost.available() is not None, reason=str(cost.available()))
def test_instructions_per_delivery_are_counted() -> None:
    """A delivery's count comes from the fan-outs alone: above a bare send's
    Python call (the sweep, the stream's checks, uvloop's write), and far below
    what a POST costs, which 50 subscribers share."""
    row = cost.measure_delivery_cost(gateway_kind(0.0), "sse", subscribers=50, messages=3)
    assert row["scenario"] == "delivery-cost"
    assert 1_000 < row["instructions_per_delivery"] < 100_000
