"""Indicators equal TA-Lib (EMA, SMA, ATR, Wilder) and pandas-ta-classic (Supertrend) to 1e-9 on
real bars, plus hand-computed vectors and exact state round-trips."""
from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pandas_ta_classic as pta
import pytest
import talib

from domain.tickers import TrendLine
from strategies.indicators import ATR, EMA, SMA, IndicatorStateError, Supertrend, WilderSmoother, make_line
from strategy_kit import json_roundtrip, load_ohlc

TOL = 1e-9


@pytest.fixture(scope="module", params=["nvda", "index1min"])
def ohlc(request: pytest.FixtureRequest) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    root = Path(__file__).resolve().parents[3] / "shared" / "data" / "bars"
    name = {"nvda": "nvda-1999-2014.daily.csv", "index1min": "index-future-2006.1min.csv"}[request.param]
    if not (root / name).is_file():
        pytest.skip(f"real market data not present at {root}")
    rows = load_ohlc(root / name, intraday=request.param == "index1min")
    arr = np.array([r[2:] for r in rows], dtype=float)
    return arr[:, 0], arr[:, 1], arr[:, 2]


def test_shared_data_fixture_is_the_source(shared_data: Path) -> None:
    # The module fixture reads the same directory the shared `shared_data` fixture guards.
    assert (shared_data / "bars" / "nvda-1999-2014.daily.csv").is_file()
    assert (shared_data / "bars" / "index-future-2006.1min.csv").is_file()


def _series(ind: object, xs: np.ndarray) -> np.ndarray:
    return np.array([np.nan if (v := ind.update(float(x))) is None else v for x in xs])  # type: ignore[attr-defined]


def _assert_same(got: np.ndarray, exp: np.ndarray) -> None:
    assert np.array_equal(np.isnan(got), np.isnan(exp)), "warm-up (None) positions differ"
    assert np.nanmax(np.abs(got - exp)) <= TOL


def test_talib_defaults_seed_ema_with_sma() -> None:
    assert talib.get_compatibility() == 0  # 0 = default: EMA seeded with the SMA of the first n
    assert talib.get_unstable_period("EMA") == 0 and talib.get_unstable_period("ATR") == 0


@pytest.mark.parametrize("period", [1, 2, 9, 21, 50])
def test_ema_sma_equal_talib(ohlc: tuple[np.ndarray, np.ndarray, np.ndarray], period: int) -> None:
    _, _, close = ohlc
    _assert_same(_series(EMA(period), close), talib.EMA(close, period))
    _assert_same(_series(SMA(period), close), talib.SMA(close, period))


@pytest.mark.parametrize("period", [1, 10, 14])
def test_atr_equals_talib(ohlc: tuple[np.ndarray, np.ndarray, np.ndarray], period: int) -> None:
    high, low, close = ohlc
    atr = ATR(period)
    got = np.array([np.nan if (v := atr.update(h, lo, c)) is None else v for h, lo, c in zip(high, low, close)])
    _assert_same(got, talib.ATR(high, low, close, period))
    assert math.isnan(got[period - 1]) and not math.isnan(got[period])  # first ATR at bar n


@pytest.mark.parametrize("period", [9, 14])
def test_wilder_equals_talib_equivalent_and_pandas(ohlc: tuple[np.ndarray, np.ndarray, np.ndarray], period: int) -> None:
    _, _, close = ohlc
    got = _series(WilderSmoother(period), close)
    # TA-Lib has no bare RMA, but ATR(high=x, low=0, close=0) has TR[t] = x[t] for t >= 1 and is
    # Wilder-smoothed with an SMA seed: i.e. the RMA of x[1:].
    zeros = np.zeros_like(close)
    via_atr = talib.ATR(close, zeros, zeros, period)[1:]
    _assert_same(_series(WilderSmoother(period), close[1:]), via_atr)
    # Independent pandas computation: SMA seed at n-1, then ewm(alpha=1/n, adjust=False).
    s = pd.Series(close).copy()
    seed = s.iloc[:period].mean()
    s.iloc[: period - 1] = np.nan
    s.iloc[period - 1] = seed
    _assert_same(got, s.ewm(alpha=1 / period, adjust=False).mean().to_numpy())


@pytest.mark.parametrize(("length", "mult"), [(10, 3.0), (7, 2.5)])
def test_supertrend_equals_pandas_ta_classic(ohlc: tuple[np.ndarray, np.ndarray, np.ndarray], length: int,
                                             mult: float) -> None:
    high, low, close = ohlc
    ref = pta.supertrend(pd.Series(high), pd.Series(low), pd.Series(close), length=length, multiplier=mult)
    props = f"_{length}_{mult}"
    # Columns: SUPERT (the line), SUPERTd (direction +1/-1), SUPERTl (line while up), SUPERTs (while down).
    assert list(ref.columns) == [f"SUPERT{props}", f"SUPERTd{props}", f"SUPERTl{props}", f"SUPERTs{props}"]
    st = Supertrend(length, mult)
    line, dirs = [], []
    for h, lo, c in zip(high, low, close):
        v = st.update(h, lo, c)
        line.append(np.nan if v is None else v)
        dirs.append(np.nan if st.direction is None else st.direction)
    line_a, dir_a = np.array(line), np.array(dirs)
    # pandas-ta fills its warm-up rows with NaN (row 0 holds a 0.0 placeholder) and direction 1.
    assert np.isnan(line_a[:length]).all() and not np.isnan(line_a[length:]).any()
    _assert_same(line_a[length:], ref[f"SUPERT{props}"].to_numpy()[length:])
    assert np.array_equal(dir_a[length:], ref[f"SUPERTd{props}"].to_numpy()[length:])
    up = dir_a[length:] == 1
    _assert_same(np.where(up, line_a[length:], np.nan), ref[f"SUPERTl{props}"].to_numpy()[length:])
    _assert_same(np.where(~up, line_a[length:], np.nan), ref[f"SUPERTs{props}"].to_numpy()[length:])
    assert (dir_a[length:] == -1).sum() > 10 and up.sum() > 10  # the data exercises both directions


