# shellcheck shell=bash
# What docker/test-compose.sh and docker/test-replicas.sh share: logging and failing, one
# run at a time, a Docker engine (the running one, or a private one this run starts and
# removes), stand-in images made with debootstrap (no image can be pulled here), the wheels
# the image is built from, and the cleanup. Sourced, not run:
#
#   TEST_NAME=test-x PROJECT=streamgate-x COMPOSE_FILE=/abs/compose.yml
#   . "$(dirname "${BASH_SOURCE[0]}")/test-lib.sh"
#
# Knobs (environment): STREAMGATE_CACHE_DIR (default /var/cache/streamgate: debootstrap
# roots, kept between runs), KEEP=1 (leave containers, images and the engine running).

: "${TEST_NAME:?}" "${PROJECT:?}" "${COMPOSE_FILE:?}"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WHEEL_DIR="$ROOT/docker/wheels"
IMAGE=streamgate                             # what the compose files build
CACHE_DIR=${STREAMGATE_CACHE_DIR:-/var/cache/streamgate}
STATE=/run/streamgate-composetest            # a private engine's socket, pid file, exec root, log
DATA_ROOT=/var/lib/streamgate-composetest    # a private engine's images and containers
LOCK=/run/streamgate-composetest.lock        # one of these tests at a time on a machine
T0=$(date +%s)
LOGS=$(mktemp -d "/tmp/streamgate-$TEST_NAME.XXXXXX")   # this run's logs, removed at the end

log() { printf '[%s %4ss] %s\n' "$TEST_NAME" "$(($(date +%s) - T0))" "$*" >&2; }
fail() {
    printf '\nFAIL: %s\n\n' "$*" >&2
    exit 1
}
trap 'fail "command failed (exit $?) at line $LINENO: $BASH_COMMAND"' ERR

[ "$(id -u)" = 0 ] || fail "run as root (it may install and start a Docker engine)"
for tool in python3 timeout tar flock; do
    command -v "$tool" > /dev/null || fail "$tool not found"
done

# Both tests may start the same private engine and publish the same port: one at a time.
exec 9> "$LOCK"
if ! flock -n 9; then
    log "another streamgate Docker test is running; waiting for it (up to 30 min)"
    flock -w 1800 9 || fail "another streamgate Docker test held $LOCK for 30 min"
fi

# ---------------------------------------------------------------- cleanup (always) ----

STARTED_DOCKERD_PID=
MADE_IMAGES=()      # stand-ins and the built image, removed at the end from a shared engine
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
        if [ -z "$STARTED_DOCKERD_PID" ] && [ "${#MADE_IMAGES[@]}" -gt 0 ]; then
            docker image rm -f "${MADE_IMAGES[@]}" > /dev/null 2>&1
            docker image prune -f --filter label=org.streamgate.stage=build > /dev/null 2>&1
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

