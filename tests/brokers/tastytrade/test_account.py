"""Account resolution, positions, balances, order-status mapping, get_order after a restart."""
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
    NOW,
    Harness,
    TastytradeAccount,
    fill,
    load,
    order_body,
    placed_response,
    tt,
    tt_any_store,
)

from brokers.errors import AuthenticationRequired, BrokerConfigError  # noqa: E402
from brokers.tastytrade.adapter import TastytradeAdapter  # noqa: E402
from domain.orders import (  # noqa: E402
    Balances,
    BrokerOrderId,
    BrokerPosition,
    ClientOrderId,
    OrderRequest,
    OrderSide,
    OrderState,
    PositionEffect,
)

ORDERS = f"/accounts/{ACCOUNT}/orders"
LIVE = f"/accounts/{ACCOUNT}/orders/live"


def test_account_from_setting_not_the_first_one(tt: Harness) -> None:
    # accounts.json lists 5WT00002 first; the configured 5WT00001 must be used
    adapter = tt.connected()
    status = adapter.status()
    assert status.account == "****0001"
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(200, json=load("positions.json")))
    adapter.positions()
    assert tt.fake.requests[-1].path == f"/accounts/{ACCOUNT}/positions"


def test_account_absent_from_login_is_config_error(tt: Harness) -> None:
    tt.login()
    adapter = tt.adapter(account="5WT99999")
    with pytest.raises(BrokerConfigError) as info:
        adapter.connect()
    assert "****9999" in info.value.message and "****0001" in info.value.message
    assert "5WT99999" not in info.value.message and "5WT00001" not in info.value.message
    assert adapter.status().connected is False
    with pytest.raises(AuthenticationRequired):
        adapter.positions()


def test_account_setting_missing_is_config_error(tt: Harness) -> None:
    tt.login()
    with pytest.raises(BrokerConfigError, match="TASTYTRADE_ACCOUNT_ID"):
        tt.adapter(account=None).connect()


def test_positions_signed_by_direction(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(200, json=load("positions.json")))
    assert adapter.positions() == [
        BrokerPosition("/MESZ25", 2, Decimal("6612.25"), Decimal(5)),  # keyed by contract month
        BrokerPosition("NVDA", -10, Decimal("181.37"), Decimal(1)),
        BrokerPosition("SPXW  251120C06650000", 1, Decimal("4.1"), Decimal(100)),
    ]


def test_futures_positions_in_two_contract_months_stay_apart(tt: Harness) -> None:
    # They collapsed into one "/MES" key, so reconciliation kept whichever it read last.
    adapter = tt.connected()
    rows = load("positions.json")
    mes = next(r for r in rows["data"]["items"] if r["symbol"] == "/MESZ5")
    next_month = {**mes, "symbol": "/MESH6", "quantity": 1, "quantity-direction": "Short"}
    rows["data"]["items"].append(next_month)
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(200, json=rows))
    held = {p.key: p.quantity for p in adapter.positions()}
    assert held["/MESZ25"] == 2 and held["/MESH26"] == -1


