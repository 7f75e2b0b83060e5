#!/usr/bin/env bash
# `make demo`: the whole platform on the embedded default (SQLite stores under CT_HOME):
#   Dagster webserver + daemon (sensors on)   http://127.0.0.1:$DAGSTER_PORT (3000)
#   MLflow UI                                 http://127.0.0.1:$MLFLOW_PORT (5000)
#   model endpoint, once a champion is served http://127.0.0.1:$CT_SERVING_PORT (spec: 8080)
#   ct simulate: lands the bank data as batches once Dagster answers, at the pace the platform
#   ingests them, and sends live traffic (labels later) whenever the endpoint answers.
# Ctrl-C stops all of it (deploy/supervise.py). CT_DEMO_VERBOSE=1 shows Dagster's INFO lines and every warning.
set -euo pipefail
# CT_DEMO_SOURCE (the file to replay) is taken from the folder the demo was started in.
demo_source=${CT_DEMO_SOURCE:+$(realpath -m -- "$CT_DEMO_SOURCE")}
cd "$(dirname "$0")/.."
export CT_HOME="${CT_HOME:-$PWD/.ct}"
export DAGSTER_HOME="${DAGSTER_HOME:-$CT_HOME/dagster}"
# Absolute: Dagster runs from DAGSTER_HOME (below), and every process must find the spec.
# Unset, the demo serves the bank spec with each new champion rolled out as a canary in
# short steps (written to $CT_HOME/demo-spec.yaml below); a CT_SPEC of your own is used as is.
demo_spec=0
if [[ -z ${CT_SPEC:-} ]]; then
  demo_spec=1
  export CT_SPEC="$CT_HOME/demo-spec.yaml"
fi
repo=$PWD
bash deploy/dagster_home.sh  # never overwrites a dagster.yaml already there
# The spec this platform runs, for every `ct` command run with CT_SPEC unset (ct_platform.cli.where):
# `ct status` from the repo folder must not read ct_platform.yaml while the demo runs another.
realpath -m -- "$CT_SPEC" > "$CT_HOME/spec-in-use"
# Per-request timeout between Dagster's processes and the code server (Dagster's default is
# 60 s): a loaded machine answers sensor and launch calls slowly; an unanswered launch fails.
export DAGSTER_GRPC_TIMEOUT_SECONDS="${DAGSTER_GRPC_TIMEOUT_SECONDS:-180}"
dagster_port="${DAGSTER_PORT:-3000}"
mlflow_port="${MLFLOW_PORT:-5000}"

# Quiet by default. What is hidden, said once here:
# - Dagster's INFO lines (every daemon tick, sensor evaluation and run event) stay in the
#   Dagster UI, where each run and tick is listed; the console shows warnings and errors.
# - Python warnings from the libraries (Dagster's beta/preview notices for APIs we chose,
#   MLflow's and scikit-learn's deprecation notices about their own internals) say nothing
#   about the demo. Our code's own warnings are errors in the tests, not here.
log_level=warning
if [[ ${CT_DEMO_VERBOSE:-0} == 1 ]]; then
  log_level=info
else
  export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
  export MLFLOW_LOGGING_LEVEL="${MLFLOW_LOGGING_LEVEL:-WARNING}"
fi
# shellcheck disable=SC1091
source .venv/bin/activate

if [[ $demo_spec == 1 ]]; then
  # The bank spec plus a `deployment` section: each new champion goes out as a canary,
  # 20 -> 40 -> 60 -> 80 -> 100 %, one analysis per step once CT_DEMO_CANARY_INTERVAL seconds
  # have passed and the candidate has answered 50 requests of it (the simulated traffic
  # sends CT_DEMO_RPS a second); the rollout sensor looks once per interval. Rewritten at every
  # start, so it follows the shipped spec; the landing folder stays the repo's.
  python - "$repo/ct_platform.yaml" "$CT_SPEC" "${CT_DEMO_CANARY_INTERVAL:-30}" <<'PY'
import sys
from pathlib import Path

import yaml

source, target, interval = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
raw = yaml.safe_load(source.read_text())
landing_dir = (source.parent / raw["dataset"]["landing_dir"]).resolve()
# The spec creates only its default folder by itself; this absolute path is that folder.
landing_dir.mkdir(parents=True, exist_ok=True)
raw["dataset"]["landing_dir"] = str(landing_dir)
if raw["dataset"].get("source"):  # absolute too: the demo spec lives under CT_HOME
    raw["dataset"]["source"] = str((source.parent / raw["dataset"]["source"]).resolve())
