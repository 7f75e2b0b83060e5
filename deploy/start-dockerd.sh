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

if engine_answers; then
    echo "docker engine already running"
    exit 0
fi

if ! command -v dockerd >/dev/null 2>&1 || ! command -v docker >/dev/null 2>&1; then
    echo "installing docker.io ..."
    if [ "$(id -u)" -ne 0 ]; then
        fail "dockerd is not installed and installing it needs root"
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq --no-install-recommends docker.io iptables \
        || fail "apt-get install docker.io failed"
fi

if [ "$(id -u)" -ne 0 ]; then
    fail "no engine answers and starting dockerd needs root"
fi

# A stale pidfile from a killed dockerd makes the next one refuse to start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid)" 2>/dev/null; then
    rm -f /var/run/docker.pid
fi

echo "starting dockerd (storage driver vfs), log: $log_file"
mkdir -p "$(dirname "$log_file")"
nohup dockerd --storage-driver=vfs >"$log_file" 2>&1 &
dockerd_pid=$!

for _ in $(seq "$wait_seconds"); do
    if engine_answers; then
        echo "docker engine up (dockerd pid $dockerd_pid)"
        exit 0
    fi
    if ! kill -0 "$dockerd_pid" 2>/dev/null; then
        tail -n 20 "$log_file" >&2
        fail "dockerd exited during start-up (see $log_file)"
    fi
    sleep 1
done
tail -n 20 "$log_file" >&2
fail "dockerd did not answer within ${wait_seconds}s (see $log_file)"
