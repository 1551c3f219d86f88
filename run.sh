#!/usr/bin/env bash
# Run the service: paper trading on simulated data, no credentials needed.
# Creates .venv and installs pinned requirements on first use. Extra args go to app.py.
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/venv.sh
exec "$VENV/bin/python" app.py "$@"