raw["deployment"] = {
    "strategy": "canary",
    "analysis": {"interval_seconds": interval, "min_requests": 50},
    "canary": {"steps": [20, 40, 60, 80, 100]},
}
target.parent.mkdir(parents=True, exist_ok=True)
target.write_text(
    f"# Written by deploy/demo.sh from {source}: edits here are lost at the next start.\n"
    + yaml.safe_dump(raw, sort_keys=False)
)
PY
fi

# One interpreter for the three values (each start costs seconds on a busy machine). Creating
# the registry first migrates the MLflow store, so the UI does not race the first run for it.
# CT_SERVING_PORT, when set, overrides the spec's serving.port (settings.ServingSpec).
{ read -r tracking_uri; read -r endpoint; read -r landing_dir; } < <(python -c "
from ct_platform.registry.mlflow_registry import ModelRegistry, default_tracking_uri
from ct_platform.settings import load_spec
spec = load_spec()
ModelRegistry(default_tracking_uri(), spec.model.name, spec.dataset.name)
print(default_tracking_uri())
print(f'http://{spec.serving.host}:{spec.serving.port}')
print(spec.landing_dir)")

# Where the replayed rows come from: CT_DEMO_SOURCE, else the spec's dataset.source (the bank
# spec names data/bank_marketing.csv.gz); `ct simulate` names the path it tried if it is missing.
source_option=()
if [[ -n $demo_source ]]; then
  source_option=(--source "$demo_source")
fi

echo "Dagster UI: http://127.0.0.1:$dagster_port   MLflow UI: http://127.0.0.1:$mlflow_port" \
  "  model endpoint (once a champion is deployed): $endpoint"
echo "Batches land in $landing_dir; Ctrl-C stops everything."
echo "Spec: $CT_SPEC$([[ $demo_spec == 1 ]] && echo ' (the bank spec, each champion rolled out as a canary)')."\
  "ct status, ct history, ct rollout status read it (and say so) with CT_HOME=$CT_HOME"
# Run workers print every run event (DEBUG) and step log (INFO) whatever --log-level says;
# they are all in the Dagster UI, so the quiet console drops them.
drop=()
if [[ $log_level == warning ]]; then
  drop=(--drop 'dagster dev' ' - (.\[[0-9;]*m)?(DEBUG|INFO)(.\[[0-9;]*m)? - ')
fi
# Once every process has ended: the endpoint outlives Dagster runs by design and the demo owns
# it; the supervisor has stopped its process (a docker container is stopped here). Its record
# (what its stable slot served) stays: the next `make demo` restarts the champion from it,
# and a version waiting for its canary gets its rollout beside it, never a direct promotion.
after="python -c 'from ct_platform.deployment import target_for
from ct_platform.settings import load_spec
target_for(load_spec()).halt()' || true
echo 'Demo stopped. Run \`make demo\` again to continue where it stopped; \`make clean demo\`' \
  'starts over from an empty CT_HOME ($CT_HOME).'"
# From DAGSTER_HOME: run in the repo, Dagster would warn that the repo's dagster.yaml (the
# template, not this instance's settings) is not used.
cd "$DAGSTER_HOME"
# deploy/supervise.py runs the three in their own sessions and stops every process they
# start, re-parented ones included: SIGINT first, SIGKILL after CT_DEMO_STOP_GRACE seconds or
# at a second Ctrl-C. Any of them ending on its own stops the demo, saying which and why.
# exec: Ctrl-C and a TERM to this script's pid reach the supervisor directly.
# The MLflow UI only browses: its background job workers (three processes) are not needed
# here, nor are four web workers (its default) on a small machine: each imports MLflow.
# Batches wait for Dagster, then for the platform to ingest the previous one (at most
# CT_DEMO_MAX_PENDING waiting); traffic waits for the endpoint and runs until Ctrl-C.
# Unbuffered: the simulator's lines appear as they happen through the supervisor's pipe.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
exec python "$repo/deploy/supervise.py" --grace "${CT_DEMO_STOP_GRACE:-60}" "${drop[@]}" \
  --after "$after" \
  "dagster dev" dagster dev -w "$repo/workspace.yaml" --host 127.0.0.1 --port "$dagster_port" \
  --log-level "$log_level" \
  ::: "mlflow ui" mlflow ui --backend-store-uri "$tracking_uri" --host 127.0.0.1 \
  --port "$mlflow_port" --workers 1 --uvicorn-opts "--log-level $log_level" \
  ::: "ct simulate" env PYTHONUNBUFFERED=1 ct simulate --batch-size "${CT_DEMO_BATCH_SIZE:-4000}" \
  --interval "${CT_DEMO_INTERVAL:-45}" --wait-for "http://127.0.0.1:$dagster_port/server_info" \
  --max-pending "${CT_DEMO_MAX_PENDING:-1}" --endpoint "$endpoint" --rps "${CT_DEMO_RPS:-20}" \
  "${source_option[@]}"
