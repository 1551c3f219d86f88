"""Order manager scenarios: dedupe, reversal ordering, rejections, unknown outcome, fan-out, restart, risk, threads."""
from __future__ import annotations

import threading
import time
from decimal import Decimal

from brokers.errors import AuthenticationRequired, OrderOutcomeUnknown, OrderRejected
from domain.orders import SCHWAB, TASTYTRADE, OrderRequest, OrderState, OrderUpdate
from domain.risk import OrderContext, RiskDecision, RiskReason
from oms.models import TargetOrder, TargetStatus
from oms.reconcile import reconcile
from tests.oms.helpers import FakeAdapter, paper_pair
from tests.oms.helpers import make_om as _make_om


# Intents are stamped around the moment the tests run (the order manager's clock is the wall
# clock): a reversal's open leg follows its close only while its signal is current.
BASE_NS = time.time_ns()


class _Clock:
    """The order manager's clock here: it starts at BASE_NS and moves 1 us a reading, so however
    long a loaded machine takes to reach a test, a signal stamped around BASE_NS is current."""

    def __init__(self) -> None:
        self.now = BASE_NS

    def __call__(self) -> int:
        self.now += 1_000
        return self.now


OMS_CLOCK = _Clock()  # one for every order manager: a "restarted" one reads on from the same time


def make_om(store, adapters, **kw):  # type: ignore[no-untyped-def]
    kw.setdefault("clock", OMS_CLOCK)
    return _make_om(store, adapters, **kw)


def T(qty: int, ts: int, broker=SCHWAB, symbol="/MES", strategy="ema") -> TargetOrder:
    return TargetOrder(strategy, symbol, broker, qty, BASE_NS + ts * 1_000_000, "signal", "test")