def test_hand_computed_vectors() -> None:
    ema = EMA(3)  # seed = (1+2+3)/3 = 2 at the 3rd input; alpha 0.5
    assert [ema.update(x) for x in (1, 2, 3, 4, 5)] == [None, None, 2.0, 3.0, 4.0]
    sma = SMA(2)
    assert [sma.update(x) for x in (1, 2, 4, 8)] == [None, 1.5, 3.0, 6.0]
    w = WilderSmoother(2)  # seed (2+4)/2 = 3; then 3 + (7-3)/2 = 5
    assert [w.update(x) for x in (2, 4, 7)] == [None, 3.0, 5.0]
    atr = ATR(2)
    # bar0 no TR; bar1 TR = max(11-9, |11-10|, |9-10|) = 2; bar2 TR = max(1, |14-10|, |13-10|) = 4
    # -> first ATR (bar 2) = (2+4)/2 = 3; bar3 TR = max(2, |12-13.5|, |10-13.5|) = 3.5 -> 3 + (3.5-3)/2
    assert atr.update(11, 9, 10) is None
    assert atr.update(11, 9, 10) is None
    assert atr.update(14, 13, 13.5) == 3.0
    assert atr.update(12, 10, 11) == 3.25


def test_supertrend_hand_vector() -> None:
    st = Supertrend(2, 1.0)
    assert st.update(11, 9, 10) is None and st.update(11, 9, 10) is None
    # bar2: ATR = (2 + 2)/2 = 2, hl2 = 10 -> bands 8 / 12; first value: direction +1, line = lower 8
    assert st.update(11, 9, 10) == 8.0 and st.direction == 1
    # bar3: TR = 2, ATR 2, hl2 10.5 -> basic 8.5/12.5; close 10.5 in between -> up, lower rises to 8.5
    assert st.update(11.5, 9.5, 10.5) == 8.5 and st.direction == 1
    # bar4: TR = max(2, |9-10.5|, |7-10.5|) = 3.5 -> ATR 2.75; hl2 8; close 7.5 < previous lower 8.5 -> down,
    # line = basic upper 8 + 2.75 = 10.75
    assert st.update(9, 7, 7.5) == 10.75 and st.direction == -1
    # bar5: TR 2 -> ATR 2.375, hl2 8 -> basic upper 10.375 < 10.75 so it stays 10.375 (only falls)
    assert st.update(9, 7, 8) == 10.375 and st.direction == -1
    # bar6: TR 2 -> ATR 2.1875, hl2 9 -> basic upper 11.1875 > 10.375 -> capped at 10.375
    assert st.update(10, 8, 9.5) == 10.375 and st.upper == 10.375


@pytest.mark.parametrize("make", [lambda: EMA(5), lambda: SMA(5), lambda: WilderSmoother(5)])
def test_state_roundtrip_continues_exactly(make: object) -> None:
    xs = [100 + math.sin(i) * 3 + i * 0.01 for i in range(40)]
    a = make()  # type: ignore[operator]
    for x in xs[:17]:
        a.update(x)
    b = make()  # type: ignore[operator]
    b.restore(json_roundtrip(a.state()))
    assert [a.update(x) for x in xs[17:]] == [b.update(x) for x in xs[17:]]


def test_atr_supertrend_roundtrip_mid_warmup_and_after() -> None:
    bars = [(101 + i % 3, 99 - i % 2, 100 + (i % 5) - 2) for i in range(30)]
    for cut in (1, 5, 12, 25):
        a, b = Supertrend(10, 3.0), Supertrend(10, 3.0)
        for h, lo, c in bars[:cut]:
            a.update(h, lo, c)
        b.restore(json_roundtrip(a.state()))
        for h, lo, c in bars[cut:]:
            assert a.update(h, lo, c) == b.update(h, lo, c)
            assert a.direction == b.direction


def test_restore_rejects_other_period_or_kind() -> None:
    with pytest.raises(IndicatorStateError):
        EMA(9).restore(EMA(10).state())
    with pytest.raises(IndicatorStateError):
        EMA(9).restore(SMA(9).state())


def test_non_finite_input_rejected_without_state_change() -> None:
    e = EMA(2)
    e.update(1.0)
    e.update(3.0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            e.update(bad)
    assert e.value == 2.0 and e.count == 2
    atr = ATR(2)
    with pytest.raises(ValueError):
        atr.update(1.0, float("nan"), 1.0)
    assert atr.state()["prev_close"] is None


def test_make_line() -> None:
    assert isinstance(make_line(TrendLine.EMA, 9), EMA)
    assert isinstance(make_line(TrendLine.SMA, 9), SMA)
    assert isinstance(make_line(TrendLine.WILDER, 9), WilderSmoother)
    with pytest.raises(ValueError):
        EMA(0)
