"""`python -m backtest` end to end on the real 2006 1-minute bars and real DBN trades."""
from __future__ import annotations

import csv
import json
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from backtest.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_ema_on_2006_bars_writes_every_output(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "ema"
    cmd = [sys.executable, "-m", "backtest", "--strategy", "ema", "--symbol", "/MES", "--timeframe", "5Min",
           "--trend-line-1", "EMA", "--period-1", "9", "--trend-line-2", "EMA", "--period-2", "21",
           "--data", str(shared_data / "bars" / "index-future-2006.1min.csv"), "--quantity", "2",
           "--commission", "0.62", "--slippage-ticks", "1", "--bars-out", "--out", str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == {"trades.csv", "equity.csv", "bars.csv", "report.json", "equity.png",
                                            "report.html"}
    report = json.loads((out / "report.json").read_text())
    m = report["metrics"]
    assert report["data"] == "30889 source bars -> 6404 5Min bars"
    trades = list(csv.DictReader((out / "trades.csv").open()))
    assert m["trades"] == len(trades) > 100
    assert Decimal(m["net_pnl"]) == sum(Decimal(t["net_pnl"]) for t in trades)
    # 2 contracts x 2 fills x 0.62 per round trip
    assert all(Decimal(t["commission"]) == Decimal("2.48") for t in trades)
    assert m["risk_denials"] == 0 and m["sharpe_annualisation"] == "daily returns x sqrt(252)"
    bars = list(csv.DictReader((out / "bars.csv").open()))
    assert len(bars) == 6404 and {"fast", "slow", "signal", "position"} <= set(bars[0])
    signalled = [i for i, b in enumerate(bars) if b["signal"]]
    # every entry happens at the open of the bar after a signal
    assert trades[0]["entry_time"] == bars[signalled[0] + 1]["start"]
    assert Decimal(trades[0]["entry_price"]) in (Decimal(bars[signalled[0] + 1]["open"]) + d
                                                 for d in (Decimal("0.25"), Decimal("-0.25")))
    equity = list(csv.DictReader((out / "equity.csv").open()))
    assert len(equity) == 6404
    assert Decimal(equity[-1]["equity"]) == Decimal(m["final_equity"])
    assert (out / "equity.png").stat().st_size > 10_000
    assert "6404 bars" in proc.stdout


def test_supertrend_and_dbn_trades(shared_data: Path, tmp_path: Path) -> None:
    out = tmp_path / "st"
    assert main(["--strategy", "supertrend", "--symbol", "/MES", "--timeframe", "5Min", "--atr-period", "10",
                 "--multiplier", "3", "--data", str(shared_data / "bars" / "index-future-2006.1min.csv"),
                 "--from", "2006-01-01", "--to", "2006-02-01", "--out", str(out)]) == 0
    reasons = {row["exit_reason"] for row in csv.DictReader((out / "trades.csv").open())}
    assert reasons & {"stop", "target"}
    # Real ESH4 MBO trades (action T only) -> 1-minute bars; tick data path.
    out2 = tmp_path / "mbo"
    assert main(["--strategy", "ema", "--symbol", "/ES", "--timeframe", "1Min", "--period-1", "3", "--period-2",
                 "8", "--stop-loss-ticks", "4", "--data",
                 str(shared_data / "databento" / "glbx-mdp3-esh4-20231225.mbo.dbn.zst"), "--out", str(out2)]) == 0
    report = json.loads((out2 / "report.json").read_text())
    assert report["data"].startswith("2973 trades ->")
    assert report["metrics"]["trades"] > 0
