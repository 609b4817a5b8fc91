"""The servers under test, each its own process (and process group) on 127.0.0.1."""

from __future__ import annotations

import http.client
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from .common import HOST, REPO, free_port, proc_cpu, proc_rss_kib, server_preexec

__all__ = ["KINDS", "Server", "ServerKind"]


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
}


@dataclass
class Server:
    """A started server process; ``stop()`` ends its whole process group."""

    kind: ServerKind
    port: int = 0
    proc: subprocess.Popen[bytes] | None = None
    log_path: str = ""
    _log: object = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self, timeout: float = 20.0) -> Server:
        self.port = free_port()
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in self.kind.name)
        fd, self.log_path = tempfile.mkstemp(prefix=f"bench-{safe}-", suffix=".log")
        argv = [sys.executable, "-m", self.kind.module, *self.kind.args]
        if self.kind.module == "gateway":
            argv[4:4] = ["--host", HOST, "--port", str(self.port)]
        else:
            argv += ["--port", str(self.port)]
        path = os.pathsep.join(dict.fromkeys([self.kind.repo, REPO]))
        env = dict(os.environ, PYTHONPATH=path)
        env.update(self.kind.env)
        self.proc = subprocess.Popen(
            argv,
            cwd=self.kind.repo,
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

    def get(self, path: str) -> tuple[int, bytes]:
        conn = http.client.HTTPConnection(HOST, self.port, timeout=5)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def cpu(self) -> float:
        return proc_cpu(self.pid)

    def rss_kib(self) -> int:
        return proc_rss_kib(self.pid)

    def log_tail(self) -> str:
        try:
            with open(self.log_path, errors="replace") as f:
                return f.read()[-2000:]
        except OSError:
            return ""

    def stop(self) -> None:
        proc = self.proc
        if proc is None:
            return
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                proc.wait(timeout=8)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=5)
        self.proc = None
        if self.log_path:
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
