"""Order listeners, and the 1-round-trip paper order path's guarantees: the in-process lane cache is only
ever an expectation the Lua claim verifies, so another process (or anyone) changing the lane makes
the order manager re-plan from Redis's state - never a wrong or duplicate order."""
from __future__ import annotations

import json
import logging
from dataclasses import asdict
from decimal import Decimal

import redis

from brokers.base import ClaimFirst
from brokers.paper import PaperBroker, PaperOrder
from config.settings import Settings
from domain.orders import (
    SCHWAB, TASTYTRADE, ClientOrderId, OrderRequest, OrderSide, OrderState, OrderType, OrderUpdate, PositionEffect,
)
from domain.risk import RiskDecision
from oms.models import TargetOrder, TargetStatus
from tests.oms.helpers import CLOCK, FakeAdapter, make_om, paper_pair


def T(qty: int, ts: int, broker=SCHWAB, symbol="/MES", strategy="ema") -> TargetOrder:
    return TargetOrder(strategy, symbol, broker, qty, ts, "signal", "test")


def record_round_trips(monkeypatch) -> list[bytes]:  # type: ignore[no-untyped-def]
    """Every request sent to Redis from now on (one per command, pipeline or transaction)."""
    sent: list[bytes] = []
    orig = redis.connection.Connection.send_packed_command

    def counted(conn, command, check_health=True):  # type: ignore[no-untyped-def]
        sent.append(command)
        return orig(conn, command, check_health)

    monkeypatch.setattr(redis.connection.Connection, "send_packed_command", counted)
    return sent


def _stream(store, name: str) -> list[dict[str, str]]:
    return [fields for _, fields in store.redis.xrange(store.key("oms", name))]


# ------------------------------------------------------------------ listeners
def test_listener_gets_every_transition_and_fill_exactly_as_written(store):
    om = make_om(store, paper_pair(store, {"/MES": 6000.0}))
    seen: list[tuple[str, dict[str, str]]] = []
    om.add_listener(lambda kind, entry: seen.append((kind, entry)))
    om.move_to_target(T(2, 1))  # open: NEW, SUBMITTED, FILLED + 1 fill
    om.move_to_target(T(-1, 2))  # reversal: close (3 transitions + fill), open (3 + fill)
    transitions = [e for k, e in seen if k == "transition"]
    fills = [e for k, e in seen if k == "fill"]
    assert transitions == _stream(store, "journal")
    assert fills == _stream(store, "fills")
    assert len(transitions) == 9 and len(fills) == 3
    assert [(e["prev_state"], e["state"]) for e in transitions[:3]] == [
        ("", "NEW"), ("NEW", "SUBMITTED"), ("SUBMITTED", "FILLED")]
    # a fill is announced right after the transition that carried it
    kinds = [k for k, _ in seen]
    assert kinds[:4] == ["transition", "transition", "transition", "fill"]


def test_listener_events_rejections_and_live_adapter(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake}, pre_trade_check=lambda o, c: RiskDecision(c.current_quantity == 0))
    seen: list[tuple[str, dict[str, str]]] = []
    om.add_listener(lambda kind, entry: seen.append((kind, entry)))
    om.move_to_target(T(1, 1))
    om.move_to_target(T(3, 2))  # denied by the check: NEW -> REJECTED, no fill
    om.set_position("ema", "/MES", SCHWAB, "/MES", 0, Decimal(0), Decimal(5), "", "test adopt")
    assert [e["state"] for k, e in seen if k == "transition"] == ["NEW", "SUBMITTED", "FILLED", "NEW", "REJECTED"]
    assert [k for k, _ in seen].count("fill") == 1
    events = [e for k, e in seen if k == "event"]
    assert [e["event"] for e in events] == ["position_adopted"]
    assert [e for k, e in seen if k != "fill"] == _stream(store, "journal")


