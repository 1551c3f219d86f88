"""The simulated feed's past (`SimulatedFeed.history`): bars generated backwards from where live data
begins, closing at the price the live walk continues from, on the instrument's tick grid, inside
its sessions only, with the live walk's volatility; asking for more only adds older bars."""
from __future__ import annotations

import math
import statistics
from datetime import datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from config.instruments import CATALOG
from config.timeframes import Timeframe
from domain.market import Bar
from market_data import calendars
from market_data.bars import SessionGrid, build_bars
from market_data.feeds import SimulatedFeed

NY = ZoneInfo("America/New_York")
NS = 1_000_000_000
MINUTE = Timeframe.parse("1Min")


def ny_ns(day: str, hh: int, mm: int) -> int:
    return int(datetime.fromisoformat(day).replace(hour=hh, minute=mm, tzinfo=NY).timestamp()) * NS


# Monday 2024-07-08 18:30 ET: half an hour into the CME session of Tuesday; before it lie the
# 17:00-18:00 halt, Monday's session, the weekend and the July 4th early close (13:00 ET).
END = ny_ns("2024-07-08", 18, 30)


def on_tick_grid(bars: list[Bar], symbol: str) -> bool:
    tick = CATALOG[symbol].tick_size  # type: ignore[index]
    return all((Decimal(str(p)) / tick) % 1 == 0 for b in bars for p in (b.open, b.high, b.low, b.close))


def test_minute_history_ends_at_the_live_start_and_price_on_the_session_grid() -> None:
    bars = SimulatedFeed(20.0, seed=3).history("/MES", MINUTE, 300, END, 6001.25)
    assert len(bars) == 300
    assert bars[-1].end_ns == END and bars[-1].close == 6001.25  # the live walk continues from here
    grid = SessionGrid("/MES")
    for bar in bars:
        assert grid.bucket(bar.start_ns, MINUTE) == (bar.start_ns, bar.end_ns)
        assert calendars.bar_in_session("/MES", bar.start_ns, bar.end_ns)
        assert bar.low <= min(bar.open, bar.close) <= max(bar.open, bar.close) <= bar.high
        assert bar.trade_count == 1200 and bar.volume >= 1200  # 20 trades/s, sizes of 1 and more
    assert on_tick_grid(bars, "/MES")
    starts = [b.start_ns for b in bars]
    assert starts == sorted(starts)
    # 18:00-18:30 today, then Monday's session up to its 17:00 close: nothing in the halt.
    assert bars[-30].start_ns == ny_ns("2024-07-08", 18, 0)
    assert bars[-31].end_ns == ny_ns("2024-07-08", 17, 0)


def test_history_never_has_a_bar_outside_the_session() -> None:
    feed = SimulatedFeed(20.0, seed=4)
    hourly = feed.history("/MES", Timeframe.parse("1Hour"), 60, END, 6000.0)
    assert all(calendars.bar_in_session("/MES", b.start_ns, b.end_ns) for b in hourly)
    assert not any(ny_ns("2024-07-06", 0, 0) <= b.start_ns < ny_ns("2024-07-07", 18, 0) for b in hourly)  # weekend
    nvda = feed.history("NVDA", Timeframe.parse("5Min"), 200, END, 180.0)
    for bar in nvda:
        local = datetime.fromtimestamp(bar.start_ns / NS, NY)
        assert (9, 30) <= (local.hour, local.minute) < (16, 0)
    assert on_tick_grid(nvda, "NVDA")


def test_daily_history_is_one_bar_per_session_with_early_closes() -> None:
    days = SimulatedFeed(20.0, seed=5).history("/MES", Timeframe.parse("1Day"), 5, END, 6000.0)
    sessions = [calendars.calendar_for("/MES").session_at(b.start_ns) for b in days]
    assert all(s is not None and (s.open_ns, s.close_ns) == (b.start_ns, b.end_ns) for s, b in zip(sessions, days))
    july_4 = next(b for b in days if b.start_ns == ny_ns("2024-07-03", 18, 0))
    assert july_4.end_ns == ny_ns("2024-07-04", 13, 0)  # CME's holiday early close


def test_tick_history_spans_n_trades_at_the_live_rate_before_the_live_start() -> None:
    bars = SimulatedFeed(20.0, seed=6).history("/MES", Timeframe.parse("144t"), 10, END, 6000.0)
    assert len(bars) == 10 and all(b.trade_count == 144 for b in bars)
    assert bars[-1].end_ns < END and bars[-1].close == 6000.0
    assert all(b.end_ns - b.start_ns == 143 * NS // 20 for b in bars)
    assert all(calendars.is_open("/MES", b.start_ns) and calendars.is_open("/MES", b.end_ns) for b in bars)


def test_asking_for_more_history_only_adds_older_bars_and_every_reader_sees_the_same() -> None:
    feed = SimulatedFeed(20.0)  # unseeded, as in production
    first = feed.history("/MES", MINUTE, 30, END, 6000.0)
    more = feed.history("/MES", MINUTE, 90, END, 6000.0)
    assert more[-30:] == first
    again = feed.history("/MES", MINUTE, 30, END, 6000.0)  # a second strategy on the same bars
    assert again == first


def test_history_moves_like_the_live_walk() -> None:
    feed = SimulatedFeed(20.0, seed=8)
    history = feed.history("/MES", MINUTE, 400, END, 6000.0)
    # The live walk's own minute bars at 20 trades per second, from the same price.
    live_feed = SimulatedFeed(20.0, seed=9)
    trades = [live_feed.next_trade("/MES", END + i * NS // 20) for i in range(400 * 1200)]
    live = build_bars([t for t in trades if t is not None], "/MES", MINUTE)

    def close_to_close(bars: list[Bar]) -> float:
        return statistics.pstdev(math.log(b.close / a.close) for a, b in zip(bars, bars[1:]))

    def mean_range(bars: list[Bar]) -> float:
        return statistics.fmean((b.high - b.low) / b.close for b in bars)

    assert close_to_close(history) == pytest.approx(close_to_close(live), rel=0.15)
    assert mean_range(history) == pytest.approx(mean_range(live), rel=0.15)


def test_a_broker_quoted_index_gets_no_made_up_history() -> None:
    quoted = SimulatedFeed(20.0, symbols=["SPX"], quote_sources={"SPX": lambda: 6010.0})
    assert quoted.history("SPX", MINUTE, 10, END, 6010.0) == []
    simulated = SimulatedFeed(20.0, symbols=["SPX"])
    assert len(simulated.history("SPX", MINUTE, 10, ny_ns("2024-07-08", 15, 0), 6010.0)) == 10


def test_the_walk_continues_from_the_prices_of_an_earlier_run() -> None:
    feed = SimulatedFeed(20.0, seed=10)
    feed.continue_from({"/MES": 6123.3, "NVDA": float("nan")})
    trade = feed.next_trade("/MES", END)
    assert trade is not None and abs(trade.price - 6123.25) < 5  # from the tick-rounded price, one step on
    nvda = feed.next_trade("NVDA", END)
    assert nvda is not None and abs(nvda.price - 180) < 5  # a bad price is ignored
