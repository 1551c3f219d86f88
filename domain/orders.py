"""Order-side messages shared by the order manager (oms/) and every broker adapter (brokers/).

Quantities are whole contracts/shares (int); prices are Decimal tick multiples. Every order has a
`ClientOrderId` derived from the intent that caused it, so submitting the same intent twice is
recognised (see `client_order_id`).
"""
from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import NewType

ClientOrderId = NewType("ClientOrderId", str)
BrokerOrderId = NewType("BrokerOrderId", str)
BrokerName = NewType("BrokerName", str)  # "schwab" | "tastytrade"

SCHWAB = BrokerName("schwab")
TASTYTRADE = BrokerName("tastytrade")
BROKERS: tuple[BrokerName, ...] = (SCHWAB, TASTYTRADE)


class OrderSide(StrEnum):
    BUY = "BUY"
    SELL = "SELL"


class PositionEffect(StrEnum):
    """Whether an order opens or closes exposure. Schwab needs it to pick BUY vs BUY_TO_COVER,
    SELL vs SELL_SHORT and the *_TO_OPEN/*_TO_CLOSE option instructions."""

    OPEN = "OPEN"
    CLOSE = "CLOSE"


class OrderType(StrEnum):
    MARKET = "MARKET"
    LIMIT = "LIMIT"
    STOP = "STOP"


class OrderState(StrEnum):
    NEW = "NEW"  # journaled, not yet sent
    SUBMITTED = "SUBMITTED"  # sent, no answer yet
    ACCEPTED = "ACCEPTED"  # broker acknowledged (working)
    PARTIALLY_FILLED = "PARTIALLY_FILLED"
    FILLED = "FILLED"
    CANCELLED = "CANCELLED"
    REJECTED = "REJECTED"
    UNKNOWN = "UNKNOWN"  # sent but outcome unknown (timeout): never resent, resolved by querying

    @property
    def is_terminal(self) -> bool:
        return self in (OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED)

    @property
    def is_working(self) -> bool:
        """At the broker and not final: polled until it is."""
        return self in (OrderState.SUBMITTED, OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)


_AFTER_SEND = frozenset({OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED, OrderState.FILLED, OrderState.CANCELLED,
                         OrderState.REJECTED})
# The order lifecycle: (state, state the broker reports) -> the state recorded. A report not in the
# table changes no state (fills and reasons are still applied): brokers repeat and reorder updates.
ORDER_TRANSITIONS: dict[OrderState, frozenset[OrderState]] = {
    OrderState.NEW: _AFTER_SEND | {OrderState.SUBMITTED, OrderState.UNKNOWN},
    # A timeout after sending is UNKNOWN: never resent, resolved by looking the order up.
    OrderState.SUBMITTED: _AFTER_SEND | {OrderState.UNKNOWN},
    OrderState.ACCEPTED: _AFTER_SEND - {OrderState.ACCEPTED},
    # (a remainder may also end REJECTED at some venues; the filled part stays filled)
    OrderState.PARTIALLY_FILLED: frozenset({OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED}),
    # The broker answered about an UNKNOWN order: whatever it says is news (it has it: at least
    # ACCEPTED, see next_order_state). Only the broker, or an operator, ends UNKNOWN.
    OrderState.UNKNOWN: _AFTER_SEND,
    OrderState.FILLED: frozenset(), OrderState.CANCELLED: frozenset(), OrderState.REJECTED: frozenset(),
}


def next_order_state(current: OrderState, reported: OrderState) -> OrderState:
    """The state to record when the broker reports `reported` for an order in `current`."""
    if current is OrderState.UNKNOWN and reported in (OrderState.NEW, OrderState.SUBMITTED):
        return OrderState.ACCEPTED  # the broker has it: no longer unknown
    return reported if reported in ORDER_TRANSITIONS[current] else current


class OptionRight(StrEnum):
    CALL = "C"
    PUT = "P"


@dataclass(frozen=True, slots=True)
class OptionContract:
    underlying: str  # "SPX"
    root: str  # "SPXW" for the PM-settled weeklies/dailies
    expiration: date
    strike: Decimal
    right: OptionRight
    bid: Decimal | None = None
    ask: Decimal | None = None
    broker_symbol: str | None = None  # the venue's own symbol when it differs from OCC

    @property
    def occ_symbol(self) -> str:
        """OCC OSI symbol: root padded to 6, yymmdd, C/P, strike x1000 in 8 digits."""
        strike = int((self.strike * 1000).to_integral_value())
        return f"{self.root:<6}{self.expiration:%y%m%d}{self.right.value}{strike:08d}"


