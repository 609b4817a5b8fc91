"""Instructions per publish, counted: ``python -m bench.cost``.

requests/s on a shared 2-core VM moves by a third from one minute to the next
when a neighbour is busy; the instructions a request costs do not. Each server
runs under valgrind's callgrind, which counts the instructions the process
executes in user space (the kernel's share, the same for every server, is not
in it). After a warm-up the counters are zeroed (``callgrind_control -z``),
``requests`` POSTs are sent one after the other on one keep-alive connection,
and the counters are dumped (``-d``): their total divided by ``requests``.
One connection answered one request at a time means every request also pays
one turn of the event loop, so the figures are larger than the per-request
share under a closed loop of many connections; both servers pay it alike.
Repeated runs of the same tree agree within about 3 %.

The same counter gives the work of one delivery (``--deliveries TRANSPORT``):
the gateway, under callgrind with heartbeats off, gets ``subscribers`` raw
subscribers on one topic (read by a thread of this process), then
``messages`` POSTs, each sent once the previous one's fan-out has gone quiet
(so every sweep carries one message). The count over that window, divided by
``messages x subscribers``, is one delivery's share, sweep and POST included.

Run: ``python -m bench.cost [--requests 3000] [--gateway-from PATH]`` (valgrind
from Debian's packages; about 20 s a server), ``python -m bench.cost
--deliveries sse [--subscribers 1000] [--messages 20]`` (about a minute).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import glob
import http.client
import json
import os
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

from . import load
from .common import HOST
from .servers import KINDS, Server, ServerKind, gateway_kind

__all__ = ["available", "main", "measure_cost", "measure_delivery_cost", "measure_pair"]

BODY = b'{"t0":1764540000000.123}'
"""The shape of the load generator's body (``load._post``)."""


def available() -> str | None:
    """``None`` when callgrind can run here, else why not."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    return f"{' and '.join(missing)} not found (apt-get install valgrind)" if missing else None


def _post(conn: http.client.HTTPConnection, count: int) -> None:
    headers = {"Content-Type": "application/json"}
    for _ in range(count):
        conn.request("POST", "/topics/bench", BODY, headers)
        resp = conn.getresponse()
        resp.read()
        if resp.status != 201:
            raise RuntimeError(f"POST /topics/bench answered {resp.status}")


class _Counted:
    """A server under callgrind: ``zero()`` the counters, ``count()`` dumps them
    and gives their total (the instructions executed since the zero)."""

    def __init__(self, server: Server, out: str) -> None:
        self.server = server
        self.out = out

    def _control(self, flag: str) -> None:
        argv = ["callgrind_control", flag, str(self.server.pid)]
        subprocess.run(argv, check=True, capture_output=True)

    def zero(self) -> None:
        self._control("-z")

    def count(self) -> int:
        self._control("-d")
        (path,) = glob.glob(self.out + ".*")
        with open(path) as f:
            for line in f:
                if line.startswith(("summary:", "totals:")):
                    return int(line.split()[1])
        raise RuntimeError(f"no total in {path}")


@contextlib.contextmanager
def _under_callgrind(kind: ServerKind) -> Iterator[_Counted]:
    """``kind`` started under callgrind, stopped (by pid) on exit."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        wrap = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
        server = Server(kind, wrap=wrap).start(timeout=180.0)
        try:
            yield _Counted(server, out)
        finally:
            server.stop()


def measure_cost(kind: ServerKind, requests: int = 3000, warmup: int = 1000) -> dict[str, Any]:
    """Instructions the server executes per ``POST /topics/bench``, in user space."""
    with _under_callgrind(kind) as counted:
        conn = http.client.HTTPConnection(HOST, counted.server.port, timeout=60)
        try:
            _post(conn, warmup)
            counted.zero()
            _post(conn, requests)
            total = counted.count()
        finally:
            conn.close()
    return {
        "scenario": "publish-cost",
        "server": kind.name,
        "label": kind.label,
        "requests": requests,
        "instructions_per_request": total / requests,
    }


