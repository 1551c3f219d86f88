"""--sweep runs the grid in worker processes and ranks by the chosen metric."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from backtest.__main__ import main
from backtest.sweep import parse_axis, rank
from tests.backtest.helpers import random_walk, write_csv


def test_parse_axis() -> None:
    assert parse_axis("period_1=5:20:5").values == (5, 10, 15, 20)
    assert parse_axis("multiplier=2:3:0.5").values == (2, 2.5, 3)
    assert parse_axis("period_2=21,34").values == (21, 34)


def test_sweep_grid_is_ranked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "bars.csv", random_walk(3000, seed=3))
    out = tmp_path / "sweep"
    rc = main(["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--period-1", "9", "--period-2",
               "21", "--data", str(data), "--sweep", "period_1=4:12:4", "period_2=10:30:10", "--workers", "2",
               "--no-risk", "--progress", "none", "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["points"] == 8 and doc["skipped"] == 1  # (12, 10) violates period_1 < period_2
    nets = [float(r["net_pnl"]) for r in rows]
    assert nets == sorted(nets, reverse=True) and [int(r["rank"]) for r in rows] == list(range(1, 9))
    assert "ranked by net_pnl" in capsys.readouterr().out
    # A grid point equals the same single run.
    best = rows[0]
    single = tmp_path / "single"
    assert main(["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--period-1", best["period_1"],
                 "--period-2", best["period_2"], "--data", str(data), "--no-risk", "--out", str(single)]) == 0
    assert json.loads((single / "report.json").read_text())["metrics"]["net_pnl"] == best["net_pnl"]


def test_rank_drawdown_ascending_and_none_last() -> None:
    rows = [{"max_drawdown": 5.0}, {"max_drawdown": None}, {"max_drawdown": 1.0}]
    assert [r["max_drawdown"] for r in rank(rows, "max_drawdown")] == [1.0, 5.0, None]
