"""The shipped systemd unit lets the service write wherever it writes by default."""
from __future__ import annotations

import inspect
from pathlib import Path

from backtest.jobs import BacktestJobs
from config.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "trading-backend.service"
INSTALL_DIR = Path("/opt/trading-backend")  # WorkingDirectory in the unit and the README's install path


def _unit_values(name: str) -> list[str]:
    values: list[str] = []
    for line in UNIT.read_text().splitlines():
        if line.startswith(f"{name}="):
            values += line.split("=", 1)[1].split()
    return values


def test_unit_allows_writes_to_the_log_and_backtest_output_directories() -> None:
    assert _unit_values("ProtectSystem") == ["strict"]  # everything else is read-only
    assert _unit_values("WorkingDirectory") == [str(INSTALL_DIR)]
    writable = {Path(p.lstrip("-")) for p in _unit_values("ReadWritePaths")}
    log_dir = Settings().log_dir
    backtest_out = inspect.signature(BacktestJobs.__init__).parameters["out_root"].default
    expected = {INSTALL_DIR / log_dir if not log_dir.is_absolute() else log_dir,
                INSTALL_DIR / Path(backtest_out).relative_to(ROOT)}
    assert expected <= writable, f"not writable under the unit: {expected - writable}"
