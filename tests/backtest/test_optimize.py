"""Parameter search at scale: train/test and walk-forward windows, grid and Optuna, on local worker
processes and on a Dask distributed cluster (a LocalCluster here) with equal results."""
from __future__ import annotations

import csv
import json
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from backtest.__main__ import main
from backtest.data import DataError, MarketData
from backtest.distributed import DaskExecutor, LocalExecutor, Task, evaluate, window
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.optimize import make_folds, run_grid, run_optuna
from backtest.report import metrics
from backtest.statistics import session_labels
from backtest.sweep import parse_axis
from tests.backtest.helpers import random_walk, write_csv

BASE = {"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 9, "period_2": 21, "quantity": 1}
COSTS = CostSettings(quantity=1, commission_per_contract=Decimal("0.62"))
AXES = [parse_axis("period_1=3:9:3"), parse_axis("period_2=10,20")]


@pytest.fixture(scope="module")
def data() -> MarketData:
    # 4 CME sessions of 1-minute bars (23 h each, from 18:00 ET).
    return MarketData(random_walk(4 * 1380 + 300, seed=5), None, "synthetic")


def test_train_test_split_falls_on_a_session_start(data: MarketData) -> None:
    (fold,) = make_folds(data, "CME_Equity", train_fraction=0.5)
    assert fold.train.lo == 0 and fold.train.hi == fold.test.lo and fold.test.hi == len(data.bars)  # type: ignore[union-attr]
    labels, _ = session_labels(data.bars.end_ns, "CME_Equity")
    cut = fold.train.hi
    assert labels[cut] != labels[cut - 1]  # the test window starts a session


def test_walk_forward_windows_rolling_and_anchored(data: MarketData) -> None:
    rolling = make_folds(data, "CME_Equity", walk_forward=3)
    anchored = make_folds(data, "CME_Equity", walk_forward=3, anchored=True)
    assert [f.number for f in rolling] == [1, 2, 3]
    for r, a in zip(rolling, anchored):
        assert r.test is not None and a.test == r.test
        assert r.train.hi == r.test.lo and a.train.lo == 0 and a.train.hi == r.train.hi
    assert [f.train.lo for f in rolling] == [0, rolling[0].test.lo, rolling[1].test.lo]  # type: ignore[union-attr]
    assert rolling[-1].test.hi == len(data.bars)  # type: ignore[union-attr]
    with pytest.raises(DataError, match="fewer than"):
        make_folds(data, "CME_Equity", walk_forward=2000)
    with pytest.raises(DataError, match="not both"):
        make_folds(data, "CME_Equity", walk_forward=2, train_fraction=0.5)


def test_a_window_is_a_run_on_those_bars_alone(data: MarketData) -> None:
    cfg = config_from_options({**BASE, "period_1": 5, "period_2": 13})
    got = evaluate(data, Task(cfg, COSTS, 1000, 3000))
    alone = MarketData(random_walk(4 * 1380 + 300, seed=5).take(np.arange(4 * 1380 + 300)[1000:3000]), None, "x")
    assert got == metrics(BacktestEngine(cfg, COSTS).run(alone, record_bars=False))
    assert len(window(data, 1000, 3000).bars) == 2000


def test_grid_train_test_shows_in_and_out_of_sample(data: MarketData) -> None:
    folds = make_folds(data, "CME_Equity", train_fraction=0.6)
    executor = LocalExecutor(data, 2)
    try:
        found = run_grid(BASE, AXES, COSTS, folds, executor, "net_pnl")
    finally:
        executor.close()
    assert found.points == 6 and found.skipped == 0
    first = found.rows[0]
    cfg = config_from_options({**BASE, "period_1": first["period_1"], "period_2": first["period_2"]})
    train = evaluate(data, Task(cfg, COSTS, folds[0].train.lo, folds[0].train.hi))
    test = evaluate(data, Task(cfg, COSTS, folds[0].test.lo, folds[0].test.hi))  # type: ignore[union-attr]
    assert first["is_net_pnl"] == train["net_pnl"] and first["oos_net_pnl"] == test["net_pnl"]
    nets = [float(r["is_net_pnl"]) for r in found.rows]
    assert nets == sorted(nets, reverse=True)
    over = found.overfitting
    assert over is not None and over["candidates"] == 6 and 1 <= over["best_in_sample_oos_rank"] <= 6
    assert over["best_in_sample"] == {"period_1": first["period_1"], "period_2": first["period_2"]}


def test_dask_local_cluster_gives_the_local_results(data: MarketData) -> None:
    from distributed import LocalCluster

    folds = make_folds(data, "CME_Equity", walk_forward=2)
    local = LocalExecutor(data, 2)
    try:
        expected = run_grid(BASE, AXES, COSTS, folds, local, "sharpe")
        expected_optuna = run_optuna(BASE, [parse_axis("period_1=2:12:1"), parse_axis("period_2=10:40:2")], COSTS,
                                     folds[:1], local, "net_pnl", trials=6, seed=3)
    finally:
        local.close()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", dashboard_address=None,
                      host="127.0.0.1") as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        remote = DaskExecutor(data, cluster.scheduler_address)
        try:
            assert remote.slots == 2
            got = run_grid(BASE, AXES, COSTS, folds, remote, "sharpe")
            got_optuna = run_optuna(BASE, [parse_axis("period_1=2:12:1"), parse_axis("period_2=10:40:2")], COSTS,
                                    folds[:1], remote, "net_pnl", trials=6, seed=3)
        finally:
            remote.close()
    assert got.rows == expected.rows and got.folds == expected.folds and got.overfitting == expected.overfitting
    # The same seed and batch size: the same candidates, in the same order, with the same figures.
    assert got_optuna.rows == expected_optuna.rows and len(got_optuna.rows) + got_optuna.skipped == 6


