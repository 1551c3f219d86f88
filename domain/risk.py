"""The pre-trade check the order manager calls for every order before it is sent.

The risk engine (risk/) implements it; the order manager only depends on this protocol, so the
backtester can run the same checks. A denial is an answer, not an exception.
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
    DUPLICATE_INTENT = "duplicate_intent"
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
class RiskDecision:
    allowed: bool
    reason: RiskReason = RiskReason.OK
    detail: str = ""

    @staticmethod
    def allow() -> "RiskDecision":
        return RiskDecision(True)


class PreTradeCheck(Protocol):
    def __call__(self, order: OrderRequest, context: OrderContext) -> RiskDecision: ...


def allow_all(order: OrderRequest, context: OrderContext) -> RiskDecision:
    """The check used when no risk engine is configured (unit tests of the order manager)."""
    return RiskDecision.allow()
