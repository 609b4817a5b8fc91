"""``python -m bench.ab``: fan-out of two gateway variants, alternated A/B/A/B.

What a setting or a change costs, on a machine too noisy for two runs minutes
apart to be compared: the two variants run back to back, several rounds, and
each round's B/A ratio is reported next to the median. A variant is a checkout
(``--a-from``/``--b-from``, e.g. ``git archive REV | tar -x -C PATH``) and
environment variables (``--b-env STREAMGATE_METRICS=false``) and flags
(``--b-args '--access-log --log-level info'``: the bench starts gateways with
``--log-level warning``, which a variable would not override)::

    python -m bench.ab --b-env STREAMGATE_METRICS=false --rounds 2

``--latency`` measures latency instead (100 msg/s at each ``--ns``, every
delivery timed), and ``--nchan`` adds Nchan as a third side in each round, so
that each round's p99 can be set against the C peer's of the same minute::

    python -m bench.ab --a-from /tmp/before --latency --ns 1000 --nchan --rounds 3

Everything runs on 127.0.0.1; the servers are stopped by pid (bench.servers).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from . import nchan, report
from .common import REPO, pin_load, raise_nofile
from .run import Config, run_matrix
from .servers import KINDS, ServerKind, gateway_kind

_T0 = time.monotonic()


def _log(line: str) -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {line}", flush=True)


def _variant(tag: str, repo: str | None, env: list[str], extra: Sequence[str] = ()) -> ServerKind:
    base = gateway_kind(0.0, repo=repo, tag=tag)
    pairs: list[tuple[str, str]] = []
    for spec in env:
        name, sep, value = spec.partition("=")
        if not sep or not name:
            raise SystemExit(f"--a-env/--b-env want NAME=VALUE, got {spec!r}")
        pairs.append((name, value))
    return ServerKind(
        name=base.name,
        label=" ".join([base.label, *env, *extra]),
        module=base.module,
        args=(*base.args, *extra),  # after the bench's own flags: these win
        repo=base.repo,
        env=tuple(pairs),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ab", description=__doc__)
    parser.add_argument("--a-from", metavar="PATH", help="checkout of A (default: this one)")
    parser.add_argument("--b-from", metavar="PATH", help="checkout of B (default: this one)")
    parser.add_argument("--a-env", metavar="NAME=VALUE", action="append", default=[])
    parser.add_argument("--b-env", metavar="NAME=VALUE", action="append", default=[])
    parser.add_argument(
        "--a-args", default="", help="more `streamgate serve` flags for A, e.g. '--log-level info'"
    )
    parser.add_argument("--b-args", default="", help="more `streamgate serve` flags for B")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument(
        "--transports",
        nargs="+",
        default=["chunked", "sse", "ws"],
        choices=["chunked", "sse", "ws"],
    )
    parser.add_argument("--ns", type=int, nargs="+", default=[1, 100, 1000])
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per figure")
    parser.add_argument("--latency", action="store_true", help="latency at 100 msg/s instead")
    parser.add_argument("--nchan", action="store_true", help="Nchan as a third side, N")
    parser.add_argument("--json", help="write every row to this file")
    parser.add_argument("--from-json", metavar="PATH", help="only print the table of a run")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(f"stopped by signal {signum}"))
    raise_nofile()
    pin_load(True)
    os.chdir(REPO)

    if args.from_json:
        with open(args.from_json) as f:
            saved = json.load(f)
        _table(saved["sides"], saved["rows"], args)
        return 0
    sides = {
        "A": _variant("A", args.a_from, args.a_env, args.a_args.split()),
        "B": _variant("B", args.b_from, args.b_env, args.b_args.split()),
    }
    if args.nchan:
        setup = nchan.locate(install=True, log=_log)
        if isinstance(setup, str):
            raise SystemExit(f"--nchan: {setup}")
        sides["N"] = KINDS["nchan"]
    if args.latency:
        cfg = Config(ns=tuple(args.ns), latency_ns=tuple(args.ns), modes=())
    else:
        cfg = Config(ns=tuple(args.ns), latency_ns=(), window=args.seconds)
    rows: list[dict[str, Any]] = []
    for round_ in range(1, args.rounds + 1):
        for side, kind in sides.items():
            _log(f"round {round_}, {side}: {kind.label} from {kind.repo}")
            for row in run_matrix([kind], tuple(args.transports), cfg, _log):
                rows.append({**row, "side": side, "round": round_})
    labels = {k: v.label for k, v in sides.items()}
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"sides": labels, "rows": rows}, f, default=str)
    _table(labels, rows, args)
    return 0


def _latency_table(
    labels: dict[str, str], rows: list[dict[str, Any]], args: argparse.Namespace
) -> None:
    """Per transport and N: each round's p50/p99 at the socket and server µs per
    delivery for every side, then the medians of each round's ratios."""
    sides = list(labels)
    for side, label in labels.items():
        print(f"{side}: {label}")
    rounds = sorted({r["round"] for r in rows if "round" in r})
    pairs = [(b, a) for a, b in (("A", "B"), ("N", "A"), ("N", "B")) if a in sides and b in sides]
    head = " | ".join(f"{side}: p50 / p99 ms, µs/deliv" for side in sides)
    ratio_head = " | ".join(f"{b}/{a} p99 per round (median)" for b, a in pairs)
    print(f"\n| transport | N | round | {head} | {ratio_head} |")
    print("|---" * (3 + len(sides) + len(pairs)) + "|")
    for t in args.transports:
        for n in args.ns:
            found = {
                (side, r): report.find(
                    rows, side=side, round=r, transport=t, n=n, scenario="latency"
                )
                for side in sides
                for r in rounds
            }
            p99 = {k: float(v["sock_p99_ms"]) if v else None for k, v in found.items()}
            ratios = {
                (b, a): [
                    x for r in rounds if (x := report.ratio(p99[(b, r)], p99[(a, r)])) is not None
                ]
                for b, a in pairs
            }
            for r in rounds:
                cells = []
                for side in sides:
                    row = found[(side, r)]
                    cells.append(
                        f"{row['sock_p50_ms']:.2f} / {row['sock_p99_ms']:.2f}, "
                        f"{row['server_us_per_delivery']:.2f}"
                        if row
                        else "—"
                    )
                last = r == rounds[-1]
                shown = [
                    (", ".join(f"{x:.2f}" for x in xs) + f" (**{statistics.median(xs):.2f}**)")
                    if last and xs
                    else ""
                    for xs in ratios.values()
                ]
                print(f"| {t} | {n} | {r} | {' | '.join(cells)} | {' | '.join(shown)} |")