def test_listener_exception_is_logged_and_never_breaks_the_order_path(store, caplog):
    om = make_om(store, paper_pair(store, {"/MES": 6000.0}))
    calls: list[str] = []

    def broken(kind: str, entry: dict[str, str]) -> None:
        raise RuntimeError("listener bug")

    def mutating(kind: str, entry: dict[str, str]) -> None:
        entry["state"] = "TAMPERED"

    om.add_listener(broken)
    om.add_listener(mutating)
    om.add_listener(lambda kind, entry: calls.append(entry.get("state", kind)))
    with caplog.at_level(logging.ERROR, logger="oms.order_manager"):
        r = om.move_to_target(T(1, 1))
    assert r.status is TargetStatus.FILLED and om.position("ema", "/MES", SCHWAB).quantity == 1
    assert calls == ["NEW", "SUBMITTED", "FILLED", "fill"]  # each listener gets its own copy
    assert any("listener" in rec.getMessage() for rec in caplog.records)
    om.remove_listener(broken)
    om.remove_listener(mutating)
    om.move_to_target(T(0, 2))
    assert calls[-1] == "fill"


# ------------------------------------------------------------------ fast path guarantees
def test_lane_changed_by_another_process_replans_from_redis(store):
    prices = {"/MES": 6000.0}
    adapters = paper_pair(store, prices)
    a = make_om(store, adapters)
    b = make_om(store, adapters)  # "another process" sharing the accounts
    assert a.move_to_target(T(2, 1)).quantity == 2  # a caches the lane at +2
    assert b.move_to_target(T(-1, 2)).quantity == -1  # b reverses it behind a's back
    r = a.move_to_target(T(1, 3))  # a's cache says +2 (would sell 1): must re-plan from -1 (buy 2)
    assert r.status is TargetStatus.FILLED and r.previous_quantity == -1 and r.quantity == 1
    assert [(o.leg, o.side.value, o.quantity) for o in r.orders] == [("close", "BUY", 1), ("open", "BUY", 1)]
    assert a.position("ema", "/MES", SCHWAB).quantity == 1
    assert {p.key: p.quantity for p in adapters[SCHWAB].positions()} == {"/MES": 1}


def test_tampered_position_hash_is_never_trusted_from_cache(store):
    om = make_om(store, paper_pair(store, {"/MES": 6000.0}))
    om.move_to_target(T(1, 1))
    store.redis.hset(store.key("oms", "pos", "ema", "/MES", SCHWAB), "qty", "3")
    r = om.move_to_target(T(0, 2))
    assert r.previous_quantity == 3 and r.orders[0].quantity == 3 and r.quantity == 0


def test_stale_replan_asks_the_risk_check_once_when_nothing_relevant_changed(store):
    asked: list[int] = []

    def check(order, ctx):  # type: ignore[no-untyped-def]
        asked.append(ctx.current_quantity)
        return RiskDecision.allow()

    om = make_om(store, paper_pair(store, {"/MES": 6000.0}), pre_trade_check=check)
    om.move_to_target(T(1, 1))
    store.redis.hset(store.key("oms", "pos", "ema", "/MES", SCHWAB), "note", "x")  # irrelevant change
    assert om.move_to_target(T(2, 2)).quantity == 2
    assert asked == [0, 1]


def test_pause_set_by_another_process_is_seen_before_sending(store):
    fake = FakeAdapter(SCHWAB)
    om = make_om(store, {SCHWAB: fake})
    om.move_to_target(T(1, 1))
    store.redis.hset(store.key("oms", "paused"), SCHWAB, "token expired")
    r = om.move_to_target(T(0, 2))
    assert r.status is TargetStatus.PAUSED and len(fake.placed) == 1


def test_working_order_from_another_process_blocks_the_lane(store):
    fake = FakeAdapter(SCHWAB)
    a = make_om(store, {SCHWAB: fake})
    b = make_om(store, {SCHWAB: fake})
    a.move_to_target(T(1, 1))
    fake.on_place = lambda o: OrderUpdate(o.client_order_id, None, OrderState.ACCEPTED)  # type: ignore[assignment]
    assert b.move_to_target(T(2, 2)).status is TargetStatus.WORKING
    r = a.move_to_target(T(0, 3))
    assert r.status is TargetStatus.BLOCKED and len(fake.placed) == 2


