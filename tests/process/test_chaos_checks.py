"""The chaos test's checker on hand-made snapshots: a consistent book passes, and each kind of
damage a crash can do is reported as what it is (so a green chaos run means something)."""
from __future__ import annotations

import copy
from typing import Any

from tests.process.chaos_checks import Findings, Snapshot, TickerSpec, check


def _order(coid: str, state: str = "FILLED", *, leg: str = "open", filled: int = 1, qty: int = 1,
           event: int = 100, reason: str = "", symbol: str = "/MES") -> dict[str, Any]:
    return {"client_order_id": coid, "strategy": "ema", "symbol": symbol, "broker": "tastytrade", "leg": leg,
            "state": state, "quantity": qty, "filled_quantity": filled, "event_ts_ns": event, "reason": reason}


def _paper(coid: str, state: str = "FILLED", filled: int = 1, qty: int = 1) -> dict[str, Any]:
    return {"client_order_id": coid, "symbol": "/MES", "side": "BUY", "quantity": qty, "state": state,
            "filled_quantity": filled}


def consistent() -> Snapshot:
    """ema /MES, 1 contract at tastytrade: LONG after one filled open; NVDA flat at both brokers."""
    return Snapshot(
        tickers=[TickerSpec("ema", "/MES", (("schwab", 0), ("tastytrade", 1))),
                 TickerSpec("ema", "NVDA", (("schwab", 2), ("tastytrade", 1)))],
        strategy_positions={("ema", "/MES"): "LONG", ("ema", "NVDA"): "FLAT"},
        book={("ema", "/MES", "tastytrade"): ("/MES", 1), ("ema", "NVDA", "schwab"): ("NVDA", 0)},
        broker_positions={("tastytrade", "/MES"): 1},
        orders=[_order("o1")],
        paper_orders={"schwab": {}, "tastytrade": {"o1": _paper("o1")}},
        paper_fills={"schwab": [], "tastytrade": [{"client_order_id": "o1", "quantity": "1"}]},
        halts=[], standing=set(),
    )


def test_a_consistent_book_has_no_violations() -> None:
    findings = check(consistent())
    assert findings.violations == 0, findings.describe()


def test_a_client_order_id_filled_twice_is_a_duplicate_send() -> None:
    snap = consistent()
    snap.paper_fills["tastytrade"].append({"client_order_id": "o1", "quantity": "1"})
    assert check(snap).duplicate_sends == ["tastytrade o1: 2 fills for 2 in all, order quantity 1"]


def test_one_intent_leg_with_two_client_ids_is_a_duplicate_intent() -> None:
    snap = consistent()
    snap.orders.append(_order("o1-again"))
    snap.paper_orders["tastytrade"]["o1-again"] = _paper("o1-again")
    found = check(snap)
    assert len(found.duplicate_intents) == 1 and "2 client order ids" in found.duplicate_intents[0]


def test_an_order_left_submitted_or_unknown_is_unresolved() -> None:
    snap = consistent()
    snap.orders += [_order("o2", "SUBMITTED", filled=0, event=200), _order("o3", "UNKNOWN", filled=0, event=300)]
    found = check(snap)
    assert [line.split(":")[0] for line in found.unresolved_orders] == [
        "ema /MES tastytrade open o2", "ema /MES tastytrade open o3"]


def test_a_working_order_the_broker_also_works_is_resolved() -> None:
    snap = consistent()
    snap.orders.append(_order("o2", "ACCEPTED", filled=0, event=200))
    snap.paper_orders["tastytrade"]["o2"] = _paper("o2", "ACCEPTED", filled=0)
    assert check(snap).violations == 0


def test_a_fill_the_book_lost_and_an_order_the_book_does_not_know_are_order_divergences() -> None:
    snap = consistent()
    snap.orders.append(_order("o2", "REJECTED", filled=0, event=200, reason="outcome unknown"))
    snap.paper_orders["tastytrade"]["o2"] = _paper("o2")  # ... but the broker filled it
    snap.paper_orders["tastytrade"]["o9"] = _paper("o9")  # never in the book at all
    found = check(snap)
    assert len(found.order_divergences) == 2, found.describe()
    assert "book REJECTED filled 0" in found.order_divergences[0]
    assert "o9" in found.order_divergences[1] and "the book does not" in found.order_divergences[1]


def test_an_order_refused_as_a_duplicate_of_one_never_sent_is_a_lost_intent() -> None:
    snap = consistent()
    snap.orders.append(_order("o2", "REJECTED", filled=0, event=200,
                              reason="risk:duplicate_intent: client order id o2 was already checked and sent"))
    found = check(snap)
    assert len(found.lost_intents) == 1 and "never received" in found.lost_intents[0]


def test_a_strategy_that_believes_a_position_the_book_does_not_hold_is_a_position_divergence() -> None:
    snap = consistent()
    snap.strategy_positions[("ema", "/MES")] = "SHORT"
    assert check(snap).position_divergences == [
        "ema /MES tastytrade: strategy SHORT x1 = -1, book 1, paper broker 1 at /MES"]


def test_a_book_that_differs_from_the_broker_is_a_position_divergence() -> None:
    snap = consistent()
    snap.broker_positions[("tastytrade", "/MES")] = 2
    snap.broker_positions[("schwab", "TSLA")] = 5  # no configured ticker explains it
    found = check(snap)
    assert found.position_divergences == [
        "ema /MES tastytrade: strategy LONG x1 = 1, book 1, paper broker 2 at /MES",
        "schwab TSLA: the paper broker holds 5 that no book lane explains"]


def test_a_halt_without_a_standing_mismatch_is_reported_and_one_with_a_mismatch_is_not() -> None:
    snap = consistent()
    snap.halts = [{"strategy": "ema", "symbol": "/MES", "reason": "reconciliation mismatch"},
                  {"strategy": "ema", "symbol": "NVDA", "reason": "reconciliation mismatch"}]
    snap.standing = {("ema", "NVDA")}
    found = check(snap)
    assert len(found.unexplained_halts) == 1 and found.unexplained_halts[0].startswith("ema /MES halted")


def test_merging_checkpoints_keeps_history_once_and_states_per_checkpoint() -> None:
    damaged = consistent()
    damaged.paper_fills["tastytrade"].append({"client_order_id": "o1", "quantity": "1"})
    damaged.strategy_positions[("ema", "/MES")] = "FLAT"
    total = Findings()
    total.merge(check(damaged), "run01")
    total.merge(check(copy.deepcopy(damaged)), "run02")
    assert len(total.duplicate_sends) == 1  # the same history, read twice
    assert [line.split(":")[0] for line in total.position_divergences] == ["run01", "run02"]
    assert total.counts()["duplicate_sends"] == 1 and total.violations == 3