def _table(labels: dict[str, str], rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    """Per figure: each round's deliveries/s of A and B and their ratio, and the
    server's CPU per delivery (less sensitive to what else the machine runs)."""
    if getattr(args, "latency", False):
        _latency_table(labels, rows, args)
        return
    print(f"\nA: {labels['A']}\nB: {labels['B']}\n")
    print(
        "| transport | N | publish | A deliv/s | B deliv/s | B/A per round | B/A median "
        "| server µs/delivery A → B (medians) |"
    )
    print("|---|---|---|---|---|---|---|---|")
    rounds = sorted({r["round"] for r in rows if "round" in r})
    for t in args.transports:
        for n in args.ns:
            for mode in ("single", "burst"):
                found = {
                    (side, r): report.find(rows, side=side, round=r, transport=t, n=n, mode=mode)
                    for side in "AB"
                    for r in rounds
                }
                rates = {k: report.rate(v) for k, v in found.items()}
                ratios = [
                    x
                    for r in rounds
                    if (x := report.ratio(rates[("B", r)], rates[("A", r)])) is not None
                ]
                us = {
                    side: [
                        float(row["server_us_per_delivery"])
                        for r in rounds
                        if (row := found[(side, r)]) and row.get("server_us_per_delivery")
                    ]
                    for side in "AB"
                }
                cells = [
                    ", ".join(
                        f"{rates[(side, r)]:,.0f}" if rates[(side, r)] else "—" for r in rounds
                    )
                    for side in "AB"
                ]
                shown = ", ".join(f"{x:.2f}" for x in ratios) or "—"
                median = f"**{statistics.median(ratios):.2f}**" if ratios else "—"
                cpu = " → ".join(
                    f"{statistics.median(us[side]):.2f}" if us[side] else "—" for side in "AB"
                )
                publish = "batch POST" if mode == "burst" else "1 msg/POST"
                print(f"| {t} | {n} | {publish} | {cells[0]} | {cells[1]} ", end="")
                print(f"| {shown} | {median} | {cpu} |")


if __name__ == "__main__":
    sys.exit(main())