def test_same_intent_from_another_process_is_a_duplicate_not_a_second_order(store):
    fake = FakeAdapter(SCHWAB)
    a = make_om(store, {SCHWAB: fake})
    b = make_om(store, {SCHWAB: fake})
    a.move_to_target(T(1, 1))
    assert b.move_to_target(T(3, 2)).status is TargetStatus.FILLED
    r = a.move_to_target(T(3, 2))  # a's cache says +1 and no intent: the claim finds b's intent
    assert r.status is TargetStatus.DUPLICATE and len(fake.placed) == 2
    assert a.position("ema", "/MES", SCHWAB).quantity == 3


def test_paper_orders_planned_from_the_lane_cache_fill_and_journal_each_once(real_store):
    # (What each order costs in Redis round trips is measured by bench/orders.py.)
    om = make_om(real_store, paper_pair(real_store, {"/MES": 6000.0, "NVDA": 180.0}))
    om.move_to_target(T(1, 1))  # first use of the lane reads it
    for i in range(10):  # +1 -> 0 -> +1 ...: every intent is one paper MARKET order that fills
        assert om.move_to_target(T(0, 10 + 2 * i)).status is TargetStatus.FILLED
        assert om.move_to_target(T(1, 11 + 2 * i)).status is TargetStatus.FILLED
    assert om.position("ema", "/MES", SCHWAB).quantity == 1
    assert len(_stream(real_store, "journal")) == 3 * 21 and len(_stream(real_store, "fills")) == 21


def test_a_paper_reversal_clears_its_pending_mark_with_the_open_legs_claim(real_store):
    om = make_om(real_store, paper_pair(real_store, {"/MES": 6000.0}))
    om.move_to_target(T(2, 1))
    r = om.move_to_target(T(-3, 2))
    assert r.status is TargetStatus.FILLED and [o.leg for o in r.orders] == ["close", "open"]
    k_intent = real_store.key("oms", "intent", "ema", "/MES", SCHWAB, 2)
    assert real_store.redis.hget(k_intent, "status") == "sent"
    assert not real_store.redis.sismember(real_store.key("oms", "pending"), k_intent)
    assert "pending_intent" not in real_store.redis.hgetall(real_store.key("oms", "pos", "ema", "/MES", SCHWAB))
    assert om.position("ema", "/MES", SCHWAB).quantity == -3
    # the lane cache agrees with Redis: the next intent is planned without a read and goes through
    assert om.move_to_target(T(1, 3)).status is TargetStatus.FILLED and om.position("ema", "/MES", SCHWAB).quantity == 1


def test_intents_of_several_lanes_waiting_on_one_paper_account_each_get_their_own_records(store):
    # A bar close where three strategies signal at once: their orders queue behind the account and
    # are claimed and filled together; each lane still gets exactly its own records.
    import threading
    import time

    paper = paper_pair(store, {"/MES": 6000.0, "NVDA": 180.0})
    om = make_om(store, paper)
    lanes = [("ema", "/MES", 2), ("supertrend", "/MES", -1), ("ema", "NVDA", 5)]
    for strategy, symbol, _ in lanes:  # first use of each lane reads it; a reversal comes next
        om.move_to_target(T(1, 1, symbol=symbol, strategy=strategy))
    account = paper[SCHWAB]
    results: dict[str, object] = {}

    def move(strategy: str, symbol: str, qty: int) -> None:
        results[f"{strategy}{symbol}"] = om.move_to_target(T(qty, 2, symbol=symbol, strategy=strategy))

    threads = []
    with account._lock:
        for i, lane in enumerate(lanes):
            threads.append(threading.Thread(target=move, args=lane))
            threads[-1].start()
            deadline = time.monotonic() + 5
            while len(account._pending) < i + 1:
                assert time.monotonic() < deadline
                time.sleep(0.002)
    for thread in threads:
        thread.join(5)
    assert all(r.status is TargetStatus.FILLED for r in results.values())  # type: ignore[attr-defined]
    assert {(s, sym): om.position(s, sym, SCHWAB).quantity for s, sym, _ in lanes} == {
        ("ema", "/MES"): 2, ("supertrend", "/MES"): -1, ("ema", "NVDA"): 5}
    assert {p.key: p.quantity for p in account.positions()} == {"/MES": 1, "NVDA": 5}
    journal = _stream(store, "journal")
    assert len(journal) == 3 * (3 + 4)  # 3 opening orders, then 4: two adds and a close + open
    assert all(len([e for e in journal if e["client_order_id"] == c]) == 3 for c in {e["client_order_id"] for e in journal})


