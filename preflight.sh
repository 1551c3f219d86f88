#!/usr/bin/env bash
# Pre-flight before live trading: read-only checks of the brokers and Databento with the settings
# in .env (nothing is placed; see "Before the first live day" in README.md). Extra args go to
# preflight.py (--equity, --future, --verbose). Exit status 0 only when no check failed.
set -euo pipefail
cd "$(dirname "$0")"
source ./scripts/venv.sh
exec "$VENV/bin/python" preflight.py "$@"
