#!/usr/bin/env bash
# End-to-end test of docker-compose.yml with a real Docker engine.
#
#   bash docker/test-compose.sh        (as root; CI runs it from .ci/run)
#
# 1. Uses the running Docker engine, or installs (Debian's docker.io) and starts a private
#    one (own socket and data root) that it stops and deletes at the end.
# 2. Makes the stand-in base image python:3.12-slim when it is missing: no image can be
#    pulled here, so a Debian root made by debootstrap (python3, python3-venv) is imported
#    under that tag. The root is cached in /var/cache/streamgate (STREAMGATE_CACHE_DIR).
# 3. Downloads the project's dependencies as wheels on the host into docker/wheels/ and
#    builds the image with STREAMGATE_PIP_NO_INDEX=1 STREAMGATE_PIP_FIND_LINKS=/wheels.
# 4. Runs the real docker-compose.yml and checks from the host: /healthz and the page on
#    127.0.0.1:8080, the same ids in the logs of the ws, sse and chunked client containers,
#    and `docker compose down` finishing within the grace period with no container killed.
# 5. Removes what it made: containers, network, images it built, wheels, and the engine.
#
# Fails loudly (non-zero exit, "FAIL: ..." on stderr) on anything unexpected; never skips.
# Every wait is bounded. Knobs (environment): STREAMGATE_TEST_MIN_IDS (default 5),
# STREAMGATE_CACHE_DIR (default /var/cache/streamgate), KEEP=1 leaves everything running.

set -Eeuo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
COMPOSE_FILE="$ROOT/docker-compose.yml"
WHEEL_DIR="$ROOT/docker/wheels"
PROJECT=streamgate-composetest
IMAGE=streamgate
BASE_IMAGE=python:3.12-slim
HOST_URL=http://127.0.0.1:8080
CLIENTS=(ws sse chunked)
MIN_IDS=${STREAMGATE_TEST_MIN_IDS:-5}
CACHE_DIR=${STREAMGATE_CACHE_DIR:-/var/cache/streamgate}
STATE=/run/streamgate-composetest            # our engine's socket, pid file, exec root, log
DATA_ROOT=/var/lib/streamgate-composetest    # our engine's images and containers
T0=$(date +%s)
LOGS=$(mktemp -d /tmp/streamgate-composetest.XXXXXX)   # this run's logs, removed at the end

log() { printf '[test-compose %4ss] %s\n' "$(($(date +%s) - T0))" "$*" >&2; }
fail() {
    printf '\nFAIL: %s\n\n' "$*" >&2
    exit 1
}
trap 'fail "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || fail "run as root (it may install and start a Docker engine)"
for tool in python3 timeout tar; do
    command -v "$tool" > /dev/null || fail "$tool not found"
done

# ---------------------------------------------------------------- cleanup (always) ----

STARTED_DOCKERD_PID=
MADE_BASE_IMAGE=
BUILT_IMAGE=
MADE_WHEEL_DIR=
HAD_DOCKER0=
COMPOSE=()

