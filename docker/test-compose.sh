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
# Steps 1-3 and 5 are docker/test-lib.sh, shared with docker/test-replicas.sh.
#
# Fails loudly (non-zero exit, "FAIL: ..." on stderr) on anything unexpected; never skips.
# Every wait is bounded. Knobs (environment): STREAMGATE_TEST_MIN_IDS (default 5),
# STREAMGATE_CACHE_DIR (default /var/cache/streamgate), KEEP=1 leaves everything running.

set -Eeuo pipefail

TEST_NAME=test-compose
PROJECT=streamgate-composetest
COMPOSE_FILE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/docker-compose.yml
# shellcheck source=docker/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"   # ROOT, LOGS, log, fail, cleanup, engine, images

HOST_URL=http://127.0.0.1:8080
CLIENTS=(ws sse chunked)
MIN_IDS=${STREAMGATE_TEST_MIN_IDS:-5}

start_engine
port_free 8080   # what the compose file publishes
python_base_image
build_image

# ------------------------------------------------------------------------- up ----

compose_up
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
