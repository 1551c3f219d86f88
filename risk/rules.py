"""The pre-trade rules as pure functions over a snapshot of the risk state.

`risk.engine.RiskEngine` (live, state in Redis) and `risk.memory.MemoryRiskEngine` (backtests,
state in this process) both decide through `pre_trade_decision`; they differ only in where the
trading states, limits, session P&L and the orders-per-minute window are kept. So the rules, their
order and their reason codes and details exist once.

Order of the rules for an order that adds exposure (the first that applies decides):
HALTED (global, then the strategy), REDUCING (global, then the strategy), the strategy's daily
loss limit, the global daily loss limit, max order quantity, max position. An allowed order then
takes a slot in the orders-per-minute window (`rate_denial` when the window is full). An order
that only reduces a position passes without reading any state (see risk/engine.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Callable

from domain.orders import OrderRequest
from domain.risk import OrderContext, RiskDecision, RiskReason
from risk.limits import RiskLimits
from risk.state import GLOBAL_SCOPE, ScopeState, TradingState

RATE_WINDOW_MS = 60_000
# Decisions are immutable: the two answers without detail of their own are shared.
_WAY_OUT = RiskDecision(True, RiskReason.OK, "reduces the position")
_ALLOWED = RiskDecision.allow()
_ACTIVE_STATE = TradingState.ACTIVE  # read per order: a module name, not an enum class lookup


@dataclass
class RiskSnapshot:
    """What the rules read: both scopes' trading states (a loss-limit halt of an earlier session
    already lifted), the limits and the current session's P&L per strategy (realized, unrealized)."""

    global_state: ScopeState
    strategy_state: ScopeState
    limits: RiskLimits
    pnl: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)


def pre_trade_decision(order: OrderRequest, ctx: OrderContext,
                       snapshot: Callable[[], RiskSnapshot]) -> tuple[RiskDecision, int]:
    """The decision and, when allowed, the orders-per-minute limit its slot applies (-1: none).
    `snapshot` is called only for an order that adds exposure (the way out reads nothing)."""
    if ctx.reduces_position:
        # The way out: no state, exposure or rate rule applies.
        return _WAY_OUT, -1
    snap = snapshot()
    if snap.global_state.state is not _ACTIVE_STATE or snap.strategy_state.state is not _ACTIVE_STATE:
        for scope, st in ((GLOBAL_SCOPE, snap.global_state), (ctx.strategy, snap.strategy_state)):
            if st.state is TradingState.HALTED:
                return RiskDecision(False, RiskReason.HALTED, f"{scope} is HALTED: {st.reason}"), -1
        for scope, st in ((GLOBAL_SCOPE, snap.global_state), (ctx.strategy, snap.strategy_state)):
            if st.state is TradingState.REDUCING:
                return RiskDecision(False, RiskReason.REDUCING_ONLY,
                                    f"{scope} is REDUCING: only orders that reduce a position pass"), -1
    denial = exposure_denial(order, ctx, snap)
    if denial is not None:
        return denial, -1
    limit = snap.limits.max_orders_per_minute
    return _ALLOWED, -1 if limit is None else limit