cleanup() {
    local rc=$?
    trap - ERR
    set +e
    if [ "$rc" != 0 ] && [ "${#COMPOSE[@]}" -gt 0 ] && docker info > /dev/null 2>&1; then
        log "diagnostics after failure:"
        "${COMPOSE[@]}" ps -a >&2
        "${COMPOSE[@]}" logs --no-color --tail=40 >&2
    fi
    if [ "$rc" != 0 ] && [ -n "$STARTED_DOCKERD_PID" ]; then
        log "dockerd log (last lines):"
        tail -n 15 "$STATE/dockerd.log" >&2
    fi
    if [ "${KEEP:-}" = 1 ]; then
        log "KEEP=1: leaving containers, images, engine (DOCKER_HOST=${DOCKER_HOST:-default}), logs in $LOGS"
        exit "$rc"
    fi
    if [ "${#COMPOSE[@]}" -gt 0 ] && docker info > /dev/null 2>&1; then
        log "cleaning up"
        timeout 60 "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 > /dev/null 2>&1
        # (An engine of our own goes whole, data root and all, below.)
        if [ -n "$BUILT_IMAGE" ] && [ -z "$STARTED_DOCKERD_PID" ]; then
            docker image rm -f "$IMAGE" > /dev/null 2>&1
            docker image prune -f --filter label=org.streamgate.stage=build > /dev/null 2>&1
        fi
        if [ -n "$MADE_BASE_IMAGE" ] && [ -z "$STARTED_DOCKERD_PID" ]; then
            docker image rm -f "$BASE_IMAGE" > /dev/null 2>&1
        fi
    fi
    if [ -n "$MADE_WHEEL_DIR" ]; then rm -rf "$WHEEL_DIR"; fi
    rm -rf "$LOGS"
    if [ -n "$STARTED_DOCKERD_PID" ]; then
        log "stopping the engine this run started (pid $STARTED_DOCKERD_PID)"
        stop_dockerd "$STARTED_DOCKERD_PID"
        log "removing its data root"
        rm -rf "$DATA_ROOT" "$STATE"
        # The engine leaves its default bridge behind; drop it if it was not there before.
        if [ -z "$HAD_DOCKER0" ] && command -v ip > /dev/null; then
            ip link delete docker0 2> /dev/null
        fi
    fi
    log "cleaned up; exit $rc"
    exit "$rc"
}
trap cleanup EXIT

stop_dockerd() {
    local pid=$1
    kill -TERM "$pid" 2> /dev/null || return 0
    for _ in $(seq 60); do
        kill -0 "$pid" 2> /dev/null || return 0
        sleep 0.5
    done
    log "dockerd $pid did not stop in 30 s: SIGKILL"
    kill -KILL "$pid" 2> /dev/null
    sleep 1
}

# --------------------------------------------------------------------- engine ----

apt_install() {
    log "apt-get install $*"
    export DEBIAN_FRONTEND=noninteractive
    if [ -z "${APT_UPDATED:-}" ]; then
        timeout 300 apt-get -o DPkg::Lock::Timeout=240 update -q > "$LOGS/apt.log" 2>&1 ||
            fail "apt-get update failed: $(tail -20 "$LOGS/apt.log")"
        APT_UPDATED=1
    fi
    timeout 600 apt-get -o DPkg::Lock::Timeout=240 install -y -q --no-install-recommends "$@" \
        > "$LOGS/apt.log" 2>&1 || fail "apt-get install $* failed: $(tail -20 "$LOGS/apt.log")"
}

engine_up() { timeout 20 docker info > /dev/null 2>&1; }

if command -v docker > /dev/null && engine_up; then
    log "using the running Docker engine (DOCKER_HOST=${DOCKER_HOST:-default})"
