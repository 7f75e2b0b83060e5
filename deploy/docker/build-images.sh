#!/usr/bin/env bash
# Build the images of deploy/compose.yaml locally, from Debian packages and PyPI wheels only
# (no image registry is contacted):
#   ct-platform-base:bookworm    deploy/build-base-image.sh (debootstrap), if missing
#   ct-platform-app:latest       the platform: Dagster, the code location, MLflow, the server
#   ct-platform-postgres:15      Debian's postgresql-15
#   ct-platform-prometheus:latest Debian's prometheus
# Grafana has no Debian package: its service uses grafana/grafana-oss, which must be loaded
# by hand (`docker load -i grafana.tar`); `make up` starts it only when it is there.
#
# The app's dependencies are uv.lock's pins (`uv export`), downloaded as wheels on the host
# into ~/.cache/ct-platform/wheels-app (once), installed offline in the image.
set -euo pipefail
cd "$(dirname "$0")/../.."
repo=$PWD
uv=$(command -v uv || echo "$HOME/.local/bin/uv")
bash deploy/build-base-image.sh

context=$(mktemp -d /var/tmp/ct-app-context.XXXXXX)
trap 'rm -rf "$context"' EXIT
wheels="${CT_WHEEL_CACHE:-$HOME/.cache/ct-platform}/wheels-app"
mkdir -p "$wheels" "$context/project"
"$uv" export --frozen --no-dev --no-emit-project --no-hashes --quiet -o "$context/requirements.txt"
echo "downloading wheels into $wheels (cached) ..."
# The lock is the whole closure, pinned: --no-deps. Bookworm's glibc is 2.36, so every
# manylinux tag up to it runs (pip matches --platform tags literally).
platforms=(--platform manylinux2014_x86_64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_x86_64"); done
grep -v '^\s*#' "$context/requirements.txt" | grep . >"$context/pins.txt"
if ! [ -e "$wheels/.complete-$(sha256sum <"$context/pins.txt" | cut -c1-16)" ]; then
  # (pip's warnings about this machine's unreadable extra index folders are dropped)
  if ! python3 -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --no-deps --python-version 3.11 "${platforms[@]}" -r "$context/pins.txt" -d "$wheels" \
    2>"$context/pip.log"; then
    grep -v "^WARNING: Location" "$context/pip.log" >&2
    echo "pip download of the app's wheels failed" >&2
    exit 1
  fi
  touch "$wheels/.complete-$(sha256sum <"$context/pins.txt" | cut -c1-16)"
fi
# The dependency layer's cache key is requirements.txt + wheels/: both must depend on the pins
# only. uv's header names the random context folder (`-o ...`), and the wheel cache keeps the
# wheels of older locks, so the context gets the bare pins and exactly their wheels.
mv "$context/pins.txt" "$context/requirements.txt"
mkdir -p "$context/wheels"
python3 - "$context/requirements.txt" "$wheels" "$context/wheels" <<'PY'
import os, re, shutil, sys
pins_file, cache, dest = sys.argv[1:]
def key(name, version):
    return re.sub(r"[-_.]+", "_", name).lower(), version
pins = {key(*line.split(";")[0].strip().split("==")) for line in open(pins_file)}
# (a pin without a wheel is one whose marker excludes Linux; pip names any other one)
for wheel in os.listdir(cache):
    if wheel.endswith(".whl") and key(*wheel.split("-")[:2]) in pins:
        try:
            os.link(os.path.join(cache, wheel), os.path.join(dest, wheel))
        except OSError:
            shutil.copy2(os.path.join(cache, wheel), dest)
PY
"$uv" build --wheel --quiet -o "$context/project/dist" "$repo"
cp -r ct_platform.yaml dagster.yaml "$context/project/"
mkdir -p "$context/project/deploy" "$context/project/data"
cp -r deploy/dagster_home.sh deploy/mlflow-server.sh deploy/docker "$context/project/deploy/"
cp data/bank_marketing.csv.gz "$context/project/data/"

build() {  # tag dockerfile context
  echo "building $1 ..."
  local started=$SECONDS
  docker build --quiet -t "$1" -f "$2" "$3" >/dev/null
  echo "built $1 in $((SECONDS - started)) s"
}
build ct-platform-app:latest deploy/docker/Dockerfile.app "$context"
build ct-platform-postgres:15 deploy/docker/Dockerfile.postgres deploy/docker
build ct-platform-prometheus:latest deploy/docker/Dockerfile.prometheus deploy/docker
