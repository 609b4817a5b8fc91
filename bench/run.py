"""The scenarios: fan-out, latency, idle memory, slow reader, the send() floor.

The coordinator (this process) starts each server as its own process, the
subscribers and publishers in worker processes, samples counters, CPU
(/proc/PID/stat) and RSS, and stops everything it started, by pid, in
``finally`` blocks. Every loop here and in the workers has a count and a
deadline.
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import os
import queue
import select
import shutil
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.process import BaseProcess
from typing import Any

from . import load
from .common import HOST, SERVER_CPUS, ProcSample, cores_busy, machine_busy, raise_nofile
from .floor import floor_main
from .servers import Server, ServerKind

__all__ = [
    "Config",
    "Fleet",
    "measure_fanout",
    "measure_floor",
    "measure_latency",
    "measure_memory",
    "measure_publish",
    "measure_slow_reader",
    "run_matrix",
]

CTX = mp.get_context("fork")
Row = dict[str, Any]
Log = Callable[[str], None]


@dataclass
class Config:
    """Knobs of one run (``--quick`` shrinks them)."""

    ns: tuple[int, ...] = (1, 100, 1000)
    latency_ns: tuple[int, ...] = (100, 1000)
    modes: tuple[str, ...] = ("seq", "single", "burst")
    """How messages are published during a fan-out figure: ``seq`` one connection
    POSTing one message at a time, ``single`` several such connections at once,
    ``burst`` batch POSTs (servers without a batch endpoint: no figure)."""
    warmup: float = 1.0
    window: float = 3.0
    single_pub_procs: int = 2
    single_pub_conns: int = 4
    """Publishers POSTing one message per request: procs x conns, closed loop."""
    burst_size: int = 100
    burst_conns: int = 2
    latency_rate: float = 100.0
    latency_seconds: float = 6.0
    memory_steps: tuple[int, ...] = (1000, 5000, 10000)
    slow_seconds: float = 20.0
    floor_n: int = 1000
    floor_seconds: float = 3.0
    sub_workers: int = 4
    spin: float = 0.002
    """Subscribers poll without blocking this long after data (see load.SubConfig.spin)."""
    c_subscribers: bool = True
    """Latency with bench/latsub.c (built with the machine's C compiler, if any)."""


@dataclass
class Fleet:
    """Worker processes sharing one counter array; stopped by pid."""

    procs: list[BaseProcess] = field(default_factory=list)
    counters: Any = None
    stop_event: Any = None
    results: Any = None
    ctrl: Any = None

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs if p.pid is not None]

    def total(self, slot: int) -> int:
        return sum(self.counters[i * load.SLOTS + slot] for i in range(len(self.procs)))

    def alive(self) -> bool:
        return any(p.is_alive() for p in self.procs)

    # -- latency recording (the same three calls as _CSubscribers) -------------
    kind = "python"
    _lat_d0: int = 0

    def latency_start(self) -> None:
        self._lat_d0 = self.total(load.C_DELIVERED)
        self.ctrl.value = load.LAT_ON

    def latency_settle(self) -> None:
        wait_quiet(self, load.C_DELIVERED, quiet=0.5)

    def latency_results(self) -> tuple[int, Counter[int], float, Counter[int], float]:
        """(received, in-process histogram, its max, socket histogram, its max)."""
        hist: Counter[int] = Counter()
        khist: Counter[int] = Counter()
        lat_max = klat_max = 0.0
        self.ctrl.value = load.LAT_DUMP
        for _ in self.procs:
            _slot, part, part_max, kpart, kpart_max = self.results.get(timeout=10.0)
            hist.update(part)
            lat_max = max(lat_max, part_max)
            khist.update(kpart)
            klat_max = max(klat_max, kpart_max)
        self.ctrl.value = load.LAT_OFF
        return self.total(load.C_DELIVERED) - self._lat_d0, hist, lat_max, khist, klat_max

    def stop(self, timeout: float = 5.0) -> None:
        if self.stop_event is not None:
            self.stop_event.set()
        deadline = time.monotonic() + timeout
        for p in self.procs:
            p.join(max(0.0, deadline - time.monotonic()))
        for p in self.procs:
            if p.is_alive():
                p.kill()
                p.join(2.0)


