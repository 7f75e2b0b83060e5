#!/usr/bin/env bash
# Installs the Debian packages some tests drive, quietly: chromium (the browser UI test,
# driven by Playwright with this executable: no browser download), prometheus (the
# `prometheus` server and `promtool` for the rule tests and the real scrape) and wrk (the
# delivery proofs: rollouts under load).
# Does nothing when they are there; exit 1 (those tests then skip, loudly) when it cannot.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
command -v wrk >/dev/null || missing+=(wrk)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
