"""A position taken by a manual trigger on a running ticker has its stop checked on the very next
trade, not only from the next bar on (the thread is woken to start watching trades)."""
from __future__ import annotations

from domain.market import Trade
from domain.orders import TASTYTRADE
from tests.engine.conftest import EngineRig, wait_until

SECOND = 1_000_000_000
START = 1719928800 * SECOND  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session
TICKER = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
              tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4,
              stop_loss_ticks=4)


def test_a_manual_entry_is_stopped_out_inside_the_same_bar(rig: EngineRig) -> None:
    rig.add_ticker(**TICKER)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    rig.push([Trade("/MES", START + 5 * SECOND, 6000.0, 1)])
    rig.supervisor.manual_trigger("ema", "/MES", "LONG")
    assert rig.position("ema", "/MES", TASTYTRADE) == 1  # stop 4 ticks below 6000: 5999.00
    status = rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]
    assert status["position"] == "LONG" and status["indicators"]["stop"] == 5999.0  # shown at once
    rig.push([Trade("/MES", START + 20 * SECOND, 5998.0, 1)])  # same bar, through the stop
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == 0, timeout=5.0,
               what="the stop to fire before the bar closes")
    runner = rig.supervisor._runners[("ema", "/MES")]
    assert runner.status.last_bar is None  # no bar has closed: the trade alone did it
    assert runner.strategy.target.value == "FLAT"
