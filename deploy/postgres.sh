#!/usr/bin/env bash
# A throw-away PostgreSQL server in a temp folder, for CI and the tests (not for production:
# trust authentication on 127.0.0.1 only; compose.yaml runs the production one).
#
#   deploy/postgres.sh start    prints, on its last two lines:
#                                 CT_TEST_POSTGRES_URL=postgresql://ct@127.0.0.1:<port>/postgres
#                                 CT_TEST_POSTGRES_DIR=<folder>
#   deploy/postgres.sh stop <folder>
#
# Uses Debian's PostgreSQL (`initdb`, `pg_ctl` on PATH or under /usr/lib/postgresql/*/bin);
# installs the `postgresql` package when missing and root (or passwordless sudo) is at hand,
# unless CT_POSTGRES_INSTALL=0 (the test fixture's setting: tests never install packages).
# PostgreSQL refuses to run as root: as root it runs as the `postgres` user (or `nobody`).
# The port is a free one chosen by the kernel. Exit 1 with a loud banner when it cannot start.
set -uo pipefail

fail() {
  echo "################################################################" >&2
  echo "## NO POSTGRESQL: $*" >&2
  echo "## The PostgreSQL-backed tests will be SKIPPED." >&2
  echo "################################################################" >&2
  exit 1
}

find_bin() {
  command -v "$1" 2>/dev/null && return 0
  compgen -G "/usr/lib/postgresql/*/bin/$1" | sort -V | tail -n 1 | grep . && return 0
  return 1
}

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif sudo -n true 2>/dev/null; then sudo -n "$@"; else
    return 1
  fi
}

# As root, the server's own user runs it; otherwise the caller does.
as_server_user() {
  if [ "$(id -u)" -ne 0 ]; then "$@"; return; fi
  local user=postgres
  id "$user" >/dev/null 2>&1 || user=nobody
  runuser -u "$user" -- "$@"
}

server_owner() {
  if [ "$(id -u)" -ne 0 ]; then id -un; elif id postgres >/dev/null 2>&1; then echo postgres
  else echo nobody; fi
}

start() {
  if ! find_bin initdb >/dev/null; then
    [ "${CT_POSTGRES_INSTALL:-1}" = 0 ] && fail "PostgreSQL is not installed (apt-get install postgresql)"
    echo "installing postgresql (apt) ..." >&2
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2 \
      && as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends postgresql >&2 \
      || fail "initdb not found and apt-get install postgresql failed (needs root)"
  fi
  local initdb pg_ctl folder port
  initdb=$(find_bin initdb) || fail "initdb not found"
  pg_ctl=$(find_bin pg_ctl) || fail "pg_ctl not found"
  folder=$(mktemp -d "${TMPDIR:-/tmp}/ct-postgres.XXXXXX") || fail "mktemp failed"
  chmod 755 "$folder"
  [ "$(id -u)" -eq 0 ] && chown "$(server_owner)" "$folder"
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  as_server_user "$initdb" -D "$folder/data" -U ct -A trust --no-sync >"$folder/initdb.log" 2>&1 \
    || { cat "$folder/initdb.log" >&2; fail "initdb failed (log: $folder/initdb.log)"; }
  # fsync off: a test server loses nothing it needs on a crash, and a busy disk is slow.
  as_server_user "$pg_ctl" -D "$folder/data" -l "$folder/server.log" -w -t 120 start \
    -o "-p $port -k $folder -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" \
    >&2 || { tail -n 20 "$folder/server.log" >&2; fail "pg_ctl start failed (log: $folder/server.log)"; }
  echo "PostgreSQL $("$pg_ctl" --version | awk '{print $3}') up on 127.0.0.1:$port ($folder)" >&2
  echo "CT_TEST_POSTGRES_URL=postgresql://ct@127.0.0.1:$port/postgres"
  echo "CT_TEST_POSTGRES_DIR=$folder"
}

stop() {
  local folder=${1:?usage: postgres.sh stop <folder>} pg_ctl
  pg_ctl=$(find_bin pg_ctl) || exit 0
  as_server_user "$pg_ctl" -D "$folder/data" -m fast -w stop >&2 || true
  rm -rf "$folder"
}

case "${1:-}" in
  start) start ;;
  stop) stop "${2:-}" ;;
  *) echo "usage: $0 start | stop <folder>" >&2; exit 2 ;;
esac
