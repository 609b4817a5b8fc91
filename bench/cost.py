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

Run: ``python -m bench.cost [--requests 3000] [--gateway-from PATH]`` (valgrind
from Debian's packages; about 20 s a server).
"""

from __future__ import annotations

import argparse
import glob
import http.client
import os
import shutil
import subprocess
import tempfile
from typing import Any

from .common import HOST
from .servers import KINDS, Server, ServerKind, gateway_kind

__all__ = ["available", "main", "measure_cost", "measure_pair"]

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


def _total(pattern: str) -> int:
    """The instruction total of the one dump matching ``pattern``."""
    (path,) = glob.glob(pattern)
    with open(path) as f:
        for line in f:
            if line.startswith(("summary:", "totals:")):
                return int(line.split()[1])
    raise RuntimeError(f"no total in {path}")


def measure_cost(kind: ServerKind, requests: int = 3000, warmup: int = 1000) -> dict[str, Any]:
    """Instructions the server executes per ``POST /topics/bench``, in user space."""
    with tempfile.TemporaryDirectory(prefix="bench-cost-") as tmp:
        out = os.path.join(tmp, "callgrind.out")
        wrap = ("valgrind", "--tool=callgrind", f"--callgrind-out-file={out}")
        server = Server(kind, wrap=wrap).start(timeout=180.0)
        try:
            conn = http.client.HTTPConnection(HOST, server.port, timeout=60)
            try:
                _post(conn, warmup)
                control = ["callgrind_control"]
                subprocess.run([*control, "-z", str(server.pid)], check=True, capture_output=True)
                _post(conn, requests)
                subprocess.run([*control, "-d", str(server.pid)], check=True, capture_output=True)
            finally:
                conn.close()
            total = _total(out + ".*")
        finally:
            server.stop()
    return {
        "scenario": "publish-cost",
        "server": kind.name,
        "label": kind.label,
        "requests": requests,
        "instructions_per_request": total / requests,
    }


def measure_pair(gateway_from: str | None, requests: int = 3000) -> list[dict[str, Any]]:
    """The gateway (from ``gateway_from``, else this checkout), then the bare handler."""
    kinds = (gateway_kind(0.0, repo=gateway_from), KINDS["bare"])
    return [measure_cost(kind, requests) for kind in kinds]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--gateway-from", metavar="PATH", help="the gateway from this checkout")
    args = parser.parse_args()
    why = available()
    if why:
        raise SystemExit(f"cannot count instructions: {why}")
    rows = measure_pair(args.gateway_from, args.requests)
    for row in rows:
        print(f"{row['label']:<28} {row['instructions_per_request']:>10,.0f} instructions/POST")
    ratio = rows[0]["instructions_per_request"] / rows[1]["instructions_per_request"]
    print(f"the gateway: {ratio:.2f}x the instructions of the bare handler")


if __name__ == "__main__":
    main()