def test_unreachable_cluster_is_an_error_not_a_hang(data: MarketData) -> None:
    with pytest.raises(OSError):
        DaskExecutor(data, "tcp://127.0.0.1:9", timeout_s=1.0)


def test_optuna_finds_the_grid_best_on_a_small_space(data: MarketData) -> None:
    axes = [parse_axis("period_1=2:6:2"), parse_axis("period_2=10,20")]
    folds = make_folds(data, "CME_Equity")
    executor = LocalExecutor(data, 2)
    try:
        full = run_grid(BASE, axes, COSTS, folds, executor, "net_pnl")
        found = run_optuna(BASE, axes, COSTS, folds, executor, "net_pnl", trials=24, seed=1)
    finally:
        executor.close()
    best = found.rows[0]
    assert (best["period_1"], best["period_2"]) == (full.rows[0]["period_1"], full.rows[0]["period_2"])
    assert best["net_pnl"] == full.rows[0]["net_pnl"]


def test_cli_optuna_walk_forward_writes_ranked_results(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "bars.csv", random_walk(4 * 1380, seed=9))
    out = tmp_path / "opt"
    rc = main(["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--period-1", "9", "--period-2", "21",
               "--data", str(path), "--sweep", "period_1=2:10:1", "period_2=12:30:2", "--optimizer", "optuna",
               "--trials", "8", "--walk-forward", "2", "--rank-by", "return_pct", "--workers", "2", "--progress", "none",
               "--out", str(out)])
    assert rc == 0, capsys.readouterr().err
    text = capsys.readouterr().out
    assert "ranked by in-sample return_pct, walk-forward 2 folds" in text and "out of sample:" in text
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert rows[0].keys() >= {"rank", "fold", "trial", "period_1", "period_2", "is_return_pct", "oos_return_pct", "is_sharpe"}
    doc = json.loads((out / "sweep.json").read_text())
    assert doc["optimizer"] == "optuna" and [f["fold"] for f in doc["folds"]] == [1, 2]
    assert all(f["test_from"] > f["train_from"] for f in doc["folds"])
    page = (out / "sweep.html").read_text()
    assert "plotly.js v" in page and "in-sample return_pct by period_1 and period_2" in page
    assert "out-of-sample return_pct by period_1 and period_2" in page


def test_cli_rejects_a_split_with_no_room(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_csv(tmp_path / "bars.csv", random_walk(200, seed=9))
    rc = main(["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--period-1", "9", "--period-2", "21",
               "--data", str(path), "--sweep", "period_1=2:4:1", "--walk-forward", "50", "--progress", "none",
               "--out", str(tmp_path / "x")])
    assert rc == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the split leaves a window with fewer than") and "\n" not in err
