#!/usr/bin/env bash
# Make sure a Docker engine answers on this machine; start one if none does.
#
# Idempotent: when `docker info` already works this does nothing. Otherwise it installs
# docker.io (Debian) if dockerd is missing, starts `dockerd --storage-driver=vfs` in the
# background (vfs works on any filesystem, including overlay-on-overlay CI sandboxes where
# overlay2 cannot mount), and waits until the engine answers.
#
# Exit status 0 = an engine answers; 1 = it could not start one (the reason is printed
# in a loud banner, and the docker tests will SKIP saying so).
#
# Environment: CT_DOCKERD_LOG (default /var/log/ct-dockerd.log),
#              CT_DOCKERD_WAIT_SECONDS (default 60).
set -uo pipefail

log_file="${CT_DOCKERD_LOG:-/var/log/ct-dockerd.log}"
wait_seconds="${CT_DOCKERD_WAIT_SECONDS:-60}"

fail() {
    echo "################################################################" >&2
    echo "## NO DOCKER ENGINE: $*" >&2
    echo "## The docker deployment target and its tests cannot run here." >&2
    echo "################################################################" >&2
    exit 1
}

engine_answers() {
    docker info >/dev/null 2>&1
}

# Root for installing and starting the engine: directly, or through passwordless sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif sudo -n true 2>/dev/null; then
        sudo -n "$@"
    else
        fail "this step needs root (or passwordless sudo): $*"
    fi
}

if engine_answers; then
    echo "docker engine already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    echo "installing docker.io ..."
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        && as_root env DEBIAN_FRONTEND=noninteractive \
            apt-get install -y -qq --no-install-recommends docker.io iptables \
        || fail "apt-get install docker.io failed"
fi

# A stale pidfile from a killed dockerd makes the next one refuse to start.
if [ -f /var/run/docker.pid ] && ! as_root kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    as_root rm -f /var/run/docker.pid
fi

echo "starting dockerd (storage driver vfs), log: $log_file"
as_root mkdir -p "$(dirname "$log_file")"
as_root sh -c "nohup dockerd --storage-driver=vfs >'$log_file' 2>&1 & echo \$! >/tmp/ct-dockerd.pid"
dockerd_pid="$(cat /tmp/ct-dockerd.pid)"

for _ in $(seq "$wait_seconds"); do
    if engine_answers; then
        echo "docker engine up (dockerd pid $dockerd_pid)"
        exit 0
    fi
    if ! as_root kill -0 "$dockerd_pid" 2>/dev/null; then
        tail -n 20 "$log_file" >&2
        fail "dockerd exited during start-up (see $log_file)"
    fi
    sleep 1
done
tail -n 20 "$log_file" >&2
fail "dockerd did not answer within ${wait_seconds}s (see $log_file)"
