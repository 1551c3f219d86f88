"""The strategy contract: pure logic over bars (and trades, for stops) that emits intents.

A strategy never imports Flask, Redis or a broker SDK. It is constructed from a `TickerConfig`,
fed completed bars in order, and returns `Intent`s. Its complete state round-trips through
`state()` / `restore()` (JSON-safe dicts) so the engine can persist it to Redis and resume after a
restart, and the backtester can run the very same class.

Position bookkeeping: the strategy tracks the position it *asked for* (`target`). The engine calls
`set_position()` when the position changes for reasons outside the strategy (manual trigger, risk
flatten, kill switch, operator adoption), so the strategy's exits (stops, 0DTE close) stay right.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from domain.intents import Intent, PositionTarget
from domain.market import Bar, Trade
from domain.tickers import TickerConfig


@dataclass(frozen=True, slots=True)
class SessionClock:
    """Calendar facts the engine hands to time-aware strategies (0DTE), so strategies need no
    calendar library. All times are ns since epoch UTC."""

    now_ns: int
    session_open_ns: int | None  # today's regular open, None if no session today
    session_close_ns: int | None  # today's regular close (early close already applied)
    has_same_day_expiration: bool  # 0DTE: is there an SPXW expiring today


class Strategy(ABC):
    name: ClassVar[str]
    # The indicator names whose values are prices, drawn over the bars in the console's chart;
    # the others (an ATR, a trend direction) are in other units.
    price_lines: ClassVar[tuple[str, ...]] = ()

    def __init__(self, config: TickerConfig) -> None:
        self.config = config
        self.symbol = config.symbol
        self.target: PositionTarget = PositionTarget.FLAT
        self.last_signal: str | None = None  # human-readable reason of the last decision
        # Price the held position's exits are measured from (None: flat, or unknown after a resume).
        self.entry_price: float | None = None

    @property
    def stop_configured(self) -> bool:
        """Whether the ticker asked for a stop (so a position without an armed one is worth a warning)."""
        return False

    @property
    def trade_exits_configured(self) -> bool:
        """Whether an exit can fire on a trade (a stop, a take-profit): the backtester feeds trades only then."""
        return self.stop_configured

    @abstractmethod
    def warmup_bars(self) -> int:
        """Completed bars needed before the first signal can be valid."""

    @abstractmethod
    def on_bar(self, bar: Bar) -> list[Intent]:
        """Called once per completed bar, in time order."""

    def advance_quiet_bars(self, closes: list[float], ends: list[int], lo: int, hi: int) -> int:
        """Advance over the bars lo..hi-1 (their closes and end stamps, `ends` strictly
        increasing) on which `on_bar` would do nothing but update the indicators, exactly as
        `on_bar` would; return the index of the first bar it did not take (hi if none), which
        the caller then feeds to `on_bar`. For a backtest's quiet stretches between signals.
        Default: none (lo), so every bar goes through `on_bar`."""
        return lo

    def on_trade(self, trade: Trade) -> list[Intent]:
        """Called per trade while in a position, for intrabar stops. Default: nothing."""
        return []

    def on_clock(self, clock: SessionClock) -> list[Intent]:
        """Housekeeping tick (every check interval and before each bar). Default: nothing."""
        return []

    def set_position(self, target: PositionTarget, entry_price: float | None = None) -> None:
        """The position changed outside the strategy (manual, risk, kill switch)."""
        self.target = target

    @abstractmethod
    def indicators(self) -> dict[str, float | None]:
        """Latest indicator values, for logs, /api/strategies and backtest bars.csv."""

    @property
    def warmed_up(self) -> bool:
        """Every indicator the rules use is defined, so the next bar can signal (the `warmed_up`
        of /api/strategies). Each strategy answers from its own indicators: a count of bars fed
        says nothing after a restore or a partial warm-up. One without indicators is always warm."""
        return True

    @abstractmethod
    def state(self) -> dict[str, Any]:
        """JSON-safe snapshot of everything needed to resume."""

    @abstractmethod
    def restore(self, state: dict[str, Any]) -> None: ...
