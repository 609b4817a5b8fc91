"""``python -m bench``: streamgate against its peers, same run, back to back.

    python -m bench            full mode, for BENCHMARKS.md
    python -m bench --quick    under a minute: ratios only, exits 1 on a collapse
    python -m bench --peers nchan,baseline    only these peers

The peers: the tutorial baseline, sse-starlette (SSE only, on two uvicorns),
and Nchan (nginx's pub/sub module, C; installed with apt-get when missing and
run as root, else its rows are skipped with a note). Everything runs on
127.0.0.1; every process started here is stopped by pid.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import queue
import signal
import sys
import time
from collections.abc import Callable
from typing import Any

from . import cost, nchan, report
from .common import REPO, SERVER_CPUS, pin_load, raise_nofile
from .run import (
    Config,
    measure_floor,
    measure_memory,
    measure_publish,
    measure_slow_reader,
    run_matrix,
)
from .servers import KINDS, PEERS, ServerKind, gateway_kind

QUICK_FLOORS = {"single": 1.5, "burst": 4.0}
"""Quick mode fails below these ratios (streamgate / baseline deliveries per second).

Measured here they are far higher (see BENCHMARKS.md); the floors only catch a
collapse, such as a flush per message or a per-subscriber encode sneaking back.
"""
QUICK_NCHAN_FLOOR = 0.2
"""Quick mode fails when streamgate delivers less than this × Nchan's deliveries per
second (N = 100, one message per POST, 8 publisher connections, one transport).
Generous on purpose: it must hold on a busy machine and only catch a collapse."""


_T0 = time.monotonic()


def _log(line: str) -> None:
    print(f"[{time.monotonic() - _T0:6.0f}s] {line}", flush=True)


def machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    import aiohttp

    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "aiohttp": aiohttp.__version__,
        "loadavg_before": os.getloadavg(),
        "started_utc": time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime()),
        "server_cpus": sorted(SERVER_CPUS) or "any",
        "load_cpus": sorted(os.sched_getaffinity(0)),
    }


def _peers(args: argparse.Namespace, install: bool) -> list[str]:
    """The selected peers that can run here; Nchan located (or installed) first."""
    peers = list(args.peers)
    if "nchan" in peers:
        found = nchan.locate(install=install and not args.no_install, log=_log)
        if isinstance(found, str):
            args.nchan_note = f"Nchan rows skipped: {found}"
            if not install:
                args.nchan_note += " (--quick does not install it; full mode does, as root)"
            _log(args.nchan_note)
            peers.remove("nchan")
        else:
            args.nchan_note = f"Nchan: {found.describe()}"
            _log(args.nchan_note)
    return peers


def quick(args: argparse.Namespace) -> int:
    cfg = Config(ns=(100,), latency_ns=(), modes=tuple(QUICK_FLOORS), warmup=0.4, window=1.0)
    peers = _peers(args, install=False)
    kinds = [gateway_kind(0.0)] + ([KINDS["baseline"]] if "baseline" in peers else [])
    rows = run_matrix(kinds, tuple(args.transports), cfg, _log)
    # One comparison with Nchan: SSE (else the first transport asked for), N=100,
    # one message per POST from 8 connections; the gateway's row is the one above.
    nchan_on = "sse" if "sse" in args.transports else args.transports[0]
    if "nchan" in peers:
        kind = dataclasses.replace(KINDS["nchan"], transports=(nchan_on,))
        rows += run_matrix([kind], (nchan_on,), dataclasses.replace(cfg, modes=("single",)), _log)
    failures = []
    notes = []
    for row in rows:
        if (
            row["scenario"] == "fanout"
            and row["mode"] == "burst"
            and row["dropped_connections"]
            and not row["publish_errors"]
        ):
            # Batches outrun the bench's own Python readers on a 2-core machine,
            # and the gateway cuts the laggards as slow consumers (--max-queue-bytes),
            # as it should. Not a collapse: one would fail the burst floor below.
            notes.append(
                f"{row['label']} {row['transport']} burst: {row['dropped_connections']} of the "
                "bench's readers fell behind and were cut as slow consumers"
            )
        elif row["scenario"] == "fanout" and (row["dropped_connections"] or row["publish_errors"]):
            failures.append(
                f"{row['label']} {row['transport']} {row['mode']}: "
                f"{row['dropped_connections']} dropped, {row['publish_errors']} publish errors"
            )
        elif row["scenario"] == "error":
            failures.append(f"{row['server']} {row['transport']} {row['phase']}: {row['error']}")
    if "baseline" in peers:
        print("\nratio streamgate / baseline, deliveries per second at N=100:")
        for t in args.transports:
            for mode, floor in QUICK_FLOORS.items():
                g = report.find(rows, server="gateway", transport=t, mode=mode)
                b = report.find(rows, server="baseline", transport=t, mode=mode)
                x = report.ratio(report.rate(g), report.rate(b))
                ok = x is not None and x >= floor
                print(
                    f"  {t:<8} {mode:<7} {x or 0:6.1f}×  (floor {floor}×)  {'ok' if ok else 'FAIL'}"
                )
                if not ok:
                    failures.append(f"{t} {mode}: {x}× < {floor}×")
    if "nchan" in peers:
        g = report.find(rows, server="gateway", transport=nchan_on, mode="single")
        p = report.find(rows, server="nchan", transport=nchan_on, mode="single")
        x = report.ratio(report.rate(g), report.rate(p))
        ok = x is not None and x >= QUICK_NCHAN_FLOOR
        print("\nratio streamgate / Nchan, deliveries per second at N=100, 1 msg/POST:")
        print(
            f"  {nchan_on:<8} single  {x or 0:6.2f}×  (floor {QUICK_NCHAN_FLOOR}×)  "
            f"{'ok' if ok else 'FAIL'}"
        )
        if not ok:
            failures.append(f"{nchan_on} single against Nchan: {x}× < {QUICK_NCHAN_FLOOR}×")
    elif "nchan" in args.peers:
        print(f"\n{args.nchan_note}")
    if notes:
        print("\nnote: " + "\n  ".join(notes))
    if args.json:
        _write_json(args.json, {"mode": "quick", "rows": rows})
    if failures:
        print("bench --quick FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("bench --quick: ok")
    return 0


def full(args: argparse.Namespace) -> int:
    if args.from_json:
        with open(args.from_json) as f:
            _outputs(args, json.load(f)["rows"])
        return 0
    info = machine()
    info["gateway_from"] = args.gateway_from or REPO
    _log(f"machine: {info}")
    peers = _peers(args, install=True)
    info["peers"] = peers
    if "nchan" in args.peers:
        info["nchan"] = args.nchan_note
    cfg = Config()
    if args.ns:
        cfg.ns = tuple(args.ns)
        cfg.latency_ns = tuple(n for n in cfg.latency_ns if n in cfg.ns)
    if args.seconds:
        cfg.window = cfg.latency_seconds = cfg.slow_seconds = cfg.floor_seconds = args.seconds
        cfg.memory_steps = tuple(s for s in cfg.memory_steps if s <= 1000) or (1000,)
    rows: list[dict[str, Any]] = []
    started = time.monotonic()
    scenarios = set(args.only or ["floor", "fanout", "publish", "memory", "slow"])
    if "floor" in scenarios:
        rows += _guarded(_floor_rows, args, cfg, peers)
    if "fanout" in scenarios:
        _log("fan-out and latency (per transport, servers back to back)")
        kinds = [
            gateway_kind(0.0, repo=args.gateway_from),
            gateway_kind(args.write_delay, repo=args.gateway_from),
        ]
        if args.asyncio:
            kinds.append(gateway_kind(0.0, repo=args.gateway_from, loop="asyncio"))
        # Each peer runs only the transports it has (sse-starlette: SSE).
        kinds += [KINDS[p] for p in PEERS if p in peers]
        rows += run_matrix(kinds, tuple(args.transports), cfg, _log)
    if "publish" in scenarios:
        rows += _guarded(_publish_rows, args, cfg, peers)
    if "memory" in scenarios:
        rows += _guarded(_memory_rows, args, cfg, peers)
    if "slow" in scenarios:
        rows += _guarded(_slow_rows, args, cfg, peers)
    info["loadavg_after"] = os.getloadavg()
    info["minutes"] = round((time.monotonic() - started) / 60, 1)
    info["command"] = "python -m bench " + " ".join(sys.argv[1:])
    if args.json:
        _write_json(args.json, {"mode": "full", "machine": info, "config": vars(cfg), "rows": rows})
    _outputs(args, rows)
    return 0


def _floor_rows(args: argparse.Namespace, cfg: Config, peers: list[str]) -> list[dict[str, Any]]:
    _log("send() floor")
    rows = [
        measure_floor(cfg.floor_n, per_send, cfg.floor_seconds, cfg, _log) for per_send in (1, 10)
    ]
    # The latency regime: one round to every socket each 10 ms (100 msg/s).
    rows.append(measure_floor(cfg.floor_n, 1, cfg.floor_seconds, cfg, _log, 1 / cfg.latency_rate))
    return rows


def _publish_rows(args: argparse.Namespace, cfg: Config, peers: list[str]) -> list[dict[str, Any]]:
    _log("publishing with no subscriber: the gateway against a bare aiohttp handler (201)")
    rows = []
    for _ in range(2):  # alternated: A B A B, each the best of its windows
        rows.append(measure_publish(gateway_kind(0.0, repo=args.gateway_from), cfg, _log))
        rows.append(measure_publish(KINDS["bare"], cfg, _log))
    why = cost.available()
    if why:
        _log(f"  instructions per POST: skipped, {why}")
        return rows
    _log("instructions per POST (callgrind; unmoved by a busy neighbour)")
    for row in cost.measure_pair(args.gateway_from):
        _log(f"  cost    {row['label']:<28} {row['instructions_per_request']:>10,.0f} instr/POST")
        rows.append(row)
    return rows


def _memory_rows(args: argparse.Namespace, cfg: Config, peers: list[str]) -> list[dict[str, Any]]:
    _log("idle connections: server RSS" + (", browser headers" if args.browser_headers else ""))
    rows = []
    first = cfg.memory_steps[:2]

    def memory(kind: ServerKind, t: str, steps: tuple[int, ...] = first) -> dict[str, Any]:
        return measure_memory(kind, t, steps, _log, browser=args.browser_headers)

    for t in args.transports:
        rows.append(memory(gateway_kind(0.0, repo=args.gateway_from), t, cfg.memory_steps))
        if args.asyncio:
            rows.append(memory(gateway_kind(0.0, repo=args.gateway_from, loop="asyncio"), t))
        for spec in args.compare:
            tag, _, path = spec.partition("=")
            rows.append(memory(gateway_kind(0.0, repo=path, tag=tag), t))
        if "baseline" in peers:
            rows.append(memory(KINDS["baseline"], t))
        if "nchan" in peers:
            # RSS of nginx's one worker (the master holds no connection).
            rows.append(memory(KINDS["nchan"], t))
    if "sse" in args.transports and "starlette" in peers:
        rows.append(memory(KINDS["starlette"], "sse"))
    return rows


def _slow_rows(args: argparse.Namespace, cfg: Config, peers: list[str]) -> list[dict[str, Any]]:
    # GET /chunked/count: the gateway's and the baseline's per-connection stream
    # (the peers have none).
    _log("per-connection stream, slow reader: server RSS over time")
    rows = [measure_slow_reader(gateway_kind(0.0, repo=args.gateway_from), cfg.slow_seconds, _log)]
    if "baseline" in peers:
        rows.append(measure_slow_reader(KINDS["baseline"], cfg.slow_seconds, _log))
    return rows


def _guarded(
    fn: Callable[[argparse.Namespace, Config, list[str]], list[dict[str, Any]]],
    args: argparse.Namespace,
    cfg: Config,
    peers: list[str],
) -> list[dict[str, Any]]:
    try:
        return fn(args, cfg, peers)
    except (RuntimeError, OSError, queue.Empty) as exc:
        _log(f"  ERROR   {fn.__name__}: {exc!r}")
        return [{"scenario": "error", "phase": fn.__name__, "error": repr(exc)}]


def _outputs(args: argparse.Namespace, rows: list[dict[str, Any]]) -> None:
    text = report.markdown(rows)
    print("\n" + text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(text)
    if args.plot:
        report.latency_plot(rows, args.plot)


def _peer_list(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in PEERS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown peer {', '.join(unknown)} (choose from {', '.join(PEERS)})"
        )
    return list(dict.fromkeys(names))


def _terminate(signum: int, frame: object) -> None:
    raise SystemExit(f"stopped by signal {signum}")


def _write_json(path: str, obj: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, separators=(",", ":"), default=str)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="under a minute, ratios only")
    parser.add_argument(
        "--transports",
        nargs="+",
        default=["chunked", "sse", "ws"],
        choices=["chunked", "sse", "ws"],
    )
    parser.add_argument(
        "--only",
        nargs="+",
        choices=["floor", "fanout", "publish", "memory", "slow"],
        help="full mode: subset",
    )
    parser.add_argument(
        "--peers",
        type=_peer_list,
        default=list(PEERS),
        metavar="NAME,...",
        help=f"the peers to measure streamgate against, comma-separated, of {', '.join(PEERS)} "
        "(default: all; sse-starlette has SSE only)",
    )
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="full mode: do not apt-get install Nchan when it is missing (its rows are skipped)",
    )
    parser.add_argument(
        "--write-delay",
        type=float,
        default=0.002,
        help="the gateway's coalescing window measured next to the default 0 (seconds)",
    )
    parser.add_argument(
        "--gateway-from",
        metavar="PATH",
        help="run the gateway from this checkout (e.g. `git archive HEAD | tar -x -C PATH`: "
        "a clean tree while others edit the working one)",
    )
    parser.add_argument(
        "--compare",
        metavar="TAG=PATH",
        action="append",
        default=[],
        help="full mode: also measure idle memory of the gateway from another checkout "
        "(e.g. `git archive REV | tar -x -C PATH`), to show what a change did (repeatable)",
    )
    parser.add_argument(
        "--asyncio",
        action="store_true",
        help="full mode: also measure the gateway on asyncio's own loop (--loop asyncio), "
        "to show what uvloop does",
    )
    parser.add_argument(
        "--browser-headers",
        action="store_true",
        help="full mode: the idle-memory clients send the headers a browser sends (about "
        "600 bytes, bench.load.browser_headers) instead of the fewest",
    )
    parser.add_argument(
        "--no-pin",
        action="store_true",
        help="do not give the server core 0 and the load generators the other cores",
    )
    parser.add_argument("--json", help="write every row (and histograms) to this file")
    parser.add_argument("--from-json", metavar="PATH", help="only redo tables and plot from a run")
    parser.add_argument("--ns", type=int, nargs="+", help="full mode: other N (trial runs)")
    parser.add_argument(
        "--seconds", type=float, help="full mode: shorter windows and 1,000 idle (trial runs)"
    )
    parser.add_argument("--markdown", help="write the tables to this file")
    parser.add_argument(
        "--plot", default=None, help="latency CDF PNG (full mode), e.g. docs/latency.png"
    )
    args = parser.parse_args(argv)
    # Stop cleanly (servers stopped by pid in the finally blocks) on SIGTERM, and
    # on SIGINT even when started in the background, where SIGINT is ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _terminate)
    raise_nofile()
    pin_load(not args.no_pin)
    os.chdir(REPO)
    return quick(args) if args.quick else full(args)


if __name__ == "__main__":
    sys.exit(main())
