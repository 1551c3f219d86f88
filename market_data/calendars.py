"""Trading calendars (pandas-market-calendars) with cached schedules.

- CME equity-index futures ("CME_Equity"): sessions open 18:00 ET the previous evening and close
  17:00 ET (the daily 17:00-18:00 ET halt), with CME holidays and early closes.
- Equities ("NYSE"): 09:30-16:00 ET, early closes 13:00 ET.
- SPX ("CBOE_Index_Options"): 09:30-16:15 ET. pandas-market-calendars does not apply NYSE early
  closes to this calendar (e.g. 2024-12-24 shows 16:15 ET), so on an NYSE early-close day we cap the
  close at NYSE close + 15 minutes, which is what CBOE publishes for index options.

Schedules are computed one calendar year at a time and cached, so per-trade calls are a binary
search over a small array, not a pandas computation. Timestamps are integer ns since the epoch UTC
(the same unit as `domain.market.Trade.ts_ns`); datetimes are accepted too.
"""
from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo

import numpy as np
import pandas as pd
import pandas_market_calendars as mcal

from config.instruments import CATALOG, canonical_symbol

NEW_YORK = ZoneInfo("America/New_York")
NS_PER_SECOND = 1_000_000_000
_INDEX_OPTIONS_EARLY_CLOSE_LAG_NS = 15 * 60 * NS_PER_SECOND

TimeLike = int | datetime | pd.Timestamp


@dataclass(frozen=True, slots=True)
class Session:
    """One trading session. `session_date` is the exchange's trade date (for CME, the evening
    session that opens Sunday 18:00 ET belongs to Monday)."""

    session_date: date
    open_ns: int
    close_ns: int

    @property
    def open(self) -> datetime:
        return datetime.fromtimestamp(self.open_ns / NS_PER_SECOND, tz=timezone.utc)

    @property
    def close(self) -> datetime:
        return datetime.fromtimestamp(self.close_ns / NS_PER_SECOND, tz=timezone.utc)


def to_ns(ts: TimeLike) -> int:
    if isinstance(ts, int):
        return ts
    if isinstance(ts, pd.Timestamp):
        return int(ts.tz_localize("UTC").value if ts.tzinfo is None else ts.value)
    if ts.tzinfo is None:
        raise ValueError("naive datetime: pass an aware datetime (UTC or exchange time)")
    return int(pd.Timestamp(ts).value)


def _year(ts_ns: int) -> int:
    return datetime.fromtimestamp(ts_ns / NS_PER_SECOND, tz=timezone.utc).year


def _year_start_ns(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=timezone.utc).timestamp()) * NS_PER_SECOND


class UnknownCalendarError(ValueError):
    """No calendar of that name (pandas-market-calendars, exchange_calendars, 24/5, 24/7)."""


# Round-the-clock calendars for instruments without exchange hours:
# - "24/7": every UTC day is a session [00:00, 24:00) UTC (crypto; daily bars are UTC days).
# - "24/5": the FX week: the session of trade date D runs from 17:00 New York on the evening
#   before to 17:00 New York on D, Monday to Friday (Sunday 17:00 opens Monday's), the convention
#   of FX platforms for daily candles; Saturday and the rest of Sunday are closed.
ROUND_THE_CLOCK = ("24/7", "24/5")
_FX_ROLL = (17, 0)


def _round_the_clock_sessions(name: str, year: int) -> list[Session]:
    sessions: list[Session] = []
    day = date(year, 1, 1)
    while day.year == year:
        if name == "24/7":
            start = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
            sessions.append(Session(day, to_ns(start), to_ns(start + timedelta(days=1))))
        elif day.weekday() < 5:
            close = datetime(day.year, day.month, day.day, *_FX_ROLL, tzinfo=NEW_YORK)
            before = day - timedelta(days=1)
            open_ = datetime(before.year, before.month, before.day, *_FX_ROLL, tzinfo=NEW_YORK)
            sessions.append(Session(day, to_ns(open_), to_ns(close)))
        day += timedelta(days=1)
    return sessions


