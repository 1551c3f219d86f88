"""Bar timeframes: time bars (1 minute .. 1 day) and tick charts (a bar every N trades).

Three spellings reach us and all mean the same timeframe:
- raw (what we store and return in get-ticker): "1", "5", "15", "30", "1h", "4h", "1d", "512t"
- display (what the dashboard sends): "1Min", "5Min", "1Hour", "4Hour", "1Day", "512t"
- seed (the spec's examples): "1m", "5m", "1h", "1d"
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum


class TimeframeError(ValueError):
    """The text is not a supported timeframe."""


class BarKind(StrEnum):
    TIME = "time"
    TICK = "tick"


ALLOWED_MINUTES = (1, 2, 3, 5, 10, 15, 20, 30)
ALLOWED_HOURS = (1, 2, 4)
MAX_TICKS = 100_000

_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # re.ASCII: \d would also match "５" or "١", which no client means as a timeframe
    (re.compile(r"^(\d{1,3})$", re.ASCII), "m"),
    (re.compile(r"^(\d{1,3})\s*(?:m|min|mins|minute|minutes)$", re.I | re.ASCII), "m"),
    (re.compile(r"^(\d{1,2})\s*(?:h|hr|hour|hours)$", re.I | re.ASCII), "h"),
    (re.compile(r"^(\d)\s*(?:d|day|days)$", re.I | re.ASCII), "d"),
    (re.compile(r"^(\d{1,6})\s*t(?:ick|icks)?$", re.I | re.ASCII), "t"),
)


# Built from the tables above so the error can never list fewer timeframes than parse() accepts.
_ACCEPTED = (
    "use " + ", ".join([f"{m}Min" for m in ALLOWED_MINUTES] + [f"{h}Hour" for h in ALLOWED_HOURS] + ["1Day"])
    + " (also written '5', '5m', '1h', '1d') or a tick chart of 1 to " + f"{MAX_TICKS} trades such as '512t'"
)


@dataclass(frozen=True, slots=True)
class Timeframe:
    kind: BarKind
    size: int  # seconds for time bars, trades for tick bars

    @staticmethod
    def parse(text: object) -> "Timeframe":
        if not isinstance(text, str):
            raise TimeframeError("timeframe must be a string such as '5Min', '1Hour' or '512t'")
        cleaned = text.strip()
        for pattern, unit in _PATTERNS:
            match = pattern.match(cleaned)
            if not match:
                continue
            n = int(match.group(1))
            if unit == "m":
                if n == 60:
                    return Timeframe(BarKind.TIME, 3600)
                if n in ALLOWED_MINUTES:
                    return Timeframe(BarKind.TIME, n * 60)
            elif unit == "h" and n in ALLOWED_HOURS:
                return Timeframe(BarKind.TIME, n * 3600)
            elif unit == "d" and n == 1:
                return Timeframe(BarKind.TIME, 86400)
            elif unit == "t" and 1 <= n <= MAX_TICKS:
                return Timeframe(BarKind.TICK, n)
            break
        raise TimeframeError(f"timeframe {cleaned[:20]!r} is not supported; {_ACCEPTED}")

    @property
    def is_tick(self) -> bool:
        return self.kind is BarKind.TICK

    @property
    def is_daily(self) -> bool:
        return self.kind is BarKind.TIME and self.size == 86400

    @property
    def seconds(self) -> int:
        if self.is_tick:
            raise TimeframeError("tick charts have no fixed duration")
        return self.size

    @property
    def raw(self) -> str:
        """Storage form: "5", "1h", "1d", "512t"."""
        if self.is_tick:
            return f"{self.size}t"
        if self.size == 86400:
            return "1d"
        if self.size % 3600 == 0:
            return f"{self.size // 3600}h"
        return str(self.size // 60)

    @property
    def display(self) -> str:
        """Dashboard form: "5Min", "1Hour", "1Day", "512t"."""
        if self.is_tick:
            return f"{self.size}t"
        if self.size == 86400:
            return "1Day"
        if self.size % 3600 == 0:
            return f"{self.size // 3600}Hour"
        return f"{self.size // 60}Min"

    @property
    def check_interval_seconds(self) -> float:
        """How long a strategy thread blocks on its bar stream before housekeeping (the spec's
        check intervals: 10 s for 1-5 minute bars, 60 s for 15 minutes to 1 day, 10 s for ticks)."""
        if self.is_tick:
            return 10.0
        return 10.0 if self.size <= 300 else 60.0

    def __str__(self) -> str:
        return self.raw