def test_duplicate_intent_is_not_resent(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    first = om.move_to_target(T(2, 100))
    again = om.move_to_target(T(2, 100))
    assert first.status is TargetStatus.FILLED and again.status is TargetStatus.DUPLICATE
    assert len(fake.placed) == 1 and again.orders[0].client_order_id == first.orders[0].client_order_id
    assert om.position("ema", "/MES", SCHWAB).quantity == 2
    # a stale replay after the position moved on never re-plans
    om.move_to_target(T(5, 200))
    assert om.move_to_target(T(2, 100)).status is TargetStatus.DUPLICATE
    assert om.position("ema", "/MES", SCHWAB).quantity == 5 and len(fake.placed) == 2


def test_reversal_sends_close_then_open_after_fill(store):
    prices = {"/MES": 6000.0}
    adapters = paper_pair(store, prices)
    om = make_om(store, adapters)
    om.move_to_target(T(2, 1))
    r = om.move_to_target(T(-3, 2))
    close, open_ = r.orders
    assert (close.leg, close.side.value, close.quantity) == ("close", "SELL", 2)
    assert (open_.leg, open_.side.value, open_.quantity) == ("open", "SELL", 3)
    assert close.updated_ns <= open_.created_ns
    assert om.position("ema", "/MES", SCHWAB).quantity == -3
    journal = [e for e in reversed(om.journal(100)) if e.get("event") == "transition"]
    first_open = next(i for i, e in enumerate(journal) if e["client_order_id"] == open_.client_order_id)
    close_filled = next(i for i, e in enumerate(journal)
                        if e["client_order_id"] == close.client_order_id and e["state"] == "FILLED")
    assert close_filled < first_open


def test_live_reversal_waits_for_close_fill_then_poll_sends_open(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(1, 1))
    fake.on_place = lambda o: OrderUpdate(o.client_order_id, None, OrderState.ACCEPTED)  # type: ignore[assignment]
    r = om.move_to_target(T(-1, 2))
    assert r.status is TargetStatus.PENDING_OPEN and len(fake.placed) == 2  # only the close went out
    assert om.poll_open_orders() == [] and len(fake.placed) == 2
    close_id = r.orders[0].client_order_id
    fake.broker_orders[close_id] = FakeAdapter.fill_at(Decimal("101"))(fake.placed[-1])
    fake.on_place = FakeAdapter.fill_at(Decimal("101"))
    changed = om.poll_open_orders()
    assert [o.leg for o in changed] == ["close", "open"] and len(fake.placed) == 3
    assert om.position("ema", "/MES", SCHWAB).quantity == -1
    om.poll_open_orders()
    assert len(fake.placed) == 3


def test_rejection_leaves_position_unchanged(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(1, 1))

    def reject(o: OrderRequest) -> OrderUpdate:
        raise OrderRejected("no", reason="insufficient buying power")
    fake.on_place = reject  # type: ignore[assignment]
    r = om.move_to_target(T(3, 2))
    assert r.status is TargetStatus.REJECTED and "insufficient buying power" in r.reason
    assert om.position("ema", "/MES", SCHWAB).quantity == 1 and r.orders[0].state is OrderState.REJECTED


def test_timeout_is_unknown_not_resent_and_reconciliation_resolves(store):
    fake = FakeAdapter(SCHWAB)

    def timeout(o: OrderRequest) -> OrderUpdate:
        raise OrderOutcomeUnknown("read timeout")
    fake.on_place = timeout  # type: ignore[assignment]
    om = make_om(store, {SCHWAB: fake})
    r = om.move_to_target(T(2, 1))
    assert r.status is TargetStatus.UNKNOWN and r.orders[0].state is OrderState.UNKNOWN
    assert om.move_to_target(T(2, 1)).status is TargetStatus.DUPLICATE  # retry: not resent
    assert om.move_to_target(T(4, 2)).status is TargetStatus.BLOCKED  # lane blocked until resolved
    assert len(fake.placed) == 1
    # the order actually reached the broker and filled
    fake.broker_orders[r.orders[0].client_order_id] = FakeAdapter.fill_at(Decimal("99"))(fake.placed[0])
    report = reconcile(om)
    assert report.resolved_unknown == (r.orders[0].client_order_id,) and report.still_unknown == ()
    assert om.order(r.orders[0].client_order_id).state is OrderState.FILLED
    assert om.position("ema", "/MES", SCHWAB).quantity == 2 and len(fake.placed) == 1


def test_unknown_not_found_stays_unknown_blocks_the_lane_and_a_late_fill_is_recorded(store):
    # A live broker's "not found" is no proof the order never arrived (a lag, a search gap): the
    # old order manager wrote such an order off as REJECTED after 30 s, and when it had filled the
    # book was wrong. It stays UNKNOWN, the lane refuses new intents, and the broker's later
    # answer (filled) is what gets recorded.
    def timeout(o: OrderRequest) -> OrderUpdate:
        raise OrderOutcomeUnknown("dropped")
    fake = FakeAdapter(SCHWAB, timeout)
    om = make_om(store, {SCHWAB: fake}, not_found_grace_s=0)
    r = om.move_to_target(T(1, 1))
    assert r.status is TargetStatus.UNKNOWN
    fake.broker_orders.clear()  # the broker's search does not show it (yet)
    assert om.resolve_unknown() == [] and om.recover() == []
    coid = r.orders[0].client_order_id
    assert om.order(coid).state is OrderState.UNKNOWN
    blocked = om.move_to_target(T(0, 2))
    assert blocked.status is TargetStatus.BLOCKED and len(fake.placed) == 1
    fake.broker_orders[coid] = FakeAdapter.fill_at(Decimal("101"))(fake.placed[0])  # it did fill
    (resolved,) = om.resolve_unknown()
    assert resolved.state is OrderState.FILLED and om.position("ema", "/MES", SCHWAB).quantity == 1
    fake.on_place = FakeAdapter.fill_at(Decimal("102"))
    assert om.move_to_target(T(0, 3)).quantity == 0 and len(fake.placed) == 2  # planned from the right book


def test_an_operator_resolves_an_unknown_order_and_bad_resolutions_change_nothing(store):
    def timeout(o: OrderRequest) -> OrderUpdate:
        raise OrderOutcomeUnknown("dropped")
    fake = FakeAdapter(SCHWAB, timeout)
    om = make_om(store, {SCHWAB: fake}, not_found_grace_s=0)
    coid = om.move_to_target(T(2, 1)).orders[0].client_order_id
    fake.broker_orders.clear()
    for bad in ({"state": OrderState.FILLED, "filled_quantity": 1, "avg_fill_price": Decimal("100")},
                {"state": OrderState.FILLED, "filled_quantity": 2},
                {"state": OrderState.REJECTED, "filled_quantity": 1, "avg_fill_price": Decimal("100")},
                {"state": OrderState.ACCEPTED}):
        try:
            om.resolve_by_operator(coid, actor="ops@example.com", **bad)  # type: ignore[arg-type]
        except ValueError:
            pass
        else:
            raise AssertionError(f"accepted {bad}")
        assert om.order(coid).state is OrderState.UNKNOWN
    done = om.resolve_by_operator(coid, OrderState.FILLED, 2, Decimal("100.25"), actor="ops@example.com",
                                  note="broker statement shows the fill")
    assert done.state is OrderState.FILLED and "ops@example.com" in done.reason
    pos = om.position("ema", "/MES", SCHWAB)
    assert pos.quantity == 2 and pos.avg_price == Decimal("100.25")
    assert any(e.get("event") == "order_resolved" and e.get("client_order_id") == coid for e in om.journal(20))
    try:
        om.resolve_by_operator(coid, OrderState.CANCELLED, actor="ops@example.com")
    except ValueError:
        pass
    else:
        raise AssertionError("a FILLED order was resolved again")


def test_paper_lookup_is_authoritative_a_claimed_order_it_never_got_is_rejected(store):
    brokers = paper_pair(store, {"/MES": 6000.0})
    om = make_om(store, brokers, not_found_grace_s=0)
    paper = brokers[SCHWAB]
    # The process died after the claim, before the paper account saw the order.
    original = paper.place_then
    paper.place_then = lambda o, then: (_ for _ in ()).throw(SystemExit())  # type: ignore[method-assign]
    paper.place_with_claim = lambda o, then, first: None  # type: ignore[method-assign]
    try:
        om.move_to_target(T(1, 1))
    except SystemExit:
        pass
    paper.place_then = original  # type: ignore[method-assign]
    (rec,) = om.orders()
    assert rec.state is OrderState.SUBMITTED
    om.recover()
    assert om.order(rec.client_order_id).state is OrderState.REJECTED
    assert om.move_to_target(T(1, 2)).status is TargetStatus.FILLED  # planned again, sent once


def test_one_broker_failing_never_blocks_the_other(store):
    def boom(o: OrderRequest) -> OrderUpdate:
        raise RuntimeError("socket exploded")
    bad, good = FakeAdapter(SCHWAB, boom), FakeAdapter(TASTYTRADE)
    om = make_om(store, {SCHWAB: bad, TASTYTRADE: good})
    results = om.move_all([T(1, 1, SCHWAB), T(1, 1, TASTYTRADE)])
    assert [r.status for r in results] == [TargetStatus.UNKNOWN, TargetStatus.FILLED]
    assert om.position("ema", "/MES", TASTYTRADE).quantity == 1


def test_authentication_required_pauses_broker(store):
    def auth(o: OrderRequest) -> OrderUpdate:
        raise AuthenticationRequired("refresh token expired")
    fake = FakeAdapter(SCHWAB, auth)
    om = make_om(store, {SCHWAB: fake})
    r = om.move_to_target(T(1, 1))
    assert r.status is TargetStatus.PAUSED and SCHWAB in om.paused_brokers()
    r2 = om.move_to_target(T(1, 2))
    assert r2.status is TargetStatus.PAUSED and len(fake.placed) == 1  # paused: not even sent
    om.unpause_broker(SCHWAB)
    fake.on_place = FakeAdapter.fill_at(Decimal("1"))
    assert om.move_to_target(T(1, 3)).status is TargetStatus.FILLED


def test_restart_mid_reversal_resumes_without_duplicate(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(2, 1))

    class Crash(BaseException):
        pass
    calls = {"n": 0}

    def crash_on_open(o: OrderRequest) -> OrderUpdate:
        calls["n"] += 1
        if o.position_effect.value == "OPEN":
            raise Crash()  # the process dies right before the open leg leaves
        return FakeAdapter.fill_at(Decimal("100"))(o)
    fake.on_place = crash_on_open  # type: ignore[assignment]
    try:
        om.move_to_target(T(-2, 2))
    except Crash:
        pass
    # "crashed" with the open leg claimed as SUBMITTED but never sent: fake has no such order
    fake.placed.pop()  # the open leg never left the process
    fake.on_place = FakeAdapter.fill_at(Decimal("100"))
    om2 = make_om(store, {SCHWAB: fake}, not_found_grace_s=0)
    r = om2.move_to_target(T(-2, 2))  # the engine replays the same intent after restart
    assert r.status is TargetStatus.DUPLICATE
    assert [p.position_effect.value for p in fake.placed] == ["OPEN", "CLOSE"]  # nothing resent blindly
    om2.recover()  # SUBMITTED + not found at a live broker -> UNKNOWN (never written off, never resent)
    om2.recover()
    assert om2.position("ema", "/MES", SCHWAB).quantity == 0
    assert len([p for p in fake.placed if p.position_effect.value == "CLOSE"]) == 1
    (open_leg,) = [o for o in om2.orders() if o.leg == "open" and o.event_ts_ns == T(-2, 2).event_ts_ns]
    assert open_leg.state is OrderState.UNKNOWN


def test_restart_after_close_filled_before_open_claimed(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(1, 1))
    # die after the close fill, before the open leg is claimed (either path that would send it)
    om._open_after_close = lambda *a: None  # type: ignore[method-assign]
    om._advance = lambda k: []  # type: ignore[method-assign]
    r = om.move_to_target(T(-1, 2))
    assert r.orders[-1].leg == "close" and om.position("ema", "/MES", SCHWAB).quantity == 0
    om2 = make_om(store, {SCHWAB: fake})
    om2.recover()
    om2.move_to_target(T(-1, 2))  # and the replay on top finds the open already sent
    opens = [p for p in fake.placed if p.position_effect.value == "OPEN"]
    assert len(opens) == 2 and om2.position("ema", "/MES", SCHWAB).quantity == -1  # initial open + one reversal open


def test_a_stale_reversal_is_closed_but_not_reopened_after_a_restart(store):
    # The old start-up sent an unfinished reversal's open leg however old its signal was (an intent
    # dated 1970 went out as SELL 1 OPEN). After a restart the close finishes; the open goes only
    # while the signal is current.
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(1, 1))
    old = TargetOrder("ema", "/MES", SCHWAB, -1, BASE_NS - 3_600 * 1_000_000_000, "signal", "an hour ago")
    fake.on_place = lambda o: OrderUpdate(o.client_order_id, None, OrderState.ACCEPTED)  # type: ignore[assignment]
    r = om.move_to_target(old)
    assert r.status is TargetStatus.PENDING_OPEN
    close_id = r.orders[0].client_order_id
    fake.broker_orders[close_id] = FakeAdapter.fill_at(Decimal("101"))(fake.placed[-1])
    om2 = make_om(store, {SCHWAB: fake})  # restart
    om2.recover()
    assert om2.position("ema", "/MES", SCHWAB).quantity == 0
    assert [p.position_effect.value for p in fake.placed] == ["OPEN", "CLOSE"]  # no open leg sent
    assert any(e.get("event") == "open_abandoned" and "no longer current" in e.get("reason", "")
               for e in om2.journal(20))
    assert om2.move_to_target(old).status is TargetStatus.DUPLICATE and len(fake.placed) == 2


