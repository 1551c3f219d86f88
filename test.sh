#!/usr/bin/env bash
# Run the test suite. Creates .venv and installs pinned requirements on first use.
# Extra args go to pytest (e.g. ./test.sh tests/api -x).
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/venv.sh
exec "$VENV/bin/python" -m pytest "$@"
