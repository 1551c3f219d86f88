"""`Strategy.warmed_up`: every indicator the strategy's rules use is defined (so the next bar can
signal), read from the indicators themselves - after a warm-up, a restore or live bars alike."""
from __future__ import annotations

from strategies import build_strategy
from tests.strategies.strategy_kit import closes_to_bars, config


def warm_from(strategy, closes: list[float]) -> list[bool]:
    """`warmed_up` after each bar."""
    states = []
    for bar in closes_to_bars(strategy.symbol, closes):
        strategy.on_bar(bar)
        states.append(strategy.warmed_up)
    return states


def test_ema_is_warmed_up_once_both_lines_are_defined() -> None:
    strategy = build_strategy(config("ema", "/MES", period_1=9, period_2=21))
    assert strategy.warmed_up is False
    states = warm_from(strategy, [6000.0 + i % 5 for i in range(25)])
    assert states.index(True) == 20 and all(states[20:])  # EMA 21's first value is at bar 21
    assert strategy.indicators()["slow"] is not None


def test_ema_with_an_atr_stop_also_needs_the_atr() -> None:
    strategy = build_strategy(config("ema", "/MES", period_1=2, period_2=4, stop_loss_atr=2.0, atr_period=10))
    states = warm_from(strategy, [6000.0 + i % 5 for i in range(15)])
    assert states.index(True) == 10  # ATR(10) is defined from bar 11; the lines long before


def test_supertrend_is_warmed_up_once_its_emas_and_supertrend_are_defined() -> None:
    strategy = build_strategy(config("supertrend", "/MES", atr_period=25))
    states = warm_from(strategy, [6000.0 + i % 7 for i in range(30)])
    assert states.index(True) == 25  # the Supertrend (ATR 25) after the EMA 21
    values = strategy.indicators()
    assert None not in (values["sf"], values["f"], values["s"], values["supertrend"])


def test_zeroday_follows_its_lines() -> None:
    strategy = build_strategy(config("zeroday", "SPX", period_1=3, period_2=5))
    states = warm_from(strategy, [6000.0 + i % 3 for i in range(8)])
    assert states.index(True) == 4


def test_warmed_up_survives_a_restore_and_a_fresh_state_is_not() -> None:
    warm = build_strategy(config("ema", "/MES", period_1=9, period_2=21))
    warm_from(warm, [6000.0 + i % 5 for i in range(22)])
    restored = build_strategy(warm.config)
    restored.restore(warm.state())
    assert restored.warmed_up is True
    cold = build_strategy(warm.config)
    cold.restore(build_strategy(warm.config).state())  # a state saved before any bar
    assert cold.warmed_up is False
