"""Order JSON sent by the real schwab-py client, order ids, the coid map and status mapping."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from brokers.errors import OrderRejected
from domain.orders import (
    ClientOrderId,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    PositionEffect,
)
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    ACCOUNT_HASH,
    ORDERS_URL,
    SchwabEnv,
    created,
    json_reply,
    load,
    schwab_env,
    schwab_env_any_redis,
)

BUY, SELL = OrderSide.BUY, OrderSide.SELL
OPEN, CLOSE = PositionEffect.OPEN, PositionEffect.CLOSE
ORDERS_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}/orders"
SPXW_CALL = OptionContract("SPX", "SPXW", date(2025, 12, 19), Decimal("6000"), OptionRight.CALL)


def equity(side: OrderSide, effect: PositionEffect, *, limit: Decimal | None = None, qty: int = 10,
           symbol: str = "NVDA", coid: str = "ema-NVDA-open-0001") -> OrderRequest:
    return OrderRequest(
        client_order_id=ClientOrderId(coid), symbol=symbol, side=side, quantity=qty, position_effect=effect,
        order_type=OrderType.LIMIT if limit is not None else OrderType.MARKET, limit_price=limit,
    )


@pytest.mark.parametrize("held, side, effect, instruction", [
    (0, BUY, OPEN, "BUY"),
    (10, SELL, CLOSE, "SELL"),
    (0, SELL, OPEN, "SELL_SHORT"),
    (-10, BUY, CLOSE, "BUY_TO_COVER"),
])
@pytest.mark.parametrize("limit", [None, Decimal("185.5")])
def test_equity_order_json(schwab_env: SchwabEnv, held: int, side: OrderSide, effect: PositionEffect,
                           instruction: str, limit: Decimal | None) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456789))
    schwab_env.fake.hold({"NVDA": held})
    adapter = schwab_env.logged_in()
    update = adapter.place_order(equity(side, effect, limit=limit))

    [post] = schwab_env.fake.calls("POST", ORDERS_PATH)
    assert post.url == ORDERS_URL
    expected: dict[str, object] = {
        "session": "NORMAL", "duration": "DAY", "orderType": "LIMIT" if limit else "MARKET",
        "orderLegCollection": [
            {"instruction": instruction, "instrument": {"assetType": "EQUITY", "symbol": "NVDA"}, "quantity": 10},
        ],
        "orderStrategyType": "SINGLE",
    }
    if limit:
        expected["price"] = "185.50"
    assert post.json() == expected
    assert post.headers["content-type"] == "application/json"
    assert update.state is OrderState.ACCEPTED
    assert update.broker_order_id == "1004123456789"  # from the Location header


@pytest.mark.parametrize("held, side, effect, instruction", [
    (0, BUY, OPEN, "BUY_TO_OPEN"),
    (2, SELL, CLOSE, "SELL_TO_CLOSE"),
    (0, SELL, OPEN, "SELL_TO_OPEN"),
    (-2, BUY, CLOSE, "BUY_TO_CLOSE"),
])
def test_option_order_json_uses_occ_symbol(schwab_env: SchwabEnv, held: int, side: OrderSide,
                                           effect: PositionEffect, instruction: str) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456790))
    schwab_env.fake.hold({"SPXW  251219C06000000": held})
    adapter = schwab_env.logged_in()
    adapter.place_order(OrderRequest(
        client_order_id=ClientOrderId("zer-SPX-open-0001"), symbol="SPX", side=side, quantity=2,
        position_effect=effect, order_type=OrderType.LIMIT, limit_price=Decimal("12.3"), option=SPXW_CALL,
    ))
    [post] = schwab_env.fake.calls("POST", ORDERS_PATH)
    assert post.json() == {
        "session": "NORMAL", "duration": "DAY", "orderType": "LIMIT", "price": "12.30",
        "orderLegCollection": [{
            "instruction": instruction,
            "instrument": {"assetType": "OPTION", "symbol": "SPXW  251219C06000000"},
            "quantity": 2,
        }],
        "orderStrategyType": "SINGLE",
    }


def test_option_market_order(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456790))
    adapter = schwab_env.logged_in()
    put = OptionContract("SPX", "SPXW", date(2025, 12, 5), Decimal("6852.5"), OptionRight.PUT)
    schwab_env.fake.hold({put.occ_symbol: 1})
    adapter.place_order(OrderRequest(ClientOrderId("zer-SPX-clos-0002"), "SPX", SELL, 1, CLOSE, option=put))
    [post] = schwab_env.fake.calls("POST", ORDERS_PATH)
    body = post.json()
    assert "price" not in body and body["orderType"] == "MARKET"
    assert body["orderLegCollection"][0]["instrument"]["symbol"] == "SPXW  251205P06852500"
    assert body["orderLegCollection"][0]["instruction"] == "SELL_TO_CLOSE"


@pytest.mark.parametrize("symbol", ["/MES", "MES", "/ES", "/NQ"])
def test_futures_are_rejected_without_any_request(schwab_env: SchwabEnv, symbol: str) -> None:
    adapter = schwab_env.logged_in()
    sent = len(schwab_env.fake.requests)
    with pytest.raises(OrderRejected, match="cannot trade futures"):
        adapter.place_order(equity(BUY, OPEN, symbol=symbol, qty=1))
    assert len(schwab_env.fake.requests) == sent


def test_the_index_itself_is_rejected(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    with pytest.raises(OrderRejected, match="index"):
        adapter.place_order(equity(BUY, OPEN, symbol="SPX", qty=1))
    assert schwab_env.fake.calls("POST", ORDERS_PATH) == []


# --- protective stops: equity STOP orders resting at Schwab ------------------------------------
# The JSON is Schwab's Order schema (Trader API "Place Order": orderType STOP with a stopPrice) as
# schwab-py's OrderBuilder writes it: its equity market template (session NORMAL, orderStrategyType
# SINGLE, the leg) with set_order_type(OrderType.STOP), set_stop_price(str) and
# set_duration(Duration.GOOD_TILL_CANCEL), schwab/orders/generic.py and schwab/orders/common.py.

def stop(side: OrderSide, price: str = "170", *, qty: int = 10, option: OptionContract | None = None,
         coid: str = "ema-NVDA-stop-0001") -> OrderRequest:
    return OrderRequest(ClientOrderId(coid), "SPX" if option else "NVDA", side, qty, CLOSE, order_type=OrderType.STOP,
                        stop_price=Decimal(price), option=option)


def test_the_adapter_rests_stops() -> None:
    from brokers.schwab.adapter import SchwabAdapter

    assert SchwabAdapter.supports_stop_orders is True  # so the order manager keeps one at Schwab


@pytest.mark.parametrize("held, side, price, instruction, stop_price", [
    (10, SELL, "170", "SELL", "170.00"),  # a long position's stop, below the market
    (-10, BUY, "201.37", "BUY_TO_COVER", "201.37"),  # a short position's stop, above it
])
def test_protective_stop_json(schwab_env: SchwabEnv, held: int, side: OrderSide, price: str, instruction: str,
                              stop_price: str) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456800))
    schwab_env.fake.hold({"NVDA": held})
    adapter = schwab_env.logged_in()
    update = adapter.place_order(stop(side, price))

    [post] = schwab_env.fake.calls("POST", ORDERS_PATH)
    assert post.json() == {
        "session": "NORMAL", "duration": "GOOD_TILL_CANCEL", "orderType": "STOP", "stopPrice": stop_price,
        "orderLegCollection": [
            {"instruction": instruction, "instrument": {"assetType": "EQUITY", "symbol": "NVDA"}, "quantity": 10},
        ],
        "orderStrategyType": "SINGLE",
    }
    assert (update.state, update.broker_order_id) == (OrderState.ACCEPTED, "1004123456800")


def test_a_stop_on_an_option_is_refused_before_anything_is_sent(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.hold({SPXW_CALL.occ_symbol: 2})
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456801))
    adapter = schwab_env.logged_in()
    sent = len(schwab_env.fake.requests)
    with pytest.raises(OrderRejected, match="STOP orders for equities only, not options"):
        adapter.place_order(stop(SELL, "5", qty=2, option=SPXW_CALL))
    with pytest.raises(OrderRejected, match="equities only"):
        adapter.preview_order(stop(SELL, "5", qty=2, option=SPXW_CALL))
    assert len(schwab_env.fake.requests) == sent  # not even the position read


@pytest.mark.parametrize("status", ["WORKING", "AWAITING_STOP_CONDITION", "PENDING_ACTIVATION"])
def test_a_resting_stop_is_accepted_and_open(schwab_env: SchwabEnv, status: str) -> None:
    # Schwab's Order.status enum (schwab-py Client.Order.Status): a stop waiting for its price is
    # WORKING / AWAITING_STOP_CONDITION, one entered outside market hours PENDING_ACTIVATION.
    resting = dict(load("order_stop_resting.json"), status=status)
    oid = resting["orderId"]
    schwab_env.fake.hold({"NVDA": 10})
    schwab_env.fake.on("POST", ORDERS_PATH, created(oid))
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/{oid}", json_reply(resting))
    schwab_env.fake.on("GET", ORDERS_PATH, json_reply([resting]))
    adapter = schwab_env.logged_in()
    adapter.place_order(stop(SELL))

    update = adapter.get_order(ClientOrderId("ema-NVDA-stop-0001"), None)
    assert update is not None
    assert (update.state, update.filled_quantity, update.broker_order_id) == (OrderState.ACCEPTED, 0, str(oid))
    [listed] = adapter.open_orders()
    assert (listed.client_order_id, listed.state) == ("ema-NVDA-stop-0001", OrderState.ACCEPTED)


def test_open_orders_reach_back_to_a_stop_entered_weeks_ago(schwab_env: SchwabEnv) -> None:
    # A GOOD_TILL_CANCEL stop may have been entered weeks ago: the search reaches as far back as
    # Schwab's order search allows (60 days, schwab-py's default window), not two days.
    from datetime import datetime, timedelta

    schwab_env.fake.on("GET", ORDERS_PATH, json_reply([]))
    adapter = schwab_env.logged_in()
    adapter.open_orders()
    [listing] = schwab_env.fake.calls("GET", ORDERS_PATH)
    start = datetime.fromisoformat(listing.params["fromEnteredTime"][0].replace("Z", "+00:00"))
    end = datetime.fromisoformat(listing.params["toEnteredTime"][0].replace("Z", "+00:00"))
    assert timedelta(days=58) < end - start <= timedelta(days=60)


def test_cancel_of_a_resting_stop(schwab_env: SchwabEnv) -> None:
    import httpx2

    resting = load("order_stop_resting.json")
    oid = resting["orderId"]
    schwab_env.fake.hold({"NVDA": 10})
    schwab_env.fake.on("POST", ORDERS_PATH, created(oid))
    # Schwab's Cancel Order answers 200 with no body; the order then reads CANCELED.
    schwab_env.fake.on("DELETE", f"{ORDERS_PATH}/{oid}", lambda r: httpx2.Response(200))
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/{oid}", json_reply(dict(resting, status="CANCELED")))
    adapter = schwab_env.logged_in()
    adapter.place_order(stop(SELL))

    update = adapter.cancel_order(ClientOrderId("ema-NVDA-stop-0001"), None)
    assert (update.state, update.filled_quantity) == (OrderState.CANCELLED, 0)
    [delete] = schwab_env.fake.calls("DELETE", f"{ORDERS_PATH}/{oid}")
    assert delete.url == f"{ORDERS_URL}/{oid}"


def test_a_stop_whose_outcome_is_unknown_is_found_by_its_stop_price() -> None:
    from brokers.schwab.parsing import build_order_spec, matches_fingerprint, order_fingerprint

    fp = order_fingerprint(build_order_spec(stop(SELL, "170"), "NVDA", CLOSE))
    resting = load("order_stop_resting.json")  # stopPrice 170.0, as Schwab answers numbers
    assert matches_fingerprint(resting, fp)
    assert not matches_fingerprint(dict(resting, stopPrice=165.0), fp)  # another stop of the same shape


def test_rejection_carries_schwab_message_and_can_be_resent(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, json_reply(load("order_rejection_400.json"), status=400),
                       created(1004123456789))
    adapter = schwab_env.logged_in()
    with pytest.raises(OrderRejected) as info:
        adapter.place_order(equity(BUY, OPEN))
    assert "insufficient buying power" in info.value.reason
    assert "insufficient buying power" in str(info.value)
    # A rejected order left no pending record: a corrected resend is a normal send.
    assert adapter.place_order(equity(BUY, OPEN)).broker_order_id == "1004123456789"


@pytest.mark.parametrize("status", [403, 422])
def test_403_and_422_are_rejections(schwab_env: SchwabEnv, status: int) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, json_reply({"message": "Order not allowed for this account"}, status=status))
    adapter = schwab_env.logged_in()
    with pytest.raises(OrderRejected, match="Order not allowed for this account"):
        adapter.place_order(equity(SELL, OPEN))


def test_same_client_order_id_is_never_sent_twice(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456789))
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/1004123456789", json_reply(load("order_partial.json")))
    adapter = schwab_env.logged_in()
    adapter.place_order(equity(BUY, OPEN))
    again = adapter.place_order(equity(BUY, OPEN))
    assert len(schwab_env.fake.calls("POST", ORDERS_PATH)) == 1
    assert again.broker_order_id == "1004123456789" and again.state is OrderState.PARTIALLY_FILLED


def test_get_order_after_restart_uses_redis_coid_map(schwab_env_any_redis: SchwabEnv) -> None:
    env = schwab_env_any_redis
    env.fake.on("POST", ORDERS_PATH, created(1004123456789))
    env.fake.on("GET", f"{ORDERS_PATH}/1004123456789", json_reply(load("order_partial.json")))
    first = env.logged_in()
    first.place_order(equity(BUY, OPEN, limit=Decimal("185.50")))
    first.close()

    restarted = env.adapter()  # new process, same Redis
    update = restarted.get_order(ClientOrderId("ema-NVDA-open-0001"), None)
    assert update is not None
    assert update.broker_order_id == "1004123456789"
    assert update.client_order_id == "ema-NVDA-open-0001"
    assert update.state is OrderState.PARTIALLY_FILLED
    assert update.filled_quantity == 4
    assert [(f.quantity, f.price) for f in update.fills] == [(3, Decimal("185.45")), (1, Decimal("185.5"))]
    assert update.avg_fill_price == (Decimal("185.45") * 3 + Decimal("185.5")) / 4
    assert env.fake.calls("GET", f"{ORDERS_PATH}/1004123456789")[0].url == f"{ORDERS_URL}/1004123456789"


def test_get_order_unknown_is_none(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    assert adapter.get_order(ClientOrderId("never-sent"), None) is None
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/42", json_reply({"message": "Order not found"}, status=404))
    assert adapter.get_order(ClientOrderId("x"), None) is None
    assert adapter.get_order(ClientOrderId("x"), "42") is None  # type: ignore[arg-type]


@pytest.mark.parametrize("fixture, state, filled, reason", [
    ("order_filled_option.json", OrderState.FILLED, 2, None),
    ("order_rejected.json", OrderState.REJECTED, 0, "No shares available to borrow for short sale of TSLA"),
])
def test_terminal_order_states(schwab_env: SchwabEnv, fixture: str, state: OrderState, filled: int,
                               reason: str | None) -> None:
    raw = load(fixture)
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/{raw['orderId']}", json_reply(raw))
    adapter = schwab_env.logged_in()
    update = adapter.get_order(ClientOrderId("c-1"), str(raw["orderId"]))  # type: ignore[arg-type]
    assert update is not None
    assert (update.state, update.filled_quantity, update.reason) == (state, filled, reason)
    if state is OrderState.FILLED:
        assert update.avg_fill_price == Decimal("12.35")
        assert len(update.fills) == 2 and len({f.fill_id for f in update.fills}) == 2


@pytest.mark.parametrize("status, filled, expected", [
    ("AWAITING_PARENT_ORDER", 0, OrderState.ACCEPTED),
    ("PENDING_ACTIVATION", 0, OrderState.ACCEPTED),
    ("QUEUED", 0, OrderState.ACCEPTED),
    ("WORKING", 0, OrderState.ACCEPTED),
    ("WORKING", 3, OrderState.PARTIALLY_FILLED),
    ("PENDING_CANCEL", 3, OrderState.PARTIALLY_FILLED),
    ("FILLED", 10, OrderState.FILLED),
    ("CANCELED", 0, OrderState.CANCELLED),
    ("CANCELED", 3, OrderState.CANCELLED),
    ("EXPIRED", 0, OrderState.CANCELLED),
    ("REPLACED", 0, OrderState.CANCELLED),
    ("REJECTED", 0, OrderState.REJECTED),
    ("UNKNOWN", 0, OrderState.UNKNOWN),
    ("SOMETHING_NEW", 0, OrderState.UNKNOWN),
])
def test_status_mapping(status: str, filled: int, expected: OrderState) -> None:
    from brokers.schwab.parsing import map_order

    raw = dict(load("order_partial.json"), status=status, filledQuantity=float(filled), orderActivityCollection=[])
    update = map_order(raw, ClientOrderId("c"))
    assert update.state is expected and update.filled_quantity == filled


def test_open_orders_and_cancel(schwab_env: SchwabEnv) -> None:
    working, filled = load("order_partial.json"), load("order_filled_option.json")
    schwab_env.fake.on("POST", ORDERS_PATH, created(working["orderId"]))
    schwab_env.fake.on("GET", ORDERS_PATH, json_reply([working, filled]))
    adapter = schwab_env.logged_in()
    adapter.place_order(equity(BUY, OPEN))
    [open_order] = adapter.open_orders()
    assert open_order.client_order_id == "ema-NVDA-open-0001"  # reverse map oid -> coid
    assert open_order.state is OrderState.PARTIALLY_FILLED
    [listing] = schwab_env.fake.calls("GET", ORDERS_PATH)
    assert set(listing.params) == {"fromEnteredTime", "toEnteredTime"}

    cancelled = dict(working, status="CANCELED")
    schwab_env.fake.on("DELETE", f"{ORDERS_PATH}/{working['orderId']}", lambda r: __import__("httpx2").Response(200))
    schwab_env.fake.on("GET", f"{ORDERS_PATH}/{working['orderId']}", json_reply(cancelled))
    update = adapter.cancel_order(ClientOrderId("ema-NVDA-open-0001"), None)
    assert update.state is OrderState.CANCELLED and update.filled_quantity == 4
    assert len(schwab_env.fake.calls("DELETE", f"{ORDERS_PATH}/{working['orderId']}")) == 1


def test_cancel_refused_is_rejection(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.on("DELETE", f"{ORDERS_PATH}/77",
                       json_reply({"message": "Order cannot be canceled: already filled"}, status=400))
    adapter = schwab_env.logged_in()
    with pytest.raises(OrderRejected, match="already filled"):
        adapter.cancel_order(ClientOrderId("c"), "77")  # type: ignore[arg-type]


# --- the open/close instruction follows the account, not the strategy -------------------------
# Two strategies may trade one symbol at one Schwab account; Schwab sees only the account's net
# position, so the instruction is chosen from that (GET /trader/v1/accounts/{hash}?fields=positions,
# read just before the POST).


def _instruction(env: SchwabEnv) -> str:
    [post] = env.fake.calls("POST", ORDERS_PATH)
    return str(post.json()["orderLegCollection"][0]["instruction"])


def test_a_strategys_close_is_a_short_sale_when_the_account_is_short(schwab_env: SchwabEnv) -> None:
    # ema is long 5 TSLA, supertrend short 10: the account is short 5. ema selling its 5 adds to
    # the account's short, which Schwab only takes as SELL_SHORT.
    schwab_env.fake.hold({"TSLA": -5})
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456791))
    adapter = schwab_env.logged_in()
    adapter.place_order(equity(SELL, CLOSE, qty=5, symbol="TSLA"))
    assert _instruction(schwab_env) == "SELL_SHORT"
    [read] = schwab_env.fake.calls("GET", f"/trader/v1/accounts/{ACCOUNT_HASH}")
    assert read.params == {"fields": ["positions"]}


def test_a_strategys_short_entry_is_a_sale_when_the_account_is_long(schwab_env: SchwabEnv) -> None:
    # supertrend opens short 10 NVDA while ema holds the account's 10 long: for Schwab it is a SELL.
    schwab_env.fake.hold({"NVDA": 10})
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456792))
    adapter = schwab_env.logged_in()
    adapter.place_order(equity(SELL, OPEN, qty=10))
    assert _instruction(schwab_env) == "SELL"


def test_a_strategys_cover_is_a_buy_when_the_account_is_flat(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456793))
    adapter = schwab_env.logged_in()
    adapter.place_order(equity(BUY, CLOSE, qty=10))
    assert _instruction(schwab_env) == "BUY"


def test_an_order_through_zero_is_refused_before_sending(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.hold({"NVDA": 3})
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456794))
    adapter = schwab_env.logged_in()
    with pytest.raises(OrderRejected, match=r"holds \+3 NVDA; selling 10 would close 3 and open 7"):
        adapter.place_order(equity(SELL, OPEN, qty=10))
    assert schwab_env.fake.calls("POST", ORDERS_PATH) == []
    # Nothing was left pending: once the account allows it, the same order is sent normally.
    schwab_env.fake.hold({"NVDA": 10})
    assert adapter.place_order(equity(SELL, OPEN, qty=10)).broker_order_id == "1004123456794"


@pytest.mark.parametrize("reply, raised", [
    (json_reply({"message": "Service unavailable"}, status=503), "HTTP 503"),
    (json_reply({"message": "Bad request"}, status=400), "unreadable, order not sent"),
])
def test_an_unreadable_position_means_the_order_is_not_sent(schwab_env: SchwabEnv, reply: object, raised: str) -> None:
    from brokers.errors import TemporaryBrokerError

    schwab_env.fake.on("GET", f"/trader/v1/accounts/{ACCOUNT_HASH}", reply)  # type: ignore[arg-type]
    schwab_env.fake.on("POST", ORDERS_PATH, created(1004123456795))
    adapter = schwab_env.logged_in()
    with pytest.raises(TemporaryBrokerError, match=raised):
        adapter.place_order(equity(BUY, OPEN))
    assert schwab_env.fake.calls("POST", ORDERS_PATH) == []
