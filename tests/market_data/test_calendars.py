"""Trading calendars: holidays, early closes and the CME daily halt pinned to real dates."""
from __future__ import annotations

from datetime import date, datetime, timezone

import pandas as pd
import pandas_market_calendars as mcal
import pytest

from market_data import calendars


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_thanksgiving_2024() -> None:
    # NYSE closed on Thanksgiving; CME equity futures trade a short session to 12:00 CT.
    assert calendars.session_bounds("NVDA", date(2024, 11, 28)) is None
    assert not calendars.is_open("NVDA", utc("2024-11-28T15:00:00"))
    assert calendars.session_bounds("/MES", date(2024, 11, 28)) == (utc("2024-11-27T23:00:00"), utc("2024-11-28T18:00:00"))
    assert calendars.is_open("/MES", utc("2024-11-28T17:59:00"))
    assert not calendars.is_open("/MES", utc("2024-11-28T18:30:00"))
    assert not calendars.has_same_day_expiration(date(2024, 11, 28))


def test_black_friday_early_close() -> None:
    day = date(2024, 11, 29)
    assert calendars.session_bounds("NVDA", day) == (utc("2024-11-29T14:30:00"), utc("2024-11-29T18:00:00"))
    assert calendars.spx_session(day) == (utc("2024-11-29T14:30:00"), utc("2024-11-29T18:00:00"))  # 13:00 ET
    assert calendars.has_same_day_expiration(day)
    # SPX index options close 15 minutes after the NYSE early close (13:15 ET).
    assert calendars.is_open("SPX", utc("2024-11-29T18:10:00"))
    assert not calendars.is_open("SPX", utc("2024-11-29T18:20:00"))
    # CME: the Friday session opened Thursday 17:00 CT after the holiday halt and closes early.
    assert calendars.session_bounds("/ES", day) == (utc("2024-11-28T23:00:00"), utc("2024-11-29T18:00:00"))
    assert calendars.next_close("/ES", utc("2024-11-29T15:00:00")) == utc("2024-11-29T18:00:00")


def test_christmas_2024() -> None:
    assert calendars.session_bounds("/ES", date(2024, 12, 25)) is None
    assert calendars.session_bounds("TSLA", date(2024, 12, 25)) is None
    assert not calendars.is_open("/ES", utc("2024-12-25T15:00:00"))
    assert not calendars.has_same_day_expiration(date(2024, 12, 25))
    # Christmas Eve: early close; Globex reopens 18:00 ET on Christmas Day for the 26th.
    assert calendars.session_bounds("NVDA", date(2024, 12, 24)) == (utc("2024-12-24T14:30:00"), utc("2024-12-24T18:00:00"))
    assert calendars.next_open("/ES", utc("2024-12-25T15:00:00")) == utc("2024-12-25T23:00:00")
    assert calendars.session_date("/ES", utc("2024-12-25T23:30:00")) == date(2024, 12, 26)


def test_cme_daily_halt_and_weekend() -> None:
    assert calendars.is_open("/MES", utc("2024-11-26T21:59:00"))  # 16:59 ET
    assert not calendars.is_open("/MES", utc("2024-11-26T22:30:00"))  # halt 17:00-18:00 ET
    assert calendars.is_open("/MES", utc("2024-11-26T23:00:00"))  # reopens 18:00 ET
    assert calendars.session_date("/MES", utc("2024-11-26T23:00:00")) == date(2024, 11, 27)
    assert calendars.session_date("/MES", utc("2024-11-26T22:30:00")) is None
    assert not calendars.is_open("/MES", utc("2024-11-30T15:00:00"))  # Saturday
    assert calendars.next_open("/MES", utc("2024-11-30T15:00:00")) == utc("2024-12-01T23:00:00")  # Sunday 18:00 ET
    # Pandas timestamps and ns integers are accepted too.
    assert calendars.is_open("/MES", pd.Timestamp("2024-11-26T23:00:00Z"))
    assert calendars.is_open("/MES", int(pd.Timestamp("2024-11-26T23:00:00Z").value))
    with pytest.raises(ValueError):
        calendars.is_open("/MES", datetime(2024, 11, 26, 23))  # naive: ambiguous


def test_spx_regular_session_and_weekend() -> None:
    assert calendars.spx_session(date(2024, 11, 26)) == (utc("2024-11-26T14:30:00"), utc("2024-11-26T21:00:00"))
    assert calendars.spx_session(date(2024, 11, 30)) is None
    assert not calendars.has_same_day_expiration(date(2024, 11, 30))


def test_schedules_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    original = mcal.MarketCalendar.schedule

    def counting(self: mcal.MarketCalendar, *args: object, **kwargs: object) -> pd.DataFrame:
        calls.append(self.name)
        return original(self, *args, **kwargs)

    calendars.get_calendar.cache_clear()
    monkeypatch.setattr(mcal.MarketCalendar, "schedule", counting)
    for minute in range(500):
        calendars.is_open("/ES", utc("2024-11-26T15:00:00").replace(minute=minute % 60))
    assert len(calls) <= 3  # one per loaded year (previous, current, next), not per call


def test_session_lookups_in_any_order_match_a_plain_search_of_the_schedule() -> None:
    """session_at remembers the last session and the loaded year: lookups jumping back and forth
    across sessions, breaks and a year end answer what a plain search of the sessions does."""
    import random

    from market_data.calendars import TradingCalendar

    cal = TradingCalendar("CME_Equity")
    start = int(datetime(2023, 12, 20, tzinfo=timezone.utc).timestamp()) * 10**9
    rng = random.Random(7)
    stamps = [start + rng.randrange(0, 25 * 86_400) * 10**9 for _ in range(3000)]
    answers = [cal.session_at(ts) for ts in stamps]
    sessions = list(zip(cal._dates, cal._opens, cal._closes))
    for ts, got in zip(stamps, answers):
        expected = next(((d, o, c) for d, o, c in sessions if o <= ts < c), None)
        assert (None if got is None else (got.session_date, got.open_ns, got.close_ns)) == expected
    assert any(a is None for a in answers) and len({a for a in answers if a is not None}) > 10
