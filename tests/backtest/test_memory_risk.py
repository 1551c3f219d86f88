"""A backtest's risk check is the live rules over in-process state: the same run with the live
Redis-backed `RiskEngine` as its check gives the same trades and the same denials (reason codes
and details), on real Redis and fakeredis."""
from __future__ import annotations

import numpy as np
import pytest

from backtest.data import MarketData, TickArrays, ticks_to_bars
from backtest.engine import BacktestEngine, CostSettings, SimulatedClock, backtest_risk_check, config_from_options
from config.settings import Settings
from config.timeframes import Timeframe
from risk.engine import RiskEngine
from store.redis_store import Store
from tests.backtest.helpers import NS, T0


def _ticks(n: int = 6000, seed: int = 3) -> TickArrays:
    """A trade every 5 s inside a CME session (T0 is a session open), tick-aligned walk."""
    rng = np.random.default_rng(seed)
    price = 4000.0 + np.cumsum(rng.integers(-3, 4, n)) * 0.25
    return TickArrays(T0 + np.arange(n, dtype=np.int64) * 5 * NS, price, np.ones(n, np.int64))


@pytest.mark.parametrize("limits", [{"max_orders_per_minute": 1}, {"max_position": 1},
                                    {"max_order_quantity": 1, "max_orders_per_minute": 3}])
def test_backtest_with_memory_risk_equals_backtest_with_the_live_engine(store: Store, settings: Settings,
                                                                        limits: dict[str, int]) -> None:
    ticks = _ticks()
    data = MarketData(ticks_to_bars(ticks, Timeframe.parse("3t"), "/MES"), ticks, "synthetic trades")
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "3t", "trend_line_1": "EMA",
                                  "period_1": 2, "trend_line_2": "EMA", "period_2": 3, "quantity": 2})
    costs = CostSettings(quantity=2)

    live_clock = SimulatedClock()
    live = RiskEngine(store, settings, clock=live_clock, audit_allowed=False)
    live.update_limits(limits)
    want = BacktestEngine(config, costs, risk_check=live.check_and_take, clock=live_clock).run(data, record_bars=False)

    clock = SimulatedClock()
    got = BacktestEngine(config, costs, risk_check=backtest_risk_check(clock, limits), clock=clock).run(
        data, record_bars=False)

    assert got.denials == want.denials and got.trades == want.trades
    assert want.denials, "the limits must deny something for the comparison to mean anything"
