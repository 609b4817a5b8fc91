"""The servers under test, each its own process (and process group) on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from . import nchan
from .common import (
    HOST,
    REPO,
    free_port,
    proc_cpu,
    proc_rss_kib,
    raise_nofile,
    server_preexec,
    session_pids,
)

__all__ = ["KINDS", "PEERS", "Server", "ServerKind"]


@dataclass(frozen=True, slots=True)
class ServerKind:
    """How to start one server design."""

    name: str
    label: str
    module: str
    args: tuple[str, ...] = ()
    transports: tuple[str, ...] = ("chunked", "sse", "ws")
    repo: str = REPO
    """Where the server's code is imported from (an older checkout, to compare)."""
    env: tuple[tuple[str, str], ...] = ()
    """Environment variables for the server (``STREAMGATE_METRICS=false``), over ours."""
    engine: str = "python"
    """``python``: ``python -m module``; ``nchan``: nginx with the Nchan module."""
    batch: bool = True
    """Has ``POST /topics/{t}/batch`` (Nchan has no batch publish)."""
    rss_of: str = "server"
    """Whose RSS is its memory: ``server`` (the one process) or ``workers``
    (nginx's worker processes: the master holds no connection)."""


def gateway_kind(
    write_delay: float,
    max_queue_bytes: int | None = None,
    repo: str | None = None,
    tag: str = "",
    loop: str = "auto",
) -> ServerKind:
    """The gateway under test; ``repo``/``tag`` run another checkout of it, to compare.

    ``loop``: its ``--loop`` ('auto' is uvloop, installed with the gateway).
    """
    label = "streamgate" if not write_delay else f"streamgate wd={write_delay * 1000:g}ms"
    name = "gateway" if not write_delay else f"gateway-wd{write_delay * 1000:g}"
    if loop != "auto":
        label += f" {loop} loop"
        name += f"-{loop}"
    return ServerKind(
        name=name + (f"@{tag}" if tag else ""),
        label=label + (f" @{tag}" if tag else ""),
        repo=os.path.abspath(repo) if repo else REPO,
        module="gateway",
        args=(
            "serve",
            "--tick-interval",
            "0",
            "--topic",
            "bench",
            "--write-delay",
            str(write_delay),
            *(("--max-queue-bytes", str(max_queue_bytes)) if max_queue_bytes else ()),
            *(("--loop", loop) if loop != "auto" else ()),
            "--log-level",
            "warning",
        ),
    )


KINDS = {
    "baseline": ServerKind("baseline", "tutorial baseline", "bench.baseline", ("--topic", "bench")),
    "starlette": ServerKind(
        "starlette",
        "sse-starlette/uvicorn[standard]",
        "bench.peer",
        ("--topic", "bench"),
        ("sse",),
    ),
    "starlette-plain": ServerKind(
        "starlette-plain",
        "sse-starlette/plain uvicorn",
        "bench.peer",
        ("--topic", "bench", "--loop", "asyncio", "--http", "h11"),
        ("sse",),
    ),
    "bare": ServerKind("bare", "bare aiohttp handler (201)", "bench.bare", transports=()),
    "nchan": ServerKind(
        "nchan", "Nchan (nginx, 1 worker)", "nginx", engine="nchan", batch=False, rss_of="workers"
    ),
}
PEERS = tuple(k for k in KINDS if k != "bare")
"""The servers streamgate is measured against (``--peers``)."""


@dataclass
class Server:
    """A started server process; ``stop()`` ends its whole process group."""

    kind: ServerKind
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    prefix: str = ""
    """Nchan: the temp dir holding nginx's config, pid file, logs and temp paths."""
    wrap: tuple[str, ...] = ()
    """A command the Python server runs under (``valgrind --tool=callgrind``)."""
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> Server:
        self.port = free_port()
        if self.kind.engine == "nchan":
            argv, cwd, env = self._nginx_argv()
        else:
            argv = [sys.executable, "-m", self.kind.module, *self.kind.args]
            if self.kind.module == "gateway":
                argv[4:4] = ["--host", HOST, "--port", str(self.port)]
            else:
                argv += ["--port", str(self.port)]
            argv[:0] = self.wrap
            path = os.pathsep.join(dict.fromkeys([self.kind.repo, REPO]))
            cwd, env = self.kind.repo, dict(os.environ, PYTHONPATH=path)
            env.update(self.kind.env)
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.kind.name)
        fd, self.log_path = tempfile.mkstemp(prefix=f"bench-{safe}-", suffix=".log")
        self.proc = subprocess.Popen(
            argv,
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=fd,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=server_preexec,
            env=env,
        )
        os.close(fd)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind.name} exited: {self.log_tail()}")
            try:
                status, _ = self.get("/healthz")
                if status == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.kind.name} did not answer within {timeout} s")

    def _nginx_argv(self) -> tuple[list[str], str, dict[str, str]]:
        """``nginx -c CONF -p DIR`` with a config of its own in a fresh temp dir."""
        setup = nchan.locate()
        if isinstance(setup, str):
            raise RuntimeError(f"Nchan: {setup}")
        self.prefix = tempfile.mkdtemp(prefix="bench-nchan-")
        # Started by root, nginx runs its worker as 'nobody': let it into the dir.
        os.chmod(self.prefix, 0o755)
        conf = os.path.join(self.prefix, "nginx.conf")
        with open(conf, "w") as f:
            f.write(nchan.config(setup, self.prefix, self.port, raise_nofile()))
        argv = [setup.nginx, "-c", conf, "-p", self.prefix + "/"]
        if setup.has_error_log_flag:
            argv += ["-e", os.path.join(self.prefix, "error.log")]
        return argv, self.prefix, dict(os.environ)

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def pids(self) -> list[int]:
        """Every process of the server (its session), the one started first."""
        return session_pids(self.pid) if self.proc is not None else []

    def cpu(self) -> float:
        """User + system CPU seconds of all the server's processes."""
        return sum(proc_cpu(pid) for pid in self.pids())

    def memory_pids(self) -> list[int]:
        """The processes whose RSS is the server's memory (nginx: its workers)."""
        pids = self.pids()
        if self.kind.rss_of == "workers":
            return [p for p in pids if p != self.pid] or pids
        return pids[:1]

    def rss_kib(self) -> int:
        return sum(proc_rss_kib(pid) for pid in self.memory_pids())

    def log_tail(self) -> str:
        text = ""
        paths = [self.log_path]
        if self.prefix:
            paths.append(os.path.join(self.prefix, "error.log"))
        for path in paths:
            try:
                with open(path, errors="replace") as f:
                    text += f.read()[-2000:]
            except OSError:
                pass
        return text

    def stop(self) -> None:
        """SIGTERM by pid (nginx: its master, which stops its workers; a Python
        server: its process group), SIGKILL past 8 s; then whatever of the
        server's processes is left, by pid."""
        proc = self.proc
        if proc is None:
            return
        leader = proc.pid
        if proc.poll() is None:
            try:
                if self.kind.engine == "nchan":
                    os.kill(leader, signal.SIGTERM)  # nginx: fast shutdown
                else:
                    os.killpg(leader, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(leader, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        # A worker that outlived its master still belongs to the session.
        deadline = time.monotonic() + 5.0
        while (left := session_pids(leader)) and time.monotonic() < deadline:
            for pid in left:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.05)
        self.proc = None
        if self.log_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
        if self.prefix:
            shutil.rmtree(self.prefix, ignore_errors=True)
            self.prefix = ""