def test_balances(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/balances/USD", httpx2.Response(200, json=load("balances.json")))
    assert adapter.balances() == Balances(cash=Decimal("25012.34"), equity=Decimal("31877.5"),
                                          buying_power=Decimal("21450.12"))


@pytest.mark.parametrize(("status", "remaining", "fills", "state", "filled"), [
    ("Received", 3, [], OrderState.ACCEPTED, 0),
    ("Routed", 3, [], OrderState.ACCEPTED, 0),
    ("In Flight", 3, [], OrderState.ACCEPTED, 0),
    ("Live", 3, [], OrderState.ACCEPTED, 0),
    ("Live", 2, [fill("f1", 1, "6612.25")], OrderState.PARTIALLY_FILLED, 1),
    ("Live", 1, [], OrderState.PARTIALLY_FILLED, 2),  # remaining quantity without fill records
    ("Filled", 0, [fill("f1", 1, "6612.25"), fill("f2", 2, "6612.75")], OrderState.FILLED, 3),
    ("Cancelled", 3, [], OrderState.CANCELLED, 0),
    ("Expired", 3, [], OrderState.CANCELLED, 0),
    ("Rejected", 3, [], OrderState.REJECTED, 0),
])
def test_status_mapping(tt: Harness, status: str, remaining: int, fills: list, state: OrderState, filled: int) -> None:
    adapter = tt.connected(live=True)
    coid = "ema-MES-open-status"
    body = order_body(order_id=4242, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy to Open",
                      quantity=3, status=status, remaining=remaining, fills=fills,
                      reject_reason="Exceeds max order size" if status == "Rejected" else None)
    tt.fake.on("GET", f"{ORDERS}/4242", httpx2.Response(200, json={"data": body}))
    update = adapter.get_order(ClientOrderId(coid), BrokerOrderId("4242"))
    assert update is not None
    assert (update.state, update.filled_quantity) == (state, filled)
    if status == "Filled":
        assert update.avg_fill_price == (Decimal("6612.25") + 2 * Decimal("6612.75")) / 3
        assert [f.fill_id for f in update.fills] == ["f1", "f2"]
    if status == "Rejected":
        assert update.reason == "Exceeds max order size"


def test_get_order_after_restart_uses_stored_id(tt_any_store: Harness) -> None:
    tt = tt_any_store
    first = tt.connected(live=True)
    coid = ClientOrderId("ema-MES-open-restart")
    placed = order_body(order_id=5150, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy to Open")
    tt.fake.on("POST", ORDERS, httpx2.Response(201, json=placed_response(placed)))
    first.place_order(OrderRequest(coid, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN))
    first.close()

    second = tt.connected(live=True)  # a new process: only Redis survives
    filled = order_body(order_id=5150, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy to Open",
                        status="Filled", remaining=0, fills=[fill("f9", 1, "6610.5")])
    tt.fake.on("GET", f"{ORDERS}/5150", httpx2.Response(200, json={"data": filled}))
    update = second.get_order(coid, None)
    assert update is not None and update.state is OrderState.FILLED and update.broker_order_id == "5150"
    assert update.avg_fill_price == Decimal("6610.5")
    assert len(tt.fake.calls("POST", ORDERS)) == 1


def test_get_order_without_stored_id_searches_the_account_orders(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    adapter = tt.connected(live=True)
    coid = ClientOrderId("ema-MES-open-scan")
    book.add_order(order_body(order_id=1, coid="someone-else", symbol="/MESZ5", instrument_type="Future",
                              action="Sell"), at=NOW)
    book.add_order(order_body(order_id=2, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy",
                              status="Live"), at=NOW)
    update = adapter.get_order(coid, None)
    assert update is not None and update.broker_order_id == "2" and update.state is OrderState.ACCEPTED
    assert tt.store.redis.hget(tt.store.key("broker", "tastytrade", "order_ids"), coid) == "2"
    assert adapter.get_order(ClientOrderId("never-sent"), None) is None


def test_open_orders_and_cancel(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    working = order_body(order_id=7, coid="ema-MES-open-w", symbol="/MESZ5", instrument_type="Future",
                         action="Buy to Open", status="Live", order_type="Limit", price="6500.0")
    done = order_body(order_id=8, coid="ema-MES-open-d", symbol="/MESZ5", instrument_type="Future",
                      action="Buy to Open", status="Filled", remaining=0, fills=[fill("f", 1, "6600")])
    tt.fake.on("GET", LIVE, httpx2.Response(200, json={"data": {"items": [working, done]}}))
    opened = adapter.open_orders()
    assert [(u.client_order_id, u.broker_order_id) for u in opened] == [("ema-MES-open-w", "7")]

    tt.fake.on("DELETE", f"{ORDERS}/7", httpx2.Response(200, json={"data": dict(working, status="Cancel Requested")}))
    cancelled = dict(working, status="Cancelled")
    tt.fake.on("GET", f"{ORDERS}/7", httpx2.Response(200, json={"data": cancelled}))
    update = adapter.cancel_order(ClientOrderId("ema-MES-open-w"), BrokerOrderId("7"))
    assert update.state is OrderState.CANCELLED
    assert len(tt.fake.calls("DELETE", f"{ORDERS}/7")) == 1


def test_option_chain_for_todays_spxw(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", "/option-chains/SPX/nested", httpx2.Response(200, json=load("spx_nested_chain.json")))
    chain = adapter.option_chain("SPX", date(2025, 11, 20))
    assert [(c.strike, c.right.value) for c in chain] == [
        (Decimal("6600"), "C"), (Decimal("6600"), "P"), (Decimal("6650"), "C"), (Decimal("6650"), "P"),
        (Decimal("6655"), "C"), (Decimal("6655"), "P"),
    ]
    assert all(c.root == "SPXW" and c.underlying == "SPX" and c.expiration == date(2025, 11, 20) for c in chain)
    # the broker symbol is Tastytrade's, and it equals our OCC symbol
    assert all(c.broker_symbol == c.occ_symbol for c in chain)
    assert chain[2].occ_symbol == "SPXW  251120C06650000"
    assert adapter.option_chain("SPX", date(2025, 11, 22)) == []


def test_quote_for_front_month_future(tt: Harness) -> None:
    adapter = tt.connected()
    row = {"symbol": "/MESZ5", "instrument-type": "Future", "updated-at": "2025-11-20T15:00:00.5+00:00",
           "bid-size": "12", "ask-size": "9", "close-price-type": "Regular", "summary-date": "2025-11-20",
           "prev-close-date": "2025-11-19", "prev-close-price-type": "Final", "halt-start-time": -1,
           "halt-end-time": -1, "bid": "6612.0", "ask": "6612.25", "last": "6612.25", "mark": "6612.125"}
    tt.fake.on("GET", "/market-data/by-type", httpx2.Response(200, json={"data": {"items": [row]}}))
    quote = adapter.quote("/MES")
    assert (quote.bid, quote.ask, quote.last) == (Decimal("6612.0"), Decimal("6612.25"), Decimal("6612.25"))
    assert tt.fake.requests[-1].url.endswith("/market-data/by-type?future=%2FMESZ5")


def test_unconnected_adapter_raises_authentication_required(tt: Harness) -> None:
    adapter: TastytradeAdapter = tt.adapter()
    with pytest.raises(AuthenticationRequired):
        adapter.balances()
