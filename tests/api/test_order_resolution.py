"""POST /api/orders/resolve: an operator states the outcome of an order whose outcome is unknown
(a live broker that timed out and cannot show it). Bad input is a clear 400 and changes nothing."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from brokers.errors import OrderOutcomeUnknown
from domain.orders import SCHWAB, OrderRequest, OrderState, OrderUpdate
from oms.models import TargetOrder, TargetStatus
from oms.order_manager import OrderManager
from tests.oms.helpers import FakeAdapter


@pytest.fixture
def unknown_order(app: Flask) -> tuple[OrderManager, str]:
    def timeout(o: OrderRequest) -> OrderUpdate:
        raise OrderOutcomeUnknown("read timeout")
    om = OrderManager(app.extensions["services"].store, {SCHWAB: FakeAdapter(SCHWAB, timeout)})
    app.extensions["services"].orders = om
    result = om.move_to_target(TargetOrder("ema", "NVDA", SCHWAB, 5, 1, "signal", "t"))
    assert result.status is TargetStatus.UNKNOWN
    return om, result.orders[0].client_order_id


def _resolve(client: FlaskClient, headers: dict[str, str], body: Any) -> Any:
    return client.post("/api/orders/resolve", json=body, headers=headers)


def test_an_admin_resolves_an_unknown_order_and_the_book_follows(client: FlaskClient, admin_headers: dict[str, str],
                                                                 unknown_order: tuple[OrderManager, str]) -> None:
    om, coid = unknown_order
    r = _resolve(client, admin_headers, {"client_order_id": coid, "state": "filled", "filled_quantity": 5,
                                         "avg_fill_price": "180.25", "note": "seen on the broker's statement"})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["order"]["state"] == "FILLED"
    pos = om.position("ema", "NVDA", SCHWAB)
    assert pos.quantity == 5 and pos.avg_price == Decimal("180.25")
    again = _resolve(client, admin_headers, {"client_order_id": coid, "state": "CANCELLED"})
    assert again.status_code == 409 and again.get_json()["code"] == "not_unresolved"


@pytest.mark.parametrize("body", [
    {"state": "FILLED"},
    {"client_order_id": "x" * 65, "state": "FILLED"},
    {"client_order_id": "<script>", "state": "FILLED"},
    {"state": "ACCEPTED"},
    {"state": "FILLED", "filled_quantity": "²"},
    {"state": "FILLED", "filled_quantity": -1},
    {"state": "FILLED", "filled_quantity": 5, "avg_fill_price": "NaN"},
    {"state": "FILLED", "filled_quantity": 5},  # a fill needs its price
    {"state": "FILLED", "filled_quantity": 4, "avg_fill_price": "180"},  # FILLED fills all 5
    {"state": "CANCELLED", "note": 7},
])
def test_bad_resolutions_are_clear_errors_and_change_nothing(client: FlaskClient, admin_headers: dict[str, str],
                                                             unknown_order: tuple[OrderManager, str],
                                                             body: dict[str, Any]) -> None:
    om, coid = unknown_order
    payload = {"client_order_id": coid, **body}
    r = _resolve(client, admin_headers, payload)
    assert r.status_code in (400, 409), r.get_json()
    assert r.get_json()["success"] is False and r.get_json()["error"]
    assert om.order(coid).state is OrderState.UNKNOWN and om.position("ema", "NVDA", SCHWAB).quantity == 0


def test_a_viewer_cannot_resolve(client: FlaskClient, viewer_headers: dict[str, str],
                                 unknown_order: tuple[OrderManager, str]) -> None:
    om, coid = unknown_order
    assert _resolve(client, viewer_headers, {"client_order_id": coid, "state": "REJECTED"}).status_code == 403
    assert om.order(coid).state is OrderState.UNKNOWN


def test_an_unknown_id_is_404(client: FlaskClient, admin_headers: dict[str, str],
                              unknown_order: tuple[OrderManager, str]) -> None:
    assert _resolve(client, admin_headers, {"client_order_id": "nope-1", "state": "REJECTED"}).status_code == 404
