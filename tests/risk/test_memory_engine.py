"""The in-process risk engine (backtests) decides exactly as the live Redis-backed one: a seeded
sequence of orders, limit changes, trading-state changes, P&L updates and clock moves through both,
every decision's allowed flag, reason code and detail equal (real Redis and fakeredis)."""
from __future__ import annotations

import random
from datetime import UTC, datetime
from decimal import Decimal

from config.settings import Settings
from domain.orders import ClientOrderId, OrderRequest, OrderSide, PositionEffect, TASTYTRADE
from domain.risk import OrderContext, RiskReason
from risk.engine import RiskEngine
from risk.memory import MemoryRiskEngine
from risk.state import GLOBAL_SCOPE, TradingState
from store.redis_store import Store
from tests.risk.conftest import Clock

STRATEGIES = ("ema", "supertrend")
SYMBOLS = ("/MES", "/ES", "NVDA")


def _step(rng: random.Random, k: int, positions: dict[tuple[str, str], int]) -> tuple[str, object]:
    roll = rng.random()
    if roll < 0.04:
        payload = rng.choice([{"max_orders_per_minute": rng.randint(1, 4)}, {"max_orders_per_minute": None},
                              {"max_position": rng.randint(1, 4)}, {"max_position": None},
                              {"max_position_by_symbol": {"/ES": rng.randint(1, 3)}},
                              {"max_order_quantity": rng.randint(1, 3)}, {"max_order_quantity": None},
                              {"daily_loss_limit_per_strategy": str(rng.choice([200, 500]))},
                              {"daily_loss_limit_by_strategy": {"supertrend": "300"}},
                              {"daily_loss_limit_global": str(rng.choice([400, 900]))},
                              {"daily_loss_limit_global": None}])
        return "limits", payload
    if roll < 0.07:
        return "state", (rng.choice((GLOBAL_SCOPE, *STRATEGIES)),
                         rng.choice((TradingState.ACTIVE, TradingState.REDUCING, TradingState.HALTED)))
    if roll < 0.12:
        return "pnl", (rng.choice(STRATEGIES), Decimal(rng.randint(-600, 200)), Decimal(rng.randint(-200, 100)))
    if roll < 0.30:
        # Seconds within the minute window most of the time; sometimes hours (a new session lifts
        # a loss-limit halt).
        return "clock", rng.choice((rng.uniform(0, 45), rng.uniform(0, 45), rng.uniform(3600, 30 * 3600)))
    strategy, symbol = rng.choice(STRATEGIES), rng.choice(SYMBOLS)
    current = positions.get((strategy, symbol), 0)
    qty = rng.randint(1, 4)
    side = rng.choice((OrderSide.BUY, OrderSide.SELL))
    signed = qty if side is OrderSide.BUY else -qty
    reduces = current != 0 and (current > 0) != (signed > 0) and qty <= abs(current)
    effect = PositionEffect.CLOSE if reduces else PositionEffect.OPEN
    order = OrderRequest(ClientOrderId(f"o-{k}"), symbol, side, qty, effect)
    return "order", (order, OrderContext(strategy, symbol, TASTYTRADE, current, reduces, "signal"))


def test_same_decisions_and_reason_codes_as_the_live_engine(store: Store, settings: Settings) -> None:
    clock = Clock(datetime(2025, 6, 10, 14, 0, tzinfo=UTC))
    live = RiskEngine(store, settings, clock=clock)
    memory = MemoryRiskEngine(clock=clock)
    rng = random.Random(20250610)
    positions: dict[tuple[str, str], int] = {}
    reasons: dict[RiskReason, int] = {}
    for k in range(1500):
        kind, arg = _step(rng, k, positions)
        if kind == "limits":
            assert live.update_limits(arg) == memory.update_limits(arg)  # type: ignore[arg-type]
        elif kind == "state":
            scope, state = arg  # type: ignore[misc]
            live.set_state(scope, state, "test")
            memory.set_state(scope, state, "test")
        elif kind == "pnl":
            strategy, realized, unrealized = arg  # type: ignore[misc]
            breached = [(e.scope, e.limit, e.pnl) for e in live.on_pnl(strategy, realized, unrealized)]
            assert memory.on_pnl(strategy, realized, unrealized) == breached
        elif kind == "clock":
            clock.advance(seconds=arg)  # type: ignore[arg-type]
        else:
            order, ctx = arg  # type: ignore[misc]
            want = live.check_and_take(order, ctx)
            if k % 2:
                got = memory.check_and_take(order, ctx)
            else:  # the order manager's way: decide, then the claim takes the decision's slot
                got = memory(order, ctx)
                if got.slot is not None:
                    status, count = memory.take_slot(got.slot)
                    if status == -2:
                        got = memory.rate_limited(order, ctx, got, count)
            assert (got.allowed, got.reason, got.detail) == (want.allowed, want.reason, want.detail), (k, order, ctx)
            reasons[want.reason] = reasons.get(want.reason, 0) + 1
            if want.allowed:
                positions[(ctx.strategy, ctx.symbol)] = ctx.current_quantity + order.signed_quantity
        for scope in (GLOBAL_SCOPE, *STRATEGIES):
            assert memory.scope_state(scope).state is live.scope_state(scope).state
    # The sequence exercised every rule, so equality above covers each reason code.
    assert set(reasons) >= {RiskReason.OK, RiskReason.HALTED, RiskReason.REDUCING_ONLY, RiskReason.DAILY_LOSS_LIMIT,
                            RiskReason.MAX_POSITION, RiskReason.MAX_ORDER_QUANTITY, RiskReason.ORDER_RATE}, reasons
    assert len(memory.decisions) == sum(n for r, n in reasons.items() if r is not RiskReason.OK)


