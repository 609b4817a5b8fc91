#!/usr/bin/env bash
# End-to-end test of docker-compose.replicas.yml: two gateways on one Redis behind nginx,
# one of them killed while real clients read through the proxy.
#
#   bash docker/test-replicas.sh        (as root, in the project's venv; CI runs it from .ci/run)
#
# 1. Uses the running Docker engine, or installs and starts a private one (docker/test-lib.sh,
#    shared with test-compose.sh).
# 2. Makes the stand-in images the compose file names when they are missing: no image can be
#    pulled here, so Debian roots made by debootstrap are imported under those tags:
#    python:3.12-slim (python3, python3-venv: the gateway image's base), redis:7-bookworm
#    (redis-server) and nginx:1-bookworm (nginx-light). Each image's CMD runs its server in
#    the foreground, as the real image's does. The roots are cached in /var/cache/streamgate.
# 3. Builds the gateway image offline from wheels downloaded on the host (as test-compose.sh).
# 4. Starts redis, gateway1, gateway2 and the proxy (nginx, 127.0.0.1:8080), then runs
#    docker/check-replicas.py on the host: the real clients (ws, sse, chunked) read topic
#    `news` through the proxy while a publisher posts every 20 ms and gateway1 is killed with
#    SIGKILL halfway; each client must resume on gateway2 and hold exactly the topic's
#    history afterwards (every id, in order, none twice). See that file for every check.
# 5. `docker compose down` (bounded), then removes what it made, as test-compose.sh does.
#
# Fails loudly (non-zero exit, "FAIL: ..." on stderr) on anything unexpected; never skips.
# Every wait is bounded. Knobs (environment): STREAMGATE_TEST_PYTHON (the Python that runs
# the clients: default python3, which must import aiohttp, websockets and ijson: the
# project's venv), STREAMGATE_CACHE_DIR, KEEP=1 (leave everything running).

set -Eeuo pipefail

TEST_NAME=test-replicas
PROJECT=streamgate-replicastest
COMPOSE_FILE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/docker-compose.replicas.yml
# shellcheck source=docker/test-lib.sh
. "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"   # ROOT, LOGS, log, fail, cleanup, engine, images

HOST_URL=http://127.0.0.1:8080
PYTHON=${STREAMGATE_TEST_PYTHON:-python3}

"$PYTHON" -c 'import aiohttp, websockets, ijson' 2> /dev/null ||
    fail "$PYTHON cannot import aiohttp, websockets and ijson (the clients' dependencies): run in the project's venv (pip install -e '.[clients]') or set STREAMGATE_TEST_PYTHON"

start_engine
port_free 8080   # what the proxy publishes

# ------------------------------------------------------------------- the images ----

nginx_root() {
    # As in the real image: the logs go to the container's output, and no site of the
    # package's own (its default one listens on port 80, IPv6 included).
    ln -sf /dev/stdout "$1/var/log/nginx/access.log"
    ln -sf /dev/stderr "$1/var/log/nginx/error.log"
    rm -f "$1/etc/nginx/sites-enabled/default"
}

python_base_image
# Built with protected mode off, as the real image is; redis-server refuses clients from
# other containers otherwise.
standin_image redis:7-bookworm redis redis-server usr/bin/redis-server "" \
    --change 'USER redis' --change 'WORKDIR /var/lib/redis' --change 'EXPOSE 6379' \
    --change 'CMD ["redis-server", "--protected-mode", "no"]'
standin_image nginx:1-bookworm nginx nginx-light usr/sbin/nginx nginx_root \
    --change 'EXPOSE 80' --change 'CMD ["nginx", "-g", "daemon off;"]'
build_image

# ------------------------------------------------------------------------- up ----

compose_up   # compose waits for redis, then both gateways, to be healthy before the proxy
declare -A CID
for service in redis gateway1 gateway2 proxy; do
    CID[$service]=$(cid "$service")
    [ -n "${CID[$service]}" ] || fail "no $service container"
done
wait_healthy "${CID[gateway1]}" gateway1
wait_healthy "${CID[gateway2]}" gateway2
log "redis $(docker exec "${CID[redis]}" redis-server --version | awk '{print $3}'), $(docker exec "${CID[proxy]}" nginx -v 2>&1), two gateways healthy"

python3 - "$HOST_URL" << 'EOF' || fail "the proxy did not answer as expected on 127.0.0.1:8080"
import json, sys, time, urllib.request
base = sys.argv[1]
deadline = time.monotonic() + 30
while True:   # nginx may still be starting
    try:
        with urllib.request.urlopen(base + "/healthz", timeout=5) as r:
            body = json.load(r)
        break
    except OSError as exc:
        if time.monotonic() > deadline:
            raise SystemExit(f"  GET /healthz through the proxy: {exc}")
        time.sleep(0.5)
assert body.get("status") == "ok", body
print("  GET /healthz through the proxy ->", r.status, json.dumps(body), file=sys.stderr)
EOF

# ------------------------------------------------------ kill a replica under load ----

log "kill a replica under load: $PYTHON docker/check-replicas.py"
"$PYTHON" "$ROOT/docker/check-replicas.py" --url "$HOST_URL" --root "$ROOT" --logs "$LOGS" \
    --python "$PYTHON" --gateway1 "${CID[gateway1]}" --gateway2 "${CID[gateway2]}" \
    --redis "${CID[redis]}" --proxy "${CID[proxy]}" ||
    fail "a replica killed under load: see above (the clients' output: $LOGS/*.log, with KEEP=1)"

# ----------------------------------------------------------------------- down ----

log "docker compose down"
start_ns=$(date +%s%N)
timeout 120 "${COMPOSE[@]}" down --volumes > "$LOGS/down.log" 2>&1 ||
    fail "compose down failed: $(tail -20 "$LOGS/down.log")"
log "down took $((($(date +%s%N) - start_ns) / 1000000)) ms"
if docker network inspect "${PROJECT}_default" > /dev/null 2>&1; then
    fail "network ${PROJECT}_default still exists after down"
fi

log "PASS: gateway1 killed under load; ws, sse and chunked resumed on gateway2 with exactly the topic's messages"
echo "test-replicas: 1 passed, 0 failed"
