"""Deleting a ticker closes its position whether or not its strategy is running."""
from __future__ import annotations

from domain.market import Trade
from domain.orders import TASTYTRADE
from domain.tickers import StrategyName
from tests.engine.conftest import EngineRig

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session


def test_deleting_a_ticker_of_a_stopped_strategy_closes_its_position(rig: EngineRig) -> None:
    config = rig.add_ticker(strategy="ema", symbol="/M2K", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                            tastytrade_quantity=1, trend_line_1="EMA", period_1=9, trend_line_2="EMA", period_2=21)
    rig.push([Trade("/M2K", START, 2100.0, 1)])
    rig.supervisor.manual_trigger("ema", "/M2K", "LONG")  # the strategy was never started
    assert rig.position("ema", "/M2K", TASTYTRADE) == 1
    assert rig.tickers.delete(StrategyName.EMA, "/M2K")

    rig.supervisor.ticker_removed("ema", "/M2K", config)  # what delete-ticker does, with the stored config

    assert rig.position("ema", "/M2K", TASTYTRADE) == 0
    last = rig.orders.orders(limit=1)[0]
    assert last.intent_reason == "ticker_removed" and last.state.value == "FILLED"
