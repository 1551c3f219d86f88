"""One atomic claim per order: the duplicate check (the order record), the orders-per-minute slot
and the allowed decision's audit record are the order manager's single Redis call, so a crash
leaves either a recorded order or nothing."""
from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import pytest

from domain.orders import TASTYTRADE, OrderRequest, OrderSide, PositionEffect, client_order_id
from domain.risk import OrderContext, RiskReason
from oms.models import TargetOrder, TargetStatus
from oms.order_manager import OrderManager
from risk.engine import RiskEngine
from store.redis_store import Store
from tests.oms.helpers import FakeAdapter
from tests.risk.conftest import Clock, ctx, order


def _audit_stream(store: Store) -> list[dict[str, Any]]:
    return [json.loads(fields["json"]) for _id, fields in store.redis.xrange(store.key("audit"))]


def _audit_file(settings: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (settings.log_dir / "audit.log").read_text().splitlines()]


def _oms(store: Store, engine: RiskEngine) -> tuple[OrderManager, FakeAdapter]:
    adapter = FakeAdapter(TASTYTRADE, FakeAdapter.fill_at(Decimal("5000")))
    return OrderManager(store, {TASTYTRADE: adapter}, pre_trade_check=engine), adapter


def _target(qty: int, ts: int, reason: str = "signal", symbol: str = "/MES") -> TargetOrder:
    return TargetOrder("ema", symbol, TASTYTRADE, qty, ts, reason, "test")


def test_an_allowed_order_is_audited_once_in_the_stream_and_once_in_the_file(
        engine: RiskEngine, store: Store, settings: Any) -> None:
    om, _ = _oms(store, engine)
    result = om.move_to_target(_target(1, 1))
    coid = result.orders[0].client_order_id
    streamed = [e for e in _audit_stream(store) if e.get("client_order_id") == coid]
    filed = [e for e in _audit_file(settings) if e.get("client_order_id") == coid]
    assert len(streamed) == 1 and streamed == filed
    assert streamed[0]["kind"] == "risk_decision" and streamed[0]["allowed"] == "1"


def test_a_check_whose_claim_never_ran_leaves_the_intent_to_be_planned_again(engine: RiskEngine,
                                                                             store: Store) -> None:
    # The old order path recorded the id as "seen" in the risk check, before the order manager's
    # claim: a crash between the two made the replayed intent come back as a duplicate although
    # nothing was sent. Here the check runs (decided, allowed) and the process "dies" before the
    # claim: the replay must send the order.
    om, adapter = _oms(store, engine)
    t = _target(1, 42)
    coid = client_order_id("ema", "/MES", 42, "open", TASTYTRADE)
    assert engine(OrderRequest(coid, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN),
                  OrderContext("ema", "/MES", TASTYTRADE, 0, False, "signal")).allowed
    replay = om.move_to_target(t)
    assert replay.status is TargetStatus.FILLED and [o.client_order_id for o in adapter.placed] == [coid]
    again = om.move_to_target(t)  # and the claim is the dedupe from then on
    assert again.status is TargetStatus.DUPLICATE and len(adapter.placed) == 1


def test_the_rate_slot_is_taken_by_the_claim_and_a_full_window_denies(engine: RiskEngine, store: Store,
                                                                      clock: Clock) -> None:
    engine.update_limits({"max_orders_per_minute": 2})
    om, adapter = _oms(store, engine)
    assert om.move_to_target(_target(1, 1)).status is TargetStatus.FILLED
    assert om.move_to_target(_target(1, 1)).status is TargetStatus.DUPLICATE  # a duplicate takes no slot
    assert om.move_to_target(_target(2, 2)).status is TargetStatus.FILLED
    denied = om.move_to_target(_target(3, 3))
    assert denied.status is TargetStatus.DENIED and "order_rate" in denied.reason
    assert engine.recent_decisions()[0]["reason"] == RiskReason.ORDER_RATE.value
    assert engine.usage()["orders_per_minute"]["tickers"]["ema:/MES"] == 2
    assert len(adapter.placed) == 2
    # A stop exit is never refused by the guard, and takes no slot.
    out = om.move_to_target(_target(0, 4, reason="stop"))
    assert out.status is TargetStatus.FILLED and out.quantity == 0
    assert engine.usage()["orders_per_minute"]["tickers"]["ema:/MES"] == 2


@pytest.mark.parametrize("reason", ["stop", "target", "0dte_close", "kill_switch", "signal"])
def test_a_protective_exit_passes_a_halt_and_an_entry_does_not(engine: RiskEngine, store: Store,
                                                              reason: str) -> None:
    om, _ = _oms(store, engine)
    assert om.move_to_target(_target(1, 1)).quantity == 1
    engine.set_state("global", "HALTED", "operator halt")
    assert om.move_to_target(_target(2, 2)).status is TargetStatus.DENIED
    out = om.move_to_target(_target(0, 3, reason=reason))
    assert out.status is TargetStatus.FILLED and out.quantity == 0


def test_no_risk_key_stands_for_an_order_that_was_not_recorded(engine: RiskEngine, store: Store) -> None:
    # Only the order manager's claim writes on the order path: no "seen" memory in risk.
    engine(order(coid="lonely"), ctx())
    assert not [k for k in store.redis.keys(store.key("risk", "*")) if "lonely" in k]
