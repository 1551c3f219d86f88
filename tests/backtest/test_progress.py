"""The progress display covers the whole run (load, loop, write), is a bar only on a terminal,
and the reported bars/s counts only the bars the loop evaluated."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from backtest.__main__ import main
from backtest.data import BarArrays
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.progress import RunProgress
from market_data import calendars
from tests.backtest.helpers import NS, T0, market, random_walk, write_csv

ARGS = ["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--period-1", "3", "--period-2", "8"]


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_progress_spans_load_loop_and_write(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "in.csv", random_walk(3000))
    assert main([*ARGS, "--data", str(data), "--out", str(tmp_path / "o"), "--progress", "json"]) == 0
    values = [json.loads(line)["progress"] for line in capsys.readouterr().err.splitlines()]
    # load from 0, the loop from 0.3 (one report per 65,536 bars: here only its end), writing
    # from 0.8 to the end of the run.
    assert values == [0.0, 0.3, 0.8, 1.0]


def test_auto_shows_a_bar_only_on_a_terminal() -> None:
    terminal = Terminal()
    progress = RunProgress("auto", stream=terminal)
    progress.phase("load")
    update = progress.phase("backtest")
    update(5, 10)
    progress.phase("write")
    progress.finish()
    text = terminal.getvalue()
    assert "write" in text and "100%" in text
    piped = io.StringIO()
    progress = RunProgress("auto", stream=piped)
    progress.phase("backtest")(10, 10)
    progress.finish()
    assert piped.getvalue() == ""


def test_auto_writes_nothing_to_a_captured_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = write_csv(tmp_path / "in.csv", random_walk(500))
    assert main([*ARGS, "--data", str(data), "--out", str(tmp_path / "o")]) == 0
    assert capsys.readouterr().err == ""


def test_bars_per_second_counts_the_evaluated_bars(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # A whole day of minutes from a CME session open: the bars in the daily break are not evaluated.
    walk = random_walk(24 * 60)
    s = T0 + np.arange(24 * 60, dtype=np.int64) * 60 * NS
    bars = BarArrays(s, s + 60 * NS, walk.open, walk.high, walk.low, walk.close, walk.volume, walk.trade_count)
    evaluated = int(np.count_nonzero(calendars.bars_in_session("/MES", bars.start_ns, bars.end_ns)))
    assert 0 < evaluated < len(bars)
    out = tmp_path / "o"
    assert main([*ARGS, "--data", str(write_csv(tmp_path / "in.csv", bars)), "--out", str(out),
                 "--progress", "none"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["metrics"]["bars"] == 24 * 60 and report["bars_evaluated"] == evaluated
    assert f"loop {evaluated} evaluated bars at" in capsys.readouterr().out
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 3,
                                  "period_2": 8})
    result = BacktestEngine(config, CostSettings()).run(market(bars), record_bars=False)
    assert result.evaluated_bars == evaluated
    assert result.bars_per_second == evaluated / result.elapsed_s
