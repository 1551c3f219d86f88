"""Reconciliation while orders keep filling: what moves during the reads is in flight, and a
difference is a mismatch only when it holds on a second, confirmation read."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from domain.orders import SCHWAB, BrokerOrderId, BrokerPosition, Fill, OrderState, OrderUpdate
from oms.models import TargetOrder, TargetStatus
from oms.reconcile import reconcile
from tests.oms.helpers import CLOCK, FakeAdapter, make_om, paper_pair

BASE_NS = time.time_ns()


def T(qty: int, ts: int, symbol: str = "/MES", strategy: str = "ema") -> TargetOrder:
    return TargetOrder(strategy, symbol, SCHWAB, qty, BASE_NS + ts * 1_000_000, "signal", "test")


def _accepted(order):  # a working order: the broker took it, nothing filled yet
    return OrderUpdate(order.client_order_id, BrokerOrderId("B-" + order.client_order_id), OrderState.ACCEPTED)


def _filled(coid: str, qty: int) -> OrderUpdate:
    fill = Fill(coid, BrokerOrderId("B-" + coid), "F-" + coid, qty, Decimal("100"), Decimal("0"), CLOCK())
    return OrderUpdate(coid, BrokerOrderId("B-" + coid), OrderState.FILLED, qty, Decimal("100"), None, (fill,))


def _no_settle():
    raise AssertionError("nothing disagreed: there must be no confirmation read")


def test_an_order_filled_while_the_broker_is_read_is_not_a_mismatch(store, monkeypatch):
    # The paper broker fills a market order and the OMS books it in one atomic write; before,
    # reconciliation compared a book read before that write with positions read after it.
    adapters = paper_pair(store, {"/MES": 6000.0})
    om = make_om(store, adapters)
    assert om.move_to_target(T(1, 1)).ok
    read_positions = adapters[SCHWAB].positions

    def positions_while_a_strategy_trades():
        assert om.move_to_target(T(3, 2)).status is TargetStatus.FILLED  # lands between the two book reads
        return read_positions()

    monkeypatch.setattr(adapters[SCHWAB], "positions", positions_while_a_strategy_trades)
    report = reconcile(om, settle=_no_settle)
    assert report.ok and report.affected == ()
    schwab = report.broker(SCHWAB)
    assert schwab is not None and schwab.mismatches == () and schwab.unconfirmed == ()
    assert om.position("ema", "/MES", SCHWAB).quantity == 3 and read_positions()[0].quantity == 3


def test_a_fill_the_broker_has_and_the_oms_has_not_booked_yet_is_in_flight(store):
    # As with a resting paper order: the account fills first, the OMS books it right after.
    fake = FakeAdapter(SCHWAB, on_place=_accepted)
    om = make_om(store, {SCHWAB: fake})
    working = om.move_to_target(T(2, 1)).orders[0]
    fake.broker_positions = [BrokerPosition("/MES", 2, Decimal("100"))]
    report = reconcile(om)
    schwab = report.broker(SCHWAB)
    assert report.ok and schwab is not None and schwab.mismatches == ()
    (moving,) = schwab.in_flight
    assert (moving.key, moving.broker_quantity, moving.oms_quantity) == ("/MES", 2, 0)
    assert working.client_order_id in moving.why
    assert not schwab.agrees("/MES")  # in flight is not agreement: no halt lifts on it

    # A working order explains at most its unfilled remainder, in its own direction.
    fake.broker_positions = [BrokerPosition("/MES", 5, Decimal("100"))]
    (mismatch,) = reconcile(om).broker(SCHWAB).mismatches  # type: ignore[union-attr]
    assert (mismatch.broker_quantity, mismatch.oms_quantity) == (5, 0)
    fake.broker_positions = [BrokerPosition("/MES", -2, Decimal("100"))]
    assert reconcile(om).broker(SCHWAB).mismatches[0].broker_quantity == -2  # type: ignore[union-attr]

    fake.broker_positions = [BrokerPosition("/MES", 2, Decimal("100"))]
    om.on_order_update(SCHWAB, _filled(working.client_order_id, 2))
    fake.broker_orders[working.client_order_id] = _filled(working.client_order_id, 2)
    settled = reconcile(om, settle=_no_settle)
    assert settled.ok and settled.broker(SCHWAB).agrees("/MES")  # type: ignore[union-attr]


def test_a_difference_that_goes_away_by_the_confirmation_read_is_no_mismatch(store):
    # A live broker's positions can trail the fill the OMS already booked.
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    assert om.move_to_target(T(1, 1)).status is TargetStatus.FILLED
    settles: list[int] = []

    def settle():
        settles.append(1)
        fake.broker_positions = [BrokerPosition("/MES", 1, Decimal("100"))]  # the broker catches up

    report = reconcile(om, settle=settle)
    assert settles == [1] and report.ok and report.affected == ()
    schwab = report.broker(SCHWAB)
    assert schwab is not None and schwab.mismatches == () and schwab.agrees("/MES")
    assert [(m.key, m.broker_quantity, m.oms_quantity) for m in schwab.settled] == [("/MES", 0, 1)]
    assert report.to_json()["brokers"][0]["settled"][0]["difference"] == -1


def test_a_difference_that_holds_on_both_reads_is_a_mismatch(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    assert om.move_to_target(T(1, 1)).ok
    fake.broker_positions = [BrokerPosition("/MES", 4, Decimal("100"))]  # a manual order at the broker
    settles: list[int] = []
    report = reconcile(om, settle=lambda: settles.append(1))
    assert settles == [1] and not report.ok and report.affected == (("ema", "/MES"),)
    (mismatch,) = report.broker(SCHWAB).mismatches  # type: ignore[union-attr]
    assert (mismatch.key, mismatch.broker_quantity, mismatch.oms_quantity) == ("/MES", 4, 1)


def test_a_difference_seen_only_on_the_confirmation_read_waits_for_the_next_reconciliation(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    fake.broker_positions = [BrokerPosition("/MES", 1, Decimal("100"))]

    def settle():  # the /MES difference settles; a new one appears at NVDA meanwhile
        assert om.move_to_target(T(1, 1)).ok
        fake.broker_positions = [BrokerPosition("/MES", 1, Decimal("100")), BrokerPosition("NVDA", 7, Decimal("1"))]

    report = reconcile(om, settle=settle)
    schwab = report.broker(SCHWAB)
    assert report.ok and schwab is not None and schwab.mismatches == ()
    assert [m.key for m in schwab.unconfirmed] == ["NVDA"] and [m.key for m in schwab.settled] == ["/MES"]
    assert not schwab.agrees("NVDA") and schwab.agrees("/MES")


@pytest.mark.parametrize("broker_fails", [True, False])
def test_an_unreadable_broker_is_reported_not_compared(store, broker_fails):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    assert om.move_to_target(T(1, 1)).ok
    if broker_fails:
        def down():
            raise ConnectionError("broker down")
        fake.positions = down  # type: ignore[method-assign]
    else:
        fake.broker_positions = [BrokerPosition("/MES", 1, Decimal("100"))]
    schwab = reconcile(om, settle=_no_settle).broker(SCHWAB)
    assert schwab is not None and schwab.ok is (not broker_fails) and schwab.agrees("/MES") is (not broker_fails)
    assert schwab.error == ("ConnectionError" if broker_fails else "")
