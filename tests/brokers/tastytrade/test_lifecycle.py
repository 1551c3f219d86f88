"""The event-loop thread's lifecycle, and no secret or account number in any log line or response."""
from __future__ import annotations

import json
import logging
import sys
import threading
from decimal import Decimal
from pathlib import Path

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tt_fake import (  # noqa: E402,F401
    ACCOUNT,
    CLIENT_SECRET,
    OTHER_ACCOUNT,
    REFRESH_TOKEN,
    Harness,
    error_body,
    load,
    order_body,
    placed_response,
    tt,
)

from brokers.errors import BrokerError  # noqa: E402
from domain.orders import ClientOrderId, OrderRequest, OrderSide, OrderType, PositionEffect  # noqa: E402

ORDERS = f"/accounts/{ACCOUNT}/orders"


def _loop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "tastytrade-loop"]


def test_one_loop_thread_started_by_connect_and_stopped_by_close(tt: Harness) -> None:
    before = len(_loop_threads())
    adapter = tt.connected()
    thread = adapter.loop_thread
    assert thread is not None and thread.is_alive() and thread.daemon
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(200, json=load("positions.json")))
    adapter.positions()
    assert adapter.loop_thread is thread and len(_loop_threads()) == before + 1
    adapter.close()
    assert not thread.is_alive()
    assert adapter.loop_thread is None and len(_loop_threads()) == before
    adapter.close()  # safe twice
    assert adapter.status().connected is False


def test_dead_loop_is_restarted_and_session_rebuilt(tt: Harness) -> None:
    adapter = tt.connected()
    adapter._loop.stop()  # simulate the loop thread dying
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(200, json=load("positions.json")))
    assert len(adapter.positions()) == 3  # reconnects on a fresh loop
    assert adapter.loop_thread is not None and adapter.loop_thread.is_alive()


def test_concurrent_callers_share_the_loop(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(200, json=load("positions.json")))
    results: list[int] = []
    workers = [threading.Thread(target=lambda: results.append(len(adapter.positions()))) for _ in range(8)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(10)
    assert results == [3] * 8


def test_no_token_secret_or_account_number_in_logs_or_responses(tt: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("httpx2", "tastytrade", "brokers"):
        caplog.set_level(logging.DEBUG, logger=name)
    exposed: list[str] = []

    adapter = tt.connected(live=True)
    exposed.append(adapter.authorize_url())
    exposed.append(json.dumps(adapter.connection()))
    exposed.append(json.dumps(adapter.refresh().to_json()))
    coid = ClientOrderId("ema-MES-open-logs")
    tt.fake.on("POST", ORDERS, httpx2.Response(201, json=placed_response(order_body(
        order_id=11, coid=coid, symbol="/MESZ5", instrument_type="Future", action="Buy to Open"))))
    exposed.append(repr(adapter.place_order(OrderRequest(coid, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN))))
    # failures whose messages could echo request details
    tt.fake.on("POST", ORDERS, httpx2.Response(422, json=error_body(
        "invalid", f"account {ACCOUNT} cannot trade this; token atoken-0001-zz9")))
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/positions", httpx2.Response(500, text="oops"))
    tt.fake.on("GET", f"/accounts/{ACCOUNT}/balances/USD",
               httpx2.Response(401, json=error_body("token_invalid", "expired")))
    tt.fake.on("POST", "/oauth/token", httpx2.Response(401, json={"error": "invalid_grant",
                                                                 "error_description": f"bad {REFRESH_TOKEN}"}))
    for call in (
        lambda: adapter.place_order(OrderRequest(ClientOrderId("x-2"), "NVDA", OrderSide.SELL, 1, PositionEffect.OPEN,
                                                 OrderType.LIMIT, limit_price=Decimal("1"))),
        adapter.positions,
        adapter.balances,
    ):
        with pytest.raises(BrokerError) as info:
            call()
        exposed.append(str(info.value))
    exposed.append(json.dumps(adapter.status().to_json()))

    assert any("HTTP Request" in r.getMessage() for r in caplog.records)  # httpx2 request lines were captured
    everything = caplog.text + "\n".join(r.getMessage() for r in caplog.records) + "\n".join(exposed)
    access_tokens = [f"atoken-{i:04d}-zz9" for i in range(1, tt.fake.access_tokens + 1)]
    for secret in (CLIENT_SECRET, REFRESH_TOKEN, ACCOUNT, *access_tokens):
        assert secret not in everything, secret
    assert "****0001" in everything  # masked form is what shows
    assert OTHER_ACCOUNT not in everything
