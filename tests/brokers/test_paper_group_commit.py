"""Paper orders that arrive while the account is writing go to Redis together (group commit), and a
fill is only ever written on the account state it was computed on (the account's `seq`).

The tests hold the account's lock themselves so that several orders are deterministically waiting
when it is released, the situation a bar close with many signals produces."""
from __future__ import annotations

import threading
import time
from decimal import Decimal
from typing import Any, Callable

import pytest
import redis

from brokers.base import ClaimFirst, PlacedAfter
from brokers.paper import PaperBroker
from config.settings import Settings
from domain.orders import SCHWAB, TASTYTRADE, ClientOrderId, OrderRequest, OrderSide, OrderState, PositionEffect
from tests.oms.helpers import CLOCK

# A stand-in for the order manager's claim: writes the guard nonce (claimed) or nothing (lost).
CLAIM_LUA = """
if ARGV[1] == '1' then
  redis.call('HSET', KEYS[1], 'claim', ARGV[2])
  return 1
end
return 0
"""


def req(coid: str, symbol: str, side: OrderSide, qty: int) -> OrderRequest:
    return OrderRequest(ClientOrderId(coid), symbol, side, qty, PositionEffect.OPEN)


def account(store, prices: dict[str, float], name=SCHWAB) -> PaperBroker:  # type: ignore[no-untyped-def]
    return PaperBroker(store, name, Settings(paper_commission_per_contract="0.62", paper_slippage_ticks=1),
                       prices.get, clock=CLOCK)


def claim(store, coid: str, goes_through: bool = True) -> ClaimFirst:  # type: ignore[no-untyped-def]
    sha = store.redis.script_load(CLAIM_LUA)
    key = store.key("test", "claim", coid)
    nonce = f"nonce-{coid}"
    return ClaimFirst(sha, [key], ["1" if goes_through else "0", nonce], key, "claim", nonce)


def _wait(condition: Callable[[], bool]) -> None:
    deadline = time.monotonic() + 5
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.002)


def place_together(paper: PaperBroker, calls: list[tuple[OrderRequest, ClaimFirst]]) -> list[Any]:
    """Each call from its own thread, queued in this order behind the account, then released at once.
    Returns each call's PlacedAfter, None, or the exception it raised."""
    results: list[Any] = [None] * len(calls)
    threads = []

    def run(i: int, order: OrderRequest, first: ClaimFirst) -> None:
        try:
            results[i] = paper.place_with_claim(order, None, first)
        except Exception as exc:  # noqa: BLE001 - the test inspects it
            results[i] = exc

    with paper._lock:
        for i, (order, first) in enumerate(calls):
            thread = threading.Thread(target=run, args=(i, order, first))
            thread.start()
            threads.append(thread)
            _wait(lambda: len(paper._pending) == i + 1)
    for thread in threads:
        thread.join(5)
    return results


def _summary(paper: PaperBroker) -> tuple[dict[str, Any], list[tuple[str, int, Decimal]]]:
    money = {k: v for k, v in paper.account_summary().items() if k != "broker"}
    return money, sorted((p.key, p.quantity, p.avg_price) for p in paper.position_details())


def test_waiting_orders_go_in_one_transaction_each_filled_on_the_balance_the_one_before_left(store, monkeypatch):
    prices = {"/MES": 6000.0, "NVDA": 180.0}
    batched = account(store, prices)
    batched.place_order(req("warm", "/MES", OrderSide.BUY, 1))  # scripts loaded; seq 1
    orders = [req("a", "/MES", OrderSide.BUY, 2), req("b", "NVDA", OrderSide.SELL, 10), req("c", "/MES", OrderSide.SELL, 1)]
    calls = [(o, claim(store, o.client_order_id)) for o in orders]
    results = place_together(batched, calls)

    assert all(isinstance(r, PlacedAfter) and r.first_result == 1 and r.update.state is OrderState.FILLED
               for r in results)
    # The same orders one after the other, on an account of their own, end in the same place.
    serial = account(store, prices, name=TASTYTRADE)
    for order in [req("warm", "/MES", OrderSide.BUY, 1), *orders]:
        serial.place_order(order)
    assert _summary(batched) == _summary(serial)
    assert _summary(account(store, prices)) == _summary(batched)  # what Redis holds, read afresh
    assert store.redis.hget(store.key("paper", SCHWAB, "account"), "seq") == "4"


