"""Trading state per scope (global and each strategy) and the trading-session clock.

States follow NautilusTrader's: ACTIVE (everything passes the state check), REDUCING (only orders
that move a position toward zero), HALTED (nothing, except the risk engine's own flatten orders).
A loss-limit halt remembers the session it happened in and lifts itself when the session changes;
a kill-switch halt does not lift until an operator resumes.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime, time, timedelta
from enum import StrEnum
from typing import Any, Callable
from zoneinfo import ZoneInfo

GLOBAL_SCOPE = "global"
NEW_YORK = ZoneInfo("America/New_York")
# CME Globex's trading day for equity-index futures starts at 18:00 New York time the evening
# before; equities (09:30) and SPX options (09:30) open inside that same window, so one boundary
# gives every product the same "day" for daily loss limits.
SESSION_START_LOCAL = time(18, 0)

SessionStart = Callable[[str, datetime], datetime]


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"
    HALTED = "HALTED"


@dataclass(frozen=True, slots=True)
class ScopeState:
    state: TradingState = TradingState.ACTIVE
    reason: str = ""
    since: str | None = None  # ISO time of the change
    by: str | None = None  # "loss_limit", "kill_switch", "operator"
    halted_session: str | None = None  # session start (ISO) a loss-limit halt belongs to
    auto_resume: bool = False  # True: lifts by itself when the session changes
    resumes_at: str | None = None  # best estimate of the next session start, for display

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["state"] = self.state.value
        return doc

    def dumps(self) -> str:
        return json.dumps(self.to_json(), sort_keys=True)

    @staticmethod
    def loads(raw: str | None) -> "ScopeState":
        if not raw:
            return ScopeState()
        doc = json.loads(raw)
        doc["state"] = TradingState(doc.get("state", "ACTIVE"))
        return ScopeState(**{k: v for k, v in doc.items() if k in ScopeState.__dataclass_fields__})  # type: ignore[attr-defined]


def default_session_start(symbol: str, now: datetime) -> datetime:
    """Start of the trading session containing `now`: the latest 18:00 New York at or before it,
    with Saturday/Sunday-before-open folded back into Friday's session (no trading in between)."""
    local = now.astimezone(NEW_YORK)
    start = datetime.combine(local.date(), SESSION_START_LOCAL, NEW_YORK)
    if local < start:
        start = datetime.combine(local.date() - timedelta(days=1), SESSION_START_LOCAL, NEW_YORK)
    while start.weekday() == 5:  # Saturday 18:00 is not a session: Globex reopens Sunday 18:00
        start = datetime.combine(start.date() - timedelta(days=1), SESSION_START_LOCAL, NEW_YORK)
    return start


def next_session_start(session_start: SessionStart, symbol: str, now: datetime,
                       horizon: timedelta = timedelta(days=5), step: timedelta = timedelta(minutes=15)) -> datetime | None:
    """First instant after `now` whose session differs from now's, probing at `step` resolution.

    Works for any injected calendar function without it having to offer a "next" method; only used
    to tell the operator when a loss-limit halt will lift (the lift itself compares sessions)."""
    current = session_start(symbol, now)
    probe = now + step
    end = now + horizon
    while probe <= end:
        candidate = session_start(symbol, probe)
        if candidate != current:
            return candidate if candidate > now else probe
        probe += step
    return None
