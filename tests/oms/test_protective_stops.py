"""Protective stops resting at the broker (the paper account rests stops the way a broker does:
they fill when a trade crosses them). One per lane, for the whole position; moved by cancel and
replace; cancelled before any order of the lane, so the broker's stop and the exit never both
fill; never blocking the lane; ignored by reconciliation's in-flight rule."""
from __future__ import annotations

import time
import unittest.mock
from decimal import Decimal

from domain.orders import SCHWAB, TASTYTRADE, BrokerName, OrderState
from oms.models import TargetOrder, TargetStatus
from oms.reconcile import reconcile
from store.redis_store import Store
from tests.oms.helpers import FakeAdapter, make_om, paper_pair

NOW = time.time_ns()


def T(qty: int, ts: int) -> TargetOrder:
    return TargetOrder("ema", "NVDA", TASTYTRADE, qty, NOW + ts, "signal", "t")


def _setup(store: Store) -> tuple[object, object, dict[str, float]]:
    prices = {"NVDA": 180.0}
    brokers = paper_pair(store, prices)
    return make_om(store, brokers), brokers[TASTYTRADE], prices


def test_a_resting_stop_protects_the_position_and_fills_when_crossed(store: Store) -> None:
    om, paper, prices = _setup(store)
    assert om.move_to_target(T(5, 1)).status is TargetStatus.FILLED
    stop = om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2)
    assert stop is not None and stop.state is OrderState.ACCEPTED and stop.leg == "stop"
    assert (stop.side.value, stop.quantity, stop.stop_price) == ("SELL", 5, Decimal("175"))
    assert [u.client_order_id for u in paper.open_orders()] == [stop.client_order_id]
    assert om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 3) == stop  # unchanged: nothing sent
    for update in paper.on_trade("NVDA", 176.0, NOW + 4):  # above the stop: rests
        om.on_order_update(TASTYTRADE, update)
    assert om.position("ema", "NVDA", TASTYTRADE).quantity == 5
    for update in paper.on_trade("NVDA", 174.5, NOW + 5):  # through it: the broker's stop fills
        om.on_order_update(TASTYTRADE, update)
    assert om.position("ema", "NVDA", TASTYTRADE).quantity == 0
    assert om.order(stop.client_order_id).state is OrderState.FILLED
    # The strategy's own stop fires too on that trade: its FLAT finds the book flat, sends nothing.
    assert om.move_to_target(T(0, 6)).status is TargetStatus.NOOP
    assert {p.key: p.quantity for p in paper.positions()} == {}


def test_an_exit_cancels_the_resting_stop_first_so_only_one_fills(store: Store) -> None:
    om, paper, prices = _setup(store)
    om.move_to_target(T(5, 1))
    stop = om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2)
    out = om.move_to_target(T(-5, 3))  # a reversal: the stop is cancelled, then close and open
    assert out.status is TargetStatus.FILLED and om.position("ema", "NVDA", TASTYTRADE).quantity == -5
    assert om.order(stop.client_order_id).state is OrderState.CANCELLED
    assert paper.open_orders() == []
    for update in paper.on_trade("NVDA", 170.0, NOW + 4):  # the old level: nothing left to fill
        om.on_order_update(TASTYTRADE, update)
    assert om.position("ema", "NVDA", TASTYTRADE).quantity == -5


def test_moving_the_stop_replaces_it_and_a_flat_lane_keeps_none(store: Store) -> None:
    om, paper, prices = _setup(store)
    om.move_to_target(T(5, 1))
    first = om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2)
    moved = om.protect("ema", "NVDA", TASTYTRADE, Decimal("177.5"), NOW + 3)  # a trailing stop moved up
    assert om.order(first.client_order_id).state is OrderState.CANCELLED
    assert moved.stop_price == Decimal("177.5") and [u.client_order_id for u in paper.open_orders()] == [
        moved.client_order_id]
    assert om.move_to_target(T(5, 4)).status is TargetStatus.NOOP  # at target: the stop stays
    assert om.order(moved.client_order_id).state is OrderState.ACCEPTED
    assert om.protect("ema", "NVDA", TASTYTRADE, None, NOW + 5) is None  # no stop wanted any more
    assert om.order(moved.client_order_id).state is OrderState.CANCELLED and paper.open_orders() == []