def test_a_claim_that_finds_the_lane_changed_writes_no_fill_and_the_order_is_replanned(store):
    # Two order managers (think: two processes) share one paper account. b plans from its cached
    # lane (+1); a has closed it meanwhile. b's claim, sent with the fill in one transaction, sees
    # the change: the fill is not written, b re-plans from the real lane and buys 2, not 1.
    paper = paper_pair(store, {"/MES": 6000.0})
    a, b = make_om(store, paper), make_om(store, paper)
    assert b.move_to_target(T(1, 1)).status is TargetStatus.FILLED
    assert a.move_to_target(T(0, 2)).status is TargetStatus.FILLED
    r = b.move_to_target(T(2, 3))
    assert r.status is TargetStatus.FILLED and r.previous_quantity == 0 and r.quantity == 2
    assert [(o.leg, o.quantity) for o in r.orders] == [("open", 2)]
    fills = _stream(store, "fills")
    assert [f["quantity"] for f in fills] == ["1", "1", "2"]
    assert {p.key: p.quantity for p in paper[SCHWAB].positions()} == {"/MES": 2}
    raw = store.redis.hget(store.key("paper", SCHWAB, "positions"), "/MES")
    assert json.loads(raw)["quantity"] == 2


def test_a_duplicate_claim_sent_with_a_fill_writes_nothing(store):
    # The claim script refuses an order id that exists; the fill sent with it must not be written.
    paper = PaperBroker(store, SCHWAB, Settings(), {"/MES": 6000.0}.get, clock=CLOCK)
    om = make_om(store, {SCHWAB: paper})
    om.move_to_target(T(1, 1))
    coid = next(iter(store.redis.zrange(store.key("oms", "orders"), 0, -1)))
    first = ClaimFirst(om._claim.sha, [store.key("oms", "order", coid)], ["0", "[]", "", SCHWAB, "[]"],
                       store.key("oms", "order", coid), "claim", "not-the-nonce")
    before = (store.redis.xlen(store.key("paper", SCHWAB, "fills")), paper.positions())
    placed = paper.place_with_claim(_req("fresh-id"), None, first)
    assert placed is not None and placed.update is None and placed.first_result == 0
    assert (store.redis.xlen(store.key("paper", SCHWAB, "fills")), paper.positions()) == before
    assert store.redis.hget(store.key("paper", SCHWAB, "orders"), "fresh-id") is None


def test_missing_scripts_fall_back_to_the_two_step_path(real_store):
    paper = PaperBroker(real_store, SCHWAB, Settings(), {"/MES": 6000.0}.get, clock=CLOCK)
    # The claim script unknown to Redis: nothing sent, nothing written, the caller claims itself.
    first = ClaimFirst("0" * 40, [real_store.key("x")], [], real_store.key("x"), "claim", "n")
    assert paper.place_with_claim(_req("c-9"), None, first) is None
    assert paper.positions() == [] and real_store.redis.hget(real_store.key("paper", SCHWAB, "orders"), "c-9") is None
    # The fill script unknown to Redis (as after a restart): reloaded, the order still fills once.
    om = make_om(real_store, {SCHWAB: paper})
    om.move_to_target(T(1, 1))
    paper._write.sha = "f" * 40
    r = om.move_to_target(T(3, 2))
    assert r.status is TargetStatus.FILLED and om.position("ema", "/MES", SCHWAB).quantity == 3
    assert {p.key: p.quantity for p in paper.positions()} == {"/MES": 3}
    assert [f["quantity"] for f in _stream(real_store, "fills")] == ["1", "2"]


