"""The backtest loop's skip over quiet bars (`Strategy.advance_quiet_bars`) changes nothing: the
same trades, denials, sampled chart lines and equity as feeding every bar to on_bar
(`BacktestEngine(fast_forward=False)`), over line kinds, stops, risk denials, sampling and bars
outside the session; and it really skips (far fewer on_bar calls)."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import numpy as np
import pytest

from backtest.engine import BacktestEngine, CostSettings, SimulatedClock, backtest_risk_check, config_from_options
from strategies.ema import EmaCrossStrategy
from tests.backtest.helpers import market, random_walk

CONFIGS: list[dict[str, Any]] = [
    {"trend_line_1": "EMA", "period_1": 9, "trend_line_2": "EMA", "period_2": 21},
    {"trend_line_1": "EMA", "period_1": 3, "trend_line_2": "WilderSmoother", "period_2": 8},
    {"trend_line_1": "SMA", "period_1": 5, "trend_line_2": "EMA", "period_2": 13},  # an SMA: never skipped
    {"trend_line_1": "EMA", "period_1": 9, "trend_line_2": "EMA", "period_2": 21, "stop_loss_ticks": 6},
    {"trend_line_1": "EMA", "period_1": 5, "trend_line_2": "EMA", "period_2": 34, "stop_loss_atr": 1.5,
     "atr_period": 10},
    {"trend_line_1": "EMA", "period_1": 2, "trend_line_2": "EMA", "period_2": 3},  # a cross every few bars
]
LIMITS = [None, {"max_order_quantity": 1}]  # 2 contracts an order: every entry denied, the strategy put back flat


def _run(options: dict[str, Any], limits: dict[str, Any] | None, fast_forward: bool, line_every: int,
         n: int, seed: int) -> Any:
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "quantity": 2} | options)
    clock = SimulatedClock()
    engine = BacktestEngine(config, CostSettings(quantity=2, commission_per_contract=Decimal("0.5"), slippage_ticks=1),
                            risk_check=backtest_risk_check(clock, limits), clock=clock, fast_forward=fast_forward)
    return engine.run(market(random_walk(n, seed=seed)), record_bars=False, line_every=line_every)


def _same(a: Any, b: Any) -> None:
    assert a.trades == b.trades
    assert a.denials == b.denials
    assert a.extra == b.extra
    assert np.array_equal(a.equity, b.equity) and np.array_equal(a.position, b.position)


@pytest.mark.parametrize("options", CONFIGS)
@pytest.mark.parametrize("limits", LIMITS)
def test_skipping_quiet_bars_gives_identical_results(options: dict[str, Any], limits: dict[str, Any] | None) -> None:
    # 3,000 minutes from a CME session's open cross its daily break: bars outside the session.
    fast = _run(options, limits, True, 37, 3000, seed=5)
    slow = _run(options, limits, False, 37, 3000, seed=5)
    if limits is None:
        assert len(slow.trades) > 5
    else:
        assert len(slow.denials) > 5 and not slow.trades  # the limit really refused the entries
    _same(fast, slow)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_identical_without_sampling_and_across_chunks(seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks: a skip never runs past a chunk's end.
    monkeypatch.setattr("backtest.engine._CHUNK", 257)
    options = CONFIGS[0]
    _same(_run(options, None, True, 0, 5000, seed), _run(options, None, False, 0, 5000, seed))


def test_quiet_bars_are_really_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"on_bar": 0}
    original = EmaCrossStrategy.on_bar

    def counting(self: EmaCrossStrategy, bar: Any) -> Any:
        calls["on_bar"] += 1
        return original(self, bar)

    monkeypatch.setattr(EmaCrossStrategy, "on_bar", counting)
    _run(CONFIGS[0], None, False, 0, 3000, seed=5)
    every_bar = calls["on_bar"]
    calls["on_bar"] = 0
    _run(CONFIGS[0], None, True, 0, 3000, seed=5)
    assert calls["on_bar"] < every_bar / 4
