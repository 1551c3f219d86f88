"""The paper fill model, as pure functions, shared by the backtester and the paper broker.

Both places must agree on every fill or a backtest stops predicting paper/live results, so the
rules live here once and nothing in this module has state or I/O:

- Market orders fill at the *next* price after the decision: the next bar's open with bar data,
  the next trade with tick data (`market_fill_ticks`). A strategy decides on a completed bar, so
  it can never trade at that bar's close.
- Prices are rounded to the instrument's tick (half up), then slippage is applied adversely in
  whole ticks: buys pay more, sells receive less.
- Stops and targets fill at their own price when the price path crosses them, or at the open when
  the bar gaps through them (`level_fill`). With only OHLC the path inside a bar is unknown, so
  `bar_path` visits the extreme that hurts the open position first: when a stop and a target are
  both inside one bar's range the stop (the worse outcome) is assumed to have come first.
- Commission is a fixed amount per contract per fill (`commission`); P&L is exact: integer ticks
  times the Decimal tick value (`pnl`).

Prices inside the backtest loop are kept as integer tick counts: exact, hashable and cheap; they
become Decimal only when reported (`ticks_to_price`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import Decimal

LONG = 1
SHORT = -1
FLAT = 0


@dataclass(frozen=True, slots=True)
class CostModel:
    """Everything the fill model needs to know about an instrument and the account's costs."""

    tick_size: Decimal
    multiplier: Decimal  # currency per 1.0 point per contract
    commission_per_contract: Decimal = Decimal(0)
    slippage_ticks: int = 0

    @property
    def tick_value(self) -> Decimal:
        return self.tick_size * self.multiplier


def price_to_ticks(price: float, tick_size: float) -> int:
    """Nearest whole tick, half up (the same rule as `Instrument.round_price`).

    The tiny epsilon absorbs float noise such as 4799.999999 / 0.25 so a price that *is* a tick
    multiple never rounds the wrong way."""
    return int(math.floor(price / tick_size + 0.5 + 1e-9))


def ticks_to_price(ticks: int, tick_size: Decimal) -> Decimal:
    return (Decimal(ticks) * tick_size).quantize(tick_size)


def slipped_ticks(ticks: int, side: int, slippage_ticks: int) -> int:
    """Apply slippage adversely. `side` is +1 for a buy, -1 for a sell."""
    return ticks + side * slippage_ticks


def market_fill_ticks(next_price: float, side: int, tick_size: float, slippage_ticks: int) -> int:
    """A market order's fill in ticks: the next price (next bar open / next trade), rounded to the
    tick, plus adverse slippage."""
    return slipped_ticks(price_to_ticks(next_price, tick_size), side, slippage_ticks)


def bar_path(open_: float, high: float, low: float, close: float, position: int) -> tuple[float, float, float, float]:
    """The assumed order of prices inside a bar: open, the extreme *against* the position, the
    extreme in its favour, close. Long -> O, L, H, C; short (and flat) -> O, H, L, C for shorts and
    O, L, H, C for flat (irrelevant then: nothing can be stopped)."""
    if position < 0:
        return (open_, high, low, close)
    return (open_, low, high, close)


def level_fill(level: float, previous: float | None, price: float) -> float:
    """The price a stop/target at `level` fills at when the path moved from `previous` to `price`
    and the exit triggered at `price`.

    - `previous is None` means `price` is the bar's open: the market gapped through the level and
      the order fills at the open (a stop is no guarantee of its price).
    - If the level lies between the previous and the current path price, the move crossed it
      continuously and the order fills at the level.
    - Otherwise (the strategy exited for a reason whose level we do not know) at `price`.
    """
    if previous is None:
        return price
    lo, hi = (previous, price) if previous <= price else (price, previous)
    if lo <= level <= hi:
        return level
    return price


def bracket_exit(
    position: int, stop: float | None, target: float | None, open_: float, high: float, low: float,
) -> tuple[float, str] | None:
    """Exit of a position with a resting stop and/or target over one OHLC bar, or None.

    Order of checks: a gap through either level at the open fills at the open; otherwise, when the
    range crosses both, the stop (the worse result) is taken first; otherwise whichever is crossed
    fills at its own price. Returns (price, "stop" | "target")."""
    if position == FLAT:
        return None
    if position > 0:
        if stop is not None and open_ <= stop:
            return open_, "stop"
        if target is not None and open_ >= target:
            return open_, "target"
        if stop is not None and low <= stop:
            return stop, "stop"
        if target is not None and high >= target:
            return target, "target"
        return None
    if stop is not None and open_ >= stop:
        return open_, "stop"
    if target is not None and open_ <= target:
        return open_, "target"
    if stop is not None and high >= stop:
        return stop, "stop"
    if target is not None and low <= target:
        return target, "target"
    return None


def commission(quantity: int, per_contract: Decimal) -> Decimal:
    """Commission for one fill of `quantity` contracts (always positive)."""
    return per_contract * abs(quantity)


def pnl(side: int, quantity: int, entry_ticks: int, exit_ticks: int, tick_value: Decimal) -> Decimal:
    """Gross P&L of a round trip: signed tick difference x contracts x tick value (exact)."""
    return Decimal(side * (exit_ticks - entry_ticks) * quantity) * tick_value
