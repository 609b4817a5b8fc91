"""What every part of the harness shares: /proc readers, ports, file limits, the payload.

Everything here talks to 127.0.0.1 only.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import time
from dataclasses import dataclass

__all__ = [
    "HOST",
    "PATTERN",
    "REPO",
    "SERVER_CPUS",
    "TICK",
    "ProcSample",
    "cores_busy",
    "free_port",
    "machine_busy",
    "pin_load",
    "proc_cpu",
    "proc_rss_kib",
    "publish_body",
    "raise_nofile",
    "server_preexec",
    "session_pids",
    "tcp_out_segs",
]

HOST = "127.0.0.1"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICK = os.sysconf("SC_CLK_TCK")

PATTERN = b'"t0":'
"""Once per message on every transport: the bench's publish time, the only data key."""


def publish_body() -> bytes:
    """One message's data: ``{"t0": <publish time, epoch ms>}`` (the message is ~100 bytes)."""
    return b'{"t0":%.3f}' % (time.time() * 1000.0)


SERVER_CPUS = {0}
"""With two cores or more, the server under test runs on core 0 and the load
generators (and the coordinator) on the others: a server with clients on other
machines does not share its core with them; see ``pin_load``."""


def pin_load(pin: bool = True) -> None:
    """Keep this process (and what it forks) off the server's core (``pin=False``:
    let the scheduler place everything, servers included)."""
    if not pin:
        SERVER_CPUS.clear()
        return
    cpus = set(range(os.cpu_count() or 1)) - SERVER_CPUS
    if cpus:
        os.sched_setaffinity(0, cpus)


def server_preexec() -> None:
    """In a server's child process: its own core, a raised file limit, and death
    with the coordinator.

    PR_SET_PDEATHSIG makes the kernel send SIGTERM to the server if the bench
    that started it dies without its ``finally`` blocks (SIGKILL, a crash).
    """
    raise_nofile()
    if SERVER_CPUS and (os.cpu_count() or 1) > 1:
        os.sched_setaffinity(0, SERVER_CPUS)
    else:
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def raise_nofile() -> int:
    """Raise the soft file limit to the hard one, as a real deployment would."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def proc_cpu(pid: int) -> float:
    """User + system CPU seconds of a process (all its threads), from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return 0.0
    fields = raw[raw.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def proc_rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def session_pids(sid: int) -> list[int]:
    """The live processes of session ``sid``, its leader first (/proc/PID/stat).

    A server is started as a session leader (``start_new_session``), so this is
    the server and every process it forked: nginx's master and its workers.
    """
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                raw = f.read()
        except OSError:
            continue
        fields = raw[raw.rindex(b")") + 2 :].split()
        if fields[0] != b"Z" and int(fields[3]) == sid:
            found.append(int(name))
    return sorted(found, key=lambda pid: (pid != sid, pid))


def tcp_out_segs() -> int:
    """TCP segments sent so far (``Tcp: OutSegs`` in /proc/net/snmp).

    The count is the network namespace's, so every process on the host (or in
    the container) adds to it: the server's data, the subscribers' ACKs, the
    publishers' requests and their answers, and anything else running.
    """
    with open("/proc/net/snmp") as f:
        rows = [line.split() for line in f if line.startswith("Tcp:")]
    return int(rows[1][rows[0].index("OutSegs")])


def machine_busy() -> float:
    """CPU seconds the whole machine has spent busy (all cores), from /proc/stat."""
    with open("/proc/stat", "rb") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / TICK


def cores_busy(cpus: set[int]) -> float:
    """CPU seconds the given cores have spent busy, softirq included (/proc/stat).

    On loopback the receive half of every send() runs as softirq on the sender's
    core and is not charged to the sending process: the server's core can be
    saturated while its process shows 70 %.
    """
    total = 0
    with open("/proc/stat", "rb") as f:
        for line in f:
            if not line.startswith(b"cpu") or line.startswith(b"cpu "):
                continue
            name, *rest = line.split()
            if int(name[3:]) in cpus:
                fields = [int(x) for x in rest]
                total += sum(fields[:8]) - fields[3] - fields[4]
    return total / TICK


@dataclass(frozen=True, slots=True)
class ProcSample:
    """Wall time, CPU seconds of a set of processes and the host's TCP segments
    sent, at one instant."""

    wall: float
    cpu: dict[int, float]
    segs: int = 0

    @classmethod
    def take(cls, pids: list[int]) -> ProcSample:
        return cls(time.monotonic(), {pid: proc_cpu(pid) for pid in pids}, tcp_out_segs())

    def cpu_since(self, earlier: ProcSample, pids: list[int]) -> float:
        return sum(self.cpu.get(p, 0.0) - earlier.cpu.get(p, 0.0) for p in pids)

    def segs_since(self, earlier: ProcSample) -> int:
        return self.segs - earlier.segs
