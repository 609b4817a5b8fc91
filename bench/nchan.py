"""Nchan, the nginx pub/sub module (C), as a peer: found (or installed), configured, started.

nginx runs in the foreground (``daemon off;``) with one worker process and a
config generated into a temp dir of its own (``nginx -c CONF -p DIR``): pid
file, error log, every temp path there, access log off. The locations give the
gateway's URL layout, so the same load generator drives it::

    POST /topics/{t}    nchan_publisher
    GET  /sse/{t}       nchan_subscriber eventsource    (needs Accept: text/event-stream)
    GET  /ws/{t}        nchan_subscriber websocket
    GET  /chunked/{t}   nchan_subscriber http-chunked   (needs TE: chunked)
    GET  /healthz       nchan_stub_status

What goes out per message is the published body only (``{"t0":...}``), in
Nchan's framing: an SSE event with ``id:`` and ``data:`` lines, one HTTP chunk,
or one WebSocket text frame. Nchan has no batch publish.

Found with ``dpkg -L libnginx-mod-nchan`` (or in the usual module directories,
or built into nginx); missing, and running as root with apt-get, the bench
tries ``apt-get install -y -qq nginx-light libnginx-mod-nchan`` once.
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from .common import HOST

__all__ = ["PACKAGES", "Setup", "config", "locate"]

PACKAGES = ("nginx-light", "libnginx-mod-nchan")
MODULE_FILE = "ngx_nchan_module.so"
MODULE_DIRS = (
    "/usr/lib/nginx/modules",
    "/usr/lib64/nginx/modules",
    "/usr/local/lib/nginx/modules",
    "/usr/local/nginx/modules",
    "/usr/share/nginx/modules",
    "/etc/nginx/modules",
)

HISTORY = 1000
"""Messages kept per channel: streamgate's default ``history_size``."""
HISTORY_SECONDS = 3600
"""How long a message is kept: Nchan's default; streamgate keeps its history
(bounded by count and bytes) as long as the topic lives, an hour idle by default."""


@dataclass(frozen=True, slots=True)
class Setup:
    """An nginx binary and the Nchan module it loads."""

    nginx: str
    module: str | None
    """The module's file (``load_module``); None when nginx has Nchan built in."""
    version: str
    """nginx's version, e.g. ``1.22.1``."""

    @property
    def has_error_log_flag(self) -> bool:
        """``nginx -e`` (1.19.5+): the startup error log, before the config is read."""
        parts = tuple(int(p) for p in re.findall(r"\d+", self.version)[:3])
        return parts >= (1, 19, 5)

    def describe(self) -> str:
        return f"nginx {self.version} ({self.nginx}), module {self.module or 'built in'}"


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
    )


def _nginx_binary() -> str | None:
    found = shutil.which("nginx")
    if found:
        return found
    for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx", "/usr/local/nginx/sbin/nginx"):
        if os.access(path, os.X_OK):
            return path
    return None


def _module_file() -> str | None:
    """The file the libnginx-mod-nchan package installed, else one in a usual place."""
    if shutil.which("dpkg"):
        try:
            listed = _run(["dpkg", "-L", "libnginx-mod-nchan"])
        except (OSError, subprocess.SubprocessError):
            listed = None
        if listed is not None and listed.returncode == 0:
            for line in listed.stdout.splitlines():
                line = line.strip()
                if line.endswith(MODULE_FILE) and os.path.isfile(line):
                    return line
    for directory in MODULE_DIRS:
        for path in glob.glob(os.path.join(directory, "*nchan*.so")):
            if os.path.isfile(path):
                return path
    return None


def _find() -> Setup | str:
    nginx = _nginx_binary()
    if nginx is None:
        return "nginx is not installed"
    try:
        info = _run([nginx, "-V"])
    except (OSError, subprocess.SubprocessError) as exc:
        return f"{nginx} -V failed: {exc}"
    text = info.stderr + info.stdout
    m = re.search(r"nginx/(\S+)", text)
    version = m.group(1) if m else "?"
    module = _module_file()
    if module is not None:
        return Setup(nginx, module, version)
    if "nchan" in text:
        return Setup(nginx, None, version)
    return f"nginx {version} is installed, but not the Nchan module (libnginx-mod-nchan)"