def _schedule_source(name: str) -> object:
    """What yields a calendar's sessions for a year: a pandas-market-calendars calendar (which also
    mirrors most exchange_calendars names), else an exchange_calendars name (XNAS, CMES ...)."""
    if name in ROUND_THE_CLOCK:
        return name
    if name in mcal.get_calendar_names():
        return mcal.get_calendar(name)
    import exchange_calendars as xcals

    if name in xcals.get_calendar_names(include_aliases=True):
        return xcals.resolve_alias(name)
    raise UnknownCalendarError(
        f"calendar {name!r} is neither a pandas_market_calendars nor an exchange_calendars name, nor 24/5 or 24/7 "
        "(e.g. NYSE, CME_Equity, CMEGlobex_FX, XLON, XNAS)")


def _exchange_calendars_sessions(name: str, year: int) -> list[Session]:
    import exchange_calendars as xcals

    try:
        calendar = xcals.get_calendar(name, start=f"{year}-01-01", end=f"{year}-12-31")
    except (ValueError, xcals.errors.CalendarError):  # a year outside the calendar's data
        return []
    schedule = calendar.schedule
    return [Session(idx.date(), int(pd.Timestamp(row.open).value), int(pd.Timestamp(row.close).value))
            for idx, row in zip(schedule.index, schedule.itertuples(index=False))]


def check_calendar_name(name: str) -> None:
    """Raises UnknownCalendarError when `name` is no calendar TradingCalendar can load."""
    _schedule_source(name)


