"""Kill a replica under load; every client must end up with exactly the topic's messages.

Run by docker/test-replicas.sh once docker-compose.replicas.yml is up (two gateways on one
Redis, nginx in front, published on 127.0.0.1). From the host, through the proxy:

1. the proxy does not hold a stream back: an SSE stream gets each message published to its
   topic within a second, and a WebSocket page of the proxy's own origin is let in (the
   proxy passes Host on) while one of another origin is not;
2. the real clients of clients/ (ws, sse, chunked; --json) read topic ``news`` from
   ``since=0-0``. They are put on gateway1: gateway2 is stopped while they connect (the proxy
   fails over to gateway1) and started again afterwards;
3. a publisher posts a message every ~20 ms for a while, spread by the proxy over both
   replicas, retrying a publish until one attempt is answered 201; halfway through,
   gateway1 is killed (``docker kill --signal KILL``). Every client's stream drops with it,
   and each client resumes by itself through the proxy, which sends it to gateway2;
4. the truth is the topic's history (``GET /topics/news/messages``, the same ids as the
   Redis stream): a publish in flight when gateway1 died may have landed although its
   answer was lost, and its retry then landed too. Each client must have received exactly
   that list: every id, in order, none twice, and no gap event;
5. the proxy's access log must show each client's stream on gateway1 before the kill and on
   gateway2 after it, and publishes answered by both replicas before the kill; gateway2
   must be running the ``ticks`` source afterwards (its lease moves within 3 s).

Exits 0 when all of it holds; otherwise prints "FAIL: ..." and exits 1. Every wait is
bounded. Needs aiohttp and the clients' dependencies (the project's venv).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

TOPIC = "news"
REDIS_KEY = f"streamgate:t:{TOPIC}"  # the gateway's default --redis-prefix + "t:" + topic
TRANSPORTS = ("ws", "sse", "chunked")
FAIL_TIMEOUT = 2.0  # nginx-replicas.conf: fail_timeout of each replica


class Failed(Exception):
    pass


def say(text: str) -> None:
    print(f"  {text}", file=sys.stderr, flush=True)


def key(message_id: str) -> tuple[int, int]:
    ms, seq = message_id.split("-")
    return int(ms), int(seq)


# ----------------------------------------------------------------------- docker ----


async def run(*argv: str, limit: float = 60) -> str:
    """Run a command, return its stdout; Failed on a non-zero exit or after *limit* s."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), limit)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise Failed(f"{' '.join(argv)} took more than {limit} s") from None
    if proc.returncode != 0:
        raise Failed(f"{' '.join(argv)} exited {proc.returncode}: {err.decode().strip()}")
    return out.decode()


HEALTHZ = (
    "import urllib.request; print(urllib.request.urlopen("
    "'http://127.0.0.1:8080/healthz', timeout=2).read().decode())"
)


async def healthz(cid: str) -> dict[str, Any]:
    """A replica's /healthz, asked inside its container (the replicas publish no port)."""
    body: dict[str, Any] = json.loads(
        await run("docker", "exec", cid, "python3", "-c", HEALTHZ, limit=20)
    )
    return body


async def container_ip(cid: str) -> str:
    fmt = "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}"
    ips = (await run("docker", "inspect", "--format", fmt, cid)).split()
    if len(ips) != 1:
        raise Failed(f"container {cid[:12]} has addresses {ips}, expected one")
    return ips[0]


async def wait_for(what: str, check: Any, seconds: float, every: float = 0.5) -> Any:
    """Call async *check* until it returns something true; Failed after *seconds*."""
    deadline = time.monotonic() + seconds
    last: Any = None
    while True:
        last = await check()
        if last:
            return last
        if time.monotonic() > deadline:
            raise Failed(f"{what}: not within {seconds:.0f} s")
        await asyncio.sleep(every)


async def connections(cid: str) -> int:
    return int((await healthz(cid))["connections"])


# ------------------------------------------------------------------ the probes ----