class _Readers:
    """Raw subscribers of ``/{transport}/bench``, read by one thread until closed."""

    def __init__(self, port: int, transport: str, n: int) -> None:
        path = f"/{transport}/bench"
        request = load.request_bytes(load.SubConfig(port, transport, path, n))
        self.selector = selectors.DefaultSelector()
        self.socks = []
        for _ in range(n):
            sock = socket.create_connection((HOST, port), timeout=60)
            sock.sendall(request)
            sock.setblocking(False)
            self.selector.register(sock, selectors.EVENT_READ)
            self.socks.append(sock)
        self.last = time.monotonic()
        self.running = True
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        while self.running:
            for key, _ in self.selector.select(0.2):
                try:
                    if key.fileobj.recv(65536):  # type: ignore[union-attr]
                        self.last = time.monotonic()
                except (BlockingIOError, OSError):
                    pass

    def wait_quiet(self, quiet: float = 0.3, timeout: float = 60.0) -> None:
        """Until nothing has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + timeout
        time.sleep(0.1)
        while time.monotonic() - self.last < quiet and time.monotonic() < deadline:
            time.sleep(0.05)

    def close(self) -> None:
        self.running = False
        self.thread.join(5.0)
        for sock in self.socks:
            sock.close()


def _subscribed(server: Server, n: int, timeout: float = 300.0) -> None:
    """Until ``GET /topics`` counts ``n`` subscribers of ``bench`` (slow under callgrind)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _, body = server.get("/topics")
        except OSError:
            time.sleep(1.0)
            continue
        topics = [t for t in json.loads(body)["topics"] if t["name"] == "bench"]
        if topics and sum(topics[0]["subscribers"].values()) >= n:
            return
        time.sleep(0.5)
    raise RuntimeError(f"fewer than {n} subscribers after {timeout:g} s")


def _fan_out(conn: http.client.HTTPConnection, readers: _Readers, count: int) -> None:
    """``count`` POSTs, each once the previous one's fan-out has gone quiet."""
    for _ in range(count):
        _post(conn, 1)
        readers.wait_quiet()


def measure_delivery_cost(
    kind: ServerKind, transport: str, subscribers: int = 1000, messages: int = 20
) -> dict[str, Any]:
    """Instructions the gateway executes per delivery (one message a sweep)."""
    kind = dataclasses.replace(kind, env=(*kind.env, ("STREAMGATE_HEARTBEAT", "3600")))
    with _under_callgrind(kind) as counted:
        server = counted.server
        readers = _Readers(server.port, transport, subscribers)
        conn = http.client.HTTPConnection(HOST, server.port, timeout=120)
        try:
            _subscribed(server, subscribers)
            _fan_out(conn, readers, 5)  # warm-up
            counted.zero()
            _fan_out(conn, readers, messages)
            total = counted.count()
        finally:
            conn.close()
            readers.close()
    return {
        "scenario": "delivery-cost",
        "server": kind.name,
        "label": kind.label,
        "transport": transport,
        "subscribers": subscribers,
        "messages": messages,
        "instructions_per_delivery": total / (messages * subscribers),
    }


def measure_pair(gateway_from: str | None, requests: int = 3000) -> list[dict[str, Any]]:
    """The gateway (from ``gateway_from``, else this checkout), then the bare handler."""
    kinds = (gateway_kind(0.0, repo=gateway_from), KINDS["bare"])
    return [measure_cost(kind, requests) for kind in kinds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--gateway-from", metavar="PATH", help="the gateway from this checkout")
    parser.add_argument(
        "--deliveries",
        metavar="TRANSPORT",
        choices=("chunked", "sse", "ws"),
        help="count a delivery on this transport instead of a publish",
    )
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--messages", type=int, default=20)
    args = parser.parse_args()
    why = available()
    if why:
        raise SystemExit(f"cannot count instructions: {why}")
    if args.deliveries:
        kind = gateway_kind(0.0, repo=args.gateway_from)
        row = measure_delivery_cost(kind, args.deliveries, args.subscribers, args.messages)
        print(f"{args.deliveries}: {row['instructions_per_delivery']:,.0f} instructions/delivery")
        return
    rows = measure_pair(args.gateway_from, args.requests)
    for row in rows:
        print(f"{row['label']:<28} {row['instructions_per_request']:>10,.0f} instructions/POST")
    ratio = rows[0]["instructions_per_request"] / rows[1]["instructions_per_request"]
    print(f"the gateway: {ratio:.2f}x the instructions of the bare handler")


if __name__ == "__main__":
    main()
