from __future__ import annotations

import sys
from pathlib import Path

# strategy_kit.py lives beside the tests; make it importable however pytest is invoked.
sys.path.insert(0, str(Path(__file__).resolve().parent))
