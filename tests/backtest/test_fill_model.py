"""The paper fill model (backtest/fills.py) and its use by the engine: next-open market fills,
stops/targets at their level when the range crosses them, the worse one first, gaps at the open."""
from __future__ import annotations

from decimal import Decimal
from typing import Any, ClassVar

import numpy as np

from backtest import fills
from backtest.data import BarArrays, MarketData
from backtest.engine import BacktestEngine, CostSettings, config_from_options
from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar, Trade
from domain.tickers import TickerConfig
from strategies.base import Strategy
from tests.backtest.helpers import NS, T0


def test_market_fill_is_tick_rounded_with_adverse_slippage() -> None:
    assert fills.market_fill_ticks(4000.10, +1, 0.25, 0) == 16000  # rounds to 4000.00
    assert fills.market_fill_ticks(4000.125, +1, 0.25, 0) == 16001  # half up
    assert fills.market_fill_ticks(4000.0, +1, 0.25, 2) == 16002  # buy pays 2 ticks more
    assert fills.market_fill_ticks(4000.0, -1, 0.25, 2) == 15998  # sell receives 2 ticks less
    assert fills.ticks_to_price(16001, Decimal("0.25")) == Decimal("4000.25")


def test_pnl_and_commission_exact() -> None:
    tv = Decimal("0.25") * Decimal(5)
    assert fills.pnl(+1, 3, 16000, 16010, tv) == Decimal("37.50")
    assert fills.pnl(-1, 1, 16000, 16010, tv) == Decimal("-12.50")
    assert fills.commission(-3, Decimal("0.62")) == Decimal("1.86")


def test_bracket_exit_rules() -> None:
    # long, stop 99, target 105
    assert fills.bracket_exit(1, 99.0, 105.0, 100, 104, 100) is None
    assert fills.bracket_exit(1, 99.0, 105.0, 100, 104, 98) == (99.0, "stop")
    assert fills.bracket_exit(1, 99.0, 105.0, 100, 106, 100) == (105.0, "target")
    assert fills.bracket_exit(1, 99.0, 105.0, 100, 106, 98) == (99.0, "stop")  # both: the worse first
    assert fills.bracket_exit(1, 99.0, 105.0, 97, 98, 96) == (97, "stop")  # gap through the stop: open
    assert fills.bracket_exit(1, 99.0, 105.0, 107, 108, 106) == (107, "target")  # gap through target
    # short, stop 101, target 95
    assert fills.bracket_exit(-1, 101.0, 95.0, 100, 102, 94) == (101.0, "stop")
    assert fills.bracket_exit(-1, 101.0, 95.0, 100, 100.5, 94) == (95.0, "target")
    assert fills.bracket_exit(0, 1.0, 2.0, 1, 2, 0) is None


def test_bar_path_visits_the_adverse_extreme_first() -> None:
    assert fills.bar_path(10, 12, 8, 11, +1) == (10, 8, 12, 11)
    assert fills.bar_path(10, 12, 8, 11, -1) == (10, 12, 8, 11)
    assert fills.level_fill(99.0, None, 97.0) == 97.0  # at the open: gap
    assert fills.level_fill(99.0, 100.0, 98.0) == 99.0  # crossed: the level
    assert fills.level_fill(99.0, 100.0, 99.5) == 99.5  # level unknown / not crossed: the price


class BracketStrategy(Strategy):
    """Test strategy: goes LONG at the close of bar 0 with a stop and target at fixed prices."""

    name: ClassVar[str] = "ema"

    def __init__(self, config: TickerConfig, stop: float, target: float) -> None:
        super().__init__(config)
        self.stop, self.target_px, self.n = stop, target, 0

    @property
    def stop_configured(self) -> bool:
        return True

    def warmup_bars(self) -> int:
        return 1

    def on_bar(self, bar: Bar) -> list[Intent]:
        self.n += 1
        if self.n == 1:
            self.target = PositionTarget.LONG
            return [Intent("ema", bar.symbol, PositionTarget.LONG, IntentReason.SIGNAL, "go", bar.end_ns, bar.close)]
        return []

    def on_trade(self, trade: Trade) -> list[Intent]:
        if self.target is not PositionTarget.LONG:
            return []
        for level, reason in ((self.stop, IntentReason.STOP), (self.target_px, IntentReason.TARGET)):
            hit = trade.price <= level if reason is IntentReason.STOP else trade.price >= level
            if hit:
                self.target = PositionTarget.FLAT
                return [Intent("ema", trade.symbol, PositionTarget.FLAT, reason, "x", trade.ts_ns, trade.price)]
        return []

    def indicators(self) -> dict[str, float | None]:
        if self.target is PositionTarget.FLAT:
            return {"stop": None, "target": None}
        return {"stop": self.stop, "target": self.target_px}

    def state(self) -> dict[str, Any]:
        return {}

    def restore(self, state: dict[str, Any]) -> None: ...


def _run(ohlc: list[tuple[float, float, float, float]], stop: float, target: float, slip: int = 0) -> Any:
    n = len(ohlc)
    a = np.array(ohlc, dtype=np.float64)
    s = T0 + np.arange(n, dtype=np.int64) * 60 * NS
    bars = BarArrays(s, s + 60 * NS, a[:, 0], a[:, 1], a[:, 2], a[:, 3], np.ones(n, np.int64), np.zeros(n, np.int64))
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 9,
                                  "period_2": 21})
    engine = BacktestEngine(config, CostSettings(slippage_ticks=slip),
                            strategy_factory=lambda c: BracketStrategy(c, stop, target))
    return engine.run(MarketData(bars, None, "t"), record_bars=False)


def test_engine_entry_at_next_open_and_stop_at_level() -> None:
    r = _run([(100, 101, 99, 100), (100.5, 101, 98, 100), (100, 100, 100, 100)], stop=99.0, target=110.0)
    t = r.trades[0]
    assert (t.entry_bar, t.entry_ticks, t.entry_ns) == (1, 402, T0 + 60 * NS)  # bar 1 open 100.50
    assert (t.exit_bar, t.exit_ticks, t.exit_reason) == (1, 396, "stop")  # 99.00, the level, not the low 98


def test_engine_worse_first_when_stop_and_target_in_one_bar() -> None:
    r = _run([(100, 100, 100, 100), (100, 106, 98, 104)], stop=99.0, target=105.0)
    assert (r.trades[0].exit_ticks, r.trades[0].exit_reason) == (396, "stop")


def test_engine_gap_through_stop_fills_at_open_with_slippage() -> None:
    r = _run([(100, 100, 100, 100), (100, 100, 100, 100), (97, 98, 96, 97)], stop=99.0, target=110.0, slip=1)
    t = r.trades[0]
    assert t.entry_ticks == 401  # 100.00 + 1 tick paid on the buy
    assert (t.exit_bar, t.exit_ticks, t.exit_reason) == (2, 387, "stop")  # open 97.00 - 1 tick on the sell


def test_engine_target_at_level() -> None:
    r = _run([(100, 100, 100, 100), (100, 100, 100, 100), (101, 106, 100.5, 103)], stop=99.0, target=105.0)
    assert (r.trades[0].exit_ticks, r.trades[0].exit_reason) == (420, "target")
