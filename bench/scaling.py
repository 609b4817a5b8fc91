"""``python -m bench.scaling``: deliveries/s with 1 and 2 ``--workers``, same run.

Both variants share one Redis (``--broker``, default the local one, keys under
a prefix of their own) and run alternated, ``--rounds`` times, at N = 1,000
subscribers with one publisher POSTing one message at a time (``seq``) and
with several (``single``). Nothing is pinned: the workers, the subscribers,
the publishers and Redis share every core, so on a small machine the load
generator's share, printed with each figure, bounds what the second worker
can add::

    python -m bench.scaling --transports sse ws --rounds 2

Everything runs on 127.0.0.1; every process is stopped by pid (bench.servers).
"""

from __future__ import annotations

import argparse
import os
import uuid

from .common import pin_load, raise_nofile
from .run import Config, run_matrix
from .servers import ServerKind

__all__ = ["main"]


def worker_kind(workers: int, broker: str, prefix: str) -> ServerKind:
    return ServerKind(
        name=f"gateway-w{workers}",
        label=f"streamgate --workers {workers} (Redis)",
        module="gateway",
        args=(
            "serve",
            "--tick-interval",
            "0",
            "--topic",
            "bench",
            "--broker",
            broker,
            "--redis-prefix",
            prefix,
            "--workers",
            str(workers),
            "--log-level",
            "warning",
        ),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scaling", description=__doc__)
    parser.add_argument("--broker", default="redis://127.0.0.1:6379/0")
    parser.add_argument(
        "--transports", nargs="+", default=["sse"], choices=["chunked", "sse", "ws"]
    )
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args(argv)
    pin_load(False)
    raise_nofile()
    prefix = f"bench-scaling-{uuid.uuid4().hex[:8]}:"
    cfg = Config(ns=(args.n,), latency_ns=(), modes=("seq", "single"), window=args.seconds)
    rows = []
    for _ in range(args.rounds):
        rows += run_matrix(
            [worker_kind(1, args.broker, prefix), worker_kind(2, args.broker, prefix)],
            tuple(args.transports),
            cfg,
            print,
        )
    fan = [r for r in rows if r["scenario"] == "fanout"]
    print(f"\nN={args.n}, {os.cpu_count()} cores, nothing pinned (per round)\n")
    print(
        "| transport | publish | 1 worker deliv/s | 2 workers deliv/s | ratio "
        "| load generator CPU (1 → 2) |"
    )
    print("|---|---|---|---|---|---|")
    for t in args.transports:
        for mode in cfg.modes:
            one = [
                r
                for r in fan
                if r["transport"] == t and r["mode"] == mode and r["server"] == "gateway-w1"
            ]
            two = [
                r
                for r in fan
                if r["transport"] == t and r["mode"] == mode and r["server"] == "gateway-w2"
            ]
            for a, b in zip(one, two, strict=False):
                load_a = a["client_cpu"] + a["publisher_cpu"]
                load_b = b["client_cpu"] + b["publisher_cpu"]
                print(
                    f"| {t} | {mode} | {a['deliveries_per_s']:,.0f} "
                    f"| {b['deliveries_per_s']:,.0f} | "
                    f"{b['deliveries_per_s'] / a['deliveries_per_s']:.2f}× | "
                    f"{load_a:.0%} → {load_b:.0%} of one core |"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
