"""0DTE time rules. Lines are SMA(1)/SMA(2): a cross happens exactly when the close turns
(fast = close, slow = mean of the last two closes)."""
from __future__ import annotations

from datetime import date, time, timedelta

from domain.intents import IntentReason, PositionTarget
from strategies import build_strategy
from strategies.zeroday import ZeroDayStrategy
from strategy_kit import bar, clock, config, json_roundtrip, ny_ns

SPX = "SPX"
NORMAL = "2025-11-26"  # Wednesday, regular close 16:00
EARLY = "2025-11-28"  # day after Thanksgiving, close 13:00 ET


def _zd(**options: object) -> ZeroDayStrategy:
    s = build_strategy(config("zeroday", SPX, trend_line_1="SMA", period_1=1, trend_line_2="SMA", period_2=2),
                       **options)
    assert isinstance(s, ZeroDayStrategy)
    return s


def _prime(s: ZeroDayStrategy, day: str, hhmm: str, close: str = "16:00", expiration: bool = True) -> None:
    """Three falling bars ending at `hhmm` - 3..1 minutes: lines defined, fast below slow."""
    h, m = map(int, hhmm.split(":"))
    for k, px in zip((3, 2, 1), (6010.0, 6005.0, 6000.0)):
        t = f"{(h * 60 + m - k) // 60:02d}:{(h * 60 + m - k) % 60:02d}"
        s.on_clock(clock(day, t, close=close, expiration=expiration))
        assert s.on_bar(bar(SPX, ny_ns(day, t), px)) == []


def _bull(s: ZeroDayStrategy, day: str, hhmm: str, close: str = "16:00", expiration: bool = True) -> list:
    s.on_clock(clock(day, hhmm, close=close, expiration=expiration))
    return s.on_bar(bar(SPX, ny_ns(day, hhmm), 6003.0))  # 6003 > (6000+6003)/2 after 6000 < 6002.5


def test_entry_and_1545_close_on_normal_day() -> None:
    s = _zd()
    _prime(s, NORMAL, "10:00")
    [entry] = _bull(s, NORMAL, "10:00")
    assert (entry.strategy, entry.target, entry.reason, entry.price) == ("zeroday", PositionTarget.LONG,
                                                                          IntentReason.SIGNAL, 6003.0)
    assert "hold ATM call" in entry.detail
    assert s.on_clock(clock(NORMAL, "15:44:59")) == []
    [close] = s.on_clock(clock(NORMAL, "15:45"))
    assert (close.target, close.reason, close.event_ts_ns) == (PositionTarget.FLAT, IntentReason.EXPIRY_CLOSE,
                                                                ny_ns(NORMAL, "15:45"))
    assert s.on_clock(clock(NORMAL, "15:46")) == []  # once


def test_close_via_on_bar_at_1545() -> None:
    s = _zd()
    _prime(s, NORMAL, "15:00")
    _bull(s, NORMAL, "15:00")
    assert s.on_bar(bar(SPX, ny_ns(NORMAL, "15:44"), 6004.0)) == []
    [close] = s.on_bar(bar(SPX, ny_ns(NORMAL, "15:45"), 6004.0))
    assert close.reason is IntentReason.EXPIRY_CLOSE and s.target is PositionTarget.FLAT


def test_early_close_day_closes_15_minutes_before() -> None:
    s = _zd()
    _prime(s, EARLY, "12:00", close="13:00")
    [entry] = _bull(s, EARLY, "12:00", close="13:00")
    assert entry.target is PositionTarget.LONG
    assert s.close_ns(date(2025, 11, 28)) == ny_ns(EARLY, "12:45")
    assert s.on_clock(clock(EARLY, "12:44:59", close="13:00")) == []
    [close] = s.on_clock(clock(EARLY, "12:45", close="13:00"))
    assert close.reason is IntentReason.EXPIRY_CLOSE and "12:45" in close.detail


def test_no_entry_at_or_after_early_forced_close() -> None:
    s = _zd()
    _prime(s, EARLY, "12:45", close="13:00")
    assert _bull(s, EARLY, "12:45", close="13:00") == []
    s2 = _zd()
    _prime(s2, EARLY, "12:44", close="13:00")
    assert [i.target for i in _bull(s2, EARLY, "12:44", close="13:00")] == [PositionTarget.LONG]


def test_no_entries_without_same_day_expiration() -> None:
    s = _zd()
    _prime(s, NORMAL, "10:00", expiration=False)
    assert _bull(s, NORMAL, "10:00", expiration=False) == []
    assert s.target is PositionTarget.FLAT and "ignored" in (s.last_signal or "")


def test_no_entries_without_a_clock_for_that_day() -> None:
    s = _zd()
    for t, px in (("09:57", 6010.0), ("09:58", 6005.0), ("09:59", 6000.0), ("10:00", 6003.0)):
        assert s.on_bar(bar(SPX, ny_ns(NORMAL, t), px)) == []


