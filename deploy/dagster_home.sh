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
if [[ ! -e $target ]]; then
  cp "$shipped" "$target"
  echo "Dagster instance settings: $target (from $shipped)"
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