def test_a_fill_whose_claim_lost_stops_the_ones_behind_it_which_are_claimed_but_not_placed(store):
    prices = {"/MES": 6000.0}
    paper = account(store, prices)
    paper.place_order(req("warm", "/MES", OrderSide.BUY, 1))
    before = _summary(paper)
    fills_key = store.key("paper", SCHWAB, "fills")
    fills_before = store.redis.xlen(fills_key)
    lost, b, c = req("lost", "/MES", OrderSide.BUY, 1), req("b", "/MES", OrderSide.BUY, 1), req("c", "/MES", OrderSide.SELL, 2)

    results = place_together(paper, [(lost, claim(store, "lost", goes_through=False)),
                                     (b, claim(store, "b")), (c, claim(store, "c"))])

    # b's and c's fills were computed on a balance that included the lost one's: none is written.
    assert results == [PlacedAfter(0, None, False), PlacedAfter(1, None, False), PlacedAfter(1, None, False)]
    assert _summary(paper) == before == _summary(account(store, prices))
    assert store.redis.xlen(fills_key) == fills_before
    assert not store.redis.hexists(store.key("paper", SCHWAB, "orders"), "b")
    # Their claims went through: the caller places them itself, each filled once, on the real balance.
    for order in (b, c):
        assert paper.place_then(order, None)[0].state is OrderState.FILLED
    serial = account(store, prices, name=TASTYTRADE)
    for order in (req("warm", "/MES", OrderSide.BUY, 1), b, c):
        serial.place_order(order)
    assert _summary(paper) == _summary(serial)


def test_a_second_writer_on_the_same_account_is_caught_and_the_fill_computed_again(store):
    # Before the account's seq, the second instance wrote its stale balance and position over the
    # first's fill: one contract and one commission were lost.
    prices = {"/MES": 6000.0}
    first, second = account(store, prices), account(store, prices)
    first.place_order(req("a", "/MES", OrderSide.BUY, 1))
    second.place_order(req("b", "/MES", OrderSide.BUY, 1))
    assert [(p.key, p.quantity) for p in second.position_details()] == [("/MES", 2)]
    assert second.account_summary()["commissions"] == "1.24"
    assert _summary(account(store, prices)) == _summary(second)
    # The group path says "claimed, not placed" and reloads; the caller's placement then fills it.
    first.place_order(req("c", "/MES", OrderSide.BUY, 1))
    result = second.place_with_claim(req("d", "/MES", OrderSide.BUY, 1), None, claim(store, "d"))
    assert result == PlacedAfter(1, None, False)
    assert second.place_then(req("d", "/MES", OrderSide.BUY, 1), None)[0].state is OrderState.FILLED
    assert [(p.key, p.quantity) for p in account(store, prices).position_details()] == [("/MES", 4)]
    assert account(store, prices).account_summary()["commissions"] == "2.48"


def test_a_transaction_that_fails_reaches_every_waiting_caller_and_the_account_reloads(store, monkeypatch):
    prices = {"/MES": 6000.0}
    paper = account(store, prices)
    paper.place_order(req("warm", "/MES", OrderSide.BUY, 1))

    def broken(items: Any) -> Any:
        raise redis.ConnectionError("connection reset")

    monkeypatch.setattr(paper, "_send_after", broken)
    results = place_together(paper, [(req(c, "/MES", OrderSide.BUY, 1), claim(store, c)) for c in ("a", "b")])
    assert all(isinstance(r, redis.ConnectionError) for r in results)
    assert paper._stale  # outcome unknown: memory is reloaded before the next use
    monkeypatch.undo()
    assert paper.place_order(req("e", "/MES", OrderSide.BUY, 1)).state is OrderState.FILLED
    assert [(p.key, p.quantity) for p in paper.position_details()] == [("/MES", 2)]


@pytest.mark.parametrize("problem", ["unknown symbol", "no price"])
def test_an_order_that_would_not_simply_fill_is_left_to_the_caller_while_the_others_fill(store, problem):
    prices = {"/MES": 6000.0}
    paper = account(store, prices)
    paper.place_order(req("warm", "/MES", OrderSide.BUY, 1))
    odd = req("odd", "XYZ" if problem == "unknown symbol" else "NVDA", OrderSide.BUY, 1)
    results = place_together(paper, [(req("a", "/MES", OrderSide.BUY, 1), claim(store, "a")),
                                     (odd, claim(store, "odd")), (req("b", "/MES", OrderSide.BUY, 1), claim(store, "b"))])
    assert results[1] is None  # nothing sent for it: the caller claims and places it itself
    assert results[0].update.state is OrderState.FILLED and results[2].update.state is OrderState.FILLED
    assert not store.redis.exists(store.key("test", "claim", "odd"))
    assert [(p.key, p.quantity) for p in account(store, prices).position_details()] == [("/MES", 3)]
