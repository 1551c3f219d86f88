"""As live, a backtest evaluates no bar outside the instrument's session: bars in the CME daily
break (or a holiday, or extended-hours equity prints) change no indicator and make no signal."""
from __future__ import annotations

import numpy as np

from backtest.data import BarArrays, MarketData
from backtest.engine import BacktestEngine, CostSettings, config_from_options

NS = 1_000_000_000
MINUTE = 60 * NS
CLOSE = 1719954000 * NS  # Tuesday 2024-07-02 17:00 ET: the CME session closes; it reopens at 18:00 ET


def _bars(starts: list[int], closes: list[float]) -> BarArrays:
    s = np.asarray(starts, dtype=np.int64)
    c = np.asarray(closes, dtype=np.float64)
    n = len(s)
    return BarArrays(s, s + MINUTE, c, c + 0.25, c - 0.25, c, np.ones(n, np.int64), np.ones(n, np.int64))


def _trades(bars: BarArrays) -> list[tuple[int, int, int]]:
    config = config_from_options({"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "period_1": 3,
                                  "period_2": 8})
    result = BacktestEngine(config, CostSettings()).run(MarketData(bars, None, "t"), record_bars=True)
    assert len(result.indicators or []) == len(bars)  # one bars.csv row per bar, skipped or not
    return [(t.side, t.entry_ns, t.entry_ticks) for t in result.trades]


def test_bars_in_the_daily_break_neither_signal_nor_move_the_indicators() -> None:
    before = [CLOSE - (30 - i) * MINUTE for i in range(30)]  # 16:30-17:00 ET: flat at 6000
    during = [CLOSE + i * MINUTE for i in range(60)]  # the break: wild swings that would cross often
    after = [CLOSE + (60 + i) * MINUTE for i in range(40)]  # 18:00 ET on: a steady rally
    flat, wild = [6000.0] * 30, [6000.0 + (40.0 if (i // 3) % 2 else -40.0) for i in range(60)]
    rally = [6000.0 + 0.5 * i for i in range(40)]

    with_break = _trades(_bars(before + during + after, flat + wild + rally))
    without_break = _trades(_bars(before + after, flat + rally))
    assert with_break == without_break
    assert [side for side, _, _ in with_break] == [1]  # the rally's one bullish cross, after the reopen
    assert with_break[0][1] > CLOSE + 60 * MINUTE


def test_daily_bars_stamped_at_midnight_cover_their_session() -> None:
    # A daily CSV (dates only) gives bars [00:00, 24:00) UTC: they overlap the day's session, so
    # they are evaluated; a 1-minute bar in the CME break overlaps none.
    from market_data import calendars

    day = 86_400 * NS
    tuesday = 1719878400 * NS  # 2024-07-02 00:00 UTC
    starts = np.array([tuesday, tuesday + 5 * day, CLOSE], dtype=np.int64)  # Tuesday, Sunday, the break
    ends = np.array([tuesday + day, tuesday + 6 * day, CLOSE + MINUTE], dtype=np.int64)
    assert calendars.bars_in_session("NVDA", starts, ends).tolist() == [True, False, False]
    assert [calendars.bar_in_session("NVDA", int(s), int(e)) for s, e in zip(starts, ends)] == [True, False, False]
    assert calendars.bars_in_session("/MES", starts, ends).tolist() == [True, True, False]  # Sunday 18:00 ET opens

    closes = [100.0] * 12 + [100.0 + i for i in range(1, 15)]
    n = len(closes)
    from datetime import datetime, timezone

    weekdays = [tuesday + d * day for d in range(60)
                if datetime.fromtimestamp((tuesday + d * day) / NS, timezone.utc).weekday() < 5][:n]
    daily = BarArrays(np.asarray(weekdays, np.int64), np.asarray(weekdays, np.int64) + day,
                      np.asarray(closes), np.asarray(closes) + 1, np.asarray(closes) - 1, np.asarray(closes),
                      np.ones(n, np.int64), np.ones(n, np.int64))
    config = config_from_options({"strategy": "ema", "symbol": "NVDA", "timeframe": "1Day", "period_1": 3,
                                  "period_2": 8})
    result = BacktestEngine(config, CostSettings()).run(MarketData(daily, None, "t"), record_bars=False)
    assert [t.side for t in result.trades] == [1]  # the rally's cross is traded
