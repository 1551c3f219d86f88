"""Bad input: one line on stderr, exit status 2, and no output directory left behind."""
from __future__ import annotations

from pathlib import Path

import pytest

from backtest.__main__ import main
from tests.backtest.helpers import random_walk, write_csv

BASE = ["--strategy", "ema", "--symbol", "/MES", "--timeframe", "5Min", "--period-1", "9", "--period-2", "21"]


@pytest.fixture
def good_csv(tmp_path: Path) -> Path:
    return write_csv(tmp_path / "bars.csv", random_walk(300))


def _bad(tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], needle: str) -> None:
    out = tmp_path / "out"
    assert main([*args, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error:") and needle in err, err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no partial dir left


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bad(tmp_path, capsys, [*BASE, "--data", str(tmp_path / "nope.csv")], "not found")


def test_unreadable_dbn(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    junk = tmp_path / "junk.dbn.zst"
    junk.write_bytes(b"not dbn at all")
    _bad(tmp_path, capsys, [*BASE, "--data", str(junk)], "DBN")


def test_unknown_columns(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "weird.csv"
    f.write_text("when,a,b\n2006-01-02 10:00,1,2\n")
    _bad(tmp_path, capsys, [*BASE, "--data", str(f)], "columns")


def test_given_column_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str], good_csv: Path) -> None:
    _bad(tmp_path, capsys, [*BASE, "--data", str(good_csv), "--columns", "close=Last"], "Last")


def test_empty_range(tmp_path: Path, capsys: pytest.CaptureFixture[str], good_csv: Path) -> None:
    _bad(tmp_path, capsys, [*BASE, "--data", str(good_csv), "--from", "2030-01-01"], "no data")


def test_invalid_parameters(tmp_path: Path, capsys: pytest.CaptureFixture[str], good_csv: Path) -> None:
    _bad(tmp_path, capsys, [*BASE[:-2], "--period-2", "5", "--data", str(good_csv)], "period_1")
    _bad(tmp_path, capsys, [*BASE, "--data", str(good_csv), "--quantity", "0"], "quantity")
    _bad(tmp_path, capsys, [*BASE, "--data", str(good_csv), "--commission", "-1"], "commission")
    _bad(tmp_path, capsys, ["--strategy", "ema", "--symbol", "/XYZ", "--timeframe", "5Min", "--data",
                            str(good_csv)], "symbol")
    _bad(tmp_path, capsys, [*BASE, "--data", str(good_csv), "--sweep", "bogus=1:2"], "--sweep")
    _bad(tmp_path, capsys, ["--symbol", "/MES"], "required")


def test_failure_keeps_previous_complete_output(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                good_csv: Path) -> None:
    out = tmp_path / "out"
    assert main([*BASE, "--data", str(good_csv), "--out", str(out), "--no-risk"]) == 0
    before = (out / "report.json").read_text()
    assert main([*BASE, "--data", str(tmp_path / "missing.csv"), "--out", str(out)]) == 2
    assert (out / "report.json").read_text() == before