else
    command -v dockerd > /dev/null || apt_install docker.io
    command -v docker > /dev/null || fail "docker CLI not found after installing docker.io"
    mkdir -p "$STATE" "$DATA_ROOT"
    # A private engine left behind by an earlier run of this script that was killed.
    if [ -s "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2> /dev/null; then
        log "stopping the engine left by an earlier run (pid $(cat "$STATE/dockerd.pid"))"
        stop_dockerd "$(cat "$STATE/dockerd.pid")"
    fi
    rm -rf "${DATA_ROOT:?}"/* "$STATE/exec"
    if command -v ip > /dev/null && ip link show docker0 > /dev/null 2>&1; then HAD_DOCKER0=1; fi
    export DOCKER_HOST="unix://$STATE/docker.sock"
    log "starting dockerd on $DOCKER_HOST"
    dockerd --host "$DOCKER_HOST" --data-root "$DATA_ROOT" --exec-root "$STATE/exec" \
        --pidfile "$STATE/dockerd.pid" > "$STATE/dockerd.log" 2>&1 &
    STARTED_DOCKERD_PID=$!
    for _ in $(seq 60); do
        engine_up && break
        kill -0 "$STARTED_DOCKERD_PID" 2> /dev/null ||
            fail "dockerd exited at start; its log: $(tail -20 "$STATE/dockerd.log")"
        sleep 1
    done
    engine_up || fail "dockerd did not answer within 60 s; its log: $(tail -20 "$STATE/dockerd.log")"
fi
log "engine: $(docker version --format '{{.Server.Version}}')"

if docker compose version > /dev/null 2>&1; then
    COMPOSE_CMD=(docker compose)
else
    command -v docker-compose > /dev/null || apt_install docker-compose
    COMPOSE_CMD=(docker-compose)
fi
COMPOSE=("${COMPOSE_CMD[@]}" --project-name "$PROJECT" --file "$COMPOSE_FILE")
log "compose: $("${COMPOSE_CMD[@]}" version 2>/dev/null | sed -n 1p)"

# Leftovers of an earlier run on a shared engine.
timeout 60 "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 > /dev/null 2>&1 || true

# The compose file publishes 127.0.0.1:8080: find out now, before building, if it is taken.
python3 - << 'EOF' || fail "127.0.0.1:8080 is already in use on this machine: stop what listens there"
import socket, sys
s = socket.socket()
s.settimeout(2)
sys.exit(1 if s.connect_ex(("127.0.0.1", 8080)) == 0 else 0)
EOF

# ------------------------------------------------------------- stand-in base image ----

debian_mirror() {
    # The machine's own Debian mirror, read at run time (deb822 first, then one-line form).
    local f url
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        url=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$f")
        [ -n "$url" ] && { echo "$url"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        url=$(awk '$1 == "deb" && $0 !~ /security/ {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f")
        [ -n "$url" ] && { echo "$url"; return; }
    done
}

make_base_image() {
    local suite tarball rootfs mirror
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    tarball="$CACHE_DIR/rootfs-$suite-python3.tar"
    if [ -s "$tarball" ] && tar -tf "$tarball" ./usr/bin/python3 > /dev/null 2>&1; then
        log "stand-in root: cached $tarball"
    else
        command -v debootstrap > /dev/null || apt_install debootstrap
        mirror=$(debian_mirror)
        [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*"
        mkdir -p "$CACHE_DIR"
        rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
        log "stand-in root: debootstrap $suite (minbase + python3, python3-venv)"
        timeout 900 debootstrap --variant=minbase --include=python3,python3-venv \
            "$suite" "$rootfs" "$mirror" > "$CACHE_DIR/debootstrap.log" 2>&1 ||
            fail "debootstrap failed; see $CACHE_DIR/debootstrap.log: $(tail -5 "$CACHE_DIR/debootstrap.log")"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
        tar -C "$rootfs" -cf "$tarball.tmp" . || fail "could not pack the stand-in root"
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    log "importing the stand-in as $BASE_IMAGE"
    timeout 300 docker import --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]' \
        "$tarball" "$BASE_IMAGE" > /dev/null || fail "docker import of the stand-in failed"
    MADE_BASE_IMAGE=1
}

if docker image inspect "$BASE_IMAGE" > /dev/null 2>&1; then
    log "base image $BASE_IMAGE already present: using it"
else
    make_base_image
fi
read -r PY_VER ARCH GLIBC < <(timeout 60 docker run --rm --network none --entrypoint python3 \
    "$BASE_IMAGE" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine(), platform.libc_ver()[1])') ||
    fail "python3 does not run in $BASE_IMAGE"
log "base image runs Python $PY_VER on $ARCH, glibc $GLIBC"
# pip download --platform takes exact tags: list every manylinux tag this glibc accepts.
PLATFORMS=(--platform "manylinux2014_$ARCH")
for ((minor = 17; minor <= ${GLIBC#2.}; minor++)); do
    PLATFORMS+=(--platform "manylinux_2_${minor}_$ARCH")
done

# ------------------------------------------------------------ wheels, then build ----

log "downloading wheels for Python $PY_VER into docker/wheels/"
rm -rf "$WHEEL_DIR"    # build-only and git-ignored: whatever an earlier run left goes
MADE_WHEEL_DIR=1
mkdir -p "$WHEEL_DIR"
# The same set the Dockerfile installs by default (EXTRAS=clients, SKIP_PACKAGES=matplotlib),
# plus the build system, straight from pyproject.toml (nothing is built in the work tree).
python3 "$ROOT/docker/requirements-from-pyproject.py" "$ROOT/pyproject.toml" \
    --build --base --extras clients --skip matplotlib > "$LOGS/requirements.txt" ||
    fail "could not read the requirements from pyproject.toml"
timeout 600 python3 -m pip download --quiet --dest "$WHEEL_DIR" --only-binary=:all: \
    --python-version "$PY_VER" --implementation cp --abi "cp${PY_VER/./}" "${PLATFORMS[@]}" \
    -r "$LOGS/requirements.txt" > "$LOGS/pip.log" 2>&1 ||
    fail "pip download of the dependencies failed: $(grep -v '^WARNING' "$LOGS/pip.log" | tail -20)"
log "$(find "$WHEEL_DIR" -name '*.whl' | wc -l) wheels, $(du -sh "$WHEEL_DIR" | cut -f1)"

export STREAMGATE_PIP_NO_INDEX=1 STREAMGATE_PIP_FIND_LINKS=/wheels
log "docker compose build"
BUILT_IMAGE=1
timeout 900 "${COMPOSE[@]}" build > "$LOGS/build.log" 2>&1 ||
    fail "compose build failed: $(tail -30 "$LOGS/build.log")"
rm -f "$LOGS/build.log"
log "image $IMAGE: $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"

# ------------------------------------------------------------------------- up ----


wait_healthy() {
    local deadline=$(($(date +%s) + 90)) health
    while :; do
        health=$(docker inspect --format '{{.State.Health.Status}}' "$1")
        [ "$health" = healthy ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "gateway not healthy within 90 s (it is $health)"
        sleep 1
    done
}

log "docker compose up -d"
timeout 240 "${COMPOSE[@]}" up -d > "$LOGS/up.log" 2>&1 ||
    fail "compose up failed: $(tail -30 "$LOGS/up.log")"
rm -f "$LOGS/up.log"

cid() { "${COMPOSE[@]}" ps -q "$1" 2> /dev/null | sed -n 1p; }
GATEWAY_CID=$(cid gateway)
[ -n "$GATEWAY_CID" ] || fail "no gateway container"
wait_healthy "$GATEWAY_CID"
log "gateway container healthy"

python3 - "$HOST_URL" << 'EOF' || fail "healthz or the page did not answer as expected on 127.0.0.1:8080"
import json, sys, urllib.request
base = sys.argv[1]
with urllib.request.urlopen(base + "/healthz", timeout=10) as r:
    body = json.load(r)
    assert r.status == 200 and body.get("status") == "ok", body
print("  GET /healthz ->", r.status, json.dumps(body), file=sys.stderr)
with urllib.request.urlopen(base + "/", timeout=10) as r:
    ctype = r.headers.get("Content-Type", "")
    page = r.read().decode("utf-8", "replace")
    assert r.status == 200 and ctype.startswith("text/html"), (r.status, ctype)
    assert "<html" in page.lower(), page[:200]
print("  GET / ->", r.status, ctype, len(page), "bytes of HTML", file=sys.stderr)
EOF

# ------------------------------------------------ the same ids over three transports ----

declare -A CLIENT_CID
for c in "${CLIENTS[@]}"; do
    CLIENT_CID[$c]=$(cid "$c")
    [ -n "${CLIENT_CID[$c]}" ] || fail "no container for client $c"
done

check_ids() {
    # Exit 0 when every client printed the same ids over their common window, and that window
    # holds >= MIN_IDS ids after id $1; 1 when there are not enough yet; 3 when they disagree.
    # Writes the last common id to $LOGS/last-id.
    local c
    for c in "${CLIENTS[@]}"; do
        docker logs "${CLIENT_CID[$c]}" > "$LOGS/$c.log" 2>&1 || return 2
    done
    python3 - "$1" "$MIN_IDS" "$LOGS" "${CLIENTS[@]}" << 'EOF'
import re, sys
after, min_ids, logs, clients = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
line_re = re.compile(r"^(\S+) (\d+-\d+) (.*)$")
key = lambda i: tuple(map(int, i.split("-")))
ids = {}
for c in clients:
    seen = []
    for line in open(f"{logs}/{c}.log", encoding="utf-8", errors="replace"):
        m = line_re.match(line.rstrip("\n"))
        if m and m.group(1) == c:
            seen.append(m.group(2))
    if len(seen) != len(set(seen)):
        print(f"  {c}: duplicate ids", file=sys.stderr); sys.exit(3)
    if seen != sorted(seen, key=key):
        print(f"  {c}: ids out of order", file=sys.stderr); sys.exit(3)
    ids[c] = seen
if not all(ids.values()):
    sys.exit(1)
lo = max(key(v[0]) for v in ids.values())
hi = min(key(v[-1]) for v in ids.values())
window = {c: [i for i in v if lo <= key(i) <= hi] for c, v in ids.items()}
first = window[clients[0]]
for c in clients[1:]:
    if window[c] != first:
        a, b = set(first), set(window[c])
        print(f"  {c} differs from {clients[0]} in the common window: "
              f"only {clients[0]}: {sorted(a - b, key=key)[:5]}, only {c}: {sorted(b - a, key=key)[:5]}",
              file=sys.stderr)
        sys.exit(3)
new = [i for i in first if key(i) > key(after)]
if len(new) < min_ids:
    sys.exit(1)
open(f"{logs}/last-id", "w").write(first[-1])
print(f"  {len(first)} ids in common ({len(new)} after {after}), {first[0]} .. {first[-1]}; "
      "per client: " + ", ".join(f"{c} {len(v)}" for c, v in ids.items()), file=sys.stderr)
EOF
}

wait_ids() {
    # Wait up to 90 s for check_ids "$1" to pass; fail on disagreement or an exited client.
    local deadline=$(($(date +%s) + 90)) rc c
    while :; do
        rc=0
        check_ids "$1" || rc=$?
        [ "$rc" = 0 ] && return 0
        [ "$rc" = 1 ] || fail "the clients' logs disagree (see above)"
        for c in "${CLIENTS[@]}"; do
            [ "$(docker inspect --format '{{.State.Running}}' "${CLIENT_CID[$c]}")" = true ] ||
                fail "client $c exited early: $(tail -5 "$LOGS/$c.log")"
        done
        [ "$(date +%s)" -lt "$deadline" ] ||
            fail "fewer than $MIN_IDS common ids after $1 within 90 s; last lines: $(tail -n 3 "$LOGS"/*.log)"
        sleep 2
    done
}

log "waiting for >= $MIN_IDS common ids in the logs of: ${CLIENTS[*]}"
wait_ids 0-0

# A gateway restart: every client gets the goodbye, reconnects with since= and goes on,
# and the three still agree on every id.
before_restart=$(cat "$LOGS/last-id")
log "restarting the gateway (the clients must get the goodbye and resume)"
# The engine's restart, not compose's: `docker compose restart` (v2) restarts dependents too.
timeout 120 docker restart --time 15 "$GATEWAY_CID" > "$LOGS/restart.log" 2>&1 ||
    fail "restarting the gateway container failed: $(tail -20 "$LOGS/restart.log")"
wait_healthy "$GATEWAY_CID"
wait_ids "$before_restart"
for c in "${CLIENTS[@]}"; do
    grep -q 'goodbye.*shutdown' "$LOGS/$c.log" ||
        fail "client $c did not report the gateway's goodbye (reason=shutdown): $(tail -5 "$LOGS/$c.log")"
    log "  $c: $(grep -m1 'goodbye.*shutdown' "$LOGS/$c.log")"
done
log "sample of the compose log:"
"${COMPOSE[@]}" logs --no-color --tail=2 "${CLIENTS[@]}" 2>&1 | grep -v '^Attaching' | sed 's/^/    /' >&2

# ----------------------------------------------------------------------- down ----

# `docker compose down` is `stop` then remove; the two are run apart so that the clients'
# logs can still be read after the stop. No service depends on another, so compose stops
# them all at once: the gateway sends its goodbye, each client (--stop-grace) prints it and
# exits 0, the gateway exits 0. The longest stop_grace_period bounds the whole of it.
GRACE=$(awk '/stop_grace_period:/ {v = $2; sub(/s$/, "", v); if (v + 0 > m) m = v + 0} END {print m + 0}' "$COMPOSE_FILE")
[ "$GRACE" -gt 0 ] || fail "no stop_grace_period in $COMPOSE_FILE"
ALL_CIDS=$("${COMPOSE[@]}" ps -q | tr '\n' ' ')
declare -A GOODBYES
for c in "${CLIENTS[@]}"; do
    GOODBYES[$c]=$(docker logs "${CLIENT_CID[$c]}" 2>&1 | grep -c 'goodbye.*shutdown' || true)
done
since=$(date +%s)
log "docker compose down (grace period ${GRACE}s): stop, check the goodbyes, remove"
start_ns=$(date +%s%N)
timeout $((GRACE * 3 + 30)) "${COMPOSE[@]}" stop > "$LOGS/stop.log" 2>&1 ||
    fail "compose stop failed: $(tail -20 "$LOGS/stop.log")"
for c in "${CLIENTS[@]}"; do
    now=$(docker logs "${CLIENT_CID[$c]}" 2>&1 | grep -c 'goodbye.*shutdown' || true)
    [ "$now" -gt "${GOODBYES[$c]}" ] ||
        fail "client $c stopped without the gateway's goodbye: $(docker logs --tail 5 "${CLIENT_CID[$c]}" 2>&1)"
    log "  $c: $(docker logs "${CLIENT_CID[$c]}" 2>&1 | grep 'goodbye.*shutdown' | tail -1)"
done
timeout $((GRACE * 3 + 30)) "${COMPOSE[@]}" down > "$LOGS/down.log" 2>&1 ||
    fail "compose down failed: $(tail -20 "$LOGS/down.log")"
down_ms=$((($(date +%s%N) - start_ns) / 1000000))
until_=$(($(date +%s) + 1))
log "down took ${down_ms} ms"

# Exit codes and kills, from the engine's event log (the containers are gone by now).
docker events --since "$since" --until "$until_" --filter type=container \
    --filter "label=com.docker.compose.project=$PROJECT" \
    --format '{{.Action}} {{index .Actor.Attributes "com.docker.compose.service"}} exit={{index .Actor.Attributes "exitCode"}} signal={{index .Actor.Attributes "signal"}}' \
    > "$LOGS/events" || fail "docker events failed"
python3 - "$LOGS/events" "$GRACE" "$down_ms" "${CLIENTS[@]}" << 'EOF' || fail "docker compose down was not clean (see above)"
import sys
path, grace, down_ms, clients = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
exits, kills, bad = {}, [], []
for line in open(path):
    action, service, exit_, signal = (line.split() + ["", "", "", ""])[:4]
    if action == "die":
        exits[service] = int(exit_.split("=")[1])
    elif action == "kill":
        kills.append((service, signal.split("=")[1]))
print("  exit codes:", exits, "signals sent:", kills, file=sys.stderr)
for service in ["gateway", *clients]:
    if service not in exits:
        bad.append(f"{service}: no exit seen")
    elif exits[service] == 137 or any(s == service and sig in ("9", "SIGKILL") for s, sig in kills):
        bad.append(f"{service}: killed after the grace period (137/SIGKILL)")
    elif exits[service] != 0:
        bad.append(f"{service} exited {exits[service]}, not 0")
if down_ms > grace * 1000:
    bad.append(f"down took {down_ms} ms, longer than the {grace} s grace period")
for b in bad:
    print("  " + b, file=sys.stderr)
sys.exit(1 if bad else 0)
EOF
for id in $ALL_CIDS; do
    if docker inspect "$id" > /dev/null 2>&1; then fail "container $id still exists after down"; fi
done
if docker network inspect "${PROJECT}_default" > /dev/null 2>&1; then
    fail "network ${PROJECT}_default still exists after down"
fi

log "PASS: healthz and page answered, ${CLIENTS[*]} got the same ids, down clean in ${down_ms} ms"
echo "test-compose: 1 passed, 0 failed"
