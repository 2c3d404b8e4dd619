#!/usr/bin/env bash
# Serve the dashboard to a lab network: every interface, and every visitor must log in (ui/access.py).
set -euo pipefail
cd "$(dirname "$0")/.."
BRAINVQ_SERVE=lab exec python3 -m streamlit run app.py --server.address 0.0.0.0 "$@"
