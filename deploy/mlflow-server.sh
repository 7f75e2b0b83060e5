#!/usr/bin/env bash
# The MLflow tracking server the production path uses: a database backend store and an
# artifact store it serves itself (clients upload and download artifacts through it, over
# HTTP, and need no access to its folder or bucket). The platform then talks to it as to any
# server: MLFLOW_TRACKING_URI=http://<host>:<port>.
#
#   deploy/mlflow-server.sh                      in the foreground (compose runs it so)
#
# Environment (all optional):
#   MLFLOW_BACKEND_STORE_URI   postgresql://user:password@host:5432/mlflow
#                              (default: SQLite, $CT_HOME/mlflow-server/mlflow.db)
#   MLFLOW_ARTIFACTS_DESTINATION  where served artifacts live: a folder or s3://, gs://, ...
#                              (default: $CT_HOME/mlflow-server/artifacts)
#   MLFLOW_HOST (127.0.0.1)  MLFLOW_PORT (5000)  MLFLOW_WORKERS (2)
#   MLFLOW_ALLOWED_HOSTS       Host headers accepted (MLflow's DNS-rebinding guard), e.g.
#                              "mlflow,mlflow:5000,localhost:*" in compose (default: MLflow's)
# The server migrates a new or older database itself before it answers.
set -euo pipefail
home="${CT_HOME:-$PWD/.ct}/mlflow-server"
mkdir -p "$home"
backend="${MLFLOW_BACKEND_STORE_URI:-sqlite:///$home/mlflow.db}"
artifacts="${MLFLOW_ARTIFACTS_DESTINATION:-$home/artifacts}"
args=(
  --backend-store-uri "$backend"
  --serve-artifacts --artifacts-destination "$artifacts"
  --host "${MLFLOW_HOST:-127.0.0.1}" --port "${MLFLOW_PORT:-5000}"
  --workers "${MLFLOW_WORKERS:-2}"
)
if [[ -n ${MLFLOW_ALLOWED_HOSTS:-} ]]; then
  args+=(--allowed-hosts "$MLFLOW_ALLOWED_HOSTS")
fi
# The server's background job runner (three extra processes) serves GenAI features only.
export MLFLOW_SERVER_ENABLE_JOB_EXECUTION="${MLFLOW_SERVER_ENABLE_JOB_EXECUTION:-false}"
export MLFLOW_DISABLE_TELEMETRY="${MLFLOW_DISABLE_TELEMETRY:-true}"
echo "mlflow server: backend ${backend%%://*}://…, artifacts $artifacts," \
  "http://${MLFLOW_HOST:-127.0.0.1}:${MLFLOW_PORT:-5000}"
exec mlflow server "${args[@]}"