def _split(total: int, parts: int) -> list[int]:
    parts = max(1, min(parts, total))
    return [total // parts + (1 if i < total % parts else 0) for i in range(parts)]


def start_subscribers(
    port: int,
    transport: str,
    path: str,
    n: int,
    workers: int,
    *,
    mode: str,
    lifetime: float,
    spin: float = 0.002,
    browser: bool = False,
) -> Fleet:
    shares = _split(n, workers)
    fleet = Fleet(
        counters=CTX.Array("q", len(shares) * load.SLOTS, lock=False),
        stop_event=CTX.Event(),
        results=CTX.Queue(),
        ctrl=CTX.Value("i", 0, lock=False),
    )
    deadline = time.monotonic() + lifetime
    for i, conns in enumerate(shares):
        cfg = load.SubConfig(
            port, transport, path, conns, mode=mode, deadline=deadline, spin=spin, browser=browser
        )
        p = CTX.Process(
            target=load.subscriber_main,
            args=(cfg, fleet.counters, i, fleet.stop_event, fleet.results, fleet.ctrl),
            daemon=True,
        )
        p.start()
        fleet.procs.append(p)
    return fleet


def start_publishers(cfgs: list[load.PubConfig]) -> Fleet:
    fleet = Fleet(
        counters=CTX.Array("q", len(cfgs) * load.SLOTS, lock=False), stop_event=CTX.Event()
    )
    for i, cfg in enumerate(cfgs):
        p = CTX.Process(
            target=load.publisher_main, args=(cfg, fleet.counters, i, fleet.stop_event), daemon=True
        )
        p.start()
        fleet.procs.append(p)
    return fleet


def wait_connected(fleet: Fleet, n: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fleet.total(load.C_CONNECTED)
        if got >= n or got + fleet.total(load.C_FAILED) >= n:
            return got
        time.sleep(0.05)
    return fleet.total(load.C_CONNECTED)


def wait_quiet(fleet: Fleet, slot: int, quiet: float = 0.3, timeout: float = 5.0) -> None:
    """Wait until a counter stops moving (the backlog has drained)."""
    deadline = time.monotonic() + timeout
    last, since = fleet.total(slot), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = fleet.total(slot)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return


def _stream_path(transport: str) -> str:
    return f"/{transport}/bench"


def _workers_for(n: int, cfg: Config) -> int:
    return 1 if n <= 10 else min(cfg.sub_workers, 2 if n <= 100 else cfg.sub_workers)


def _limiter(server_cpu: float, client_cpu: float, pub_cpu: float, core: float | None) -> str:
    """Which side bounded a throughput figure (2 cores: the server can use one).

    ``core``: how busy the server's own core was (softirq included), when pinned.
    """
    if server_cpu >= 0.85 or (core is not None and core >= 0.9):
        return "server"
    if client_cpu + pub_cpu >= 0.85:
        return "clients"
    return "round trips"


def measure_fanout(
    server: Server, subs: Fleet, transport: str, n: int, mode: str, cfg: Config
) -> Row:
    """Deliveries/s with publishers as fast as the server answers them."""
    now = time.monotonic()
    deadline = now + cfg.warmup + cfg.window + 30.0
    port = server.port
    if mode == "seq":
        pubs = start_publishers([load.PubConfig(port, "/topics/bench", 1, deadline=deadline)])
    elif mode == "single":
        pubs = start_publishers(
            [
                load.PubConfig(port, "/topics/bench", cfg.single_pub_conns, deadline=deadline)
                for _ in range(cfg.single_pub_procs)
            ]
        )
    else:
        pubs = start_publishers(
            [
                load.PubConfig(
                    port,
                    "/topics/bench/batch",
                    cfg.burst_conns,
                    batch=cfg.burst_size,
                    deadline=deadline,
                )
            ]
        )
    try:
        time.sleep(cfg.warmup)
        server_pids = server.pids()
        pids = [*server_pids, *subs.pids, *pubs.pids]
        d0, m0, c0 = (
            subs.total(load.C_DELIVERED),
            pubs.total(load.C_MESSAGES),
            subs.total(load.C_CLOSED),
        )
        s0 = ProcSample.take(pids)
        m_0, k_0 = machine_busy(), cores_busy(SERVER_CPUS)
        time.sleep(cfg.window)
        m_1, k_1 = machine_busy(), cores_busy(SERVER_CPUS)
        s1 = ProcSample.take(pids)
        d1, m1, c1 = (
            subs.total(load.C_DELIVERED),
            pubs.total(load.C_MESSAGES),
            subs.total(load.C_CLOSED),
        )
        failed = pubs.total(load.C_FAILED)
    finally:
        pubs.stop()
    wall = s1.wall - s0.wall
    delivered = d1 - d0
    server_cpu = s1.cpu_since(s0, server_pids) / wall
    segs = s1.segs_since(s0)
    client_cpu = s1.cpu_since(s0, subs.pids) / wall
    pub_cpu = s1.cpu_since(s0, pubs.pids) / wall
    core = (k_1 - k_0) / wall / len(SERVER_CPUS) if SERVER_CPUS else None
    return {
        "scenario": "fanout",
        "server": server.kind.name,
        "label": server.kind.label,
        "transport": transport,
        "n": n,
        "mode": mode,
        "deliveries_per_s": delivered / wall,
        "published_per_s": (m1 - m0) / wall,
        "server_us_per_delivery": server_cpu * wall * 1e6 / delivered if delivered else None,
        "server_processes": len(server_pids),
        "tcp_segments": segs,
        "segments_per_delivery": segs / delivered if delivered else None,
        "server_cpu": server_cpu,
        "client_cpu": client_cpu,
        "publisher_cpu": pub_cpu,
        "server_core_busy": core,
        "limited_by": _limiter(server_cpu, client_cpu, pub_cpu, core),
        "other_cpu": max(0.0, (m_1 - m_0) / wall - server_cpu - client_cpu - pub_cpu),
        "dropped_connections": c1 - c0,
        "publish_errors": failed,
    }


def _coarse(hist: Counter[int]) -> dict[str, int]:
    """The histogram in ~2 % wide buckets, keyed by milliseconds (for the plot)."""
    out: Counter[float] = Counter()
    for bucket, count in hist.items():
        ms = (bucket + 0.5) / load.LAT_BUCKET
        out[round(1.02 ** round(math.log(ms, 1.02)), 4)] += count
    return {f"{ms:g}": count for ms, count in sorted(out.items())}


def _percentile(hist: Counter[int], total: int, q: float) -> float:
    target = math.ceil(total * q)
    seen = 0
    for bucket in sorted(hist):
        seen += hist[bucket]
        if seen >= target:
            return (bucket + 0.5) / load.LAT_BUCKET
    return 0.0


def latsub_binary() -> str | None:
    """Build ``latsub.c`` (the C latency subscribers) once; None without a C compiler."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = os.path.join(os.path.dirname(os.path.abspath(__file__)), "latsub.c")
    with open(src, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:12]
    out = os.path.join(tempfile.gettempdir(), f"streamgate-latsub-{digest}")
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}"
        done = subprocess.run([cc, "-O2", "-o", tmp, src], capture_output=True, timeout=120)
        if done.returncode != 0:
            return None
        os.replace(tmp, out)
    return out


class _CSubscribers:
    """``latsub`` in a process of its own: ready, start, stop -> histograms."""

    def __init__(self, binary: str, port: int, transport: str, n: int, cfg: Config) -> None:
        request = load.request_bytes(load.SubConfig(port, transport, _stream_path(transport), n))
        self.proc = subprocess.Popen(
            [binary, str(port), str(n), str(cfg.latency_seconds + 20.0), request.decode()],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.pids = [self.proc.pid]
        line = self._line(60.0)
        if not line.startswith("ready ") or int(line.split()[1]) < n:
            self.stop()
            raise RuntimeError(f"latsub: {line.strip() or 'no answer'} (wanted {n})")

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        return self.proc.stdout.readline() if ready else ""

    kind = "c"

    def command(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word + "\n")
        self.proc.stdin.flush()

    def latency_start(self) -> None:
        self.command("start")

    def latency_settle(self) -> None:
        time.sleep(0.5)  # the last messages' fan-out (a few ms) is long over

    def latency_results(self) -> tuple[int, Counter[int], float, Counter[int], float]:
        self.command("stop")
        parts = self._line(20.0).split()
        if not parts or parts[0] != "result":
            raise RuntimeError("latsub gave no result")
        delivered, max_app, max_sock = int(parts[1]), float(parts[4]), float(parts[5])
        hist: Counter[int] = Counter()
        khist: Counter[int] = Counter()
        rest = parts[6:]
        for i in range(0, len(rest), 3):
            (hist if rest[i] == "a" else khist)[int(rest[i + 1])] += int(rest[i + 2])
        return delivered, hist, max_app, khist, max_sock

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10.0)


def _publish_paced(server: Server, cfg: Config) -> tuple[int, int]:
    """One publisher on a fixed schedule: (scheduled, published)."""
    count = int(cfg.latency_rate * cfg.latency_seconds)
    pubs = start_publishers(
        [
            load.PubConfig(
                server.port,
                "/topics/bench",
                1,
                rate=cfg.latency_rate,
                max_requests=count,
                deadline=time.monotonic() + cfg.latency_seconds + 10.0,
            )
        ]
    )
    try:
        for p in pubs.procs:
            p.join(cfg.latency_seconds + 12.0)
        return count, pubs.total(load.C_MESSAGES)
    finally:
        pubs.stop()


def measure_latency(
    server: Server, subs: Fleet | _CSubscribers, transport: str, n: int, cfg: Config
) -> Row:
    """Publish -> receipt at a steady rate; every delivery is timed."""
    server_pids = server.pids()
    s0 = ProcSample.take([*server_pids, *subs.pids])
    k_0 = cores_busy(SERVER_CPUS)
    subs.latency_start()
    time.sleep(0.2)  # every worker has seen the switch
    count, published = _publish_paced(server, cfg)
    subs.latency_settle()
    s1 = ProcSample.take([*server_pids, *subs.pids])
    k_1 = cores_busy(SERVER_CPUS)
    received, hist, lat_max, khist, klat_max = subs.latency_results()
    total = sum(hist.values())
    wall = s1.wall - s0.wall
    server_cpu_s = s1.cpu_since(s0, server_pids)
    segs = s1.segs_since(s0)
    return {
        "scenario": "latency",
        "server": server.kind.name,
        "label": server.kind.label,
        "transport": transport,
        "n": n,
        "subscribers": subs.kind,
        "rate": cfg.latency_rate,
        "scheduled": count,
        "published": published,
        "expected": published * n,
        "received": received,
        "timed": total,
        # Received by the subscriber process (after its recvmsg()) ...
        "p50_ms": _percentile(hist, total, 0.50),
        "p99_ms": _percentile(hist, total, 0.99),
        "max_ms": lat_max,
        # ... and queued on its socket by the kernel (SO_TIMESTAMPNS).
        "sock_p50_ms": _percentile(khist, total, 0.50),
        "sock_p99_ms": _percentile(khist, total, 0.99),
        "sock_max_ms": klat_max,
        "server_cpu": server_cpu_s / wall,
        "server_core_busy": (k_1 - k_0) / wall / len(SERVER_CPUS) if SERVER_CPUS else None,
        "server_us_per_delivery": server_cpu_s * 1e6 / total if total else None,
        "server_processes": len(server_pids),
        "tcp_segments": segs,
        "segments_per_delivery": segs / received if received else None,
        "client_cpu": s1.cpu_since(s0, subs.pids) / wall,
        "hist_ms": _coarse(hist),
        "sock_hist_ms": _coarse(khist),
    }


def wait_server_idle(server: Server, timeout: float = 20.0) -> None:
    """Wait until the server stops burning CPU (backlogs written or dropped)."""
    deadline = time.monotonic() + timeout
    last = server.cpu()
    while time.monotonic() < deadline:
        time.sleep(0.3)
        now = server.cpu()
        if now - last < 0.3 * 0.1:
            return
        last = now


def _phase(server: Server, transport: str, n: int, phase: str, cfg: Config, log: Log) -> Row:
    """One figure with a fresh set of subscribers (no backlog from the last one)."""
    binary = latsub_binary() if phase == "latency" and cfg.c_subscribers else None
    if binary is not None:
        csubs = _CSubscribers(binary, server.port, transport, n, cfg)
        try:
            time.sleep(0.3)
            row = measure_latency(server, csubs, transport, n, cfg)
            log(_fmt_latency(row))
            return row
        finally:
            csubs.stop()
            wait_server_idle(server)
    subs = start_subscribers(
        server.port,
        transport,
        _stream_path(transport),
        n,
        _workers_for(n, cfg),
        mode="count",
        lifetime=120.0,
        # With one subscriber there are no wake-ups to save, and a spinning
        # subscriber would take a third of the core the publishers need.
        spin=cfg.spin if n > 1 else 0.0,
    )
    try:
        got = wait_connected(subs, n, 60.0)
        if got < n:
            raise RuntimeError(
                f"{server.kind.name}/{transport}: {got} of {n} subscribers connected"
            )
        time.sleep(0.3)
        if phase == "latency":
            row = measure_latency(server, subs, transport, n, cfg)
            log(_fmt_latency(row))
        else:
            row = measure_fanout(server, subs, transport, n, phase, cfg)
            log(_fmt_fanout(row))
        return row
    finally:
        subs.stop()
        wait_server_idle(server)


NO_BATCH = "no batch publish endpoint"


def run_matrix(
    kinds: list[ServerKind], transports: tuple[str, ...], cfg: Config, log: Log
) -> list[Row]:
    """Per transport, each server back to back: fan-out at every N, then latency."""
    rows: list[Row] = []
    for transport in transports:
        for kind in kinds:
            if transport not in kind.transports:
                continue
            try:
                server = Server(kind).start()
            except RuntimeError as exc:
                log(f"  ERROR   {kind.label} {transport}: {exc}")
                continue
            try:
                for n in cfg.ns:
                    phases = list(cfg.modes)
                    if "burst" in phases and not kind.batch:
                        # No batch endpoint: no figure, said so in the rows and the tables
                        # (its concurrent one-message POSTs are the 'single' regime).
                        phases.remove("burst")
                        log(f"  n/a     {kind.label} {transport} N={n} burst: {NO_BATCH}")
                        rows.append(
                            {
                                "scenario": "na",
                                "server": kind.name,
                                "label": kind.label,
                                "transport": transport,
                                "n": n,
                                "mode": "burst",
                                "reason": NO_BATCH,
                            }
                        )
                    if n in cfg.latency_ns:
                        phases.insert(0, "latency")
                    for phase in phases:
                        try:
                            rows.append(_phase(server, transport, n, phase, cfg, log))
                        except (RuntimeError, OSError, queue.Empty) as exc:
                            # One figure lost is reported, not the whole run.
                            log(f"  ERROR   {kind.label} {transport} N={n} {phase}: {exc!r}")
                            rows.append(
                                {
                                    "scenario": "error",
                                    "server": kind.name,
                                    "transport": transport,
                                    "n": n,
                                    "phase": phase,
                                    "error": repr(exc),
                                }
                            )
            finally:
                server.stop()
    return rows


def measure_publish(kind: ServerKind, cfg: Config, log: Log, rounds: int = 3) -> Row:
    """POSTs answered per second with no subscriber: one message per POST from
    ``single_pub_procs`` x ``single_pub_conns`` connections in a closed loop
    (the publishing cost alone, against the framework's bare handler). The
    best of ``rounds`` windows, each after a warm-up, on one server process."""
    server = Server(kind).start()
    try:
        best: Row | None = None
        for _ in range(rounds):
            deadline = time.monotonic() + cfg.warmup + cfg.window + 30.0
            pubs = start_publishers(
                [
                    load.PubConfig(
                        server.port, "/topics/bench", cfg.single_pub_conns, deadline=deadline
                    )
                    for _ in range(cfg.single_pub_procs)
                ]
            )
            try:
                time.sleep(cfg.warmup)
                server_pids = server.pids()
                r0 = pubs.total(load.C_REQUESTS)
                s0 = ProcSample.take([*server_pids, *pubs.pids])
                time.sleep(cfg.window)
                s1 = ProcSample.take([*server_pids, *pubs.pids])
                r1 = pubs.total(load.C_REQUESTS)
                failed = pubs.total(load.C_FAILED)
            finally:
                pubs.stop()
            wall = s1.wall - s0.wall
            row = {
                "scenario": "publish",
                "server": kind.name,
                "label": kind.label,
                "requests_per_s": (r1 - r0) / wall,
                "server_cpu": s1.cpu_since(s0, server_pids) / wall,
                "publisher_cpu": s1.cpu_since(s0, pubs.pids) / wall,
                "publish_errors": failed,
            }
            if best is None or row["requests_per_s"] > best["requests_per_s"]:
                best = row
        assert best is not None
        log(
            f"  publish {kind.label:<24} {best['requests_per_s']:>9,.0f} POST/s  "
            f"server {best['server_cpu']:.0%}  publishers {best['publisher_cpu']:.0%}"
        )
        return best
    finally:
        server.stop()


def _fmt_fanout(r: Row) -> str:
    us = r["server_us_per_delivery"]
    return (
        f"  fanout  {r['label']:<24} {r['transport']:<7} N={r['n']:<5} {r['mode']:<6} "
        f"{r['deliveries_per_s']:>11,.0f} deliv/s  {r['published_per_s']:>8,.0f} msg/s  "
        f"{(us or 0):6.2f} us/deliv  {r['segments_per_delivery'] or 0:5.2f} seg/deliv  "
        f"cpu srv {r['server_cpu']:.0%} "
        f"(core {r['server_core_busy'] or 0:.0%}) cli {r['client_cpu']:.0%} "
        f"pub {r['publisher_cpu']:.0%} other {r['other_cpu']:.0%} [{r['limited_by']}]"
        + (f" DROPPED {r['dropped_connections']}" if r["dropped_connections"] else "")
    )


def _fmt_latency(r: Row) -> str:
    return (
        f"  latency {r['label']:<24} {r['transport']:<7} N={r['n']:<5} at the socket: "
        f"p50 {r['sock_p50_ms']:.2f} ms  p99 {r['sock_p99_ms']:.2f} ms  "
        f"max {r['sock_max_ms']:.1f} ms; in the subscriber: "
        f"p50 {r['p50_ms']:.2f} ms  p99 {r['p99_ms']:.2f} ms  max {r['max_ms']:.1f} ms  "
        f"received {r['received']}/{r['expected']} (published {r['published']}/"
        f"{r['scheduled']})  {r['server_us_per_delivery'] or 0:.2f} us/deliv  "
        f"{r['segments_per_delivery'] or 0:.2f} seg/deliv  "
        f"cpu srv {r['server_cpu']:.0%} (core {r['server_core_busy'] or 0:.0%}) "
        f"cli {r['client_cpu']:.0%}"
    )


def measure_memory(
    kind: ServerKind, transport: str, steps: tuple[int, ...], log: Log, *, browser: bool = False
) -> Row:
    """Server RSS with idle streams open, step by step to ``steps[-1]`` connections
    (their requests with a browser's headers if ``browser``, else the fewest)."""
    server = Server(kind).start()
    fleets: list[Fleet] = []
    path = _stream_path(transport)
    points: list[dict[str, Any]] = []
    try:
        warm = start_subscribers(
            server.port, transport, path, 20, 1, mode="idle", lifetime=30, browser=browser
        )
        wait_connected(warm, 20, 10.0)
        warm.stop()
        time.sleep(1.0)
        rss0 = server.rss_kib()
        total = 0
        for target in steps:
            add = target - total
            fleet = start_subscribers(
                server.port,
                transport,
                path,
                add,
                math.ceil(add / 2500),
                mode="idle",
                lifetime=240.0,
                browser=browser,
            )
            fleets.append(fleet)
            wait_connected(fleet, add, 90.0)
            total = target
            time.sleep(1.5)
            rss = server.rss_kib()
            held = sum(f.total(load.C_CONNECTED) for f in fleets)
            status, body = server.get("/healthz")
            point = {
                "connections": target,
                "held_by_clients": held,
                "server_says": _health(body) if status == 200 else status,
                "rss_kib": rss,
                "kib_per_connection": (rss - rss0) / target,
            }
            points.append(point)
            log(
                f"  memory  {kind.label:<24} {transport:<7} {target:>6} conns  "
                f"held {held:>6}  RSS {rss / 1024:7.1f} MiB  "
                f"{point['kib_per_connection']:.2f} KiB/conn"
                + (" (browser headers)" if browser else "")
            )
            if held < target:
                break
    finally:
        for f in fleets:
            f.stop()
        server.stop()
    return {
        "scenario": "memory",
        "server": kind.name,
        "label": kind.label,
        "transport": transport,
        "rss_of": "nginx worker" if kind.rss_of == "workers" else "server process",
        "request_headers": "browser" if browser else "fewest",
        "rss0_kib": rss0,
        "points": points,
    }


def _health(body: bytes) -> str:
    """What ``/healthz`` says, short (Nchan's stub status: its channel and subscriber lines)."""
    text = body.decode(errors="replace")
    if "nchan version" in text:
        text = ", ".join(
            line for line in text.splitlines() if line.startswith(("channels:", "subscribers:"))
        )
    return text[:200]


def measure_slow_reader(kind: ServerKind, seconds: float, log: Log) -> Row:
    """``GET /chunked/count?n=1000000`` read slowly while server RSS is sampled."""
    server = Server(kind).start()
    counters = CTX.Array("q", load.SLOTS, lock=False)
    reader = CTX.Process(
        target=load.slow_reader_main,
        args=(
            server.port,
            "/chunked/count?n=1000000",
            16384,
            0.02,
            time.monotonic() + seconds + 5.0,
            counters,
        ),
        daemon=True,
    )
    samples: list[tuple[float, int]] = []
    try:
        rss0 = server.rss_kib()
        reader.start()
        start = time.monotonic()
        while time.monotonic() - start < seconds and reader.is_alive():
            time.sleep(0.5)
            samples.append((time.monotonic() - start, server.rss_kib()))
        items = counters[load.C_DELIVERED]
    finally:
        reader.kill()
        reader.join(2.0)
        server.stop()
    after = [rss for t, rss in samples if t >= 2.0] or [rss0]
    row = {
        "scenario": "slow_reader",
        "server": kind.name,
        "label": kind.label,
        "rss0_kib": rss0,
        "rss_first_kib": after[0],
        "rss_max_kib": max(after),
        "rss_last_kib": after[-1],
        "growth_kib": after[-1] - after[0],
        "items_read": items,
        "seconds": seconds,
        "samples": samples,
    }
    log(
        f"  slow    {kind.label:<24} read {items:,} items in {seconds:.0f} s; RSS "
        f"{after[0] / 1024:.1f} -> max {max(after) / 1024:.1f} -> {after[-1] / 1024:.1f} MiB"
    )
    return row


def measure_floor(
    n: int, per_send: int, seconds: float, cfg: Config, log: Log, interval: float = 0.0
) -> Row:
    """The plain send() loop, same machine, same run (paced when ``interval``)."""
    raise_nofile()
    listener = socket.socket()
    listener.bind((HOST, 0))
    listener.listen(4096)
    port = listener.getsockname()[1]
    results = CTX.Queue()
    proc = CTX.Process(
        target=floor_main,
        args=(listener, n, per_send, seconds, results, interval),
        daemon=True,
    )
    proc.start()
    listener.close()
    subs = start_subscribers(
        port, "raw", "", n, _workers_for(n, cfg), mode="count", lifetime=seconds + 30
    )
    try:
        r = results.get(timeout=seconds + 25)
    finally:
        proc.join(3.0)
        if proc.is_alive():
            proc.kill()
            proc.join(2.0)
        subs.stop()
    calls = r["sends"] + r["blocked"]
    row = {
        "scenario": "floor",
        "n": n,
        "per_send": per_send,
        "interval": interval,
        "us_per_send_call": r["cpu"] * 1e6 / calls if calls else None,
        "us_per_delivery": r["cpu"] * 1e6 / (r["sends"] * per_send) if r["sends"] else None,
        "deliveries_per_s": r["sends"] * per_send / r["wall"],
        "blocked_fraction": r["blocked"] / calls if calls else 0.0,
        "cpu": r["cpu"] / r["wall"],
    }
    log(
        f"  floor   send() x{per_send:<3} N={n:<5} "
        + (f"every {interval * 1000:g} ms " if interval else "")
        + f"{row['deliveries_per_s']:>11,.0f} deliv/s  "
        f"{row['us_per_send_call']:.2f} us/send()  {row['us_per_delivery']:.2f} us/deliv  "
        f"blocked {row['blocked_fraction']:.0%}"
    )
    return row
