"""The output tables: columnar CSV keeps the exact values and formats (Decimal prices and P&L,
ISO times with milliseconds), Parquet holds the same with types, bars only when asked."""
from __future__ import annotations

import csv
from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from backtest.__main__ import main
from backtest.data import utc_iso
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from backtest.report import trade_rows
from backtest.tables import iso_ms
from tests.backtest.helpers import market, random_walk, write_csv

ARGS = ["--strategy", "ema", "--symbol", "/MES", "--timeframe", "1Min", "--period-1", "3", "--period-2", "8",
        "--quantity", "3", "--commission", "0.62", "--slippage-ticks", "1"]


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_default_run_writes_no_bars_and_exact_trades(tmp_path: Path) -> None:
    bars = random_walk(3000, seed=11)
    data = write_csv(tmp_path / "in.csv", bars)
    out = tmp_path / "out"
    assert main([*ARGS, "--data", str(data), "--out", str(out), "--progress", "none"]) == 0
    assert not (out / "bars.csv").exists()
    assert {"trades.csv", "equity.csv", "report.json"} <= {p.name for p in out.iterdir()}

    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 3,
                                  "period_2": 8, "quantity": 3})
    from backtest.engine import SimulatedClock, backtest_risk_check

    clock = SimulatedClock()
    result = BacktestEngine(config, CostSettings(3, Decimal("0.62"), 1), risk_check=backtest_risk_check(clock),
                            clock=clock).run(market(bars), record_bars=False)
    want = [[str(k), "LONG" if r.trade.side > 0 else "SHORT", str(r.trade.quantity), utc_iso(r.trade.entry_ns),
             str(r.entry_price), r.trade.entry_reason, utc_iso(r.trade.exit_ns), str(r.exit_price),
             r.trade.exit_reason, str(r.gross), str(r.commission), str(r.net)]
            for k, r in enumerate(trade_rows(result), 1)]
    got = [[row[c] for c in ("trade", "side", "quantity", "entry_time", "entry_price", "entry_reason", "exit_time",
                             "exit_price", "exit_reason", "gross_pnl", "commission", "net_pnl")]
           for row in _rows(out / "trades.csv")]
    assert got == want and len(want) > 20
    assert any(Decimal(r[9]) < 0 for r in want)  # negative P&L keeps its sign and scale
    equity = _rows(out / "equity.csv")
    assert [r["time"] for r in equity] == [utc_iso(int(t)) for t in bars.end_ns]
    assert [Decimal(r["equity"]) for r in equity] == [Decimal(f"{v:.2f}") for v in result.equity]
    assert (out / "equity.csv").read_text().startswith("time,equity,drawdown,position\n")  # no quotes


def test_parquet_tables_hold_the_same_values_typed(tmp_path: Path) -> None:
    data = write_csv(tmp_path / "in.csv", random_walk(2000, seed=12))
    csv_out, pq_out = tmp_path / "csv", tmp_path / "pq"
    assert main([*ARGS, "--data", str(data), "--out", str(csv_out), "--bars-out", "--progress", "none"]) == 0
    assert main([*ARGS, "--data", str(data), "--out", str(pq_out), "--bars-out", "--format", "parquet",
                 "--progress", "none"]) == 0
    assert {"trades.parquet", "equity.parquet", "bars.parquet"} <= {p.name for p in pq_out.iterdir()}
    assert not (pq_out / "equity.csv").exists()
    trades = pq.read_table(pq_out / "trades.parquet")
    assert trades.schema.field("entry_time").type == pa.timestamp("ns", tz="UTC")
    assert pa.types.is_decimal(trades.schema.field("net_pnl").type)
    assert [str(v) for v in trades.column("net_pnl").to_pylist()] == [r["net_pnl"] for r in _rows(csv_out / "trades.csv")]
    bars = pq.read_table(pq_out / "bars.parquet")
    rows = _rows(csv_out / "bars.csv")
    assert bars.num_rows == len(rows) == 2000
    assert [s or "" for s in bars.column("signal").to_pylist()] == [r["signal"] for r in rows]
    assert [None if v is None else repr(v) for v in bars.column("slow").to_pylist()][-5:] == \
        [r["slow"] or None for r in rows][-5:]
    equity = pq.read_table(pq_out / "equity.parquet")
    assert [utc_iso(v.value) for v in equity.column("time")] == [r["time"] for r in _rows(csv_out / "equity.csv")]


def test_iso_ms_equals_utc_iso() -> None:
    ns = [0, 1_136_329_200_123_456_789, 1_704_067_199_999_000_000, 4_102_444_800_000_000_000]
    import numpy as np

    assert iso_ms(np.asarray(ns, dtype=np.int64)).to_pylist() == [utc_iso(n) for n in ns]