def test_rate_window_drops_entries_at_exactly_one_window_old(settings: Settings) -> None:
    # store/rate_window.py: ZREMRANGEBYSCORE -inf (now - window) drops an entry scored exactly
    # one window ago, so the order at t0 + 60 s is allowed again with a limit of 1.
    clock = Clock(datetime(2025, 6, 10, 14, 0, tzinfo=UTC))
    memory = MemoryRiskEngine(clock=clock)
    memory.update_limits({"max_orders_per_minute": 1})
    ctx = OrderContext("ema", "/MES", TASTYTRADE, 0, False, "signal")

    def order(k: int) -> OrderRequest:
        return OrderRequest(ClientOrderId(f"r-{k}"), "/MES", OrderSide.BUY, 1, PositionEffect.OPEN)

    assert memory.check_and_take(order(1), ctx).allowed
    clock.advance(seconds=59.999)
    denied = memory.check_and_take(order(2), ctx)
    assert denied.reason is RiskReason.ORDER_RATE and denied.detail.startswith("1 orders in the last minute")
    clock.advance(seconds=0.001)
    assert memory.check_and_take(order(3), ctx).allowed


def test_reused_orders_decide_as_the_live_engine_across_limit_changes(store: Store, settings: Settings) -> None:
    # The backtester reuses one order and context object per order shape, and with no trading
    # state or P&L ever set the in-memory engine computes each pair's decision once: a limit
    # change must still decide the next use of a pair anew.
    clock = Clock(datetime(2025, 6, 10, 14, 0, tzinfo=UTC))
    live = RiskEngine(store, settings, clock=clock)
    memory = MemoryRiskEngine(clock=clock)
    pool = [(OrderRequest(ClientOrderId(f"shape-{k}"), "/MES", side, qty, PositionEffect.OPEN),
             OrderContext("ema", "/MES", TASTYTRADE, current, False, "signal"))
            for k, (side, qty, current) in enumerate([(OrderSide.BUY, 1, 0), (OrderSide.SELL, 2, 0),
                                                      (OrderSide.BUY, 3, 1), (OrderSide.SELL, 1, -2)])]
    changes: list[dict[str, object]] = [{"max_position": 1}, {"max_position": None}, {"max_order_quantity": 1},
                                        {"max_order_quantity": None}, {"max_orders_per_minute": 3},
                                        {"max_orders_per_minute": 30}]
    rng = random.Random(7)
    reasons: set[RiskReason] = set()
    for k in range(600):
        if k % 40 == 20:  # each limit switched on and off again, in turn
            payload = changes[(k // 40) % len(changes)]
            assert live.update_limits(payload) == memory.update_limits(payload)
        clock.advance(seconds=rng.uniform(0, 8))
        order, ctx = rng.choice(pool)
        want, got = live.check_and_take(order, ctx), memory.check_and_take(order, ctx)
        assert (got.allowed, got.reason, got.detail) == (want.allowed, want.reason, want.detail), (k, order, ctx)
        reasons.add(want.reason)
    assert reasons >= {RiskReason.OK, RiskReason.MAX_POSITION, RiskReason.MAX_ORDER_QUANTITY, RiskReason.ORDER_RATE}
