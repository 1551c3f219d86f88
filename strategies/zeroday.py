"""0DTE SPX options (`zeroday`): the EMA crossover on SPX bars, held as same-day ATM options.

Target LONG = hold the ATM SPXW call, SHORT = hold the ATM put, FLAT = no option (long premium
only; the order manager picks the contract). All times are America/New_York wall-clock times of
the decision: a bar's `end_ns`, or `SessionClock.now_ns` in `on_clock`.

Exact rules:
- Signals: the `ema` crossover rules (strategies/ema.py) on every bar; the lines are tracked on
  every bar, in or out of the window and across days.
- Entries (a cross to LONG/SHORT, including the open half of a reversal) only when all hold:
  * the engine's latest `SessionClock` is for the bar's New York date (`on_clock` is called before
    each bar), that day has a session and `has_same_day_expiration` is True;
  * entry_start <= bar end time <= entry_end (defaults 09:35 and 15:30, both inclusive);
  * the bar ends before the forced close time.
  A cross outside these conditions does not enter. If it is against the held option, the held
  option is still closed (FLAT, reason SIGNAL) so we never hold a call against a bearish cross.
- Forced close: at/after close_time (default 15:45), or on an early-close day (session close
  earlier than the normal `regular_close`, 16:00) at session_close - early_close_offset (15 min),
  whichever is earlier, any position -> FLAT (reason EXPIRY_CLOSE). Checked in `on_clock` and
  `on_bar`. Without a clock for that day the default close_time applies.
- Nothing carried overnight: a position whose entry was on an earlier New York date is closed
  (EXPIRY_CLOSE) by the first `on_clock`/`on_bar` of a later date.
- No stop-loss (TickerConfig has none for zeroday; the option's premium is the risk).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar
from domain.tickers import TickerConfig
from strategies.base import SessionClock, Strategy
from strategies.ema import EmaCrossStrategy

NEW_YORK = ZoneInfo("America/New_York")


@dataclass(frozen=True, slots=True)
class ZeroDayTimes:
    """The time-window parameters (New York wall-clock)."""

    entry_start: time = time(9, 35)
    entry_end: time = time(15, 30)
    close_time: time = time(15, 45)
    regular_close: time = time(16, 0)
    early_close_offset: timedelta = timedelta(minutes=15)


def _ny(ts_ns: int) -> datetime:
    """New York wall-clock time of an epoch-ns instant (integer maths: no float rounding)."""
    sec, rem = divmod(ts_ns, 1_000_000_000)
    return datetime.fromtimestamp(sec, tz=NEW_YORK).replace(microsecond=rem // 1_000)


def _ns(dt: datetime) -> int:
    """Exact ns of an aware datetime (no float rounding)."""
    delta = dt - datetime(1970, 1, 1, tzinfo=ZoneInfo("UTC"))
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1_000


def _at(day: date, t: time) -> int:
    return _ns(datetime.combine(day, t, tzinfo=NEW_YORK))


class ZeroDayStrategy(EmaCrossStrategy):
    """See the module docstring. Time parameters are constructor keyword arguments:
    `ZeroDayStrategy(config, entry_start=time(9, 35), entry_end=time(15, 30),
    close_time=time(15, 45), early_close_offset=timedelta(minutes=15))`."""

    name: ClassVar[str] = "zeroday"
    price_lines: ClassVar[tuple[str, ...]] = ("fast", "slow")  # SPX levels; the option has no stop here

    def __init__(self, config: TickerConfig, *, entry_start: time = time(9, 35), entry_end: time = time(15, 30),
                 close_time: time = time(15, 45), early_close_offset: timedelta = timedelta(minutes=15),
                 regular_close: time = time(16, 0)) -> None:
        super().__init__(config)
        if not entry_start <= entry_end <= close_time:
            raise ValueError("need entry_start <= entry_end <= close_time")
        self.times = ZeroDayTimes(entry_start, entry_end, close_time, regular_close, early_close_offset)
        self.clock: SessionClock | None = None  # latest clock from the engine
        self.entry_day: str | None = None  # New York date (ISO) of the held position's entry

    # -- calendar ----------------------------------------------------------------------------
    def _clock_for(self, day: date) -> SessionClock | None:
        if self.clock is None or _ny(self.clock.now_ns).date() != day:
            return None
        return self.clock

    def close_ns(self, day: date) -> int:
        """Forced-close instant for a New York date (uses the clock's session close if known)."""
        normal = _at(day, self.times.close_time)
        clock = self._clock_for(day)
        if clock is not None and clock.session_close_ns is not None:
            if clock.session_close_ns < _at(day, self.times.regular_close):  # early close day
                early = clock.session_close_ns - int(self.times.early_close_offset.total_seconds() * 1e9)
                return min(normal, early)
        return normal

    def entry_allowed_at(self, ts_ns: int) -> bool:
        """True when a new option may be bought at this instant (see the module docstring)."""
        day = _ny(ts_ns).date()
        clock = self._clock_for(day)
        if clock is None or clock.session_open_ns is None or not clock.has_same_day_expiration:
            return False
        return (_at(day, self.times.entry_start) <= ts_ns <= _at(day, self.times.entry_end)
                and ts_ns < self.close_ns(day))

    def _expiry_exit(self, ts_ns: int, price: float) -> list[Intent]:
        if self.target is PositionTarget.FLAT:
            return []
        now = _ny(ts_ns)
        day = now.date()
        if self.entry_day is not None and self.entry_day < day.isoformat():
            why = f"position from {self.entry_day} must not be carried to {day.isoformat()}"
        elif ts_ns >= self.close_ns(day):
            cutoff = _ny(self.close_ns(day)).strftime("%H:%M")
            why = f"0DTE time exit at {now.strftime('%H:%M:%S')} (close time {cutoff} ET)"
        else:
            return []
        side = "call" if self.target is PositionTarget.LONG else "put"
        self._enter(PositionTarget.FLAT, price, ts_ns)
        self.entry_day = None
        return [self._intent(PositionTarget.FLAT, IntentReason.EXPIRY_CLOSE, f"close {side}: {why}", ts_ns, price)]

    # -- events ------------------------------------------------------------------------------
    # Its on_bar also closes by the clock, so no bar is only a line update.
    advance_quiet_bars = Strategy.advance_quiet_bars

    def on_clock(self, clock: SessionClock) -> list[Intent]:
        self.clock = clock
        price = self.last_close if self.last_close is not None else 0.0
        return self._expiry_exit(clock.now_ns, price)

    def on_bar(self, bar: Bar) -> list[Intent]:
        if not self._accept_bar(bar):
            return []
        intents = self._expiry_exit(bar.end_ns, bar.close)
        if self._stop_hit(bar.low, bar.high):
            intents.append(self._stop_intent(bar.end_ns, bar.close, f"bar low {bar.low} high {bar.high}"))
        f, s = self._update_lines(bar)
        side = self._cross(f, s)
        if side is None or side is self.target:
            return intents
        assert f is not None and s is not None
        detail = self._cross_detail(side, f, s)
        option = "ATM call" if side is PositionTarget.LONG else "ATM put"
        if not self.config.side_enabled(side is PositionTarget.LONG):
            blocked = f"{option.split()[1]}s are disabled for this ticker"
        elif not self.entry_allowed_at(bar.end_ns):
            blocked = "outside 0DTE entry window"
        elif not self._entries_allowed():
            blocked = "ATR stop not defined yet"
        else:
            blocked = None
        if blocked is None:
            self._enter(side, bar.close, bar.end_ns)
            self.entry_day = _ny(bar.end_ns).date().isoformat()
            self._arm_stop()
            intents.append(self._intent(side, IntentReason.SIGNAL, f"hold {option}: {detail}", bar.end_ns, bar.close,
                                        self.stop_distance() if self.stop_configured else None))
        elif self.target is not PositionTarget.FLAT:
            held = "call" if self.target is PositionTarget.LONG else "put"
            self._enter(PositionTarget.FLAT, bar.close, bar.end_ns)
            self.entry_day = None
            self.stop_price = None
            intents.append(self._intent(PositionTarget.FLAT, IntentReason.SIGNAL,
                                        f"close {held}, no new entry ({blocked}): {detail}",
                                        bar.end_ns, bar.close))
        else:
            self.last_signal = f"ignored ({blocked}): {detail}"
        return intents

    def set_position(self, target: PositionTarget, entry_price: float | None = None) -> None:
        super().set_position(target, entry_price)
        if self.target is PositionTarget.FLAT:
            self.entry_day = None
        else:
            now = self.clock.now_ns if self.clock is not None else self.last_bar_end_ns
            self.entry_day = None if now is None else _ny(now).date().isoformat()

    def state(self) -> dict[str, Any]:
        clock = None if self.clock is None else {
            "now_ns": self.clock.now_ns, "session_open_ns": self.clock.session_open_ns,
            "session_close_ns": self.clock.session_close_ns,
            "has_same_day_expiration": self.clock.has_same_day_expiration}
        return {**super().state(), "entry_day": self.entry_day, "clock": clock}

    def restore(self, state: dict[str, Any]) -> None:
        super().restore(state)
        self.entry_day = state["entry_day"]
        c = state["clock"]
        self.clock = None if c is None else SessionClock(
            int(c["now_ns"]), None if c["session_open_ns"] is None else int(c["session_open_ns"]),
            None if c["session_close_ns"] is None else int(c["session_close_ns"]), bool(c["has_same_day_expiration"]))
