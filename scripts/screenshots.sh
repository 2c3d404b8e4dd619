#!/usr/bin/env bash
# Refresh docs/screenshots: the browser tests, run on the shipped demo checkpoint, save their screenshots there.
set -euo pipefail
cd "$(dirname "$0")/.."
BRAINVQ_SCREENSHOTS="$PWD/docs/screenshots" python3 -m pytest -q tests/e2e "$@"
