#!/usr/bin/env bash
# Give DAGSTER_HOME the shipped instance settings (dagster.yaml) without ever overwriting a
# file that is already there: it may carry the user's own settings (a longer timeout, a
# Postgres storage). When the shipped file changes, say so once, with the command to take it.
set -euo pipefail
cd "$(dirname "$0")/.."
: "${DAGSTER_HOME:?set DAGSTER_HOME}"
shipped="$PWD/dagster.yaml"
target="$DAGSTER_HOME/dagster.yaml"
mkdir -p "$DAGSTER_HOME"

# PostgreSQL storage (runs, event logs, schedules) when DAGSTER_PG_HOST is set: the names of
# Dagster's own docs and Helm chart. Written as env references, so no password lands in the
# file. The psycopg2 driver is named: SQLAlchemy 2.1 reads a bare postgresql:// as psycopg 3,
# which Dagster's storage does not speak.
postgres_storage() {
  : "${DAGSTER_PG_USERNAME:?DAGSTER_PG_HOST is set: set DAGSTER_PG_USERNAME too}"
  : "${DAGSTER_PG_DB:?DAGSTER_PG_HOST is set: set DAGSTER_PG_DB too}"
  cat <<'YAML'
# PostgreSQL storage, written by deploy/dagster_home.sh because DAGSTER_PG_HOST was set.
storage:
  postgres:
    postgres_db:
      hostname: {env: DAGSTER_PG_HOST}
      username: {env: DAGSTER_PG_USERNAME}
      db_name: {env: DAGSTER_PG_DB}
      scheme: postgresql+psycopg2
YAML
  if [[ -n ${DAGSTER_PG_PASSWORD:-} ]]; then echo "      password: {env: DAGSTER_PG_PASSWORD}"; fi
  if [[ -n ${DAGSTER_PG_PORT:-} ]]; then echo "      port: {env: DAGSTER_PG_PORT}"; fi
}

# Runs in containers of the code location's image when CT_RUN_LAUNCHER=docker (the compose
# stack): DockerRunLauncher starts one container per run, on CT_DOCKER_NETWORK, with the
# named volumes of CT_DOCKER_VOLUMES ("volume:/path,...") and the listed variables passed on.
docker_run_launcher() {
  : "${CT_DOCKER_NETWORK:?CT_RUN_LAUNCHER=docker: set CT_DOCKER_NETWORK}"
  echo "# Written by deploy/dagster_home.sh because CT_RUN_LAUNCHER=docker."
  echo "run_launcher:"
  echo "  module: ct_platform.defs.run_launcher"
  echo "  class: PatientDockerRunLauncher"  # dagster-docker's, waiting past 60 s per request
  echo "  config:"
  echo "    network: $CT_DOCKER_NETWORK"
  echo "    engine_timeout_seconds: ${CT_DOCKER_ENGINE_TIMEOUT_SECONDS:-600}"
  local name passed=()
  for name in DAGSTER_PG_HOST DAGSTER_PG_USERNAME DAGSTER_PG_PASSWORD DAGSTER_PG_DB \
    DAGSTER_PG_PORT MLFLOW_TRACKING_URI CT_HOME CT_SPEC DAGSTER_GRPC_TIMEOUT_SECONDS \
    CT_SERVING_TARGET CT_SERVING_ENDPOINT_URL; do
    if [[ -n ${!name:-} ]]; then passed+=("$name"); fi
  done
  # A flow sequence: `[]` when none is set (an empty block list would be null, refused).
  echo "    env_vars: [$(IFS=,; echo "${passed[*]}")]"
  echo "    container_kwargs:"
  # Removed when the run ends: under vfs each run container is a 2 GB copy of the image, and
  # kept ones filled the disk in under an hour. A run whose container vanished unfinished
  # is failed by run monitoring (worker not found).
  echo "      auto_remove: true"
  # `make down` and the compose test remove a stack's run containers by this label.
  echo "      labels:"
  echo "        ct-platform/stack: $CT_DOCKER_NETWORK"
  echo "      volumes: [${CT_DOCKER_VOLUMES:-}]"
}

if [[ ! -e $target ]]; then
  # A temp file then a rename: several containers of the compose stack start at once.
  tmp=$(mktemp "$target.XXXXXX")
  {
    cat "$shipped"
    if [[ -n ${DAGSTER_PG_HOST:-} ]]; then postgres_storage; fi
    if [[ ${CT_RUN_LAUNCHER:-} == docker ]]; then docker_run_launcher; fi
  } >"$tmp"
  chmod 644 "$tmp"
  mv -n "$tmp" "$target"
  rm -f "$tmp"  # still there when another writer won the race
  echo "Dagster instance settings: $target (from $shipped${DAGSTER_PG_HOST:+, PostgreSQL storage}${CT_RUN_LAUNCHER:+, $CT_RUN_LAUNCHER run launcher})"
  exit 0
fi
# The checksum of the last shipped version reported, so the note is given once per version.
noted="$DAGSTER_HOME/.shipped-dagster-yaml.sha256"
checksum=$(sha256sum "$shipped" | cut -d' ' -f1)
if ! cmp -s "$shipped" "$target" && [[ $shipped -nt $target ]] \
  && [[ $(cat "$noted" 2>/dev/null) != "$checksum" ]]; then
  echo "note: the shipped $shipped is newer than your $target, which is kept as it is."
  echo "      See the difference: diff $target $shipped"
  echo "      Take the shipped one: cp $shipped $target"
  echo "$checksum" >"$noted"
fi