def test_a_reversal_open_deadline_given_by_the_caller_is_kept(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(1, 1))
    fake.on_place = lambda o: OrderUpdate(o.client_order_id, None, OrderState.ACCEPTED)  # type: ignore[assignment]
    t = TargetOrder("ema", "/MES", SCHWAB, -1, BASE_NS, "signal", "x", open_deadline_ns=BASE_NS - 1)
    r = om.move_to_target(t)
    fake.broker_orders[r.orders[0].client_order_id] = FakeAdapter.fill_at(Decimal("101"))(fake.placed[-1])
    om.poll_open_orders()
    assert om.position("ema", "/MES", SCHWAB).quantity == 0 and len(fake.placed) == 2


def test_journal_has_every_transition_and_fills_stream(store):
    om = make_om(store, paper_pair(store, {"/MES": 6000.0}, paper_commission_per_contract="0.5"))
    r = om.move_to_target(T(2, 1))
    coid = r.orders[0].client_order_id
    states = [e["state"] for e in reversed(om.journal(50)) if e.get("client_order_id") == coid]
    assert states == ["NEW", "SUBMITTED", "FILLED"]
    (fill,) = [f for _, f in store.redis.xrange(store.key("oms", "fills"))]
    assert (fill["strategy"], fill["symbol"], fill["key"], fill["side"], fill["quantity"]) == ("ema", "/MES", "/MES", "BUY", "2")
    assert Decimal(fill["price"]) == Decimal("6000") and Decimal(fill["commission"]) == Decimal("1.0")
    assert fill["multiplier"] == "5" and fill["reason"] == "signal"


