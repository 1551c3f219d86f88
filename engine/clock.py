"""Builds the `SessionClock` the engine hands to time-aware strategies (0DTE).

Strategies stay free of calendar libraries: the engine looks up today's SPX session (early
closes applied) and whether a same-day SPXW expiration exists, from the CBOE index options
calendar in America/New_York.
"""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

from market_data import calendars
from strategies.base import SessionClock

NEW_YORK = ZoneInfo("America/New_York")


def spx_session_clock(now_ns: int) -> SessionClock:
    day = datetime.fromtimestamp(now_ns / 1e9, NEW_YORK).date()
    bounds = calendars.spx_session(day)
    if bounds is None:
        return SessionClock(now_ns, None, None, False)
    open_, close = bounds
    return SessionClock(
        now_ns=now_ns,
        session_open_ns=int(open_.timestamp() * 1e9),
        session_close_ns=int(close.timestamp() * 1e9),
        has_same_day_expiration=calendars.has_same_day_expiration(day),
    )
