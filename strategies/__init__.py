"""Strategies: pure logic over bars (and trades, for stops) that emits `Intent`s.

`build_strategy(config)` is the one constructor the engine and the backtester use.
"""
from __future__ import annotations

from typing import Any

from domain.tickers import StrategyName, TickerConfig
from strategies.base import SessionClock, Strategy
from strategies.ema import EmaCrossStrategy
from strategies.supertrend import SupertrendStrategy
from strategies.zeroday import ZeroDayStrategy

STRATEGY_CLASSES: dict[StrategyName, type[Strategy]] = {
    StrategyName.EMA: EmaCrossStrategy,
    StrategyName.SUPERTREND: SupertrendStrategy,
    StrategyName.ZERODAY: ZeroDayStrategy,
}


def build_strategy(config: TickerConfig, **options: Any) -> Strategy:
    """A fresh strategy for a ticker. `options` go to the class constructor as keyword arguments
    (only `zeroday` takes any: entry_start, entry_end, close_time, early_close_offset,
    regular_close); passing options to a strategy without them raises TypeError."""
    cls = STRATEGY_CLASSES[StrategyName(config.strategy)]
    return cls(config, **options)  # type: ignore[call-arg]


__all__ = ["STRATEGY_CLASSES", "SessionClock", "Strategy", "build_strategy", "EmaCrossStrategy",
           "SupertrendStrategy", "ZeroDayStrategy"]
