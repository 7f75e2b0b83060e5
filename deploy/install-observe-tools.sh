#!/usr/bin/env bash
# Installs what the observe tests need from Debian, quietly: chromium (the browser UI test,
# driven by Playwright with this executable: no browser download) and prometheus (the
# `prometheus` server and `promtool` for the rule tests and the real scrape).
# Does nothing when they are there; exit 1 (the tests then skip, loudly) when it cannot.
set -euo pipefail
missing=()
command -v chromium >/dev/null || missing+=(chromium)
{ command -v promtool >/dev/null && command -v prometheus >/dev/null; } || missing+=(prometheus)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
