"""Faults -> the broker exception tree: 401 refresh + one retry, bounded backoff on reads,
unknown outcomes never resent, rejections carry Tastytrade's message."""
from __future__ import annotations

import sys
from pathlib import Path

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tt_fake import (  # noqa: E402,F401
    ACCOUNT,
    NOW,
    Harness,
    TastytradeAccount,
    error_body,
    load,
    order_body,
    placed_response,
    tt,
)

from brokers.errors import (  # noqa: E402
    AuthenticationRequired,
    OrderOutcomeUnknown,
    OrderRejected,
    TemporaryBrokerError,
)
from domain.orders import ClientOrderId, OrderRequest, OrderSide, OrderState, PositionEffect  # noqa: E402

ORDERS = f"/accounts/{ACCOUNT}/orders"
LIVE = f"/accounts/{ACCOUNT}/orders/live"
POSITIONS = f"/accounts/{ACCOUNT}/positions"
UNAUTHORIZED = httpx2.Response(401, json=error_body("token_invalid", "This token is invalid or has expired"))


def _mes(coid: str) -> OrderRequest:
    return OrderRequest(ClientOrderId(coid), "/MES", OrderSide.BUY, 1, PositionEffect.OPEN)


def test_401_refreshes_then_retries_read_once(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, UNAUTHORIZED, httpx2.Response(200, json=load("positions.json")))
    refreshes_before = len(tt.fake.calls("POST", "/oauth/token"))
    assert len(adapter.positions()) == 3
    assert len(tt.fake.calls("GET", POSITIONS)) == 2
    assert len(tt.fake.calls("POST", "/oauth/token")) == refreshes_before + 1
    # the retry carried the new access token
    first, second = tt.fake.calls("GET", POSITIONS)
    assert first.headers["authorization"] != second.headers["authorization"]
    assert adapter.status().connected


def test_401_twice_is_authentication_required_and_disconnected(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, UNAUTHORIZED)
    with pytest.raises(AuthenticationRequired):
        adapter.positions()
    assert len(tt.fake.calls("GET", POSITIONS)) == 2  # original + exactly one retry
    status = adapter.status()
    assert status.connected is False and "authentication required" in status.message
    assert adapter.connection()["connected"] is False


def test_revoked_refresh_token_is_authentication_required(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, UNAUTHORIZED)
    tt.fake.on("POST", "/oauth/token", httpx2.Response(401, json={"error": "invalid_grant",
                                                                 "error_description": "Grant revoked"}))
    with pytest.raises(AuthenticationRequired):
        adapter.positions()
    assert adapter.status().connected is False
    # further calls fail fast without hitting the API
    count = len(tt.fake.requests)
    with pytest.raises(AuthenticationRequired):
        adapter.balances()
    assert len(tt.fake.requests) == count


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_reads_back_off_then_succeed(tt: Harness, status: int) -> None:
    adapter = tt.connected()
    busy = httpx2.Response(status, json=error_body("busy", "try later"))
    tt.fake.on("GET", POSITIONS, busy, busy, httpx2.Response(200, json=load("positions.json")))
    assert len(adapter.positions()) == 3
    assert tt.sleeps == [0.5, 1.0]
    assert len(tt.fake.calls("GET", POSITIONS)) == 3


def test_reads_give_up_after_three_attempts(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, httpx2.Response(503, json=error_body("unavailable", "maintenance")))
    with pytest.raises(TemporaryBrokerError, match="3 attempts"):
        adapter.positions()
    assert len(tt.fake.calls("GET", POSITIONS)) == 3
    assert tt.sleeps == [0.5, 1.0]  # bounded: two waits, no third


def test_retry_after_header_is_honoured(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, httpx2.Response(429, headers={"Retry-After": "2"}, json=error_body("rate", "slow")),
               httpx2.Response(200, json=load("positions.json")))
    adapter.positions()
    assert tt.sleeps == [2.0]


def test_read_timeout_on_reads_is_retried(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, httpx2.ReadTimeout("timed out"), httpx2.Response(200, json=load("positions.json")))
    assert len(adapter.positions()) == 3
    assert tt.sleeps == [0.5]


def test_timeout_on_place_order_is_unknown_and_never_resent(tt: Harness) -> None:
    book = TastytradeAccount(tt.fake)
    adapter = tt.connected(live=True)
    coid = "ema-MES-open-timeout000000000"
    tt.fake.on("POST", ORDERS, httpx2.ReadTimeout("timed out"))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(_mes(coid))
    assert len(tt.fake.calls("POST", ORDERS)) == 1
    assert tt.sleeps == []
    # reconciliation: the order did reach Tastytrade; it is found by external identifier
    book.add_order(order_body(order_id=777, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy",
                              status="Filled", remaining=0, underlying="/MES",
                              fills=[{"fill-id": "f1", "quantity": 1, "fill-price": "6612.25",
                                      "filled-at": "2025-11-20T15:00:00.300+00:00"}]), at=NOW)
    found = adapter.get_order(ClientOrderId(coid), None)
    assert found is not None and found.state is OrderState.FILLED and found.broker_order_id == "777"
    assert len(tt.fake.calls("POST", ORDERS)) == 1


