"""The trader's statistics (backtest/statistics.py) against values worked out by hand on a small
known trade list: one /MES bar per CME session, five round trips, no commission."""
from __future__ import annotations

import math
from datetime import datetime, timezone
from decimal import Decimal

import numpy as np
import pytest

from backtest.data import BarArrays
from backtest.engine import BacktestEngine, BacktestResult, CostSettings, RoundTrip, config_from_options
from backtest.report import build_report, trade_rows
from backtest.statistics import drawdown_periods, session_labels, streaks
from tests.backtest.helpers import NS, market

DAY = 86_400 * NS


def _ns(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()) * NS


# One 1-minute bar at 15:00Z (09:00 CT) in each of six CME sessions: two in January, four in February.
DATES = ["2024-01-30", "2024-01-31", "2024-02-01", "2024-02-02", "2024-02-05", "2024-02-06"]
CLOSES = [4000.0, 4002.0, 3998.0, 4001.0, 4005.0, 4003.0]


def _result() -> BacktestResult:
    start = np.array([_ns(f"{d}T15:00:00") for d in DATES], dtype=np.int64)
    close = np.array(CLOSES)
    open_ = np.concatenate(([4000.0], close[:-1]))
    bars = BarArrays(start, start + 60 * NS, open_, np.maximum(open_, close) + 1, np.minimum(open_, close) - 1,
                     close, np.full(6, 10, np.int64), np.zeros(6, np.int64))
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 2,
                                  "period_2": 3})
    costs = CostSettings(quantity=1, commission_per_contract=Decimal(0), starting_capital=Decimal(1000))
    engine = BacktestEngine(config, costs)
    end = bars.end_ns.tolist()
    # /MES: tick 0.25 ($1.25), $5 a point. Prices in ticks: 4000 = 16000.
    spec = [  # side, entry bar, entry price, exit bar, exit price, exit reason -> net
        (1, 0, 4000.0, 1, 4002.0, "signal"),  # +2 pt = +10
        (-1, 1, 4002.0, 2, 3998.0, "signal"),  # +4 pt = +20
        (1, 2, 3998.0, 3, 3999.0, "stop"),  # +1 pt = +5
        (-1, 3, 4001.0, 4, 4005.0, "signal"),  # -4 pt = -20
        (1, 4, 4005.0, 5, 4003.0, "end_of_data"),  # -2 pt = -10
    ]
    trades = [RoundTrip(side, 1, end[eb], int(ep * 4), eb, "signal", end[xb], int(xp * 4), xb, why)
              for side, eb, ep, xb, xp, why in spec]
    equity, position = engine._equity_curve(bars.close, trades, len(bars))
    return BacktestResult(config, costs, engine.instrument, market(bars), trades, equity, position, {}, None, [],
                          1.0, 3)


EQUITY = np.array([1000.0, 1010.0, 1030.0, 1035.0, 1015.0, 1005.0])
RETURNS = EQUITY / np.concatenate(([1000.0], EQUITY[:-1])) - 1  # one session per bar; the first vs capital


def test_equity_is_what_the_trades_say() -> None:
    assert np.allclose(_result().equity, EQUITY)


def test_return_statistics_by_hand() -> None:
    m = build_report(_result())["metrics"]
    cagr = (1005 / 1000) ** (252 / 6) - 1
    assert m["sessions"] == 6 and m["sessions_per_year"] == 252
    assert math.isclose(m["cagr_pct"], cagr * 100, rel_tol=1e-6)
    assert math.isclose(m["sharpe"], RETURNS.mean() / RETURNS.std(ddof=1) * math.sqrt(252), rel_tol=1e-6)
    downside = math.sqrt(np.mean(np.minimum(RETURNS, 0) ** 2)) * math.sqrt(252)
    assert math.isclose(m["sortino"], RETURNS.mean() * 252 / downside, rel_tol=1e-6)
    assert math.isclose(m["calmar"], cagr / (30 / 1035), rel_tol=1e-6)  # session equity 1035 -> 1005
    assert math.isclose(m["volatility_pct"], RETURNS.std(ddof=1) * math.sqrt(252) * 100, rel_tol=1e-6)


def test_trade_statistics_by_hand() -> None:
    report = build_report(_result())
    m = report["metrics"]
    # nets +10, +20, +5, -20, -10
    assert m["net_pnl"] == "5.00" and m["expectancy"] == "1.00"
    assert m["average_win"] == "11.67" and m["average_loss"] == "-15.00"
    assert math.isclose(m["payoff_ratio"], (35 / 3) / 15, rel_tol=1e-6)
    assert m["best_trade"] == "20.00" and m["best_trade_time"] == "2024-01-31T15:01:00.000Z"
    assert m["worst_trade"] == "-20.00" and m["worst_trade_time"] == "2024-02-02T15:01:00.000Z"
    assert m["max_consecutive_wins"] == 3 and m["max_consecutive_losses"] == 2
    long, short = report["by_side"]["long"], report["by_side"]["short"]
    assert (long["trades"], long["net_pnl"], long["winners"], long["losers"]) == (3, "5.00", 2, 1)
    assert long["profit_factor"] == 1.5 and long["average_trade"] == "1.67"
    assert (short["trades"], short["net_pnl"], short["profit_factor"], short["win_rate"]) == (2, "0.00", 1.0, 0.5)
    reasons = report["by_exit_reason"]
    assert {k: (v["trades"], v["net_pnl"]) for k, v in reasons.items()} == {
        "end_of_data": (1, "-10.00"), "signal": (3, "10.00"), "stop": (1, "5.00")}
    # Held 1, 1, 1, 3 (over a weekend) and 1 days.
    d = report["trade_durations"]
    assert d["all"] == {"average_s": 120960.0, "median_s": 86400.0, "max_s": 3 * 86400.0,
                        "min_s": 86400.0, "average_bars": 1.0}
    assert d["winners"]["average_s"] == 86400.0 and d["losers"]["average_s"] == 2 * 86400.0
    assert m["average_trade_duration_s"] == 120960.0


