"""What a strategy emits: the position it wants, and why.

Strategies never size or route orders. They say "be LONG /MES because of a bullish cross at this
bar"; the engine multiplies by each broker's quantity, the risk engine checks it and the order
manager turns the difference between the current and the target position into orders (closing
first, opening only after the close filled).

For the 0DTE strategy, LONG means "hold the ATM call" and SHORT means "hold the ATM put" (long
premium only, never a written option).
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class PositionTarget(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"
    FLAT = "FLAT"


class IntentReason(StrEnum):
    SIGNAL = "signal"  # a crossover / reversal signal
    STOP = "stop"  # stop-loss or trailing stop hit
    TARGET = "target"  # take-profit hit
    TREND_FLIP = "trend_flip"  # supertrend direction turned against the position
    MOMENTUM_FADE = "momentum_fade"
    EXPIRY_CLOSE = "0dte_close"  # 0DTE time exit before the close
    MANUAL = "manual"
    KILL_SWITCH = "kill_switch"
    RISK = "risk"  # loss limit flatten
    TICKER_REMOVED = "ticker_removed"  # ticker disabled or deleted while holding a position
    JOIN = "join"  # start_behavior join_current: the position the rules held at the start
    ROLL = "roll"  # a future held into its roll date: closed in the expiring month (and reopened in the next)


@dataclass(frozen=True, slots=True)
class Intent:
    strategy: str  # "ema" | "supertrend" | "zeroday"
    symbol: str  # canonical catalog symbol
    target: PositionTarget
    reason: IntentReason
    detail: str  # human-readable why, e.g. "EMA9 8.1 crossed above EMA21 7.9"
    event_ts_ns: int  # end time of the bar (or time of the trade) that triggered it
    price: float  # reference price at the trigger (bar close / trade price)
    stop_distance: float | None = None  # points from entry to stop, for risk-based sizing
