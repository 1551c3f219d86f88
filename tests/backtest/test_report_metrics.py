"""Report metrics checked by hand on a tiny equity series."""
from __future__ import annotations

import math
from decimal import Decimal

import numpy as np

from backtest.engine import BacktestEngine, BacktestResult, CostSettings, RoundTrip, config_from_options
from backtest.report import daily_sharpe, max_drawdown, metrics
from tests.backtest.helpers import NS, T0, market, random_walk

DAY = 86_400 * NS


def test_max_drawdown_by_hand() -> None:
    eq = np.array([100.0, 110.0, 99.0, 105.0, 120.0, 110.0])
    assert max_drawdown(eq) == (11.0, 10.0)  # 110 -> 99; the later 120 -> 110 is only 10


def test_max_drawdown_picks_largest_amount() -> None:
    eq = np.array([100.0, 110.0, 99.0, 105.0, 120.0, 107.0])
    dd, pct = max_drawdown(eq)
    assert dd == 13.0 and math.isclose(pct, 13 / 120 * 100)
    assert max_drawdown(np.array([1.0, 2.0, 3.0])) == (0.0, 0.0)


def test_daily_sharpe_by_hand() -> None:
    # Two bars per day; the last bar of each day counts.
    eq = np.array([100.0, 101.0, 101.0, 103.02, 103.0, 102.0, 102.0, 104.04])
    end = np.array([T0 + d * DAY + k * NS for d in range(4) for k in (1, 2)], dtype=np.int64)
    daily = np.array([101.0, 103.02, 102.0, 104.04])
    r = np.diff(daily) / daily[:-1]
    expected = r.mean() / r.std(ddof=1) * math.sqrt(252)
    assert math.isclose(daily_sharpe(eq, end), expected)  # type: ignore[arg-type]
    assert daily_sharpe(eq[:2], end[:2]) is None  # one day: no daily return


def test_metrics_by_hand() -> None:
    bars = random_walk(10)
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 2,
                                  "period_2": 3})
    costs = CostSettings(quantity=1, commission_per_contract=Decimal("1"), starting_capital=Decimal(1000))
    engine = BacktestEngine(config, costs)
    # Three hand-made round trips on /MES (tick 0.25, $5/pt -> $1.25/tick): +10 ticks, -4 ticks, +2 ticks.
    trades = [RoundTrip(1, 1, 0, 16000, 0, "signal", 1, 16010, 2, "signal"),
              RoundTrip(-1, 1, 1, 16010, 2, "signal", 2, 16014, 4, "signal"),
              RoundTrip(1, 1, 2, 16014, 4, "signal", 3, 16016, 6, "stop")]
    equity, position = engine._equity_curve(bars.close, trades, len(bars))
    result = BacktestResult(config, costs, engine.instrument, market(bars), trades, equity, position, {}, None, [],
                            1.0, 3)
    m = metrics(result)
    # gross 12.50 - 5.00 + 2.50 = 10.00; commission 2 per trade -> net 10.50, -7.00, 0.50
    assert m["gross_pnl"] == "10.00" and m["commission"] == "6" and m["net_pnl"] == "4.00"
    assert m["trades"] == 3 and m["winners"] == 2 and m["losers"] == 1
    assert math.isclose(m["win_rate"], 2 / 3)
    assert math.isclose(m["profit_factor"], 11.0 / 7.0)
    assert m["average_trade"] == "1.33"
    assert math.isclose(m["return_pct"], 0.4)
    assert m["exposure_pct"] == 60.0  # held at the closes of bars 0..5 of 10
    assert math.isclose(float(equity[-1]), 1004.0)
