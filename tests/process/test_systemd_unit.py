"""The shipped systemd unit: systemd accepts it without a warning, its restart limit is where
systemd reads it, and it lets the service write wherever it writes by default."""
from __future__ import annotations

import configparser
import inspect
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

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


def _sections() -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False)  # systemd allows repeated keys
    parser.optionxform = str  # type: ignore[assignment,method-assign]  # keys are case-sensitive
    parser.read_string(UNIT.read_text())
    return parser


def test_the_restart_limit_is_in_the_unit_section_where_systemd_reads_it() -> None:
    # systemd.unit(5): StartLimitIntervalSec= and StartLimitBurst= are [Unit] options; in [Service]
    # systemd logs "Unknown key" and ignores them, so a crash loop would restart forever.
    sections = _sections()
    assert sections.get("Unit", "StartLimitIntervalSec") == "300"
    assert sections.get("Unit", "StartLimitBurst") == "5"
    assert not {"StartLimitIntervalSec", "StartLimitBurst", "StartLimitInterval"} & set(sections["Service"])
    assert sections.get("Service", "Restart") == "always"


def _verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True,
                          timeout=60)


def test_systemd_analyze_verify_accepts_the_unit_without_a_warning(tmp_path: Path) -> None:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed")
    probe = tmp_path / "probe" / "probe.service"
    probe.parent.mkdir()
    probe.write_text(f"[Unit]\nDescription=probe\n\n[Service]\nExecStart={sys.executable} -c pass\n")
    if _verify(probe).returncode != 0:
        pytest.skip("systemd-analyze verify does not work on this machine (no usable systemd)")
    # verify checks that ExecStart's binary exists: point it at this interpreter instead of the
    # install path; every other line is verified as shipped.
    unit = tmp_path / UNIT.name
    exec_start = f"ExecStart={INSTALL_DIR}/.venv/bin/python app.py"
    assert exec_start in UNIT.read_text()
    unit.write_text(UNIT.read_text().replace(exec_start, f"ExecStart={sys.executable} app.py"))
    result = _verify(unit)
    output = (result.stdout + result.stderr).strip()
    assert result.returncode == 0 and output == "", output
