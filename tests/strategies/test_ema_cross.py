"""EMA crossover rules on hand-computed vectors. SMA(1) vs SMA(2) makes the arithmetic obvious:
fast[t] = close[t], slow[t] = (close[t-1] + close[t]) / 2, so fast > slow <=> close rose."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import talib

from domain.intents import IntentReason, PositionTarget
from domain.market import Trade
from strategies import build_strategy
from strategies.ema import EmaCrossStrategy
from strategy_kit import MINUTE_NS, bar, closes_to_bars, config, feed, load_ohlc, rows_to_bars

SYM = "/MES"  # tick 0.25


def _sma12(**params: object) -> EmaCrossStrategy:
    s = build_strategy(config("ema", SYM, trend_line_1="SMA", period_1=1, trend_line_2="SMA", period_2=2, **params))
    assert isinstance(s, EmaCrossStrategy)
    return s


def test_warmup_no_signal_until_both_lines_defined_at_t_minus_1_and_t() -> None:
    s = _sma12()
    assert s.warmup_bars() == 3
    bars = closes_to_bars(SYM, [10, 11, 12, 12, 13])
    # bar1: fast 11 > slow 10.5 but slow[0] is undefined -> nothing; bar2: above at t-1 and t -> no cross
    assert feed(s, bars[:3]) == []
    assert (s.fast.value, s.slow.value) == (12.0, 11.5)
    # bar3 touches (12 == 12); bar4: 13 > 12.5 and 12 <= 12 at t-1 -> bullish (a cross out of a touch)
    assert feed(s, bars[3:4]) == []
    [intent] = feed(s, bars[4:])
    assert intent.target is PositionTarget.LONG and intent.reason is IntentReason.SIGNAL
    assert intent.strategy == "ema" and intent.symbol == "/MES"
    assert intent.event_ts_ns == bars[4].end_ns and intent.price == 13.0 and intent.stop_distance is None
    assert "SMA1 13 crossed above SMA2 12.5" in intent.detail


def test_touching_lines_are_no_cross() -> None:
    s = _sma12()
    # 10, 9 (below), 9: fast 9 == slow 9 -> touch, no bullish cross; 9 again: still touching
    assert feed(s, closes_to_bars(SYM, [10, 9, 9, 9])) == []
    assert s.fast.value == s.slow.value == 9.0
    assert s.target is PositionTarget.FLAT


def test_stop_and_reverse_and_same_side_cross_is_silent() -> None:
    s = _sma12()
    bars = closes_to_bars(SYM, [10, 9, 8, 8, 9, 8, 8, 8, 7])
    out = feed(s, bars)
    # bar4: 9 > 8.5 after touch 8 == 8 -> LONG; bar5: 8 < 8.5 and 9 >= 8.5 -> SHORT (reverse);
    # bar6/7 touch at 8; bar8: 7 < 7.5 with 8 >= 8 at t-1 -> bearish again but already SHORT -> silent
    assert [(i.target, i.event_ts_ns) for i in out] == [
        (PositionTarget.LONG, bars[4].end_ns), (PositionTarget.SHORT, bars[5].end_ns)]
    assert s.target is PositionTarget.SHORT


def test_tick_stop_hit_inside_bar_via_on_trade_then_flat_until_next_cross() -> None:
    s = _sma12(stop_loss_ticks=4)  # 4 x 0.25 = 1.0 point
    bars = closes_to_bars(SYM, [10, 9, 8, 8, 9])
    [entry] = feed(s, bars)
    assert entry.target is PositionTarget.LONG and entry.price == 9.0 and entry.stop_distance == 1.0
    assert s.stop_price == 8.0
    t0 = bars[-1].end_ns
    assert s.on_trade(Trade(SYM, t0 - 5, 7.0, 1)) == []  # stale trade from before the entry
    assert s.on_trade(Trade(SYM, t0 + 1, 8.25, 1)) == []
    [stop] = s.on_trade(Trade(SYM, t0 + 2, 8.0, 1))
    assert (stop.target, stop.reason, stop.price, stop.event_ts_ns) == (
        PositionTarget.FLAT, IntentReason.STOP, 8.0, t0 + 2)
    assert s.on_trade(Trade(SYM, t0 + 3, 7.0, 1)) == []  # already flat: one stop, not two
    # The bar that contained the stop closes at 10 (10 > 9.5 but 9 > 8.5 before: no cross) -> nothing,
    # even though its low (7) is below the old stop.
    assert s.on_bar(bar(SYM, t0 + MINUTE_NS, 10.0, high=10.0, low=7.0)) == []
    # Next cross (bearish: 9 < 9.5 after 10 >= 9.5) enters SHORT with a stop 1 point above.
    [short] = s.on_bar(bar(SYM, t0 + 2 * MINUTE_NS, 9.0))
    assert short.target is PositionTarget.SHORT and s.stop_price == 10.0


def test_stop_checked_at_bar_close_with_low() -> None:
    s = _sma12(stop_loss_ticks=4)
    bars = closes_to_bars(SYM, [10, 9, 8, 8, 9])
    feed(s, bars)
    t = bars[-1].end_ns + MINUTE_NS
    [stop] = s.on_bar(bar(SYM, t, 9.5, high=9.75, low=7.75))  # low 7.75 <= stop 8.0
    assert (stop.target, stop.reason, stop.price, stop.event_ts_ns) == (PositionTarget.FLAT, IntentReason.STOP, 9.5, t)
    assert "stop 8 hit" in stop.detail


def test_atr_stop_distance_and_atr_warmup() -> None:
    s = _sma12(stop_loss_atr=2.0, atr_period=2)
    closes = [10, 9, 8, 8, 9]
    bars = [bar(SYM, (i + 1) * MINUTE_NS, c, high=c + 0.5, low=c - 0.5) for i, c in enumerate(closes)]
    [entry] = feed(s, bars)
    # TR: bar1 max(1, |9.5-10|, |8.5-10|) = 1.5, bar2 1.5 -> ATR 1.5; bar3 TR 1 -> 1.25; bar4 TR 1.5 -> 1.375
    assert s.atr.value == 1.375
    assert entry.stop_distance == 2.75 and s.stop_price == 9.0 - 2.75
    # With a longer ATR the same cross (bar 4) falls inside the ATR warm-up: no entry without its stop.
    s2 = _sma12(stop_loss_atr=2.0, atr_period=5)
    assert s2.warmup_bars() == 6
    assert feed(s2, bars) == [] and s2.target is PositionTarget.FLAT


def test_tick_and_atr_stop_nearer_applies() -> None:
    s = _sma12(stop_loss_atr=2.0, atr_period=2, stop_loss_ticks=4)
    closes = [10, 9, 8, 8, 9]
    [entry] = feed(s, [bar(SYM, (i + 1) * MINUTE_NS, c, high=c + 0.5, low=c - 0.5) for i, c in enumerate(closes)])
    assert entry.stop_distance == 1.0 and s.stop_price == 8.0  # min(1.0, 2.75)


def test_manual_position_arms_stop_and_duplicate_bar_ignored() -> None:
    s = _sma12(stop_loss_ticks=8)  # 2.0 points
    bars = closes_to_bars(SYM, [10, 11, 12])
    feed(s, bars)
    assert feed(s, bars[-1:]) == []  # replayed bar: ignored
    s.set_position(PositionTarget.SHORT, 100.0)
    assert s.stop_price == 102.0
    assert s.on_trade(Trade(SYM, bars[-1].end_ns + 1, 101.75, 1)) == []
    [stop] = s.on_trade(Trade(SYM, bars[-1].end_ns + 2, 102.0, 1))
    assert stop.reason is IntentReason.STOP and s.target is PositionTarget.FLAT
    s.set_position(PositionTarget.LONG)  # no price given: the last trade (102) is the entry
    assert s.entry_price == 102.0 and s.stop_price == 100.0
    s.set_position(PositionTarget.FLAT)
    assert s.stop_price is None and s.entry_price is None


def test_other_symbol_bar_is_rejected() -> None:
    s = _sma12()
    with pytest.raises(ValueError):
        s.on_bar(bar("/ES", MINUTE_NS, 1.0))
    assert s.on_trade(Trade("/ES", 1, 1.0, 1)) == []


def test_wilder_line_config() -> None:
    s = build_strategy(config("ema", SYM, trend_line_1="Wilder", period_1=2, trend_line_2="EMA", period_2=3))
    feed(s, closes_to_bars(SYM, [1, 3, 5]))
    # Wilder(2): seed (1+3)/2 = 2 then 2 + (5-2)/2 = 3.5; EMA(3): (1+3+5)/3 = 3
    assert s.indicators()["fast"] == 3.5 and s.indicators()["slow"] == 3.0


def test_nvda_crosses_equal_talib_offline_computation(shared_data: Path) -> None:
    rows = load_ohlc(shared_data / "bars" / "nvda-1999-2014.daily.csv", intraday=False)
    s = build_strategy(config("ema", "NVDA", period_1=9, period_2=21))
    out = feed(s, rows_to_bars("NVDA", rows))
    close = np.array([r[4] for r in rows])
    f, sl = talib.EMA(close, 9), talib.EMA(close, 21)
    expected, target = [], "FLAT"
    for t in range(1, len(close)):
        if np.isnan(sl[t - 1]):
            continue
        side = "LONG" if f[t] > sl[t] and f[t - 1] <= sl[t - 1] else "SHORT" if f[t] < sl[t] and f[t - 1] >= sl[t - 1] else None
        if side and side != target:
            expected.append((rows[t][0], side))
            target = side
    assert len(expected) > 100
    assert [(i.event_ts_ns, i.target.value) for i in out] == expected
