"""Bad input answers 400 (or 415) naming the field, and leaves the Redis store exactly unchanged."""
from __future__ import annotations

from typing import Any

import pytest
from flask.testing import FlaskClient

from store.redis_store import Store
from tests.api.helpers import ema_payload, snapshot, supertrend_payload

BAD_ADD_TICKER: list[tuple[str, dict[str, Any], str]] = [
    ("unknown strategy", ema_payload(strategy="scalper"), "strategy"),
    ("strategy not a string", ema_payload(strategy=7), "strategy"),
    ("missing strategy", {k: v for k, v in ema_payload().items() if k != "strategy"}, "strategy"),
    ("symbol outside catalog", ema_payload(symbol="AAPL"), "symbol"),
    ("path-like symbol", ema_payload(symbol="../../etc"), "symbol"),
    ("symbol wrong type", ema_payload(symbol=["MES"]), "symbol"),
    ("oversized symbol", ema_payload(symbol="M" * 5000), "symbol"),
    ("oversized timeframe", ema_payload(timeframe="5" * 5000), "timeframe"),
    ("unsupported timeframe", ema_payload(timeframe="7Min"), "timeframe"),
    ("timeframe wrong type", ema_payload(timeframe=5.5), "timeframe"),
    ("negative quantity", ema_payload(tastytrade_quantity=-1), "tastytrade_quantity"),
    ("fractional quantity", ema_payload(tastytrade_quantity=1.5), "tastytrade_quantity"),
    ("quantity as bool", ema_payload(tastytrade_quantity=True), "tastytrade_quantity"),
    ("quantity text", ema_payload(tastytrade_quantity="lots"), "tastytrade_quantity"),
    ("missing quantity", {k: v for k, v in ema_payload().items() if k != "tastytrade_quantity"},
     "tastytrade_quantity"),
    ("futures with schwab quantity", ema_payload(schwab_quantity=1), "schwab_quantity"),
    ("period_1 equal period_2", ema_payload(period_1=21, period_2=21), "period_1"),
    ("period_1 above period_2", ema_payload(period_1=50, period_2=21), "period_1"),
    ("zero period", ema_payload(period_1=0), "period_1"),
    ("fractional period", ema_payload(period_2=21.5), "period_2"),
    ("unknown trend line", ema_payload(trend_line_1="HMA"), "trend_line_1"),
    ("trade_enabled not bool", ema_payload(trade_enabled="maybe"), "trade_enabled"),
    ("zeroday with futures", ema_payload(strategy="zeroday"), "symbol"),
    ("ema on the SPX index", ema_payload(symbol="SPX"), "symbol"),
    ("supertrend negative multiplier", supertrend_payload(multiplier=-2), "multiplier"),
]


@pytest.mark.parametrize(("case", "body", "field"), BAD_ADD_TICKER, ids=[c[0] for c in BAD_ADD_TICKER])
def test_add_ticker_rejects_and_stores_nothing(client: FlaskClient, admin_headers: dict[str, str], store: Store,
                                               case: str, body: dict[str, Any], field: str) -> None:
    client.post("/api/add-ticker", json=ema_payload(symbol="NVDA", schwab_quantity=1), headers=admin_headers)
    before = snapshot(store)
    response = client.post("/api/add-ticker", json=body, headers=admin_headers)
    assert response.status_code == 400, response.json
    assert response.json["success"] is False
    assert response.json["field"] == field
    assert field in response.json["message"] and response.json["error"]
    assert snapshot(store) == before


@pytest.mark.parametrize(("data", "content_type", "status"), [
    ("strategy=ema&symbol=MES", "application/x-www-form-urlencoded", 415),
    ("not json at all", "text/plain", 415),
    ("{broken", "application/json", 400),
    ("[1, 2, 3]", "application/json", 400),
    ('"just a string"', "application/json", 400),
    ("", "application/json", 400),
])
def test_non_json_bodies(client: FlaskClient, admin_headers: dict[str, str], store: Store,
                         data: str, content_type: str, status: int) -> None:
    before = snapshot(store)
    for path, method in (("/api/add-ticker", client.post), ("/api/manual-trigger", client.post),
                         ("/api/login", client.post)):
        response = method(path, data=data, content_type=content_type, headers=admin_headers)
        assert response.status_code == status, (path, response.json)
        assert response.json["success"] is False and response.json["field"] == "body"
        assert response.json["error"] and response.json["message"]
    assert snapshot(store) == before


def test_oversized_body_is_413_json(client: FlaskClient, admin_headers: dict[str, str], store: Store) -> None:
    before = snapshot(store)
    body = ema_payload(note="x" * (70 * 1024))
    response = client.post("/api/add-ticker", json=body, headers=admin_headers)
    assert response.status_code == 413
    assert response.is_json and response.json["success"] is False and "too large" in response.json["message"]
    assert snapshot(store) == before


@pytest.mark.parametrize(("query", "field"), [
    ("", "strategy"), ("strategy=bogus", "strategy"), ("strategy=../../etc", "strategy"),
    ("strategy=" + "e" * 3000, "strategy"),
])
def test_get_ticker_bad_strategy(client: FlaskClient, admin_headers: dict[str, str], query: str, field: str) -> None:
    response = client.get(f"/api/get-ticker?{query}", headers=admin_headers)
    assert response.status_code == 400
    assert response.json["field"] == field and len(response.json["message"]) < 300


@pytest.mark.parametrize(("body", "field"), [
    ({"strategy": "ema", "symbol": "../../etc"}, "symbol"),
    ({"strategy": "ema", "symbol": "AAPL"}, "symbol"),
    ({"strategy": "nope", "symbol": "MES"}, "strategy"),
    ({"strategy": "ema"}, "symbol"),
])
def test_delete_ticker_bad_input_changes_nothing(client: FlaskClient, admin_headers: dict[str, str], store: Store,
                                                 body: dict[str, Any], field: str) -> None:
    client.post("/api/add-ticker", json=ema_payload(), headers=admin_headers)
    before = snapshot(store)
    response = client.delete("/api/delete-ticker", json=body, headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == field
    assert snapshot(store) == before


@pytest.mark.parametrize(("data", "says"), [("null", "must be a JSON object"), ("{broken", "not valid JSON")])
def test_a_null_body_is_named_for_what_it_is(client: FlaskClient, admin_headers: dict[str, str],
                                             data: str, says: str) -> None:
    response = client.post("/api/add-ticker", data=data, content_type="application/json", headers=admin_headers)
    assert response.status_code == 400 and says in response.json["message"]
