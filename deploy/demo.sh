#!/usr/bin/env bash
# `make demo`: the whole platform on the embedded default (SQLite stores under CT_HOME):
#   Dagster webserver + daemon (sensors on)   http://127.0.0.1:3000
#   MLflow UI                                 http://127.0.0.1:5000
#   ct simulate: replays the bank data as batches (and as live traffic once an endpoint is up)
# Ctrl-C stops all of it.
set -euo pipefail
cd "$(dirname "$0")/.."
export CT_HOME="${CT_HOME:-$PWD/.ct}"
export DAGSTER_HOME="${DAGSTER_HOME:-$CT_HOME/dagster}"
mkdir -p "$DAGSTER_HOME"
cp dagster.yaml "$DAGSTER_HOME/dagster.yaml"
# shellcheck disable=SC1091
source .venv/bin/activate

tracking_uri=$(python -c \
  "from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri as d
from ct_platform.settings import load_spec
s = load_spec(); ModelRegistry(d(), s.model.name, s.dataset.name); print(d())")
endpoint="http://$(python -c "from ct_platform.settings import load_spec as l; s=l().serving; print(f'{s.host}:{s.port}')")"

# Helpers run in the background and are stopped when this script exits. Dagster runs in the
# foreground: background jobs of a script ignore SIGINT, and Ctrl-C must reach `dagster dev`
# for it to shut its webserver, daemon and code server down cleanly.
pids=()
stop_helpers() {
  trap '' INT HUP  # a closing terminal must not cut the clean-up short
  kill -TERM "${pids[@]}" 2>/dev/null || true
  # The endpoint outlives Dagster runs by design; the demo owns it, so it goes too.
  python -c "from ct_platform.deployment import target_for
from ct_platform.settings import load_spec
target_for(load_spec()).stop()" || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap stop_helpers EXIT

# The UI only browses: its background job workers (three processes) are not needed here.
MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false \
  mlflow ui --backend-store-uri "$tracking_uri" --host 127.0.0.1 --port "${MLFLOW_PORT:-5000}" &
pids+=($!)
ct simulate --batch-size "${CT_DEMO_BATCH_SIZE:-4000}" --interval "${CT_DEMO_INTERVAL:-45}" \
  --endpoint "$endpoint" --rps "${CT_DEMO_RPS:-20}" &
pids+=($!)

echo "Dagster UI: http://127.0.0.1:${DAGSTER_PORT:-3000}   MLflow UI: http://127.0.0.1:${MLFLOW_PORT:-5000}"
echo "Batches land in $(python -c 'from ct_platform.settings import load_spec; print(load_spec().landing_dir)'); Ctrl-C stops everything."
dagster dev -w workspace.yaml --host 127.0.0.1 --port "${DAGSTER_PORT:-3000}"
