"""Open or close: decided by what the broker account holds, not by the strategy sending the order.

Several strategies may trade one symbol at one broker account (ema and supertrend both on NVDA).
Each strategy's lane knows only its own position, but the broker sees the account's net position
in the instrument, and validates an order's open/close effect against that: a lane closing its
long while another lane is short the same shares is, for the account, *opening* more short. So the
Schwab and Tastytrade adapters read the account's position in the instrument just before sending
and derive the effect here, ignoring the lane's `OrderRequest.position_effect`.

An order that would take the account through zero (long 1, sell 3) would have to close and open at
once; both brokers take one effect per leg, so such an order is refused before anything is sent
(`CrossesZero`) rather than sent with an effect the broker would reject or misapply.
"""
from __future__ import annotations

from domain.orders import PositionEffect


class CrossesZero(ValueError):
    """The order would take the account's position through zero: it cannot be one leg."""

    def __init__(self, key: str, held: int, signed_quantity: int) -> None:
        verb = "buying" if signed_quantity > 0 else "selling"
        opened = abs(signed_quantity) - abs(held)
        super().__init__(
            f"the account holds {held:+d} {key}; {verb} {abs(signed_quantity)} would close {abs(held)} and "
            f"open {opened} in one order, which the broker takes one open/close effect for: not sent")
        self.key = key
        self.held = held
        self.signed_quantity = signed_quantity


def account_position_effect(key: str, held: int, signed_quantity: int) -> PositionEffect:
    """OPEN when the account is flat in `key` or holds it on the order's side; CLOSE when the order
    reduces the holding without going past zero; `CrossesZero` otherwise."""
    if signed_quantity == 0:
        raise ValueError("an order moves the position: its signed quantity cannot be zero")
    if held == 0 or (held > 0) == (signed_quantity > 0):
        return PositionEffect.OPEN
    if abs(signed_quantity) <= abs(held):
        return PositionEffect.CLOSE
    raise CrossesZero(key, held, signed_quantity)