# The running engine, or a private one (Debian's docker.io) that cleanup stops and deletes.
# Then COMPOSE: `docker compose` (or docker-compose) on this test's project and file, with
# whatever an earlier run left of that project removed.
start_engine() {
    if command -v docker > /dev/null && engine_up; then
        log "using the running Docker engine (DOCKER_HOST=${DOCKER_HOST:-default})"
    else
        command -v dockerd > /dev/null || apt_install docker.io
        command -v docker > /dev/null || fail "docker CLI not found after installing docker.io"
        mkdir -p "$STATE" "$DATA_ROOT"
        # A private engine left behind by an earlier run that was killed (the lock says
        # that no other run is using it).
        if [ -s "$STATE/dockerd.pid" ] && kill -0 "$(cat "$STATE/dockerd.pid")" 2> /dev/null; then
            log "stopping the engine left by an earlier run (pid $(cat "$STATE/dockerd.pid"))"
            stop_dockerd "$(cat "$STATE/dockerd.pid")"
        fi
        rm -rf "${DATA_ROOT:?}"/* "$STATE/exec"
        if command -v ip > /dev/null && ip link show docker0 > /dev/null 2>&1; then HAD_DOCKER0=1; fi
        export DOCKER_HOST="unix://$STATE/docker.sock"
        log "starting dockerd on $DOCKER_HOST"
        # 9>&-: the engine (and its containers) must not hold this run's lock.
        dockerd --host "$DOCKER_HOST" --data-root "$DATA_ROOT" --exec-root "$STATE/exec" \
            --pidfile "$STATE/dockerd.pid" > "$STATE/dockerd.log" 2>&1 9>&- &
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

    local compose_cmd
    if docker compose version > /dev/null 2>&1; then
        compose_cmd=(docker compose)
    else
        command -v docker-compose > /dev/null || apt_install docker-compose
        compose_cmd=(docker-compose)
    fi
    COMPOSE=("${compose_cmd[@]}" --project-name "$PROJECT" --file "$COMPOSE_FILE")
    log "compose: $("${compose_cmd[@]}" version 2> /dev/null | sed -n 1p)"
    # Leftovers of an earlier run on a shared engine.
    timeout 60 "${COMPOSE[@]}" down --volumes --remove-orphans --timeout 5 > /dev/null 2>&1 || true
}

port_free() {
    # Fail now, before building, if something on this machine listens on 127.0.0.1:$1.
    python3 - "$1" << 'EOF' || fail "127.0.0.1:$1 is already in use on this machine: stop what listens there"
import socket, sys
s = socket.socket()
s.settimeout(2)
sys.exit(1 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 0)
EOF
}

# ------------------------------------------------------------------ stand-in images ----

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

# standin_image TAG NAME PACKAGES CHECK SETUP [--change INSTRUCTION]...
#
# Makes the image TAG when the engine does not have it: a Debian root (debootstrap
# --variant=minbase --include=PACKAGES, the machine's own suite and mirror), cached as
# $CACHE_DIR/rootfs-SUITE-NAME.tar (a cached root counts when it holds the file CHECK),
# imported with `docker import` and the --change instructions given (CMD, USER, ...).
# SETUP, when not "", is a function called with the root's path before it is packed.
standin_image() {
    local tag=$1 name=$2 packages=$3 check=$4 setup=$5
    shift 5
    if docker image inspect "$tag" > /dev/null 2>&1; then
        log "image $tag already present: using it"
        return 0
    fi
    local suite tarball rootfs mirror
    # shellcheck disable=SC1091
    suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
    tarball="$CACHE_DIR/rootfs-$suite-$name.tar"
    if [ -s "$tarball" ] && tar -tf "$tarball" "./$check" > /dev/null 2>&1; then
        log "stand-in root for $tag: cached $tarball"
    else
        command -v debootstrap > /dev/null || apt_install debootstrap
        mirror=$(debian_mirror)
        [ -n "$mirror" ] || fail "no Debian mirror found in /etc/apt/sources.list*"
        mkdir -p "$CACHE_DIR"
        rootfs=$(mktemp -d "$CACHE_DIR/rootfs.XXXXXX")
        log "stand-in root for $tag: debootstrap $suite (minbase + $packages)"
        timeout 900 debootstrap --variant=minbase --include="$packages" \
            "$suite" "$rootfs" "$mirror" > "$CACHE_DIR/debootstrap-$name.log" 2>&1 ||
            fail "debootstrap failed; see $CACHE_DIR/debootstrap-$name.log: $(tail -5 "$CACHE_DIR/debootstrap-$name.log")"
        [ -e "$rootfs/$check" ] || fail "debootstrap made no $check (packages: $packages)"
        rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
            "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/*
        if [ -n "$setup" ]; then "$setup" "$rootfs"; fi
        tar -C "$rootfs" -cf "$tarball.tmp" . || fail "could not pack the stand-in root for $tag"
        mv "$tarball.tmp" "$tarball"
        rm -rf "$rootfs"
    fi
    log "importing the stand-in as $tag"
    timeout 300 docker import "$@" "$tarball" "$tag" > /dev/null ||
        fail "docker import of the stand-in $tag failed"
    MADE_IMAGES+=("$tag")
}

# The stand-in for python:3.12-slim, the Dockerfile's base: Debian's Python 3.11, which the
# Dockerfile accepts.
python_base_image() {
    standin_image python:3.12-slim python3 python3,python3-venv usr/bin/python3 "" \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["python3"]'
}

# ------------------------------------------------------------ wheels, then build ----

# The image the compose file builds (from python:3.12-slim), offline: its dependencies
# are downloaded as wheels on the host, for the base image's Python, into docker/wheels/
# (git-ignored, removed at the end), and the build installs from there.
build_image() {
    local base=python:3.12-slim py_ver arch glibc minor extras skip
    read -r py_ver arch glibc < <(timeout 60 docker run --rm --network none --entrypoint python3 \
        "$base" -c 'import platform, sys; print("%d.%d" % sys.version_info[:2], platform.machine(), platform.libc_ver()[1])') ||
        fail "python3 does not run in $base"
    log "base image runs Python $py_ver on $arch, glibc $glibc"
    # pip download --platform takes exact tags: list every manylinux tag this glibc accepts.
    local platforms=(--platform "manylinux2014_$arch")
    for ((minor = 17; minor <= ${glibc#2.}; minor++)); do
        platforms+=(--platform "manylinux_2_${minor}_$arch")
    done

    log "downloading wheels for Python $py_ver into docker/wheels/"
    rm -rf "$WHEEL_DIR" # build-only and git-ignored: whatever an earlier run left goes
    MADE_WHEEL_DIR=1
    mkdir -p "$WHEEL_DIR"
    # The set the Dockerfile installs by default (its EXTRAS less its SKIP_PACKAGES), plus the
    # build system, straight from pyproject.toml (nothing is built in the work tree).
    extras=$(sed -n 's/^ARG EXTRAS=//p' "$ROOT/docker/Dockerfile")
    skip=$(sed -n 's/^ARG SKIP_PACKAGES=//p' "$ROOT/docker/Dockerfile")
    [ -n "$extras" ] || fail "no ARG EXTRAS=... default in docker/Dockerfile"
    python3 "$ROOT/docker/requirements-from-pyproject.py" "$ROOT/pyproject.toml" \
        --build --base --extras "$extras" --skip "$skip" > "$LOGS/requirements.txt" ||
        fail "could not read the requirements from pyproject.toml"
    timeout 600 python3 -m pip download --quiet --dest "$WHEEL_DIR" --only-binary=:all: \
        --python-version "$py_ver" --implementation cp --abi "cp${py_ver/./}" "${platforms[@]}" \
        -r "$LOGS/requirements.txt" > "$LOGS/pip.log" 2>&1 ||
        fail "pip download of the dependencies failed: $(grep -v '^WARNING' "$LOGS/pip.log" | tail -20)"
    # pip download judges environment markers by the host's Python, not the image's: a
    # dependency that only the image's older release needs (redis wants async-timeout below
    # Python 3.11.3; Debian's is 3.11.2) is left out. So pip in the base image, offline, says
    # what it still misses, the host fetches it, and again (a few rounds at most).
    local round missing
    for round in 1 2 3 4 5; do
        tar -c -C "$WHEEL_DIR" . -C "$LOGS" requirements.txt |
            timeout 180 docker run --rm -i --network none --entrypoint sh "$base" -c \
                'mkdir /tmp/w && tar -x -C /tmp/w && python3 -m venv /tmp/v && /tmp/v/bin/pip install --disable-pip-version-check --no-index --find-links /tmp/w --dry-run -r /tmp/w/requirements.txt' \
                > "$LOGS/pip-check.log" 2>&1 && break
        missing=$(sed -n 's/^ERROR: No matching distribution found for //p' "$LOGS/pip-check.log" | sed -n 1p)
        if [ -z "$missing" ] || [ "$round" = 5 ]; then
            fail "pip in $base cannot install the downloaded wheels: $(tail -20 "$LOGS/pip-check.log")"
        fi
        log "the base image's Python also needs ${missing%%;*}: downloading it"
        timeout 300 python3 -m pip download --quiet --dest "$WHEEL_DIR" --only-binary=:all: \
            --python-version "$py_ver" --implementation cp --abi "cp${py_ver/./}" "${platforms[@]}" \
            "${missing%%;*}" > "$LOGS/pip.log" 2>&1 ||
            fail "pip download of ${missing%%;*} failed: $(grep -v '^WARNING' "$LOGS/pip.log" | tail -20)"
    done
    log "$(find "$WHEEL_DIR" -name '*.whl' | wc -l) wheels ($extras, less $skip), $(du -sh "$WHEEL_DIR" | cut -f1)"

    export STREAMGATE_PIP_NO_INDEX=1 STREAMGATE_PIP_FIND_LINKS=/wheels
    log "docker compose build"
    MADE_IMAGES+=("$IMAGE")
    timeout 900 "${COMPOSE[@]}" build > "$LOGS/build.log" 2>&1 ||
        fail "compose build failed: $(tail -30 "$LOGS/build.log")"
    rm -f "$LOGS/build.log"
    log "image $IMAGE: $(docker image inspect "$IMAGE" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}')"
}

# ------------------------------------------------------------------------- up ----

cid() { "${COMPOSE[@]}" ps -q "$1" 2> /dev/null | sed -n 1p; }

wait_healthy() {
    # wait_healthy CONTAINER [WHAT]: up to 90 s for the container's HEALTHCHECK to pass.
    local deadline=$(($(date +%s) + 90)) health
    while :; do
        health=$(docker inspect --format '{{.State.Health.Status}}' "$1")
        [ "$health" = healthy ] && return 0
        [ "$(date +%s)" -lt "$deadline" ] || fail "${2:-gateway} not healthy within 90 s (it is $health)"
        sleep 1
    done
}

compose_up() {
    log "docker compose up -d"
    timeout 240 "${COMPOSE[@]}" up -d > "$LOGS/up.log" 2>&1 ||
        fail "compose up failed: $(tail -30 "$LOGS/up.log")"
    rm -f "$LOGS/up.log"
}