class TradingCalendar:
    """Sessions of one calendar (pandas-market-calendars, exchange_calendars, 24/5 or 24/7),
    cached per year."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._calendar = _schedule_source(name)
        self._lock = threading.Lock()
        self._years: set[int] = set()
        # Sorted, parallel arrays of sessions for all loaded years.
        self._opens: list[int] = []
        self._closes: list[int] = []
        self._dates: list[date] = []
        # The last session found: bars and trades ask about the same session over and over (one
        # reference, replaced whole, so readers on other threads see a consistent session).
        self._last_session: Session | None = None
        # [start, end) of the year whose neighbours are loaded too: no year lookup inside it.
        self._ready_year: tuple[int, int] = (0, 0)

    def _load_year(self, year: int) -> None:
        if year in self._years:
            return
        with self._lock:
            if year in self._years:
                return
            if isinstance(self._calendar, str):
                sessions = (_round_the_clock_sessions(self._calendar, year) if self._calendar in ROUND_THE_CLOCK
                            else _exchange_calendars_sessions(self._calendar, year))
            else:
                schedule = self._calendar.schedule(f"{year}-01-01", f"{year}-12-31")
                sessions = [
                    Session(idx.date(), int(row.market_open.value), int(row.market_close.value))
                    for idx, row in zip(schedule.index, schedule.itertuples(index=False))
                ]
            if self.name == "CBOE_Index_Options":
                sessions = _cap_index_options_early_closes(sessions, year)
            merged = sorted(
                [Session(d, o, c) for d, o, c in zip(self._dates, self._opens, self._closes)] + sessions,
                key=lambda s: s.open_ns,
            )
            self._dates = [s.session_date for s in merged]
            self._opens = [s.open_ns for s in merged]
            self._closes = [s.close_ns for s in merged]
            self._years.add(year)

    def _ensure_around(self, ts_ns: int) -> None:
        lo, hi = self._ready_year
        if lo <= ts_ns < hi:
            return
        year = _year(ts_ns)
        for y in (year - 1, year, year + 1):
            self._load_year(y)
        self._ready_year = (_year_start_ns(year), _year_start_ns(year + 1))

    def session_at(self, ts: TimeLike) -> Session | None:
        """The session containing `ts` (open inclusive, close exclusive), else None."""
        ts_ns = to_ns(ts)
        last = self._last_session
        if last is not None and last.open_ns <= ts_ns < last.close_ns:
            return last
        self._ensure_around(ts_ns)
        opens, closes, dates = self._opens, self._closes, self._dates
        i = bisect.bisect_right(opens, ts_ns) - 1
        if i >= 0 and ts_ns < closes[i]:
            self._last_session = session = Session(dates[i], opens[i], closes[i])
            return session
        return None

    def next_session(self, ts: TimeLike) -> Session:
        """The first session that opens strictly after `ts`."""
        ts_ns = to_ns(ts)
        self._ensure_around(ts_ns)
        i = bisect.bisect_right(self._opens, ts_ns)
        if i >= len(self._opens):  # end of the loaded range: load further ahead
            self._ensure_around(ts_ns + 366 * 86400 * NS_PER_SECOND)
            i = bisect.bisect_right(self._opens, ts_ns)
        return Session(self._dates[i], self._opens[i], self._closes[i])

    def previous_session(self, ts: TimeLike) -> Session | None:
        """The last session that closed at or before `ts`."""
        ts_ns = to_ns(ts)
        self._ensure_around(ts_ns)
        i = bisect.bisect_right(self._closes, ts_ns) - 1
        return Session(self._dates[i], self._opens[i], self._closes[i]) if i >= 0 else None

    def open_mask(self, ts_ns: np.ndarray) -> np.ndarray:
        """`session_at(t) is not None` for every t of a sorted or unsorted int64 array, vectorised."""
        return self.overlap_mask(ts_ns, ts_ns + 1)

    def overlaps(self, start_ns: int, end_ns: int) -> bool:
        """Whether [start_ns, end_ns) overlaps a session (a bar partly or wholly inside one)."""
        if self.session_at(start_ns) is not None:
            return True
        return end_ns > start_ns + 1 and self.next_session(start_ns).open_ns < end_ns

    def session_arrays(self, first_ns: int, last_ns: int) -> tuple[np.ndarray, np.ndarray]:
        """Sorted int64 arrays of session opens and closes, covering [first_ns, last_ns] with a
        year to spare on each side (for vectorised lookups with `np.searchsorted`)."""
        for year in range(_year(first_ns) - 1, _year(last_ns) + 2):
            self._load_year(year)
        return np.asarray(self._opens, dtype=np.int64), np.asarray(self._closes, dtype=np.int64)

    def overlap_mask(self, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
        """`overlaps(start, end)` for int64 arrays of interval bounds, vectorised."""
        if len(start_ns) == 0:
            return np.zeros(0, dtype=bool)
        opens, closes = self.session_arrays(int(start_ns.min()), int(end_ns.max()))
        i = np.searchsorted(opens, start_ns, side="right") - 1  # the last session opened at or before start
        safe = np.maximum(i, 0)
        inside = (i >= 0) & (start_ns < closes[safe])
        nxt = np.minimum(i + 1, len(opens) - 1)  # the next session's open falls inside the interval
        return inside | ((i + 1 < len(opens)) & (opens[nxt] < end_ns))

    def session_for_date(self, day: date) -> Session | None:
        noon = datetime(day.year, day.month, day.day, 12, tzinfo=timezone.utc)
        self._ensure_around(to_ns(noon))
        i = bisect.bisect_left(self._dates, day)
        if i < len(self._dates) and self._dates[i] == day:
            return Session(day, self._opens[i], self._closes[i])
        return None


def _cap_index_options_early_closes(sessions: list[Session], year: int) -> list[Session]:
    nyse = get_calendar("NYSE")
    capped: list[Session] = []
    for s in sessions:
        equity = nyse.session_for_date(s.session_date) if s.session_date.year == year else None
        if equity is not None and s.close_ns > equity.close_ns + _INDEX_OPTIONS_EARLY_CLOSE_LAG_NS:
            s = Session(s.session_date, s.open_ns, equity.close_ns + _INDEX_OPTIONS_EARLY_CLOSE_LAG_NS)
        capped.append(s)
    return capped


@lru_cache(maxsize=None)
def get_calendar(name: str) -> TradingCalendar:
    return TradingCalendar(name)


def calendar_for(symbol: str) -> TradingCalendar:
    return get_calendar(CATALOG[canonical_symbol(symbol)].calendar)


# ---- public API by symbol -------------------------------------------------------------------

def is_open(symbol: str, ts: TimeLike) -> bool:
    return calendar_for(symbol).session_at(ts) is not None


def open_mask(symbol: str, ts_ns: np.ndarray) -> np.ndarray:
    """`is_open(symbol, t)` for each t of an int64 array."""
    return calendar_for(symbol).open_mask(ts_ns)


def bar_in_session(symbol: str, start_ns: int, end_ns: int) -> bool:
    """Whether a bar [start_ns, end_ns) overlaps one of the instrument's sessions: bars outside
    every session (the CME daily break, an equity's pre-market, a holiday) are not evaluated; a
    daily bar stamped at midnight still covers its session."""
    return calendar_for(symbol).overlaps(start_ns, end_ns)


def bars_in_session(symbol: str, start_ns: np.ndarray, end_ns: np.ndarray) -> np.ndarray:
    """`bar_in_session` for int64 arrays of bar bounds (backtests: one call for all bars)."""
    return calendar_for(symbol).overlap_mask(start_ns, end_ns)


def next_open(symbol: str, ts: TimeLike) -> datetime:
    """The next session open strictly after `ts`."""
    return calendar_for(symbol).next_session(ts).open


def next_close(symbol: str, ts: TimeLike) -> datetime:
    """The close of the session containing `ts`, else of the next session."""
    cal = calendar_for(symbol)
    current = cal.session_at(ts)
    return (current or cal.next_session(ts)).close


def session_date(symbol: str, ts: TimeLike) -> date | None:
    """Trade date of the session containing `ts` (None in a halt, weekend or holiday)."""
    current = calendar_for(symbol).session_at(ts)
    return current.session_date if current else None


def session_bounds(symbol: str, day: date) -> tuple[datetime, datetime] | None:
    """(open, close) in UTC of the session whose trade date is `day`, or None when closed."""
    s = calendar_for(symbol).session_for_date(day)
    return (s.open, s.close) if s else None


def spx_session(day: date) -> tuple[datetime, datetime] | None:
    """Regular SPX session (09:30-16:00 ET; early close applied, e.g. 13:00 ET on Black Friday).
    The index is computed from NYSE-listed prices, so its regular session is the NYSE session."""
    s = get_calendar("NYSE").session_for_date(day)
    return (s.open, s.close) if s else None


def has_same_day_expiration(day: date) -> bool:
    """SPXW options expire every trading day (Mon-Fri since 2022), so 0DTE exists on any day the
    index trades."""
    return spx_session(day) is not None


def session_anchor(symbol: str) -> tuple[int, int]:
    """(hour, minute) in New York time at which this instrument's session starts; used to align
    bars when a trade falls outside any calendar session (simulated feed at night, odd data)."""
    instrument = CATALOG[canonical_symbol(symbol)]
    return (18, 0) if instrument.calendar == "CME_Equity" else (9, 30)


def anchored_day_start_ns(ts_ns: int, anchor: tuple[int, int]) -> int:
    """Start (ns) of the anchor-aligned 'day' containing ts in New York time."""
    local = datetime.fromtimestamp(ts_ns / NS_PER_SECOND, tz=NEW_YORK)
    start = local.replace(hour=anchor[0], minute=anchor[1], second=0, microsecond=0)
    if start > local:
        start -= timedelta(days=1)
        start = start.replace(hour=anchor[0], minute=anchor[1])  # DST-safe re-anchor
    return int(start.timestamp()) * NS_PER_SECOND