def test_a_lost_reply_reloads_the_paper_account_before_its_next_fill(real_store, monkeypatch):
    # The transaction reaches Redis but its reply is lost: the outcome is unknown to the caller.
    # The account must not go on from its in-memory state (it would write a wrong cash balance).
    settings = Settings(paper_commission_per_contract="1")
    paper = PaperBroker(real_store, SCHWAB, settings, {"/MES": 6000.0}.get, clock=CLOCK)
    om = make_om(real_store, {SCHWAB: paper})
    om.move_to_target(T(1, 1))
    orig = redis.client.Pipeline.execute

    def lost_reply(self, raise_on_error=True):  # type: ignore[no-untyped-def]
        orig(self, raise_on_error)
        raise redis.ConnectionError("reply lost")

    monkeypatch.setattr(redis.client.Pipeline, "execute", lost_reply)
    result = om.move_all([T(2, 2)])[0]
    monkeypatch.undo()
    assert result.status is TargetStatus.ERROR  # not known to the caller ...
    assert om.position("ema", "/MES", SCHWAB).quantity == 2  # ... but it did happen, once
    # The next order starts from Redis's account, not the stale memory.
    assert om.move_to_target(T(0, 3)).status is TargetStatus.FILLED
    account = real_store.redis.hgetall(real_store.key("paper", SCHWAB, "account"))
    assert Decimal(account["commissions"]) == Decimal(4)  # 1 + 1 + 2 contracts at 1 each
    assert paper.positions() == [] and Decimal(paper.account_summary()["commissions"]) == Decimal(4)


# ------------------------------------------------------------------ paper place_then
def _req(coid: str, qty: int = 1) -> OrderRequest:
    return OrderRequest(client_order_id=ClientOrderId(coid), symbol="/MES", side=OrderSide.BUY, quantity=qty,
                        position_effect=PositionEffect.OPEN, order_type=OrderType.MARKET)


def test_place_then_writes_the_callers_commands_atomically(store):
    paper = PaperBroker(store, SCHWAB, Settings(), {"/MES": 6000.0}.get, clock=CLOCK)
    marker = store.key("test", "marker")
    seen = []

    def then(update):  # type: ignore[no-untyped-def]
        seen.append(update)
        return [["HSET", marker, "state", update.state.value, "fills", str(len(update.fills))]]

    update, written = paper.place_then(_req("c-1"), then)
    assert written and update.state is OrderState.FILLED and seen == [update]
    assert store.redis.hgetall(marker) == {"state": "FILLED", "fills": "1"}
    # the same client id again: idempotent, the callback is not run, nothing written
    store.redis.delete(marker)
    again, written = paper.place_then(_req("c-1"), then)
    assert not written and again.broker_order_id == update.broker_order_id and store.redis.exists(marker) == 0
    # another instance that lost the claim race writes nothing of the caller's
    other = PaperBroker(store, SCHWAB, Settings(), {"/MES": 6000.0}.get, clock=CLOCK)
    other._orders.pop("c-1", None)
    lost, written = other.place_then(_req("c-1"), then)
    assert not written and lost.broker_order_id == update.broker_order_id and store.redis.exists(marker) == 0
    assert {p.key: p.quantity for p in paper.positions()} == {"/MES": 1}


def test_place_then_callback_failure_still_fills_alone(store, caplog):
    paper = PaperBroker(store, TASTYTRADE, Settings(), {"/MES": 6000.0}.get, clock=CLOCK)

    def then(update):  # type: ignore[no-untyped-def]
        raise ValueError("bug")

    with caplog.at_level(logging.ERROR):
        update, written = paper.place_then(_req("c-2"), then)
    assert update.state is OrderState.FILLED and not written
    assert {p.key: p.quantity for p in paper.positions()} == {"/MES": 1}


def test_paper_order_json_is_unchanged_by_the_fast_encoder():
    o = PaperOrder("c", "b", "/MES", "BUY", 1, "OPEN", "LIMIT", "1.5", None,
                   {"underlying": "SPX", "root": "SPXW"}, "FILLED", 1, "1.5", None,
                   [{"fill_id": "f", "quantity": "1"}], 7)
    assert json.loads(o.to_json()) == asdict(o)
    assert o.to_json() == json.dumps(asdict(o), separators=(",", ":"))