async def probe_sse(session: aiohttp.ClientSession, base: str) -> list[float]:
    """Seconds from each publish to its arrival on an SSE stream read through the proxy."""
    delays = []
    timeout = aiohttp.ClientTimeout(total=30, sock_read=5)
    # since=0-0: a stream without since= answers before it is live (with the Redis broker a
    # message published right after its headers arrive may never reach it).
    async with session.get(
        f"{base}/sse/probe?since=0-0", headers={"Accept": "text/event-stream"}, timeout=timeout
    ) as resp:
        if resp.status != 200 or resp.content_type != "text/event-stream":
            raise Failed(f"GET /sse/probe through the proxy: {resp.status} {resp.content_type}")
        for n in range(3):
            t0 = time.monotonic()
            async with session.post(
                f"{base}/topics/probe", json={"probe": n}, timeout=aiohttp.ClientTimeout(10)
            ) as post:
                if post.status != 201:
                    raise Failed(f"publish to probe: {post.status} {await post.text()}")
                want = (await post.json())["id"]
            while True:
                try:
                    line = await asyncio.wait_for(resp.content.readline(), 5)
                except TimeoutError:
                    raise Failed(f"message {want} did not reach the SSE stream in 5 s") from None
                if not line:
                    raise Failed("the SSE stream through the proxy ended")
                if line.decode().strip() == f"id: {want}":
                    break
            delays.append(time.monotonic() - t0)
    return delays


async def probe_ws_origin(session: aiohttp.ClientSession, base: str) -> None:
    ws_url = base.replace("http://", "ws://", 1) + "/ws/probe"
    async with session.ws_connect(ws_url, origin=base, timeout=aiohttp.ClientWSTimeout(10)):
        pass
    try:
        async with session.ws_connect(ws_url, origin="http://elsewhere.example"):
            raise Failed("a WebSocket from another origin was let in through the proxy")
    except aiohttp.WSServerHandshakeError as exc:
        if exc.status != 403:
            raise Failed(f"a WebSocket from another origin: {exc.status}, not 403") from None


# --------------------------------------------------------------------- clients ----


@dataclass
class Client:
    transport: str
    proc: asyncio.subprocess.Process
    logfile: Any
    messages: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    notes: list[tuple[float, str]] = field(default_factory=list)  # stderr lines
    readers: list[asyncio.Task[None]] = field(default_factory=list)

    @property
    def ids(self) -> list[str]:
        return [m["id"] for _, _, m in self.messages]