def test_a_resting_stop_never_blocks_the_lane_nor_hides_a_mismatch(store: Store) -> None:
    om, paper, prices = _setup(store)
    om.move_to_target(T(5, 1))
    om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2)
    assert reconcile(om, settle=lambda: None).ok
    # The book says 5; the broker (someone sold by hand) holds 0: a real mismatch, which the
    # resting SELL 5 stop must not explain away as "in flight".
    from domain.orders import ClientOrderId, OrderRequest, OrderSide, OrderType, PositionEffect
    paper.place_order(OrderRequest(ClientOrderId("by-hand"), "NVDA", OrderSide.SELL, 5, PositionEffect.CLOSE,
                                   OrderType.MARKET))
    report = reconcile(om, settle=lambda: None)
    (mismatch,) = report.broker(TASTYTRADE).mismatches
    assert (mismatch.key, mismatch.broker_quantity, mismatch.oms_quantity) == ("NVDA", 0, 5)


def test_an_adapter_without_resting_stops_keeps_the_local_stop_only(store: Store) -> None:
    fake = FakeAdapter(BrokerName(TASTYTRADE), FakeAdapter.fill_at(Decimal("180")))
    om = make_om(store, {TASTYTRADE: fake})
    om.move_to_target(T(5, 1))
    assert om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2) is None
    assert len(fake.placed) == 1


def test_no_resting_stop_while_another_strategy_holds_the_symbol_at_the_account(store: Store) -> None:
    # A resting SELL stop of one strategy could meet an account another strategy has made flat or
    # short, and open a short there: shared symbols keep the strategies' own stops only.
    om, paper, prices = _setup(store)
    om.move_to_target(T(5, 1))
    first = om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2)
    assert first is not None and first.state is OrderState.ACCEPTED
    om.move_to_target(TargetOrder("supertrend", "NVDA", TASTYTRADE, 2, NOW + 3, "signal", "t"))
    assert om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 4) is None  # asked again: cancelled
    assert om.order(first.client_order_id).state is OrderState.CANCELLED and paper.open_orders() == []
    assert om.protect("supertrend", "NVDA", TASTYTRADE, Decimal("176"), NOW + 5) is None


def test_an_unchanged_stop_costs_one_round_trip_and_lanes_read_every_broker_at_once(store: Store) -> None:
    """Protect is asked on every housekeeping tick of a held position: when nothing changed it
    reads position, resting stop and lanes in one round trip and sends nothing; `lanes` answers
    for several brokers in one round trip what `lane` answers for one."""
    om, paper, prices = _setup(store)
    assert om.move_to_target(T(5, 1)).status is TargetStatus.FILLED
    stop = om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 2)
    calls: list[str] = []
    real_execute = type(store.redis.pipeline()).execute

    def counting_execute(pipe, *args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append("pipeline")
        return real_execute(pipe, *args, **kwargs)

    with unittest.mock.patch.object(type(store.redis.pipeline()), "execute", counting_execute):
        assert om.protect("ema", "NVDA", TASTYTRADE, Decimal("175"), NOW + 3) == stop
        assert len(calls) == 1
        views = om.lanes("ema", "NVDA", [TASTYTRADE, SCHWAB])
        assert len(calls) == 2
    assert views[TASTYTRADE] == om.lane("ema", "NVDA", TASTYTRADE)
    assert views[TASTYTRADE].position.quantity == 5 and not views[TASTYTRADE].busy
    assert views[SCHWAB].position.quantity == 0
    assert [u.client_order_id for u in paper.open_orders()] == [stop.client_order_id]
