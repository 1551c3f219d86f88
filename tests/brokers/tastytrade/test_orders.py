"""Order JSON sent by the real tastytrade SDK: futures, equities, SPXW options; dry run vs live."""
from __future__ import annotations

import sys
from datetime import date
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tt_fake import (  # noqa: E402,F401
    ACCOUNT,
    API,
    Harness,
    TastytradeAccount,
    order_body,
    placed_response,
    positions_reply,
    tt,
)

from brokers.errors import OrderRejected  # noqa: E402
from domain.orders import (  # noqa: E402
    ClientOrderId,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    PositionEffect,
)

ORDERS = f"/accounts/{ACCOUNT}/orders"
DRY = f"/accounts/{ACCOUNT}/orders/dry-run"
POSITIONS = f"/accounts/{ACCOUNT}/positions"
SOURCE = "tastyware/tastytrade:v13.2.3"


def _reply(tt: Harness, path: str, body: dict) -> None:
    tt.fake.on("POST", path, httpx2.Response(201 if path == ORDERS else 200, json=placed_response(body)))


def test_future_market_order_json_live(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    coid = ClientOrderId("ema-MES-open-0123456789abcdef")
    _reply(tt, ORDERS, order_body(order_id=901, coid=coid, symbol="/MESZ5", instrument_type="Future",
                                  action="Buy", quantity=2, underlying="/MES"))
    update = adapter.place_order(OrderRequest(coid, "/MES", OrderSide.BUY, 2, PositionEffect.OPEN))

    posts = [r for r in tt.fake.requests if r.method == "POST" and r.path.startswith(f"/accounts/{ACCOUNT}/orders")]
    assert len(posts) == 1  # exactly one order POST
    assert posts[0].url == f"{API}{ORDERS}"  # live: the real endpoint, not dry-run
    assert posts[0].json() == {
        "time-in-force": "Day", "source": SOURCE,
        "legs": [{"instrument-type": "Future", "symbol": "/MESZ5", "action": "Buy", "quantity": 2}],
        "external-identifier": coid, "behavior": "immediate", "order-type": "Market",
    }
    # A futures order reads no position: Buy/Sell carry no open/close effect.
    assert tt.fake.calls("GET", POSITIONS) == []
    assert posts[0].headers["authorization"].startswith("Bearer atoken-")
    assert update.state is OrderState.ACCEPTED and update.broker_order_id == "901"
    assert tt.store.redis.hget(tt.store.key("broker", "tastytrade", "order_ids"), coid) == "901"


def test_equity_limit_sell_to_close_is_a_credit(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    tt.fake.on("GET", POSITIONS, positions_reply({"NVDA": ("Equity", 10)}))
    coid = ClientOrderId("ema-NVDA-clos-0123456789abcdef")
    _reply(tt, ORDERS, order_body(order_id=902, coid=coid, symbol="NVDA", instrument_type="Equity",
                                  action="Sell to Close", quantity=10, order_type="Limit", price="181.37",
                                  price_effect="Credit", status="Live"))
    adapter.place_order(OrderRequest(coid, "NVDA", OrderSide.SELL, 10, PositionEffect.CLOSE, OrderType.LIMIT,
                                     limit_price=Decimal("181.37")))
    (post,) = tt.fake.calls("POST", ORDERS)
    assert post.json() == {
        "time-in-force": "Day", "source": SOURCE,
        "legs": [{"instrument-type": "Equity", "symbol": "NVDA", "action": "Sell to Close", "quantity": 10}],
        "external-identifier": coid, "behavior": "immediate", "order-type": "Limit",
        "advanced-instructions": {"strict-position-effect-validation": True},
        "price": "181.37", "price-effect": "Credit",
    }


def test_spxw_option_limit_buy_is_a_debit_with_occ_symbol(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    coid = ClientOrderId("zer-SPX-open-0123456789abcdef")
    option = OptionContract("SPX", "SPXW", date(2025, 11, 20), Decimal("6650"), OptionRight.CALL)
    _reply(tt, ORDERS, order_body(order_id=903, coid=coid, symbol="SPXW  251120C06650000",
                                  instrument_type="Equity Option", action="Buy to Open", order_type="Limit",
                                  price="4.1", price_effect="Debit", underlying="SPX"))
    adapter.place_order(OrderRequest(coid, "SPX", OrderSide.BUY, 1, PositionEffect.OPEN, OrderType.LIMIT,
                                     limit_price=Decimal("4.10"), option=option))
    (post,) = tt.fake.calls("POST", ORDERS)
    assert post.json() == {
        "time-in-force": "Day", "source": SOURCE,
        "legs": [{"instrument-type": "Equity Option", "symbol": "SPXW  251120C06650000", "action": "Buy to Open",
                  "quantity": 1}],
        "external-identifier": coid, "behavior": "immediate", "order-type": "Limit",
        "advanced-instructions": {"strict-position-effect-validation": True},
        "price": "4.10", "price-effect": "Debit",
    }


@pytest.mark.parametrize(("side", "effect", "held", "action"), [
    (OrderSide.BUY, PositionEffect.OPEN, 0, "Buy"),
    (OrderSide.BUY, PositionEffect.CLOSE, -1, "Buy"),
    (OrderSide.SELL, PositionEffect.CLOSE, 1, "Sell"),
    (OrderSide.SELL, PositionEffect.OPEN, 0, "Sell"),
    (OrderSide.SELL, PositionEffect.CLOSE, 0, "Sell"),  # another strategy already flattened the account
])
def test_future_legs_buy_or_sell_whatever_the_effect(tt: Harness, side: OrderSide, effect: PositionEffect,
                                                     held: int, action: str) -> None:
    # The SDK's OrderAction (tastytrade/order.py) documents BUY and SELL "for futures only", and
    # the order schema says Buy and Sell "are only applicable to Futures orders"; the fake refuses
    # them on any other instrument type.
    book = TastytradeAccount(tt.fake)
    book.hold("/MESZ5", "Future", held)
    adapter = tt.connected(live=True)
    coid = ClientOrderId(f"t-MES-{side.value}-{effect.value}-{held}")
    update = adapter.place_order(OrderRequest(coid, "MES", side, 1, effect))
    (post,) = tt.fake.calls("POST", ORDERS)
    assert post.json()["legs"] == [{"instrument-type": "Future", "symbol": "/MESZ5", "action": action, "quantity": 1}]
    assert "advanced-instructions" not in post.json()  # Buy/Sell carry no effect to validate
    assert update.state is OrderState.FILLED
    assert book.held("/MESZ5") == held + (1 if side is OrderSide.BUY else -1)


def test_a_futures_reversal_through_zero_is_one_order(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    book.hold("/MESZ5", "Future", 1)
    adapter = tt.connected(live=True)
    adapter.place_order(OrderRequest(ClientOrderId("sup-MES-open-9"), "/MES", OrderSide.SELL, 2, PositionEffect.OPEN))
    assert _sent_action(tt) == "Sell" and book.held("/MESZ5") == -1


def test_a_close_whose_position_is_gone_is_refused_not_turned_into_an_open(tt: Harness) -> None:
    # The account held 10 NVDA when the adapter read it, but another strategy's sale filled before
    # this order arrived. Tastytrade would turn the "Sell to Close" into an opening short sale
    # (SDK AdvancedInstructions docstring); strict position-effect validation refuses it instead.
    book = TastytradeAccount(tt.fake)
    tt.fake.on("GET", POSITIONS, positions_reply({"NVDA": ("Equity", 10)}))  # the read, before the other sale
    adapter = tt.connected(live=True)
    with pytest.raises(OrderRejected, match="position to close is not open"):
        adapter.place_order(OrderRequest(ClientOrderId("ema-NVDA-clos-7"), "NVDA", OrderSide.SELL, 10,
                                         PositionEffect.CLOSE))
    (post,) = tt.fake.calls("POST", ORDERS)
    assert post.json()["advanced-instructions"] == {"strict-position-effect-validation": True}
    assert book.held("NVDA") == 0  # no short was opened


def test_a_dry_run_is_validated_the_same_way(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    tt.fake.on("GET", POSITIONS, positions_reply({"NVDA": ("Equity", 10)}))
    adapter = tt.connected(live=False)
    with pytest.raises(OrderRejected, match="position to close is not open"):
        adapter.place_order(OrderRequest(ClientOrderId("ema-NVDA-clos-8"), "NVDA", OrderSide.SELL, 10,
                                         PositionEffect.CLOSE))
    assert len(tt.fake.calls("POST", DRY)) == 1 and book.orders == []


def test_paper_mode_sends_to_dry_run_endpoint_only(tt: Harness) -> None:
    adapter = tt.connected(live=False)
    assert adapter.dry_run is True
    coid = ClientOrderId("ema-MES-open-dry0000000000000")
    _reply(tt, DRY, order_body(order_id=None, coid=coid, symbol="/MESZ5", instrument_type="Future",
                               action="Buy", status="Received"))
    update = adapter.place_order(OrderRequest(coid, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN))
    posts = [r for r in tt.fake.requests if r.method == "POST" and "/orders" in r.path]
    assert [p.url for p in posts] == [f"{API}{DRY}"]
    assert posts[0].json()["external-identifier"] == coid
    assert update.broker_order_id is None and "dry run" in (update.reason or "")
    assert tt.fake.calls("POST", ORDERS) == []


def test_live_adapter_is_not_dry_run(tt: Harness) -> None:
    assert tt.adapter(live=True).dry_run is False
    assert tt.adapter(live=False).dry_run is True


def test_index_without_option_is_rejected_before_sending(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    with pytest.raises(OrderRejected, match="index"):
        adapter.place_order(OrderRequest(ClientOrderId("x-SPX"), "SPX", OrderSide.BUY, 1, PositionEffect.OPEN))
    assert [r for r in tt.fake.requests if "/orders" in r.path] == []


def test_front_month_rolls_on_second_thursday(tt: Harness) -> None:
    from datetime import UTC, datetime

    from brokers.tastytrade.adapter import TastytradeAdapter
    from tt_fake import make_settings

    tt.login()
    adapter = TastytradeAdapter(make_settings(tt.base, live=True), tt.store, tt.tokens, transport=tt.fake.transport,
                                clock=lambda: datetime(2025, 12, 11, 15, 0, tzinfo=UTC))
    try:
        assert adapter.connect().connected
        coid = ClientOrderId("ema-MES-roll")
        _reply(tt, ORDERS, order_body(order_id=905, coid=coid, symbol="/MESH6", instrument_type="Future",
                                      action="Buy"))
        adapter.place_order(OrderRequest(coid, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN))
        assert tt.fake.calls("POST", ORDERS)[0].json()["legs"][0]["symbol"] == "/MESH6"
    finally:
        adapter.close()


# --- the open/close effect follows the account, not the strategy ------------------------------
# Two strategies may trade one symbol at one Tastytrade account; the order's effect is chosen from
# the account's position in that symbol (GET /accounts/{n}/positions?symbol=..., read just before
# the POST), so "to Close" is only sent for what the account holds.


def _sent_action(tt: Harness) -> str:
    (post,) = tt.fake.calls("POST", ORDERS)
    return str(post.json()["legs"][0]["action"])


def test_a_strategys_close_opens_when_the_account_holds_the_other_side(tt: Harness) -> None:
    # ema is long 10 NVDA, supertrend short 20: the account is short 10. ema selling its 10 adds
    # to the account's short: "Sell to Open", not a close of shares the account does not hold.
    book = TastytradeAccount(tt.fake)
    book.hold("NVDA", "Equity", -10)
    adapter = tt.connected(live=True)
    adapter.place_order(OrderRequest(ClientOrderId("ema-NVDA-clos-1"), "NVDA", OrderSide.SELL, 10, PositionEffect.CLOSE))
    assert _sent_action(tt) == "Sell to Open"
    (read,) = tt.fake.calls("GET", POSITIONS)
    assert dict(httpx2.URL(read.url).params) == {"symbol": "NVDA"}
    assert book.held("NVDA") == -20


def test_a_strategys_entry_closes_when_the_account_is_long_through_another(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    book.hold("NVDA", "Equity", 10)
    adapter = tt.connected(live=True)
    adapter.place_order(OrderRequest(ClientOrderId("sup-NVDA-open-1"), "NVDA", OrderSide.SELL, 10, PositionEffect.OPEN))
    assert _sent_action(tt) == "Sell to Close"
    assert book.held("NVDA") == 0


def test_an_option_close_of_a_contract_not_held_is_an_open(tt: Harness) -> None:
    TastytradeAccount(tt.fake)
    adapter = tt.connected(live=True)
    option = OptionContract("SPX", "SPXW", date(2025, 11, 20), Decimal("6650"), OptionRight.CALL)
    adapter.place_order(OrderRequest(ClientOrderId("zer-SPX-clos-1"), "SPX", OrderSide.BUY, 1, PositionEffect.CLOSE,
                                     option=option))
    assert _sent_action(tt) == "Buy to Open"


def test_an_order_through_zero_is_refused_before_sending(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    book.hold("NVDA", "Equity", 3)
    adapter = tt.connected(live=True)
    with pytest.raises(OrderRejected, match=r"holds \+3 NVDA; selling 10 would close 3 and open 7"):
        adapter.place_order(OrderRequest(ClientOrderId("sup-NVDA-open-2"), "NVDA", OrderSide.SELL, 10,
                                         PositionEffect.OPEN))
    assert tt.fake.calls("POST", ORDERS) == [] and book.held("NVDA") == 3


def test_an_unreadable_position_means_the_order_is_not_sent(tt: Harness) -> None:
    from brokers.errors import TemporaryBrokerError

    TastytradeAccount(tt.fake)
    tt.fake.on("GET", POSITIONS, httpx2.Response(503, json={"error": {"code": "unavailable", "message": "later"}}))
    adapter = tt.connected(live=True)
    with pytest.raises(TemporaryBrokerError):
        adapter.place_order(OrderRequest(ClientOrderId("ema-NVDA-open-3"), "NVDA", OrderSide.BUY, 1, PositionEffect.OPEN))
    assert tt.fake.calls("POST", ORDERS) == []


def test_a_futures_close_goes_to_the_contract_month_held_not_todays_front_month(tt: Harness) -> None:
    # The harness's day trades December (/MESZ5) as the front month; a position held in March
    # is closed in March (closing "in the front month" left a calendar spread across a roll).
    adapter = tt.connected(live=True)
    coid = ClientOrderId("ema-MES-clos-0123456789abcdef")
    _reply(tt, ORDERS, order_body(order_id=902, coid=coid, symbol="/MESH6", instrument_type="Future",
                                  action="Sell", quantity=1, underlying="/MES"))
    adapter.place_order(OrderRequest(coid, "/MES", OrderSide.SELL, 1, PositionEffect.CLOSE, contract="/MESH26"))
    (post,) = [r for r in tt.fake.requests if r.method == "POST" and r.path.startswith(f"/accounts/{ACCOUNT}/orders")]
    assert post.json()["legs"] == [{"instrument-type": "Future", "symbol": "/MESH6", "action": "Sell", "quantity": 1}]
