#!/usr/bin/env bash
# Install everything the tests need (Python packages, Debian's chromium for the browser tests), then run them.
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null 2>&1; then
  SUDO=$([ "$(id -u)" = 0 ] || echo sudo)
  $SUDO apt-get update -q && $SUDO apt-get install -y -q chromium
fi
python3 -m pip install -q -r requirements-dev.txt
python3 -m pytest -q "$@"