def test_drawdown_dates_by_hand() -> None:
    report = build_report(_result())
    m = report["metrics"]
    # Peak 1035 at the 02-02 bar, down to 1005 at the last bar, not recovered.
    assert m["max_drawdown"] == 30.0 and math.isclose(m["max_drawdown_pct"], 30 / 1035 * 100, rel_tol=1e-4)
    assert m["max_drawdown_start"] == "2024-02-02T15:01:00.000Z"
    assert m["max_drawdown_trough"] == "2024-02-06T15:01:00.000Z"
    assert m["max_drawdown_recovery"] is None and m["max_drawdown_duration_days"] == 4.0
    assert m["drawdown_periods"] == 1 and report["drawdowns"][0]["recovered"] is False


def test_drawdown_periods_with_a_recovery() -> None:
    periods = drawdown_periods(np.array([100.0, 110.0, 99.0, 105.0, 120.0, 110.0]))
    assert [(p.start, p.trough, p.recovery, p.depth) for p in periods] == [(1, 2, 4, 11.0), (4, 5, None, 10.0)]
    assert math.isclose(periods[0].depth_pct, 10.0)
    assert drawdown_periods(np.array([1.0, 2.0, 2.0, 3.0])) == []


def test_monthly_yearly_and_buy_and_hold_by_hand() -> None:
    report = build_report(_result())
    assert [(r["year"], r["month"]) for r in report["monthly_returns"]] == [(2024, 1), (2024, 2)]
    jan, feb = (r["return_pct"] for r in report["monthly_returns"])
    assert math.isclose(jan, 1.0, rel_tol=1e-6) and math.isclose(feb, (1005 / 1010 - 1) * 100, rel_tol=1e-6)
    assert math.isclose(report["yearly_returns"][0]["return_pct"], 0.5, rel_tol=1e-6)
    hold = report["buy_and_hold"]
    # One /MES bought at the first open (4000), marked at the closes: 1000, 1010, 990, 1005, 1025, 1015.
    assert hold["net_pnl"] == 15.0 and math.isclose(hold["return_pct"], 1.5)
    assert hold["max_drawdown"] == 20.0 and math.isclose(hold["max_drawdown_pct"], 20 / 1010 * 100, rel_tol=1e-4)
    assert math.isclose(hold["excess_return_pct"], -1.0)
    assert math.isclose(hold["cagr_pct"], ((1015 / 1000) ** (252 / 6) - 1) * 100, rel_tol=1e-6)


def test_streaks_zero_trade_ends_both() -> None:
    d = [Decimal(x) for x in ("1", "2", "0", "3", "-1", "-1", "0", "-1", "4")]
    assert streaks(d) == (2, 2)


def test_cme_session_dates() -> None:
    # Sunday 18:30 ET opens Monday's session; Friday 15:00 CT (before the close) is Friday's.
    end = np.array([_ns("2024-02-04T23:30:00"), _ns("2024-02-05T15:00:00"), _ns("2024-02-09T21:00:00")])
    labels, per_year = session_labels(end, "CME_Equity")
    assert [str(x) for x in labels] == ["2024-02-05", "2024-02-05", "2024-02-09"] and per_year == 252
    # UTC midnight does not cut a futures session: 23:30Z Monday belongs to Tuesday's session.
    assert str(session_labels(np.array([_ns("2024-02-05T23:30:00")]), "CME_Equity")[0][0]) == "2024-02-06"
    assert session_labels(end, "24/7")[1] == 365


def test_unknown_calendar_falls_back_to_utc_days() -> None:
    labels, per_year = session_labels(np.array([_ns("2024-02-04T23:30:00")]), "no-such-calendar")
    assert str(labels[0]) == "2024-02-04" and per_year == 252


@pytest.mark.parametrize("n", [1, 2])
def test_short_runs_give_none_not_nan(n: int) -> None:
    result = _result()
    b = result.data.bars
    short = BarArrays(*(getattr(b, f)[:n] for f in ("start_ns", "end_ns", "open", "high", "low", "close", "volume",
                                                     "trade_count")))
    flat = BacktestResult(result.config, result.costs, result.instrument, market(short), [], np.full(n, 1000.0),
                          np.zeros(n, np.int64), {}, None, [], 1.0, 3)
    report = build_report(flat, trade_rows(flat))
    m = report["metrics"]
    assert m["sharpe"] is None and m["sortino"] is None and m["calmar"] is None and m["expectancy"] is None
    assert m["cagr_pct"] == 0.0 and m["max_drawdown_start"] is None