async def start_client(python: str, root: str, base: str, transport: str, logs: Path) -> Client:
    url = {
        "ws": base.replace("http://", "ws://", 1) + f"/ws/{TOPIC}",
        "sse": f"{base}/sse/{TOPIC}",
        "chunked": f"{base}/chunked/{TOPIC}",
    }[transport]
    argv = [python, "-m", f"clients.{transport}", url, "--since", "0-0", "--json", "--wait"]
    proc = await asyncio.create_subprocess_exec(
        *argv,
        cwd=root,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    client = Client(transport, proc, _open_log(logs / f"{transport}.log"))
    say(f"{transport}: pid {proc.pid}: {' '.join(argv[1:])}")

    async def read_stdout() -> None:
        assert proc.stdout is not None
        while line := await proc.stdout.readline():
            mono, wall = time.monotonic(), time.time()
            client.logfile.write(f"{wall:.3f} out {line.decode()}")
            try:
                obj = json.loads(line)
                obj["id"]
            except (ValueError, KeyError, TypeError):
                client.notes.append((mono, f"unparsable output: {line[:200]!r}"))
                continue
            client.messages.append((mono, wall, obj))

    async def read_stderr() -> None:
        assert proc.stderr is not None
        while line := await proc.stderr.readline():
            text = line.decode().rstrip("\n")
            client.logfile.write(f"{time.time():.3f} err {text}\n")
            client.notes.append((time.monotonic(), text))

    client.readers = [asyncio.create_task(read_stdout()), asyncio.create_task(read_stderr())]
    return client


async def stop_client(client: Client) -> int:
    """SIGTERM by pid; Failed if it is still running 10 s later (then SIGKILL)."""
    if client.proc.returncode is None:
        client.proc.send_signal(signal.SIGTERM)
    try:
        rc = await asyncio.wait_for(client.proc.wait(), 10)
    except TimeoutError:
        client.proc.kill()
        await client.proc.wait()
        pid = client.proc.pid
        raise Failed(f"{client.transport} (pid {pid}) ignored SIGTERM for 10 s") from None
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(asyncio.gather(*client.readers), 5)
    client.logfile.close()
    return rc


# ------------------------------------------------------------------- publisher ----


@dataclass
class Publish:
    n: int
    attempts: int
    id: str
    failures: list[str]


async def publish_one(session: aiohttp.ClientSession, base: str, n: int) -> Publish:
    """Post message n until one attempt is answered 201 (at most 100 attempts or 30 s)."""
    failures: list[str] = []
    deadline = time.monotonic() + 30
    for attempt in range(1, 101):
        try:
            async with session.post(
                f"{base}/topics/{TOPIC}",
                data=json.dumps({"n": n, "attempt": attempt}),
                headers={"Content-Type": "application/json"},
                timeout=aiohttp.ClientTimeout(total=5),
            ) as resp:
                body = await resp.text()
                if resp.status == 201:
                    return Publish(n, attempt, json.loads(body)["id"], failures)
                failures.append(f"{resp.status} {' '.join(body.split())[:80]}")
        except (aiohttp.ClientError, TimeoutError) as exc:
            failures.append(f"{type(exc).__name__}: {exc}")
        if time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    raise Failed(f"message {n} was not published after {len(failures)} attempts: {failures[-3:]}")


async def publisher(
    session: aiohttp.ClientSession, base: str, seconds: float, interval: float
) -> list[Publish]:
    done: list[Publish] = []
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < seconds:
        await asyncio.sleep(max(0.0, start + n * interval - time.monotonic()))
        done.append(await publish_one(session, base, n))
        n += 1
    return done


async def history(session: aiohttp.ClientSession, base: str) -> list[dict[str, Any]]:
    """The topic's whole history, read through the proxy, 1000 at a time."""
    messages: list[dict[str, Any]] = []
    since = "0-0"
    for _ in range(1000):
        async with session.get(
            f"{base}/topics/{TOPIC}/messages",
            params={"since": since, "limit": "1000"},
            timeout=aiohttp.ClientTimeout(total=10),
        ) as resp:
            if resp.status != 200:
                raise Failed(f"GET /topics/{TOPIC}/messages: {resp.status} {await resp.text()}")
            page = await resp.json()
        if since == "0-0" and page["gap"]:
            raise Failed(f"the history of {TOPIC} starts with a gap: {page}")
        if not page["messages"]:
            return messages
        messages += page["messages"]
        since = page["messages"][-1]["id"]
    raise Failed("the history did not end after 1000 pages")


async def redis_ids(redis_cid: str) -> list[str]:
    script = (
        "local ids = {} for i, e in ipairs(redis.call('XRANGE', KEYS[1], '-', '+')) "
        "do ids[i] = e[1] end return ids"
    )
    out = await run("docker", "exec", redis_cid, "redis-cli", "EVAL", script, "1", REDIS_KEY)
    return out.split()


# ---------------------------------------------------------------- access log ----

LOG_RE = re.compile(
    r'"(?P<method>\S+) (?P<uri>\S+) [^"]*" (?P<status>\d+) \d+ upstream=(?P<upstream>.*?) '
    r"upstream_status=(?P<ustatus>.*?) time=(?P<time>[\d.]+) end=(?P<end>[\d.]+)"
)


def parse_access_log(text: str) -> list[dict[str, Any]]:
    entries = []
    for line in text.splitlines():
        m = LOG_RE.search(line)
        if m:
            e: dict[str, Any] = dict(m.groupdict())
            e["path"] = e["uri"].split("?")[0]
            e["final"] = e["upstream"].split(",")[-1].strip().split(":")[0]  # the one that answered
            e["end"] = float(m["end"])
            e["start"] = e["end"] - float(m["time"])
            entries.append(e)
    return entries


# ------------------------------------------------------------------------ main ----


async def main(args: argparse.Namespace) -> None:
    base = args.url
    logs = Path(args.logs)
    g1, g2 = args.gateway1, args.gateway2
    conn = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=conn) as session:
        # 1. the proxy passes streams on as they come
        delays = await probe_sse(session, base)
        shown = ", ".join(f"{d * 1000:.0f} ms" for d in delays)
        say(f"SSE through the proxy: publish to arrival {shown}")
        if max(delays) > 1.0:
            raise Failed(f"the proxy held an SSE message back {max(delays):.2f} s (buffering?)")
        await probe_ws_origin(session, base)
        say("WebSocket through the proxy: own origin let in, another origin 403")

        # 2. every client on gateway1: gateway2 is away while they connect
        ip1, ip2 = await container_ip(g1), await container_ip(g2)
        say(f"gateway1 {ip1}, gateway2 {ip2}")
        await run("docker", "stop", "--time", "10", g2, limit=30)
        await wait_for("probe streams closed on gateway1", lambda: _is(connections(g1), 0), 20)
        clients: dict[str, Client] = {}
        try:
            for t in TRANSPORTS:
                clients[t] = await start_client(args.python, args.root, base, t, logs)
            await wait_for(
                "all three clients connected to gateway1",
                lambda: _is(connections(g1), len(TRANSPORTS)),
                30,
            )
            for c in clients.values():
                if c.proc.returncode is not None:
                    raise Failed(f"{c.transport} exited {c.proc.returncode}: {c.notes[-3:]}")
            say("ws, sse, chunked connected, all on gateway1 (gateway2 stopped meanwhile)")
            await run("docker", "start", g2, limit=30)
            await wait_for("gateway2 healthy again", lambda: _healthy(g2), 90)
            if await container_ip(g2) != ip2:
                raise Failed(
                    f"gateway2 came back as {await container_ip(g2)}, not {ip2}: the proxy "
                    "resolved its name at start and would not find it"
                )
            await asyncio.sleep(FAIL_TIMEOUT + 0.5)  # the proxy tries gateway2 again
            n1, n2 = await connections(g1), await connections(g2)
            if (n1, n2) != (len(TRANSPORTS), 0):
                raise Failed(f"streams on gateway1/gateway2: {n1}/{n2}, expected 3/0")
            ticks_before = {g: (await healthz(g))["sources"].get("ticks") for g in (g1, g2)}
            say(
                f"gateway2 back ({ip2}); ticks source: gateway1 {ticks_before[g1]}, "
                f"gateway2 {ticks_before[g2]}"
            )

            # 3. publish for a while; kill gateway1 halfway
            kill: dict[str, float] = {}

            async def kill_gateway1() -> None:
                await asyncio.sleep(args.kill_at)
                kill["mono"], kill["wall"] = time.monotonic(), time.time()
                await run("docker", "kill", "--signal", "KILL", g1, limit=30)
                kill["done"], kill["wall_done"] = time.monotonic(), time.time()

            say(
                f"publishing to {TOPIC} every {args.interval * 1000:.0f} ms for "
                f"{args.seconds:.0f} s; docker kill --signal KILL gateway1 at {args.kill_at:.0f} s"
            )
            killer = asyncio.create_task(kill_gateway1())
            published = await publisher(session, base, args.seconds, args.interval)
            await killer
            retried = [p for p in published if p.attempts > 1]
            shown = "; ".join(f"n={p.n} x{p.attempts} ({p.failures[0][:60]})" for p in retried[:8])
            say(
                f"published n=0..{len(published) - 1}; "
                + (f"{len(retried)} needed a retry: {shown}" if retried else "none failed")
            )

            # 4. the truth, and the clients against it
            truth = await history(session, base)
            truth_ids = [m["id"] for m in truth]
            in_redis = await redis_ids(args.redis)
            if in_redis != truth_ids:
                raise Failed(
                    f"the API's history ({len(truth_ids)} ids) differs from Redis's XRANGE "
                    f"({len(in_redis)} ids)"
                )
            acked = {p.id for p in published}
            if not acked <= set(truth_ids):
                lost = sorted(acked - set(truth_ids), key=key)
                raise Failed(f"acknowledged publishes missing from the history: {lost[:5]}")
            counts: dict[int, int] = {}
            for m in truth:
                counts[m["data"]["n"]] = counts.get(m["data"]["n"], 0) + 1
            if set(counts) != set(range(len(published))):
                raise Failed(f"the history's n values are not 0..{len(published) - 1}")
            twice = {n: c for n, c in counts.items() if c > 1}
            say(
                f"history: {len(truth_ids)} messages {truth_ids[0]} .. {truth_ids[-1]} (the same "
                f"ids in Redis); published twice (answer lost, retried): {twice or 'none'}"
            )

            last = truth_ids[-1]
            await wait_for(
                f"every client received the last message {last}",
                lambda: _all_have(clients, last),
                30,
            )
        finally:
            # By pid, whatever happened; a failure here must not hide an earlier one.
            rcs: dict[str, int | str] = {}
            for c in clients.values():
                try:
                    rcs[c.transport] = await stop_client(c)
                except Failed as exc:
                    rcs[c.transport] = str(exc)
        for t, rc in rcs.items():
            if rc != 0:
                raise Failed(f"{t} exited {rc} on SIGTERM: {clients[t].notes[-3:]}")

        # 5. which replica served what, from the proxy's access log
        await asyncio.sleep(1)  # nginx logs a stream when it ends
        access = parse_access_log(await run("docker", "logs", args.proxy))
        ticks_after = await wait_for(
            "gateway2 runs the ticks source after the kill",
            lambda: _ticks_running(g2),
            15,
        )

    # ---- the verdict, per client ----
    problems = []
    rows = []
    for t, c in clients.items():
        ids = c.ids
        if ids != truth_ids:
            dup = len(ids) - len(set(ids))
            missing = [i for i in truth_ids if i not in set(ids)]
            extra = [i for i in ids if i not in set(truth_ids)]
            order = ids == sorted(ids, key=key)
            problems.append(
                f"{t}: {len(ids)} ids, history has {len(truth_ids)}: missing {missing[:5]} "
                f"({len(missing)}), not in history {extra[:5]}, duplicates {dup}, in order {order}"
            )
        gaps = [n for _, n in c.notes if re.match(rf"# {t} gap:", n)]
        if gaps:
            problems.append(f"{t}: gap events: {gaps[:3]}")
        errors = [n for _, n in c.notes if n.startswith(("error", "Traceback", "unparsable"))]
        if errors:
            problems.append(f"{t}: {errors[:3]}")
        after = [(m, n) for m, n in c.notes if m >= kill["mono"]]
        dropped = next((m for m, n in after if "reconnecting in" in n), None)
        back = next((m for m, n in after if "reconnected" in n), None)
        first = next((m for m, _, _ in c.messages if back is not None and m >= back), None)
        if dropped is None or back is None:
            problems.append(f"{t}: no reconnection after the kill: {[n for _, n in after][:5]}")
        # the access log: this client's streams, in order
        path = {"ws": f"/ws/{TOPIC}", "sse": f"/sse/{TOPIC}", "chunked": f"/chunked/{TOPIC}"}[t]
        streams = sorted((e for e in access if e["path"] == path), key=lambda e: e["start"])
        ok_streams = [e for e in streams if e["status"] in ("101", "200")]
        before = [e for e in ok_streams if e["start"] < kill["wall"]]
        later = [e for e in ok_streams if e["start"] >= kill["wall"]]
        if not before or before[-1]["final"] != ip1:
            problems.append(f"{t}: its stream before the kill was not on gateway1: {before[-1:]}")
        if not later or any(e["final"] != ip2 for e in later):
            problems.append(f"{t}: its streams after the kill were not all on gateway2: {later}")
        lat = [w - m["ts"] / 1000 for mono, w, m in c.messages if mono < kill["mono"]]
        p50 = statistics.median(lat) if lat else float("nan")
        if lat and p50 > 1.0:
            problems.append(f"{t}: median delivery latency before the kill {p50:.2f} s (buffered?)")
        tried = later[0]["upstream"] if later else "-"
        rows.append(
            f"{t:8} {len(ids):4} ids  {'== history' if ids == truth_ids else '!= history'}  "
            f"dropped {_since(kill, dropped)}, reconnected {_since(kill, back)}, "
            f"next message {_since(kill, first)}; "
            f"streams: {len(before)} before the kill (gateway1), {len(later)} after "
            f"(upstream tried: {tried}); latency p50 {p50 * 1000:.0f} ms"
        )
    posts = [e for e in access if e["method"] == "POST" and e["path"] == f"/topics/{TOPIC}"]
    before_kill = [e for e in posts if e["status"] == "201" and e["end"] < kill["wall"]]
    by = {
        name: sum(1 for e in before_kill if e["final"] == ip)
        for name, ip in (("gateway1", ip1), ("gateway2", ip2))
    }
    if not by["gateway1"] or not by["gateway2"]:
        problems.append(f"publishes before the kill were not spread over both replicas: {by}")
    # (gateway1 still answers until the kill takes effect: "after" starts when it has.)
    after_kill = [e for e in posts if e["end"] >= kill["wall_done"]]
    on2 = sum(1 for e in after_kill if e["status"] == "201" and e["final"] == ip2)
    failed_over = sum(1 for e in after_kill if e["status"] == "201" and "," in e["upstream"])
    others = sorted({e["status"] for e in after_kill} - {"201"})
    if any(e["status"] == "201" and e["final"] != ip2 for e in after_kill):
        problems.append("a publish was answered by gateway1 after it was killed")
    say(
        f"publishes answered 201 before the kill: {by}; after it: {on2} by gateway2 "
        f"({failed_over} of them tried gateway1 first), other answers: {others or 'none'}"
    )
    took = (kill["done"] - kill["mono"]) * 1000
    say(f"docker kill took {took:.0f} ms; the ticks source on gateway2 afterwards: {ticks_after}")
    for row in rows:
        say(row)
    if problems:
        raise Failed("; ".join(problems))