def test_pre_trade_denial_is_journaled_with_reason(store):
    def deny(order: OrderRequest, ctx: OrderContext) -> RiskDecision:
        return RiskDecision(False, RiskReason.MAX_POSITION, "max 1")
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake}, pre_trade_check=deny)
    r = om.move_to_target(T(3, 1))
    assert r.status is TargetStatus.DENIED and "max_position" in r.reason and fake.placed == []
    entry = om.journal(1)[0]
    assert entry["state"] == "REJECTED" and entry["reason"].startswith("risk:max_position")


def test_concurrent_move_to_target_sends_each_intent_once(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    barrier = threading.Barrier(8)

    def worker(i: int) -> None:
        barrier.wait()
        for ts in range(1, 11):
            om.move_to_target(T(ts, ts, strategy=f"s{i % 2}"))
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake.placed) == 20 and len({p.client_order_id for p in fake.placed}) == 20
    assert om.position("s0", "/MES", SCHWAB).quantity == 10 and om.position("s1", "/MES", SCHWAB).quantity == 10


def test_reconcile_reports_mismatch_adopt_and_flatten(store):
    from oms.reconcile import adopt_broker_position, flatten_mismatch
    prices = {"/MES": 6000.0}
    adapters = paper_pair(store, prices)
    om = make_om(store, adapters)
    om.move_to_target(T(1, 1))
    from domain.orders import ClientOrderId, OrderSide, PositionEffect
    adapters[SCHWAB].place_order(OrderRequest(ClientOrderId("manual"), "/MES", OrderSide.BUY, 2, PositionEffect.OPEN))
    report = reconcile(om)
    (mm,) = report.brokers[0].mismatches
    assert (mm.key, mm.broker_quantity, mm.oms_quantity, mm.affected) == ("/MES", 3, 1, (("ema", "/MES"),))
    assert report.to_json()["ok"] is False
    adopt_broker_position(om, SCHWAB, "/MES", "ema")
    assert om.position("ema", "/MES", SCHWAB).quantity == 3 and reconcile(om).ok
    rep = flatten_mismatch(om, SCHWAB, "/MES", ts_ns=999)
    assert rep.ok and adapters[SCHWAB].positions() == [] and reconcile(om).ok


