"""Futures are booked by contract month. A position held into its roll date (second Thursday of
the expiry month, New York days) is closed in the expiring month and reopened in the new front
month; positions in two months never collapse into one key. On the old path the book keyed every
month as "/MES" and an order after the roll "closed" the new contract, leaving a calendar spread."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from config.symbology import contract_key_at, roll_date
from domain.intents import IntentReason, PositionTarget
from domain.market import Trade
from domain.orders import TASTYTRADE, BrokerName
from oms.models import TargetOrder, TargetStatus
from oms.reconcile import reconcile
from store.redis_store import Store
from tests.engine.conftest import build_rig
from tests.oms.helpers import make_om, paper_pair

NY = ZoneInfo("America/New_York")
ROLL = roll_date(2026, 12)  # Thursday 2026-12-10


def _ns(day: int, hour: int) -> int:
    return int(datetime(2026, 12, day, hour, 0, tzinfo=NY).timestamp()) * 1_000_000_000


def test_the_front_month_changes_on_the_roll_date_in_new_york_days() -> None:
    assert ROLL.day == 10
    assert contract_key_at("/MES", _ns(9, 23)) == "/MESZ26"
    assert contract_key_at("/MES", _ns(10, 0) + 1) == "/MESH27"
    assert contract_key_at("NVDA", _ns(10, 12)) is None


def test_a_target_in_the_new_month_closes_the_old_month_first_then_opens(store: Store) -> None:
    paper = paper_pair(store, {"/MES": 6000.0})
    om = make_om(store, paper)
    t = lambda qty, ts, month: TargetOrder("ema", "/MES", TASTYTRADE, qty, ts, "signal", "t", contract=month)  # noqa: E731
    assert om.move_to_target(t(2, _ns(9, 12), "/MESZ26")).status is TargetStatus.FILLED
    assert om.position("ema", "/MES", TASTYTRADE).key == "/MESZ26"
    rolled = om.move_to_target(t(2, _ns(10, 12), "/MESH27"))
    assert rolled.status is TargetStatus.FILLED
    assert [(o.leg, o.position_key, o.quantity) for o in rolled.orders] == [("close", "/MESZ26", 2), ("open", "/MESH27", 2)]
    held = {p.key: p.quantity for p in paper[TASTYTRADE].positions()}
    assert held == {"/MESH27": 2}  # no calendar spread left behind
    assert om.position("ema", "/MES", TASTYTRADE).key == "/MESH27"
    assert reconcile(om, settle=lambda: None).ok


def test_two_months_at_one_account_are_reconciled_apart(store: Store) -> None:
    paper = paper_pair(store, {"/MES": 6000.0})
    om = make_om(store, paper)
    om.move_to_target(TargetOrder("ema", "/MES", TASTYTRADE, 1, _ns(9, 12), "signal", "t", contract="/MESZ26"))
    om.move_to_target(TargetOrder("supertrend", "/MES", TASTYTRADE, -1, _ns(10, 12), "signal", "t",
                                  contract="/MESH27"))
    held = {p.key: p.quantity for p in paper[TASTYTRADE].positions()}
    assert held == {"/MESZ26": 1, "/MESH27": -1}
    assert reconcile(om, settle=lambda: None).ok  # one key per month: +1 and -1 do not net to "flat /MES"


def test_a_position_booked_before_contract_keys_is_not_rolled_by_an_upgrade(store: Store) -> None:
    paper = paper_pair(store, {"/MES": 6000.0})
    om = make_om(store, paper)
    om.move_to_target(TargetOrder("ema", "/MES", TASTYTRADE, 1, _ns(9, 12), "signal", "t"))  # key "/MES"
    again = om.move_to_target(TargetOrder("ema", "/MES", TASTYTRADE, 1, _ns(9, 13), "signal", "t", contract="/MESZ26"))
    assert again.status is TargetStatus.NOOP and om.position("ema", "/MES", TASTYTRADE).key == "/MES"
    out = om.move_to_target(TargetOrder("ema", "/MES", TASTYTRADE, 0, _ns(9, 14), "signal", "t", contract="/MESZ26"))
    assert out.quantity == 0 and {p.key: p.quantity for p in paper[TASTYTRADE].positions()} == {}


def test_a_running_strategy_rolls_its_position_at_the_roll_date(real_store: Store, replay_settings: Any) -> None:
    clock = {"now": _ns(9, 12)}
    rig = build_rig(real_store, replay_settings, time_ns=lambda: clock["now"])
    try:
        rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                       tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
        rig.supervisor.start_strategy("ema")
        runner = rig.ready_runner("ema", "/MES")
        rig.push([Trade("/MES", clock["now"], 6000.0, 1)])
        runner.force_target(PositionTarget.LONG, IntentReason.MANUAL, "entry", 6000.0)
        assert rig.orders.position("ema", "/MES", TASTYTRADE).key == "/MESZ26"
        runner._housekeeping()  # the day before the roll: nothing to do
        assert rig.orders.position("ema", "/MES", BrokerName(TASTYTRADE)).key == "/MESZ26"
        clock["now"] = _ns(10, 10)
        rig.push([Trade("/MES", clock["now"], 6010.0, 1)])
        rig.wait_idle("ema", "/MES")
        rig.wait_idle("ema", "/MES")  # the thread evaluated the trade: the market's clock is on the roll date
        with runner._lock:
            runner._housekeeping()
        pos = rig.orders.position("ema", "/MES", TASTYTRADE)
        assert (pos.key, pos.quantity) == ("/MESH27", 1)
        assert {p.key: p.quantity for p in rig.paper[TASTYTRADE].positions()} == {"/MESH27": 1}
        assert runner.strategy.target is PositionTarget.LONG
        rolls = [o for o in rig.orders.orders(strategy="ema") if o.intent_reason == "roll"]
        assert sorted((o.leg, o.position_key) for o in rolls) == [("close", "/MESZ26"), ("open", "/MESH27")]
        assert all(o.avg_fill_price == Decimal("6010") for o in rolls)
    finally:
        rig.supervisor.shutdown()
