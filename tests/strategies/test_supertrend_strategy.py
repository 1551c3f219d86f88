"""Supertrend reversal rules on hand-computed vectors.

Base path: 25 flat bars (high 101, low 99, close 100): TR = 2 so ATR(10) = 2; SF = F = S = 100
(SF <= F arms both candles); Supertrend bands 94 / 106, direction +1 (pandas-ta's start value).
Then bar 25: close 101, high 102, low 100.5 -> TR = max(1.5, 2, 0.5) = 2, ATR stays 2;
SF = 100 + 1*0.2 = 100.2 > F = 100 + 2/15 = 100.1333 > S = 100 + 2/22 = 100.0909, low 100.5 > SF:
bullish reversal candle with direction up -> LONG at 101, stop 101 - 2*2 = 97, target 101 + 3*2 = 107.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pandas_ta_classic as pta
import pytest
import talib

from domain.intents import IntentReason, PositionTarget
from domain.market import Trade
from strategies import build_strategy
from strategies.supertrend import SupertrendStrategy
from strategy_kit import MINUTE_NS, bar, config, feed, load_ohlc, rows_to_bars

SYM = "/ES"


def _strategy(**params: object) -> SupertrendStrategy:
    s = build_strategy(config("supertrend", SYM, **params))
    assert isinstance(s, SupertrendStrategy)
    return s


def _t(i: int) -> int:
    return (i + 1) * MINUTE_NS


def _flat_then_long(**params: object) -> SupertrendStrategy:
    s = _strategy(**params)
    assert feed(s, [bar(SYM, _t(i), 100.0, high=101.0, low=99.0) for i in range(25)]) == []
    assert s.st.direction == 1 and s.st.value == 94.0 and s.st.atr.value == 2.0
    [entry] = s.on_bar(bar(SYM, _t(25), 101.0, high=102.0, low=100.5))
    assert (entry.target, entry.reason, entry.price, entry.event_ts_ns) == (
        PositionTarget.LONG, IntentReason.SIGNAL, 101.0, _t(25))
    assert s.sf.value == pytest.approx(100.2, abs=1e-12)
    assert s.f.value == pytest.approx(100 + 2 / 15, abs=1e-12)
    assert s.s.value == pytest.approx(100 + 2 / 22, abs=1e-12)
    return s


def test_bullish_candle_entry_levels() -> None:
    s = _flat_then_long()
    assert s.entry_price == 101.0
    assert s.stop_price == 97.0 and s.target_price == 107.0
    assert s.warmup_bars() == 21


def test_entry_intent_carries_stop_distance() -> None:
    s = _strategy()
    feed(s, [bar(SYM, _t(i), 100.0, high=101.0, low=99.0) for i in range(25)])
    [entry] = s.on_bar(bar(SYM, _t(25), 101.0, high=102.0, low=100.5))
    assert entry.stop_distance == 4.0
    assert "bullish reversal candle with supertrend up" in entry.detail


def test_momentum_fade_exits_flat() -> None:
    s = _flat_then_long()
    # close 99: SF = 100.2 - 1.2*0.2 = 99.96 <= F = 100.1333 - 1.1333*2/15 = 99.9822 -> fade.
    # Low 98.5 > stop 97, high 100 < target 107; supertrend still up (99 > lower band 95.25).
    [fade] = s.on_bar(bar(SYM, _t(26), 99.0, high=100.0, low=98.5))
    assert (fade.target, fade.reason, fade.price) == (PositionTarget.FLAT, IntentReason.MOMENTUM_FADE, 99.0)
    assert s.sf.value == pytest.approx(99.96, abs=1e-12) and s.st.direction == 1


def test_trailing_stop_tightens_never_loosens_and_fires_on_trade() -> None:
    s = _flat_then_long()
    # close 104: TR = max(2.5, 3.5, 1) = 3.5 -> ATR 2 + 1.5/10 = 2.15; best close 104 -> stop 104 - 4.3 = 99.7
    assert s.on_bar(bar(SYM, _t(26), 104.0, high=104.5, low=102.0)) == []
    assert s.st.atr.value == pytest.approx(2.15, abs=1e-12)
    assert s.stop_price == pytest.approx(99.7, abs=1e-12)
    # close 103.5, range 101..106: TR 5 -> ATR 2.435; 104 - 4.87 = 99.13 < 99.7 -> stop stays 99.7
    assert s.on_bar(bar(SYM, _t(27), 103.5, high=106.0, low=101.0)) == []
    assert s.st.atr.value == pytest.approx(2.435, abs=1e-12)
    assert s.stop_price == pytest.approx(99.7, abs=1e-12)
    assert s.target_price == 107.0  # take-profit fixed at entry
    assert s.on_trade(Trade(SYM, _t(27) + 1, 99.75, 1)) == []
    [stop] = s.on_trade(Trade(SYM, _t(27) + 2, 99.5, 1))
    assert (stop.target, stop.reason, stop.price, stop.event_ts_ns) == (
        PositionTarget.FLAT, IntentReason.STOP, 99.5, _t(27) + 2)


def test_take_profit_on_trade_and_at_bar_close() -> None:
    s = _flat_then_long()
    assert s.on_trade(Trade(SYM, _t(25) + 1, 106.75, 1)) == []
    [tp] = s.on_trade(Trade(SYM, _t(25) + 2, 107.0, 1))
    assert (tp.target, tp.reason, tp.price) == (PositionTarget.FLAT, IntentReason.TARGET, 107.0)
    s2 = _flat_then_long()
    [tp2] = s2.on_bar(bar(SYM, _t(26), 106.0, high=107.25, low=101.0))
    assert (tp2.target, tp2.reason, tp2.price) == (PositionTarget.FLAT, IntentReason.TARGET, 106.0)


def test_stop_wins_when_stop_and_target_in_one_bar() -> None:
    s = _flat_then_long()
    [hit] = s.on_bar(bar(SYM, _t(26), 101.0, high=108.0, low=96.0))
    assert hit.reason is IntentReason.STOP


def test_supertrend_flip_exits() -> None:
    s = _flat_then_long(trailing_stop_atr=0, take_profit_atr=0)
    assert s.stop_price is None and s.target_price is None
    # close 93 < previous final lower band 95.25 (= 101.25 - 6) -> direction down -> TREND_FLIP
    [flip] = s.on_bar(bar(SYM, _t(26), 93.0, high=101.0, low=92.0))
    assert (flip.target, flip.reason) == (PositionTarget.FLAT, IntentReason.TREND_FLIP)
    assert s.st.direction == -1


def test_bearish_candle_against_supertrend_up_is_no_trade() -> None:
    s = _strategy()
    feed(s, [bar(SYM, _t(i), 100.0, high=101.0, low=99.0) for i in range(25)])
    # SF 99.8 < F 99.8667 < S 99.909, high 99.5 < SF: bearish candle, but direction is up (99 > 94)
    assert s.on_bar(bar(SYM, _t(25), 99.0, high=99.5, low=98.0)) == []
    assert s.bear_active and s.target is PositionTarget.FLAT


def test_candle_only_first_bar_since_reset() -> None:
    s = _flat_then_long()
    s.set_position(PositionTarget.FLAT)  # e.g. risk flatten
    # Still SF > F > S and low > SF, but SF never closed at/below F since the candle -> no new entry.
    assert s.on_bar(bar(SYM, _t(26), 102.0, high=103.0, low=101.5)) == []
    assert s.target is PositionTarget.FLAT


def test_short_entry_and_stop() -> None:
    s = _strategy()
    feed(s, [bar(SYM, _t(i), 100.0, high=101.0, low=99.0) for i in range(25)])
    # close 90 < lower band 94 -> direction down; TR 10.5 -> ATR 2.85. SF 98 < F 98.667 < S 99.09 but
    # high 100 > SF: no candle yet.
    assert s.on_bar(bar(SYM, _t(25), 90.0, high=100.0, low=89.5)) == []
    assert s.st.direction == -1
    # close 89: SF = 98 - 9*0.2 = 96.2, high 89.5 < SF -> bearish candle, direction down -> SHORT.
    # TR = max(1.5, 0.5, 2) = 2 -> ATR 2.85 - 0.085 = 2.765; stop 89 + 5.53, target 89 - 8.295.
    [short] = s.on_bar(bar(SYM, _t(26), 89.0, high=89.5, low=88.0))
    assert (short.target, short.price) == (PositionTarget.SHORT, 89.0)
    assert s.stop_price == pytest.approx(94.53, abs=1e-12)
    assert s.target_price == pytest.approx(80.705, abs=1e-12)
    assert short.stop_distance == pytest.approx(5.53, abs=1e-12)
    [stop] = s.on_trade(Trade(SYM, _t(26) + 1, 94.6, 1))
    assert stop.reason is IntentReason.STOP and s.target is PositionTarget.FLAT


def test_nvda_entries_equal_offline_computation(shared_data: Path) -> None:
    """Stops off: entries/reversals/flip/fade equal a loop over TA-Lib EMAs and pandas-ta's supertrend."""
    rows = load_ohlc(shared_data / "bars" / "nvda-1999-2014.daily.csv", intraday=False)
    s = _strategy(trailing_stop_atr=0, take_profit_atr=0)
    out = feed(s, rows_to_bars(SYM, rows))
    h, lo, c = (np.array([r[k] for r in rows]) for k in (2, 3, 4))
    sf, f, sl = talib.EMA(c, 9), talib.EMA(c, 14), talib.EMA(c, 21)
    d = pta.supertrend(pd.Series(h), pd.Series(lo), pd.Series(c), 10, 3.0)["SUPERTd_10_3.0"].to_numpy()
    expected: list[tuple[int, str, str]] = []
    pos, bull_armed, bear_armed, bull_act, bear_act = "FLAT", False, False, False, False
    for t in range(len(c)):
        if np.isnan(sl[t]):
            continue
        bull = bear = bfade = sfade = False
        if sf[t] <= f[t]:
            bfade, bull_act, bull_armed = bull_act, False, True
        elif sf[t] > f[t] > sl[t] and lo[t] > sf[t] and bull_armed:
            bull, bull_armed, bull_act = True, False, True
        if sf[t] >= f[t]:
            sfade, bear_act, bear_armed = bear_act, False, True
        elif sf[t] < f[t] < sl[t] and h[t] < sf[t] and bear_armed:
            bear, bear_armed, bear_act = True, False, True
        sig = "LONG" if bull and d[t] == 1 else "SHORT" if bear and d[t] == -1 else None
        if sig and sig != pos:
            pos = sig
            expected.append((rows[t][0], sig, "signal"))
        elif (pos == "LONG" and d[t] == -1) or (pos == "SHORT" and d[t] == 1):
            pos = "FLAT"
            expected.append((rows[t][0], "FLAT", "trend_flip"))
        elif (pos == "LONG" and bfade) or (pos == "SHORT" and sfade):
            pos = "FLAT"
            expected.append((rows[t][0], "FLAT", "momentum_fade"))
    assert len(expected) > 50
    assert {e[2] for e in expected} == {"signal", "trend_flip", "momentum_fade"}
    assert [(i.event_ts_ns, i.target.value, i.reason.value) for i in out] == expected