def _install(log: Callable[[str], None]) -> str | None:
    """``apt-get install`` the packages (root only); None when it worked, else why not."""
    if os.geteuid() != 0:
        return "not root, so the bench does not install it"
    apt = shutil.which("apt-get")
    if apt is None:
        return "no apt-get to install it with"
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = [apt, "install", "-y", "-qq", *PACKAGES]
    log(f"Nchan: {' '.join(install)}")
    tail = ""
    for attempt in range(2):
        if attempt:
            # The package lists may never have been fetched (a fresh container).
            log(f"Nchan: {apt} update -qq, then once more")
            subprocess.run(
                [apt, "update", "-qq"], env=env, capture_output=True, timeout=600, check=False
            )
        try:
            done = subprocess.run(
                install, env=env, capture_output=True, text=True, timeout=900, check=False
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"apt-get install failed: {exc}"
        if done.returncode == 0:
            return None
        lines = (done.stderr or done.stdout).strip().splitlines()
        tail = lines[-1] if lines else f"exit {done.returncode}"
    return f"apt-get install failed: {tail}"


_cached: Setup | None = None


def locate(install: bool = False, log: Callable[[str], None] = print) -> Setup | str:
    """nginx with Nchan, or why the Nchan rows are skipped.

    ``install``: when it is missing, try ``apt-get install`` (as root only).
    """
    global _cached
    if _cached is not None:
        return _cached
    found = _find()
    if isinstance(found, str) and install:
        failed = _install(log)
        if failed is not None:
            return f"{found}; {failed}"
        found = _find()
    if isinstance(found, Setup):
        _cached = found
    return found


def config(setup: Setup, prefix: str, port: int, nofile: int) -> str:
    """nginx.conf for one bench server in ``prefix`` (its own temp dir), listening on ``port``.

    ``nofile``: the open-files limit the worker may raise itself to (the hard
    limit: an unprivileged setrlimit cannot go past it).
    """
    connections = max(512, min(nofile - 64, 65535))
    sub = "nchan_channel_id $1;\n            nchan_subscriber_first_message newest;"
    lines = [
        "# Generated by bench/nchan.py for one bench run; removed when the server stops.",
        "daemon off;",
        "master_process on;",
        "worker_processes 1;",
        f"worker_rlimit_nofile {nofile};",
        f"pid {prefix}/nginx.pid;",
        f"error_log {prefix}/error.log warn;",
    ]
    if setup.module:
        lines.append(f"load_module {setup.module};")
    lines += [
        "",
        "events {",
        f"    worker_connections {connections};",
        "}",
        "",
        "http {",
        "    access_log off;",
        f"    client_body_temp_path {prefix}/client_body;",
        f"    proxy_temp_path {prefix}/proxy;",
        f"    fastcgi_temp_path {prefix}/fastcgi;",
        f"    uwsgi_temp_path {prefix}/uwsgi;",
        f"    scgi_temp_path {prefix}/scgi;",
        # The publishers keep their connections for the whole run (nginx's
        # default closes one after 1,000 requests).
        "    keepalive_requests 1000000000;",
        "",
        "    server {",
        f"        listen {HOST}:{port} backlog=4096;",
        "",
        "        location = /healthz {",
        "            nchan_stub_status;",
        "        }",
        r"        location ~ ^/topics/(\w+)$ {",
        "            nchan_publisher;",
        "            nchan_channel_id $1;",
        f"            nchan_message_buffer_length {HISTORY};",
        f"            nchan_message_timeout {HISTORY_SECONDS}s;",
        "        }",
        r"        location ~ ^/sse/(\w+)$ {",
        "            nchan_subscriber eventsource;",
        f"            {sub}",
        "        }",
        r"        location ~ ^/ws/(\w+)$ {",
        "            nchan_subscriber websocket;",
        f"            {sub}",
        "        }",
        r"        location ~ ^/chunked/(\w+)$ {",
        "            nchan_subscriber http-chunked;",
        f"            {sub}",
        "        }",
        "    }",
        "}",
        "",
    ]
    return "\n".join(lines)
