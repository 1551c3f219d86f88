"""Backtest outputs: metrics (report.json), trades.csv, equity.csv, bars.csv, equity.png and
report.html (backtest/report_html.py).

Metric definitions (also written into report.json under "definitions"):
- net_pnl: sum of round-trip net P&L (gross - commissions), exact Decimal from integer ticks.
- return_pct: net_pnl / starting_capital x 100.
- max_drawdown: largest fall of the bar-close equity curve from its running peak (currency and %
  of that peak).
- sharpe: mean / sample stdev of the *session* returns of the equity curve (last equity of each
  session of the instrument's calendar, see backtest/statistics.py), x sqrt(sessions per year),
  by empyrical-reloaded. Risk-free rate 0. None with fewer than 2 session returns or zero variance.
- win_rate: winners / trades, a winner having net P&L > 0.
- profit_factor: sum of winning net P&L / |sum of losing net P&L|; None when there is no loss.
- exposure_pct: share of bars at whose close a position was open.
- average_trade: net_pnl / trades.
- CAGR, Sortino, Calmar, expectancy, streaks, drawdown dates, breakdowns, monthly/yearly returns and
  buy and hold: backtest/statistics.py (its definitions are merged into report.json's).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from backtest import fills, statistics, tables
from backtest.data import NS, utc_iso
from backtest.engine import BacktestResult, RoundTrip
from backtest.report_html import write_report_html

DEFINITIONS = {
    "sharpe": "session returns of the bar-close equity (last value per session), mean/stdev(ddof=1) x sqrt(sessions "
              "per year), rf=0 (empyrical sharpe_ratio)",
    "max_drawdown": "largest peak-to-trough fall of the bar-close equity curve",
    "profit_factor": "gross profit of winners / gross loss of losers, both net of commission",
    "win_rate": "share of round trips with net P&L > 0",
    "exposure_pct": "share of bars with an open position at the bar close",
    "prices": "fills are tick-rounded; P&L is exact (Decimal) from integer ticks x tick value",
    **statistics.DEFINITIONS,
}


@dataclass(frozen=True, slots=True)
class TradeRow:
    trade: RoundTrip
    entry_price: Decimal
    exit_price: Decimal
    gross: Decimal
    commission: Decimal
    net: Decimal


def trade_rows(result: BacktestResult) -> list[TradeRow]:
    tick = result.instrument.tick_size
    tick_value = result.instrument.tick_size * result.instrument.multiplier
    per = result.costs.commission_per_contract
    rows = []
    for t in result.trades:
        gross = fills.pnl(t.side, t.quantity, t.entry_ticks, t.exit_ticks, tick_value)
        comm = fills.commission(t.quantity, per) * 2
        rows.append(TradeRow(t, fills.ticks_to_price(t.entry_ticks, tick), fills.ticks_to_price(t.exit_ticks, tick),
                             gross, comm, gross - comm))
    return rows


def max_drawdown(equity: np.ndarray) -> tuple[float, float]:
    """(max drawdown in currency, as % of the peak it fell from); (0, 0) for a rising curve."""
    if equity.size == 0:
        return 0.0, 0.0
    peak = np.maximum.accumulate(equity)
    dd = peak - equity
    i = int(np.argmax(dd))
    return float(dd[i]), float(dd[i] / peak[i] * 100.0) if peak[i] > 0 else 0.0


def daily_sharpe(equity: np.ndarray, end_ns: np.ndarray) -> float | None:
    """Annualised Sharpe of daily equity returns (see module docstring)."""
    if equity.size < 2:
        return None
    days = end_ns // (86_400 * NS)
    last_of_day = np.concatenate((np.flatnonzero(np.diff(days)), [days.size - 1]))
    daily = equity[last_of_day]
    returns = np.diff(daily) / daily[:-1]
    if returns.size < 2:
        return None
    sd = float(np.std(returns, ddof=1))
    if sd == 0 or not math.isfinite(sd):
        return None
    return float(np.mean(returns) / sd * math.sqrt(252))


def metrics(result: BacktestResult, rows: Sequence[TradeRow] | None = None,
            summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """The scalar figures; `summary` is `statistics.summary` when the caller has it already."""
    rows = trade_rows(result) if rows is None else rows
    summary = statistics.summary(result, rows) if summary is None else summary
    nets = [r.net for r in rows]
    net = sum(nets, Decimal(0))
    gross = sum((r.gross for r in rows), Decimal(0))
    commission = sum((r.commission for r in rows), Decimal(0))
    wins = [x for x in nets if x > 0]
    losses = [x for x in nets if x < 0]
    win_sum, loss_sum = sum(wins, Decimal(0)), sum(losses, Decimal(0))
    capital = result.costs.starting_capital
    dd, dd_pct = max_drawdown(result.equity)
    n = len(result.data.bars)
    exposure = float(np.count_nonzero(result.position) / n * 100.0) if n else 0.0
    return {
        "net_pnl": str(net),
        "gross_pnl": str(gross),
        "commission": str(commission),
        "starting_capital": str(capital),
        "final_equity": str(capital + net),
        "return_pct": float(net / capital * 100) if capital else None,
        "max_drawdown": round(dd, 2),
        "max_drawdown_pct": round(dd_pct, 4),
        "sharpe": summary["sharpe"],
        "sharpe_annualisation": "daily returns x sqrt(252)" if summary["sessions_per_year"] == 252
        else f"daily returns x sqrt({summary['sessions_per_year']})",
        "win_rate": len(wins) / len(rows) if rows else None,
        "profit_factor": float(win_sum / -loss_sum) if losses else None,
        "trades": len(rows),
        "winners": len(wins),
        "losers": len(losses),
        "exposure_pct": round(exposure, 4),
        "average_trade": str((net / len(rows)).quantize(Decimal("0.01"))) if rows else None,
        "bars": n,
        "risk_denials": len(result.denials),
        **{k: v for k, v in summary.items() if k != "sharpe"},
    }


def build_report(result: BacktestResult, rows: Sequence[TradeRow] | None = None) -> dict[str, Any]:
    bars = result.data.bars
    cfg = result.config
    rows = trade_rows(result) if rows is None else rows
    tables = statistics.full(result, rows)
    return {
        "strategy": cfg.strategy.value,
        "symbol": cfg.symbol,
        "timeframe": cfg.tf.display,
        "parameters": json.loads(cfg.to_json()),
        "quantity": result.costs.quantity,
        "commission_per_contract": str(result.costs.commission_per_contract),
        "slippage_ticks": result.costs.slippage_ticks,
        "multiplier": str(result.instrument.multiplier),
        "tick_size": str(result.instrument.tick_size),
        "data": result.data.description,
        "from": utc_iso(int(bars.start_ns[0])) if len(bars) else None,
        "to": utc_iso(int(bars.end_ns[-1])) if len(bars) else None,
        "warmup_bars": result.warmup_bars,
        "metrics": metrics(result, rows, tables.pop("summary")),
        **tables,
        "definitions": DEFINITIONS,
        "elapsed_s": round(result.elapsed_s, 4),
        "bars_per_second": round(result.bars_per_second, 1),  # evaluated bars / loop seconds
        "bars_evaluated": result.evaluated_bars if result.evaluated_bars >= 0 else len(bars),
    }


def write_trades(path: Path, rows: Sequence[TradeRow]) -> Path:
    """trades.csv / trades.parquet (by the path's suffix), columnar: backtest/tables.py."""
    return tables.write_table(tables.trades_table(rows), path.parent, path.stem, _format_of(path))


def write_equity(path: Path, result: BacktestResult) -> Path:
    return tables.write_table(tables.equity_table(result), path.parent, path.stem, _format_of(path))


def write_bars(path: Path, result: BacktestResult) -> Path:
    """Every bar with the strategy's indicator values after it and the signal taken at its close,
    for checking against a charting platform."""
    return tables.write_table(tables.bars_table(result), path.parent, path.stem, _format_of(path))


def _format_of(path: Path) -> str:
    return "parquet" if path.suffix == ".parquet" else "csv"


_PNG_POINTS = 4_400  # per line in equity.png: 2 per slice, 2,200 slices


def plot_equity(path: Path, result: BacktestResult) -> None:
    """Equity and drawdown against the bar number (dates as tick labels): nights, weekends and
    holidays take no room, so no straight line is drawn across a closed market."""
    # A Figure of its own, not pyplot: no global figure registry or GUI backend to start (pyplot's
    # import alone is half a second), and safe in the service's job threads; savefig renders PNG
    # through Agg.
    from matplotlib.figure import Figure

    from backtest.report_html import chart_title, thin_indices

    eq = result.equity
    peak = np.maximum.accumulate(eq) if eq.size else eq
    dd = eq - peak
    # The image is 1,100 pixels wide: each slice's extremes (4 points a pixel) draw the same
    # picture as a million bars, at a fraction of the rendering time.
    x = np.union1d(thin_indices(eq, _PNG_POINTS), thin_indices(dd, _PNG_POINTS)) if eq.size else np.arange(0)
    fig = Figure(figsize=(11, 6))
    ax1, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=(3, 1))
    ax1.plot(x, eq[x], lw=0.9, color="tab:blue")
    ax1.set_ylabel("equity")
    ax1.set_title(chart_title(result))
    ax1.grid(alpha=0.3)
    ax2.fill_between(x, dd[x], 0, color="tab:red", alpha=0.5, lw=0)
    ax2.set_ylabel("drawdown")
    ax2.grid(alpha=0.3)
    if eq.size:
        ticks = np.unique(np.linspace(0, eq.size - 1, min(8, eq.size)).round().astype(np.int64))
        end = result.data.bars.end_ns
        span_days = (int(end[-1]) - int(end[0])) / (86_400 * NS)
        ax2.set_xticks(ticks, [utc_iso(int(end[i]))[:10] if span_days > 3 else utc_iso(int(end[i]))[5:16].replace("T", " ")
                               for i in ticks])
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def write_all(out_dir: Path, result: BacktestResult, *, table_format: str = "csv", bars: bool = False) -> dict[str, Any]:
    """Every output; the tables as CSV or Parquet (`table_format`), bars.* (every bar with its
    indicators, needs a run with `record_bars`) only when `bars`."""
    rows = trade_rows(result)
    report = build_report(result, rows)
    write_trades(out_dir / f"trades.{table_format}", rows)
    write_equity(out_dir / f"equity.{table_format}", result)
    if bars:
        write_bars(out_dir / f"bars.{table_format}", result)
    plot_equity(out_dir / "equity.png", result)
    write_report_html(out_dir / "report.html", result, rows, report)
    (out_dir / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