def exposure_denial(order: OrderRequest, ctx: OrderContext, snap: RiskSnapshot) -> RiskDecision | None:
    """Loss limits, max order quantity and max position, for an order that adds exposure."""
    limits = snap.limits
    # Loss limits deny new exposure even before the engine's breach halt lands (belt and braces).
    strat_limit = limits.strategy_loss_limit(ctx.strategy)
    if strat_limit is not None and ctx.strategy in snap.pnl:
        total = sum(snap.pnl[ctx.strategy], Decimal(0))
        if total <= -strat_limit:
            return RiskDecision(False, RiskReason.DAILY_LOSS_LIMIT,
                                f"{ctx.strategy} P&L {total} breached its daily loss limit {strat_limit}")
    if limits.daily_loss_limit_global is not None and snap.pnl:
        total = sum((r + u for r, u in snap.pnl.values()), Decimal(0))
        if total <= -limits.daily_loss_limit_global:
            return RiskDecision(False, RiskReason.DAILY_LOSS_LIMIT,
                                f"global P&L {total} breached the daily loss limit {limits.daily_loss_limit_global}")
    if limits.max_order_quantity is not None and order.quantity > limits.max_order_quantity:
        return RiskDecision(False, RiskReason.MAX_ORDER_QUANTITY,
                            f"order quantity {order.quantity} exceeds max {limits.max_order_quantity}")
    cap = limits.position_limit(ctx.symbol)
    after = ctx.current_quantity + order.signed_quantity
    if cap is not None and abs(after) > cap and abs(after) > abs(ctx.current_quantity):
        return RiskDecision(False, RiskReason.MAX_POSITION,
                            f"position would be {after} {ctx.symbol}; max {cap}")
    return None


def rate_denial(ctx: OrderContext, limit: int, count: int) -> RiskDecision:
    """The denial when the orders-per-minute window already holds `count` >= `limit` orders."""
    return RiskDecision(False, RiskReason.ORDER_RATE,
                        f"{count} orders in the last minute for {ctx.strategy} {ctx.symbol} "
                        f"(max {limit}/min): runaway guard")


def lifted_state(state: ScopeState, session_id: str, now: datetime) -> ScopeState | None:
    """The ACTIVE state that replaces a loss-limit halt once its session is over, else None
    (an operator's or the kill switch's halt never lifts by itself)."""
    if state.state is TradingState.HALTED and state.auto_resume and state.halted_session is not None:
        if session_id != state.halted_session:
            return ScopeState(TradingState.ACTIVE, "new session", now.isoformat(), "session_change")
    return None


def decision_record(order: OrderRequest, ctx: OrderContext, decision: RiskDecision, now: datetime) -> dict[str, str]:
    """One risk decision as recorded (decisions stream, audit)."""
    return {
        "ts": now.isoformat(), "allowed": "1" if decision.allowed else "0", "reason": decision.reason.value,
        "detail": decision.detail, "client_order_id": order.client_order_id, "strategy": ctx.strategy,
        "symbol": ctx.symbol, "position_key": order.position_key, "broker": ctx.broker,
        "side": order.side.value, "quantity": str(order.quantity), "intent_reason": ctx.reason,
        "reduces_position": "1" if ctx.reduces_position else "0",
    }


def loss_breaches(limits: RiskLimits, pnl: dict[str, tuple[Decimal, Decimal]]) -> list[tuple[str, Decimal, Decimal]]:
    """(scope, limit, P&L) of every daily loss limit the session's P&L breaches: each strategy
    (by name) whose realized + unrealized is at or below -its limit, then the global total."""
    breached: list[tuple[str, Decimal, Decimal]] = []
    for strategy, (realized, unrealized) in sorted(pnl.items()):
        limit = limits.strategy_loss_limit(strategy)
        if limit is not None and realized + unrealized <= -limit:
            breached.append((strategy, limit, realized + unrealized))
    if limits.daily_loss_limit_global is not None and pnl:
        total = sum((r + u for r, u in pnl.values()), Decimal(0))
        if total <= -limits.daily_loss_limit_global:
            breached.append((GLOBAL_SCOPE, limits.daily_loss_limit_global, total))
    return breached


def loss_halt(limit: Decimal, pnl: Decimal, now: datetime, session_id: str, resumes: datetime | None) -> ScopeState:
    """The HALTED state a loss-limit breach puts its scope in (lifts when the session changes)."""
    reason = f"daily loss limit {limit} breached (P&L {pnl}); halted until the next session"
    return ScopeState(TradingState.HALTED, reason, now.isoformat(), "loss_limit", session_id, True,
                      resumes.isoformat() if resumes else None)