@dataclass(frozen=True, slots=True)
class OrderRequest:
    client_order_id: ClientOrderId
    symbol: str  # canonical catalog symbol; for options the underlying ("SPX")
    side: OrderSide
    quantity: int
    position_effect: PositionEffect
    order_type: OrderType = OrderType.MARKET
    limit_price: Decimal | None = None
    stop_price: Decimal | None = None
    option: OptionContract | None = None
    # A future's contract month as the book keys it ("/MESZ25", config.symbology): orders close
    # the contract held, not whatever the front month is when they are sent. None: the adapter
    # trades the front month (and for every other instrument).
    contract: str | None = None

    def __post_init__(self) -> None:
        if self.quantity <= 0:
            raise ValueError("order quantity must be a positive whole number")
        if self.order_type is OrderType.LIMIT and self.limit_price is None:
            raise ValueError("limit orders need a limit_price")
        if self.order_type is OrderType.STOP and self.stop_price is None:
            raise ValueError("stop orders need a stop_price")

    @property
    def position_key(self) -> str:
        """What the order changes a position in: the option's OCC symbol, the future's contract
        key, or the catalog symbol."""
        return self.option.occ_symbol if self.option else self.contract or self.symbol

    @property
    def signed_quantity(self) -> int:
        return self.quantity if self.side is OrderSide.BUY else -self.quantity


@dataclass(frozen=True, slots=True)
class Fill:
    client_order_id: ClientOrderId
    broker_order_id: BrokerOrderId | None
    fill_id: str
    quantity: int  # always positive; the side comes from the order
    price: Decimal
    commission: Decimal
    ts: datetime


@dataclass(frozen=True, slots=True)
class OrderUpdate:
    """The broker's view of one order at one moment."""

    client_order_id: ClientOrderId
    broker_order_id: BrokerOrderId | None
    state: OrderState
    filled_quantity: int = 0
    avg_fill_price: Decimal | None = None
    reason: str | None = None
    fills: tuple[Fill, ...] = ()


@dataclass(frozen=True, slots=True)
class BrokerPosition:
    key: str  # catalog symbol ("/MES", "NVDA") or OCC option symbol
    quantity: int  # signed: long > 0, short < 0
    avg_price: Decimal
    multiplier: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Balances:
    cash: Decimal
    equity: Decimal
    buying_power: Decimal
    realized_pnl: Decimal = Decimal(0)


@dataclass(frozen=True, slots=True)
class Quote:
    symbol: str
    bid: Decimal | None
    ask: Decimal | None
    last: Decimal | None
    ts: datetime | None = None


@dataclass(frozen=True, slots=True)
class BrokerStatus:
    broker: BrokerName
    mode: str  # "paper" | "live"
    connected: bool
    account: str | None = None  # masked, e.g. "****1234"
    access_token_expires_at: datetime | None = None
    refresh_token_expires_at: datetime | None = None
    message: str = ""
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, object]:
        return {
            "broker": self.broker, "mode": self.mode, "connected": self.connected, "account": self.account,
            "access_token_expires_at": self.access_token_expires_at.isoformat() if self.access_token_expires_at else None,
            "refresh_token_expires_at": self.refresh_token_expires_at.isoformat()
            if self.refresh_token_expires_at else None,
            "message": self.message, "warnings": list(self.warnings),
        }


def plain_decimal(value: Decimal) -> Decimal:
    """`value` without trailing zeros and never in exponent form: 6000.00 -> 6000 (not 6E+3, which
    `normalize()` alone gives and a dashboard would show), 2309.50 -> 2309.5."""
    normal = value.normalize()
    return normal.quantize(Decimal(1)) if normal.as_tuple().exponent > 0 else normal

_AVG_QUANT = Decimal("0.00000001")


def apply_fill(qty: int, avg: Decimal, signed_qty: int, price: Decimal, multiplier: Decimal) -> tuple[int, Decimal, Decimal]:
    """(new qty, new avg price, realized P&L) of a signed fill on a position (average-cost method).
    The order manager's book and the paper broker keep their positions with it."""
    new_qty = qty + signed_qty
    if qty == 0 or (qty > 0) == (signed_qty > 0):
        total = abs(qty) + abs(signed_qty)
        return new_qty, plain_decimal(((avg * abs(qty) + price * abs(signed_qty)) / total).quantize(_AVG_QUANT)), Decimal(0)
    closing = min(abs(qty), abs(signed_qty))
    realized = (price - avg) * closing * (1 if qty > 0 else -1) * multiplier
    if new_qty == 0:
        return 0, Decimal(0), realized
    if (new_qty > 0) != (qty > 0):  # flipped through zero: the remainder opened at this price
        return new_qty, price, realized
    return new_qty, avg, realized

def mask_account(account: str | None) -> str | None:
    """Show only the last 4 characters of an account number."""
    if not account:
        return None
    return "****" + account[-4:]


@functools.lru_cache(maxsize=4096)  # pure; asked 2-3 times per order leg (plan, claim, record)
def client_order_id(strategy: str, symbol: str, event_ts_ns: int, leg: str, broker: BrokerName) -> ClientOrderId:
    """Deterministic id for one leg of one intent at one broker.

    The same (strategy, symbol, triggering bar/trade time, leg, broker) always gives the same id,
    so a retried, replayed or double-clicked intent is recognised by the order manager. Kept short
    (<= 32 chars, [A-Za-z0-9-]) to fit every broker's external-id field.
    """
    digest = hashlib.sha256(f"{strategy}|{symbol}|{event_ts_ns}|{leg}|{broker}".encode()).hexdigest()[:16]
    root = symbol.lstrip("/")[:5]
    return ClientOrderId(f"{strategy[:3]}-{root}-{leg[:4]}-{digest}")
