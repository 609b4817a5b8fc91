"""``--workers N``: N processes serving one port, one core each.

The parent forks the workers before any event loop or thread exists, then only
waits: it does not listen. Each worker is a whole gateway on its own loop, with
the listening socket opened with ``SO_REUSEPORT``, so the kernel spreads new
connections over the workers. They share the Redis broker (ids, history, the
lease of each shared source), as replicas on several machines do; the settings
refuse more than one worker on the memory broker.

SIGTERM or SIGINT to the parent is passed to every worker, which shuts down
within the grace period; the parent exits when they have, with the first
failure's code. A worker that dies on its own (a crash, kill -9) stops the
others too and the parent exits 1: a half-sized gateway is left to the process
supervisor (systemd, Docker's restart policy) to bring back whole, not hidden.
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import Callable
from types import FrameType

from .settings import Settings

__all__ = ["run_workers"]

log = logging.getLogger("gateway")


def run_workers(settings: Settings, run_one: Callable[[Settings], int]) -> int:
    """Fork ``settings.workers`` processes running ``run_one(settings)``; wait."""
    children: dict[int, int] = {}
    stopping = False

    def stop_all(signum: int) -> None:
        for pid in children:
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass

    def on_signal(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        stop_all(signum)

    # Installed before the first fork: a signal that arrives while forking
    # reaches every worker started so far. The workers set their own handlers.
    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        for number in range(1, settings.workers + 1):
            pid = os.fork()
            if pid == 0:  # the worker
                for sig, handler in previous.items():
                    signal.signal(sig, handler)
                code = 1
                try:
                    code = run_one(settings)
                finally:
                    os._exit(code)
            children[pid] = number
            if stopping:
                stop_all(signal.SIGTERM)
        log.info(
            "%d workers on port %d: pids %s",
            settings.workers,
            settings.port,
            ", ".join(map(str, children)),
        )
        result = 0
        while children:
            pid, status = os.wait()
            if pid not in children:
                continue
            number = children.pop(pid)
            code = os.waitstatus_to_exitcode(status)
            if not stopping:
                log.error(
                    "worker %d (pid %d) ended by itself (exit %d): stopping the others",
                    number,
                    pid,
                    code,
                )
                stopping = True
                stop_all(signal.SIGTERM)
                result = result or 1
            if code != 0 and result == 0:
                result = code if code > 0 else 1
        return result
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
