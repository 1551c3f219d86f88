"""Finding an order by client id when its POST timed out: every status, since last evening, every
page; and "Tastytrade has no such order" (None) told apart from "Tastytrade could not be asked".

The fake account answers the order search (GET /accounts/{n}/orders) and the live-orders endpoint
as Tastytrade documents them (developer.tastytrade.com/order-management: the search takes
`start-date` and pages with `per-page`/`page-offset`; "live" returns the orders created or updated
today), driven through the SDK's `Account.get_order_history`, which pages as `Session._paginate`
does.
"""
from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tt_fake import (  # noqa: E402,F401
    NOW,
    ORDERS_PATH,
    Harness,
    TastytradeAccount,
    error_body,
    fill,
    order_body,
    tt,
)

from brokers.errors import OrderOutcomeUnknown, TemporaryBrokerError  # noqa: E402
from domain.orders import ClientOrderId, OrderRequest, OrderSide, OrderState, PositionEffect  # noqa: E402

LAST_EVENING = datetime(2025, 11, 19, 23, 30, tzinfo=UTC)  # 18:30 New York: the CME session for Nov 20
COID = ClientOrderId("ema-MES-open-lastevening")


def _timed_out(tt: Harness) -> None:
    """Place /MES through the adapter; the POST times out (the order did reach Tastytrade)."""
    adapter = tt.adapter(live=True)
    assert adapter.connect().connected
    tt.fake.on("POST", ORDERS_PATH, httpx2.ReadTimeout("timed out"))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(OrderRequest(COID, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN))
    adapter.close()


def _filled(coid: str, order_id: int) -> dict[str, object]:
    return order_body(order_id=order_id, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy",
                      status="Filled", remaining=0, fills=[fill(f"f{order_id}", 1, "6612.25")], underlying="/MES")


def test_a_timed_out_order_that_filled_last_evening_is_found_this_morning(tt: Harness) -> None:
    tt.login()
    book = TastytradeAccount(tt.fake)
    _timed_out(tt)
    book.add_order(_filled(COID, 881), at=LAST_EVENING)  # what Tastytrade did with that POST

    adapter = tt.connected(live=True)  # this morning (NOW, 10:00 New York), a restarted process
    found = adapter.get_order(COID, None)
    assert found is not None and found.state is OrderState.FILLED and found.broker_order_id == "881"
    assert found.filled_quantity == 1
    (search,) = tt.fake.calls("GET", ORDERS_PATH)
    params = httpx2.URL(search.url).params
    assert params["start-date"] == "2025-11-19" and params["page-offset"] == "0"
    # Found once, remembered: the next lookup goes straight to the order.
    assert adapter.get_order(COID, None) == found
    assert len(tt.fake.calls("GET", ORDERS_PATH)) == 1 and len(tt.fake.calls("GET", f"{ORDERS_PATH}/881")) == 1


@pytest.mark.parametrize("status, state", [("Rejected", OrderState.REJECTED), ("Cancelled", OrderState.CANCELLED),
                                           ("Live", OrderState.ACCEPTED)])
def test_every_status_is_searched(tt: Harness, status: str, state: OrderState) -> None:
    book = TastytradeAccount(tt.fake)
    book.add_order(order_body(order_id=882, coid=COID, symbol="/MESZ5", instrument_type="Future", action="Buy",
                              status=status, reject_reason="Exceeds max order size" if status == "Rejected" else None),
                   at=LAST_EVENING)
    adapter = tt.connected(live=True)
    found = adapter.get_order(COID, None)
    assert found is not None and found.state is state
    # An order the search does not hold is "not found", the one answer that is None.
    assert adapter.get_order(ClientOrderId("never-sent"), None) is None


def test_the_search_pages_through_the_whole_day(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    book.add_order(_filled(COID, 100), at=LAST_EVENING)
    for n in range(120):  # a busy morning of other orders, newer than ours
        book.add_order(_filled(f"other-{n}", 200 + n), at=NOW - timedelta(minutes=n))
    adapter = tt.connected(live=True)
    found = adapter.get_order(COID, None)
    assert found is not None and found.broker_order_id == "100"
    pages = [httpx2.URL(r.url).params["page-offset"] for r in tt.fake.calls("GET", ORDERS_PATH)]
    assert pages == ["0", "1", "2"]  # 121 orders, 50 a page (the SDK's per-page)


def test_a_search_tastytrade_cannot_finish_raises_instead_of_not_found(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    for n in range(60):
        book.add_order(_filled(f"other-{n}", 300 + n), at=NOW - timedelta(minutes=n))
    unavailable = httpx2.Response(503, json=error_body("service_unavailable", "try again later"))

    def second_page_down(request: httpx2.Request) -> httpx2.Response:
        if request.url.params.get("page-offset") == "1":
            return unavailable
        return book.search(request)

    tt.fake.on("GET", ORDERS_PATH, second_page_down)
    adapter = tt.connected(live=True)
    with pytest.raises(TemporaryBrokerError, match="orders.search"):
        adapter.get_order(COID, None)
    assert tt.sleeps == [0.5, 1.0]  # the read policy's bounded retries, then the error


def test_cancel_by_client_id_finds_last_evenings_working_order(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    book.add_order(order_body(order_id=884, coid=COID, symbol="/MESZ5", instrument_type="Future", action="Buy",
                              status="Live", order_type="Limit", price="6500.0"), at=LAST_EVENING)
    cancelled = order_body(order_id=884, coid=COID, symbol="/MESZ5", instrument_type="Future", action="Buy",
                           status="Cancelled", order_type="Limit", price="6500.0")
    tt.fake.on("DELETE", f"{ORDERS_PATH}/884", httpx2.Response(200, json={"data": dict(cancelled, status="Cancel Requested")}))
    tt.fake.on("GET", f"{ORDERS_PATH}/884", httpx2.Response(200, json={"data": cancelled}))
    adapter = tt.connected(live=True)
    assert adapter.cancel_order(COID, None).state is OrderState.CANCELLED
    assert len(tt.fake.calls("DELETE", f"{ORDERS_PATH}/884")) == 1
