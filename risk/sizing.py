"""Position sizing: how many contracts/shares an intent becomes at one broker.

Fixed (default): the ticker's per-broker quantity. Risk-based: the number of contracts whose loss
at the stop equals the risk budget, rounded DOWN (never risk more than the budget), then capped by
the max position. Zero means "too little budget for even one contract": the caller skips the
entry rather than rounding up to 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_FLOOR, Decimal

from config.instruments import get_instrument


class SizingError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class SizingResult:
    quantity: int
    mode: str  # "fixed" | "risk"
    detail: str


def risk_based_quantity(risk_amount: Decimal, stop_distance_points: Decimal, point_value: Decimal,
                        max_position: int | None = None) -> int:
    """floor(risk_amount / (stop_distance_points x point_value)), capped by max_position."""
    if risk_amount <= 0:
        raise SizingError("risk amount must be positive")
    if stop_distance_points <= 0:
        raise SizingError("stop distance must be positive")
    if point_value <= 0:
        raise SizingError("point value must be positive")
    per_contract = stop_distance_points * point_value
    quantity = int((risk_amount / per_contract).to_integral_value(rounding=ROUND_FLOOR))
    if max_position is not None:
        quantity = min(quantity, max_position)
    return max(quantity, 0)


def size_order(fixed_quantity: int, *, symbol: str, mode: str = "fixed", risk_amount: Decimal | None = None,
               stop_distance_points: float | Decimal | None = None, point_value: Decimal | None = None,
               max_position: int | None = None) -> SizingResult:
    """Quantity for one broker. Risk mode needs a stop distance; without one (a strategy with no
    stop) it falls back to the fixed quantity and says so, rather than guessing a stop."""
    capped_fixed = min(fixed_quantity, max_position) if max_position is not None else fixed_quantity
    if mode != "risk" or fixed_quantity == 0:
        # A broker quantity of 0 means "do not trade here" in both modes.
        return SizingResult(capped_fixed, "fixed", f"ticker quantity {fixed_quantity}")
    if risk_amount is None:
        raise SizingError("risk sizing needs risk_per_trade")
    if stop_distance_points is None or Decimal(str(stop_distance_points)) <= 0:
        return SizingResult(capped_fixed, "fixed", "no stop distance: fixed quantity used")
    pv = point_value if point_value is not None else get_instrument(symbol).multiplier
    distance = Decimal(str(stop_distance_points))
    qty = risk_based_quantity(risk_amount, distance, pv, max_position)
    return SizingResult(qty, "risk", f"floor({risk_amount} / ({distance} x {pv})) = {qty}"
                        + (f", capped at {max_position}" if max_position is not None else ""))
