"""The pre-trade check the order manager calls for every order before it is sent.

The risk engine (risk/) implements it; the order manager only depends on this protocol, so the
backtester can run the same checks. A denial is an answer, not an exception.

The check itself writes nothing. What an allowed order must still take atomically (a slot in the
orders-per-minute window, its audit record) travels in the decision as a `RateSlot` and is taken
by the order manager's claim of the order, in the same Redis call that records the order: a crash
leaves either a recorded order or nothing, never an id "seen" by risk that no order stands for.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from domain.orders import BrokerName, OrderRequest


class RiskReason(StrEnum):
    OK = "ok"
    HALTED = "halted"  # trading state HALTED: nothing but cancels
    REDUCING_ONLY = "reducing_only"  # trading state REDUCING and the order would add exposure
    DAILY_LOSS_LIMIT = "daily_loss_limit"
    MAX_POSITION = "max_position"
    MAX_ORDER_QUANTITY = "max_order_quantity"
    ORDER_RATE = "order_rate"  # runaway guard: too many orders per minute for the ticker
    BROKER_DISCONNECTED = "broker_disconnected"


@dataclass(frozen=True, slots=True)
class OrderContext:
    strategy: str
    symbol: str  # catalog symbol (underlying for options)
    broker: BrokerName
    current_quantity: int  # signed position of this strategy at this broker before the order
    reduces_position: bool  # True when the order only moves the position toward zero
    reason: str  # IntentReason value


@dataclass(frozen=True, slots=True)
class RateSlot:
    """The orders-per-minute slot an allowed order takes, and its audit record. Taken by whoever
    records the order, atomically with that record (see the module docstring).

    `key`: the sorted set of the window (scores: ms); `limit` orders per `window_ms`; `member`:
    this order's unique entry. `audit_key` "" means no audit record rides along."""

    key: str
    limit: int
    window_ms: int
    now_ms: int
    member: str
    audit_key: str = ""
    audit_maxlen: int = 0
    audit_fields: tuple[str, ...] = ()  # flat field/value pairs of the audit stream entry


@dataclass(frozen=True, slots=True)
class RiskDecision:
    allowed: bool
    reason: RiskReason = RiskReason.OK
    detail: str = ""
    slot: RateSlot | None = None  # allowed: what the claim must take with the order (None: nothing)

    @staticmethod
    def allow() -> "RiskDecision":
        return RiskDecision(True)


class PreTradeCheck(Protocol):
    def __call__(self, order: OrderRequest, context: OrderContext) -> RiskDecision:
        """Decide; write nothing. An allowed decision may carry a `RateSlot` for the claim."""

    def rate_limited(self, order: OrderRequest, context: OrderContext, decision: RiskDecision,
                     count: int) -> RiskDecision:
        """The claim found the decision's window full (`count` orders in it): the denial to record."""


class AllowAll:
    """The check used when no risk engine is configured (unit tests of the order manager)."""

    def __call__(self, order: OrderRequest, context: OrderContext) -> RiskDecision:
        return RiskDecision.allow()

    def rate_limited(self, order: OrderRequest, context: OrderContext, decision: RiskDecision,
                     count: int) -> RiskDecision:
        return RiskDecision(False, RiskReason.ORDER_RATE, f"{count} orders in the window")


allow_all = AllowAll()
