"""Time bars are aligned to the instrument's session (CME 18:00 ET, equities 09:30 ET), the last bar
of a session is cut at the close (incl. early closes), and daily bars are one per session."""
from __future__ import annotations

import pandas as pd

from config.timeframes import Timeframe
from domain.market import Bar, Trade
from market_data.bars import SessionGrid, build_bars


def ns(text: str) -> int:
    return int(pd.Timestamp(text, tz="UTC").value)


def bars_for(symbol: str, tf: str, times: list[str], watermark: str) -> list[Bar]:
    trades = [Trade(symbol, ns(t), 100.0 + i, 1) for i, t in enumerate(times)]
    return build_bars(trades, symbol, Timeframe.parse(tf), SessionGrid(symbol), watermark_ns=ns(watermark))


def spans(bars: list[Bar]) -> list[tuple[str, str]]:
    fmt = "%m-%d %H:%M"
    return [(pd.Timestamp(b.start_ns, tz="UTC").strftime(fmt), pd.Timestamp(b.end_ns, tz="UTC").strftime(fmt)) for b in bars]


def test_cme_four_hour_bars_start_at_18_et_and_cut_at_the_halt() -> None:
    bars = bars_for("/ES", "4Hour", ["2024-11-25 23:30", "2024-11-26 03:10", "2024-11-26 20:00", "2024-11-26 21:59"],
                    "2024-11-26 22:00")
    assert spans(bars) == [("11-25 23:00", "11-26 03:00"), ("11-26 03:00", "11-26 07:00"), ("11-26 19:00", "11-26 22:00")]
    assert bars[-1].trade_count == 2 and bars[-1].close == 103.0


def test_cme_daily_bar_is_the_session_and_early_close_cuts_hours() -> None:
    daily = bars_for("/ES", "1Day", ["2024-11-26 00:00", "2024-11-26 21:00"], "2024-11-26 22:00")
    assert spans(daily) == [("11-25 23:00", "11-26 22:00")]
    # Black Friday: CME closes 12:00 CT (18:00 UTC); the 4h bar from 15:00 UTC ends there.
    friday = bars_for("/ES", "4Hour", ["2024-11-29 17:30"], "2024-11-29 18:00")
    assert spans(friday) == [("11-29 15:00", "11-29 18:00")]


def test_equity_hour_bars_start_at_0930_et() -> None:
    bars = bars_for("NVDA", "1Hour", ["2024-11-26 14:45", "2024-11-26 15:40", "2024-11-26 20:45"], "2024-11-26 21:00")
    assert spans(bars) == [("11-26 14:30", "11-26 15:30"), ("11-26 15:30", "11-26 16:30"), ("11-26 20:30", "11-26 21:00")]
    daily = bars_for("NVDA", "1Day", ["2024-11-29 15:00"], "2024-11-29 18:00")
    assert spans(daily) == [("11-29 14:30", "11-29 18:00")]  # Black Friday early close


def test_trades_outside_sessions_stay_on_the_anchored_grid() -> None:
    # 21:10 ET (no NYSE session): the hour grid is still anchored at :30 ET.
    bars = bars_for("NVDA", "1Hour", ["2024-11-26 02:10"], "2024-11-26 03:00")
    assert spans(bars) == [("11-26 01:30", "11-26 02:30")]


def test_minute_bars_are_clock_aligned_inside_a_session() -> None:
    bars = bars_for("/MES", "5Min", ["2024-11-26 15:01:30", "2024-11-26 15:07"], "2024-11-26 15:10")
    assert spans(bars) == [("11-26 15:00", "11-26 15:05"), ("11-26 15:05", "11-26 15:10")]