@pytest.mark.parametrize("error", [httpx2.RemoteProtocolError("peer closed"), httpx2.WriteTimeout("slow")])
def test_dropped_connection_after_sending_is_unknown(tt: Harness, error: Exception) -> None:
    adapter = tt.connected(live=True)
    tt.fake.on("POST", ORDERS, error)
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(_mes("ema-MES-open-drop"))
    assert len(tt.fake.calls("POST", ORDERS)) == 1


def test_5xx_on_place_order_is_unknown_not_retried(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    tt.fake.on("POST", ORDERS, httpx2.Response(502, json=error_body("bad_gateway", "upstream")))
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(_mes("ema-MES-open-502"))
    assert len(tt.fake.calls("POST", ORDERS)) == 1 and tt.sleeps == []


def test_connect_error_on_place_order_is_temporary(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    tt.fake.on("POST", ORDERS, httpx2.ConnectError("refused"))
    with pytest.raises(TemporaryBrokerError):
        adapter.place_order(_mes("ema-MES-open-conn"))
    assert len(tt.fake.calls("POST", ORDERS)) == 1


def test_429_on_place_order_is_temporary_and_not_retried_internally(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    tt.fake.on("POST", ORDERS, httpx2.Response(429, headers={"Retry-After": "3"}, json=error_body("rate", "slow")))
    with pytest.raises(TemporaryBrokerError) as info:
        adapter.place_order(_mes("ema-MES-open-429"))
    assert info.value.retry_after == 3.0
    assert len(tt.fake.calls("POST", ORDERS)) == 1 and tt.sleeps == []


def test_rejection_carries_tastytrade_message(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    body = error_body("preflight_check_failure", "One or more preflight checks failed",
                      [{"code": "margin_check_failed", "message": "Insufficient buying power for this order"}])
    tt.fake.on("POST", ORDERS, httpx2.Response(422, json=body))
    with pytest.raises(OrderRejected) as info:
        adapter.place_order(_mes("ema-MES-open-rej"))
    assert "Insufficient buying power for this order" in info.value.reason
    assert "margin_check_failed" in info.value.message
    assert len(tt.fake.calls("POST", ORDERS)) == 1


def test_401_on_order_refreshes_checks_and_resends_once(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    coid = "ema-MES-open-401"
    ok = placed_response(order_body(order_id=990, coid=coid, symbol="/MESZ5", instrument_type="Future",
                                    action="Buy to Open"))
    TastytradeAccount(tt.fake)  # holds no order with this client id
    tt.fake.on("POST", ORDERS, UNAUTHORIZED, httpx2.Response(201, json=ok))
    update = adapter.place_order(_mes(coid))
    assert update.broker_order_id == "990"
    # the 401 answer means the first POST was refused by auth; exactly one POST was accepted
    assert len(tt.fake.calls("POST", ORDERS)) == 2
    assert len(tt.fake.calls("GET", ORDERS)) == 1  # the search that proved it absent


def test_401_on_order_does_not_resend_when_order_exists(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    coid = "ema-MES-open-401b"
    book = TastytradeAccount(tt.fake)
    tt.fake.on("POST", ORDERS, UNAUTHORIZED)
    book.add_order(order_body(order_id=991, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy"),
                   at=NOW)
    update = adapter.place_order(_mes(coid))
    assert update.broker_order_id == "991"
    assert len(tt.fake.calls("POST", ORDERS)) == 1


def test_token_refresh_failure_before_order_is_not_sent(tt: Harness) -> None:
    adapter = tt.connected(live=True)
    tt.fake.on("POST", "/oauth/token", httpx2.ConnectError("refused"))
    session = adapter._session
    assert session is not None
    session.session_expiration = 0  # force the pre-order refresh
    with pytest.raises(TemporaryBrokerError):
        adapter.place_order(_mes("ema-MES-open-norefresh"))
    assert tt.fake.calls("POST", ORDERS) == []


def test_latency_hook_reports_endpoints(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", POSITIONS, httpx2.Response(200, json=load("positions.json")))
    adapter.positions()
    labels = [label for label, _ in tt.latencies]
    assert "positions" in labels and "accounts" in labels
    assert all(seconds >= 0 for _, seconds in tt.latencies)


def test_adapter_call_timeout_on_place_order_is_unknown(tt: Harness) -> None:
    import asyncio

    adapter = tt.connected(live=True, call_timeout=0.3)

    async def hang(request: httpx2.Request) -> httpx2.Response:
        await asyncio.sleep(5)  # cancelled when the adapter gives up
        return httpx2.Response(201)

    tt.fake.on("POST", ORDERS, hang)
    with pytest.raises(OrderOutcomeUnknown):
        adapter.place_order(_mes("ema-MES-open-hang"))
    assert len(tt.fake.calls("POST", ORDERS)) == 1


def test_refresh_during_outage_keeps_connection(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("POST", "/oauth/token", httpx2.Response(503, json=error_body("unavailable", "maintenance")))
    status = adapter.refresh()
    assert status.connected is True and "temporarily" in status.message