def test_entry_window_edges() -> None:
    for hhmm, enters in (("09:34", False), ("09:35", True), ("15:30", True), ("15:31", False)):
        s = _zd()
        _prime(s, NORMAL, hhmm)
        out = _bull(s, NORMAL, hhmm)
        assert [i.target for i in out] == ([PositionTarget.LONG] if enters else []), hhmm
    s = _zd()
    _prime(s, NORMAL, "15:30")
    s.on_clock(clock(NORMAL, "15:30"))
    # one nanosecond after 15:30 is outside the window
    assert s.on_bar(bar(SPX, ny_ns(NORMAL, "15:30") + 1, 6003.0)) == []


def test_configurable_window() -> None:
    s = _zd(entry_start=time(10, 0), entry_end=time(11, 0), close_time=time(14, 0),
            early_close_offset=timedelta(minutes=30))
    _prime(s, NORMAL, "09:40")
    assert _bull(s, NORMAL, "09:40") == []
    s = _zd(entry_start=time(10, 0), entry_end=time(11, 0), close_time=time(14, 0))
    _prime(s, NORMAL, "10:30")
    assert len(_bull(s, NORMAL, "10:30")) == 1
    [close] = s.on_clock(clock(NORMAL, "14:00"))
    assert close.reason is IntentReason.EXPIRY_CLOSE
    s = _zd(early_close_offset=timedelta(minutes=30))
    assert s.close_ns(date(2025, 11, 28)) == ny_ns(EARLY, "15:45")  # no clock -> 15:45
    s.on_clock(clock(EARLY, "09:00", close="13:00"))
    assert s.close_ns(date(2025, 11, 28)) == ny_ns(EARLY, "12:30")


def test_reverse_signal_outside_window_closes_without_new_put() -> None:
    s = _zd()
    _prime(s, NORMAL, "15:25")
    _bull(s, NORMAL, "15:25")
    s.on_clock(clock(NORMAL, "15:35"))
    [out] = s.on_bar(bar(SPX, ny_ns(NORMAL, "15:35"), 5990.0))  # bearish cross at 15:35
    assert (out.target, out.reason) == (PositionTarget.FLAT, IntentReason.SIGNAL)
    assert "close call" in out.detail


def test_put_on_bearish_cross_and_nothing_carried_overnight() -> None:
    s = _zd()
    for t, px in (("10:00", 6000.0), ("10:01", 6005.0), ("10:02", 6010.0)):
        s.on_clock(clock(NORMAL, t))
        s.on_bar(bar(SPX, ny_ns(NORMAL, t), px))
    s.on_clock(clock(NORMAL, "10:03"))
    [put] = s.on_bar(bar(SPX, ny_ns(NORMAL, "10:03"), 6001.0))
    assert put.target is PositionTarget.SHORT and "hold ATM put" in put.detail
    # The engine was down through the close; the first clock of the next day closes it.
    [close] = s.on_clock(clock("2025-11-27", "09:00", expiration=False))
    assert close.reason is IntentReason.EXPIRY_CLOSE and "must not be carried" in close.detail


def test_manual_position_gets_the_time_exit_and_state_roundtrip() -> None:
    s = _zd()
    s.on_clock(clock(NORMAL, "11:00"))
    s.set_position(PositionTarget.LONG, 6000.0)
    r = _zd()
    r.restore(json_roundtrip(s.state()))
    assert r.entry_day == NORMAL and r.clock == s.clock and r.target is PositionTarget.LONG
    [close] = r.on_clock(clock(NORMAL, "15:45"))
    assert close.reason is IntentReason.EXPIRY_CLOSE


def test_a_disabled_call_side_is_never_bought() -> None:
    s = build_strategy(config("zeroday", SPX, trend_line_1="SMA", period_1=1, trend_line_2="SMA", period_2=2,
                              call_enabled=False))
    assert isinstance(s, ZeroDayStrategy)
    _prime(s, NORMAL, "10:00")
    assert _bull(s, NORMAL, "10:00") == []  # bullish cross inside the window: no call
    assert s.target is PositionTarget.FLAT and "calls are disabled" in (s.last_signal or "")


def test_a_disabled_put_side_closes_the_call_without_buying_a_put() -> None:
    s = build_strategy(config("zeroday", SPX, trend_line_1="SMA", period_1=1, trend_line_2="SMA", period_2=2,
                              put_enabled=False))
    assert isinstance(s, ZeroDayStrategy)
    _prime(s, NORMAL, "10:00")
    [call] = _bull(s, NORMAL, "10:00")
    assert call.target is PositionTarget.LONG
    s.on_clock(clock(NORMAL, "10:01"))
    [out] = s.on_bar(bar(SPX, ny_ns(NORMAL, "10:01"), 5990.0))  # bearish cross: the put side is off
    assert out.target is PositionTarget.FLAT and "close call" in out.detail and "puts are disabled" in out.detail
    assert s.target is PositionTarget.FLAT