def _open_log(path: Path) -> Any:
    return open(path, "w")


async def _is(value: Any, want: Any) -> bool:
    return bool((await value) == want)


def _since(kill: dict[str, float], moment: float | None) -> str:
    return f"+{(moment - kill['mono']) * 1000:.0f} ms" if moment is not None else "never"


async def _healthy(cid: str) -> bool:
    fmt = "{{.State.Health.Status}}"
    return (await run("docker", "inspect", "--format", fmt, cid)).strip() == "healthy"


async def _ticks_running(cid: str) -> str | None:
    state = (await healthz(cid))["sources"].get("ticks")
    return state if state == "running" else None


async def _all_have(clients: dict[str, Client], last: str) -> bool:
    for c in clients.values():
        if c.proc.returncode is not None:
            notes = [n for _, n in c.notes[-3:]]
            raise Failed(f"{c.transport} exited {c.proc.returncode}: {notes}")
    return all(
        bool(c.messages) and key(c.messages[-1][2]["id"]) >= key(last) for c in clients.values()
    )


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--url", required=True, help="the proxy, e.g. http://127.0.0.1:8080")
    p.add_argument("--gateway1", required=True, help="container id")
    p.add_argument("--gateway2", required=True, help="container id")
    p.add_argument("--redis", required=True, help="container id")
    p.add_argument("--proxy", required=True, help="container id")
    p.add_argument("--root", required=True, help="the repository (clients/ is run from there)")
    p.add_argument("--logs", required=True, help="a directory for the clients' output")
    p.add_argument("--python", default=sys.executable)
    p.add_argument("--seconds", type=float, default=8.0, help="how long to publish")
    p.add_argument("--interval", type=float, default=0.02, help="seconds between publishes")
    p.add_argument("--kill-at", type=float, default=4.0, help="when to kill gateway1")
    try:
        asyncio.run(main(p.parse_args()))
    except Failed as exc:
        print(f"\nFAIL: {exc}\n", file=sys.stderr)
        sys.exit(1)