def test_option_reversal_call_to_put(store):
    from datetime import date
    prices = {"SPX": 6000.0}
    adapters = paper_pair(store, prices)
    om = make_om(store, adapters)
    chain = adapters[SCHWAB].option_chain("SPX", date(2025, 6, 2))
    call = next(c for c in chain if c.strike == 6000 and c.right.value == "C")
    put = next(c for c in chain if c.strike == 6000 and c.right.value == "P")
    om.move_to_target(TargetOrder("zeroday", "SPX", SCHWAB, 1, 1, "signal", "", call))
    r = om.move_to_target(TargetOrder("zeroday", "SPX", SCHWAB, 1, 2, "signal", "", put))
    assert [(o.leg, o.position_key) for o in r.orders] == [("close", call.occ_symbol), ("open", put.occ_symbol)]
    pos = om.position("zeroday", "SPX", SCHWAB)
    assert pos.key == put.occ_symbol and pos.quantity == 1 and pos.avg_price == put.ask
    assert [p.key for p in adapters[SCHWAB].positions()] == [put.occ_symbol]
    om.move_to_target(TargetOrder("zeroday", "SPX", SCHWAB, 0, 3, "0dte_close", ""))
    assert adapters[SCHWAB].positions() == [] and om.position("zeroday", "SPX", SCHWAB).quantity == 0
