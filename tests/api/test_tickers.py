"""get-ticker / add-ticker / delete-ticker: exact shapes, timeframe conversion, upsert, engine hooks."""
from __future__ import annotations

from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from domain.tickers import TickerConfig
from tests.api.helpers import ema_payload, supertrend_payload


def test_get_ticker_empty_map(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    for strategy in ("ema", "supertrend", "zeroday"):
        response = client.get(f"/api/get-ticker?strategy={strategy}", headers=admin_headers)
        assert response.status_code == 200
        assert response.json == {"success": True, "data": {}, "params": {}}


def test_add_ema_ticker_then_get_shows_positional_strings(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/api/add-ticker", json=ema_payload(trend_line_2="WilderSmoother"), headers=admin_headers)
    assert response.status_code == 201
    expected_row = ["5", "0", "TRUE", "1", "EMA", "9", "WilderSmoother", "21"]
    assert response.json["success"] is True
    assert response.json["data"] == {"/MES": expected_row}
    got = client.get("/api/get-ticker?strategy=ema", headers=admin_headers).json
    assert got["data"] == {"/MES": expected_row}
    assert all(isinstance(v, str) for v in got["data"]["/MES"])
    assert got["params"] == {"/MES": {"stop_loss_ticks": 0, "stop_loss_atr": 0.0, "atr_period": 14}}


def test_supertrend_row_has_four_fields_and_params(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    response = client.post("/api/add-ticker", json=supertrend_payload(multiplier=2.5), headers=admin_headers)
    assert response.status_code == 201
    assert response.json["data"] == {"NVDA": ["1h", "2", "FALSE", "3"]}
    assert response.json["params"]["NVDA"] == {"atr_period": 10, "multiplier": 2.5, "trailing_stop_atr": 2.0,
                                               "take_profit_atr": 3.0}


def test_zeroday_accepts_spx(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    body = ema_payload(strategy="zeroday", symbol="SPX", timeframe="1Min", schwab_quantity=1)
    response = client.post("/api/add-ticker", json=body, headers=admin_headers)
    assert response.status_code == 201
    # Positions 8 and 9: the Call and Put switches (the original backend's layout).
    assert response.json["data"] == {"SPX": ["1", "1", "TRUE", "1", "EMA", "9", "EMA", "21", "TRUE", "TRUE"]}


def test_zeroday_call_put_switches_are_stored_and_kept(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    body = ema_payload(strategy="zeroday", symbol="SPX", timeframe="1Min", schwab_quantity=1)
    response = client.post("/api/add-ticker", json={**body, "put_enabled": False}, headers=admin_headers)
    assert response.json["data"]["SPX"][8:] == ["TRUE", "FALSE"]
    assert response.json["params"]["SPX"] == {"call_enabled": True, "put_enabled": False}
    response = client.post("/api/add-ticker", json={**body, "trade_enabled": False}, headers=admin_headers)
    assert response.json["data"]["SPX"][8:] == ["TRUE", "FALSE"]  # a row-only save keeps the switch
    response = client.post("/api/add-ticker", json={**body, "call_enabled": "FALSE"}, headers=admin_headers)
    assert response.json["data"]["SPX"][8:] == ["FALSE", "FALSE"]
    bad = client.post("/api/add-ticker", json={**body, "call_enabled": "maybe"}, headers=admin_headers)
    assert bad.status_code == 400 and bad.json["field"] == "call_enabled"


@pytest.mark.parametrize(("sent", "stored"), [
    ("5Min", "5"), ("1Min", "1"), ("2Min", "2"), ("15Min", "15"), ("30Min", "30"), ("1Hour", "1h"),
    ("4Hour", "4h"), ("1Day", "1d"), ("144t", "144t"), ("3827t", "3827t"), ("5m", "5"), ("1m", "1"),
    ("5", "5"), ("1h", "1h"), ("1d", "1d"), ("512t", "512t"),
])
def test_timeframe_conversion(client: FlaskClient, admin_headers: dict[str, str], sent: str, stored: str) -> None:
    response = client.post("/api/add-ticker", json=ema_payload(timeframe=sent), headers=admin_headers)
    assert response.status_code == 201, response.json
    assert response.json["data"]["/MES"][0] == stored


def test_add_ticker_upserts_by_symbol_and_toggles(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/add-ticker", json=ema_payload(), headers=admin_headers)
    client.post("/api/add-ticker", json=ema_payload(symbol="/NQ", tastytrade_quantity=2), headers=admin_headers)
    response = client.post("/api/add-ticker", json=ema_payload(symbol="/mes", trade_enabled=False),
                           headers=admin_headers)
    assert response.json["data"] == {
        "/MES": ["5", "0", "FALSE", "1", "EMA", "9", "EMA", "21"],
        "/NQ": ["5", "0", "TRUE", "2", "EMA", "9", "EMA", "21"],
    }


def test_delete_ticker_returns_remaining_map(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/add-ticker", json=ema_payload(), headers=admin_headers)
    client.post("/api/add-ticker", json=ema_payload(symbol="TSLA", schwab_quantity=5), headers=admin_headers)
    response = client.delete("/api/delete-ticker", json={"strategy": "ema", "symbol": "MES"}, headers=admin_headers)
    assert response.status_code == 200
    assert response.json == {"success": True, "data": {"TSLA": ["5", "5", "TRUE", "1", "EMA", "9", "EMA", "21"]},
                             "params": {"TSLA": {"stop_loss_ticks": 0, "stop_loss_atr": 0.0, "atr_period": 14}}}


def test_delete_unknown_symbol_is_404(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    response = client.delete("/api/delete-ticker", json={"strategy": "ema", "symbol": "NVDA"}, headers=admin_headers)
    assert response.status_code == 404
    assert response.json["success"] is False and "NVDA" in response.json["message"] and response.json["error"]


class RecordingEngine:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def ticker_changed(self, config: TickerConfig) -> None:
        self.calls.append(("changed", config))

    def ticker_removed(self, strategy: str, symbol: str, config: TickerConfig | None = None) -> None:
        self.calls.append(("removed", (strategy, symbol, config)))


def test_engine_is_told_about_ticker_changes(app: Flask, client: FlaskClient, admin_headers: dict[str, str]) -> None:
    engine = RecordingEngine()
    app.extensions["services"].engine = engine
    client.post("/api/add-ticker", json=ema_payload(), headers=admin_headers)
    client.delete("/api/delete-ticker", json={"strategy": "ema", "symbol": "/MES"}, headers=admin_headers)
    assert engine.calls[0][0] == "changed" and engine.calls[0][1].symbol == "/MES"
    # The stored config goes along: its position is closed even when the strategy is not running.
    removed_strategy, removed_symbol, removed_config = engine.calls[1][1]
    assert (removed_strategy, removed_symbol) == ("ema", "/MES")
    assert removed_config == engine.calls[0][1]


def test_viewer_can_read_but_not_write(client: FlaskClient, viewer_headers: dict[str, str]) -> None:
    assert client.get("/api/get-ticker?strategy=ema", headers=viewer_headers).status_code == 200
    response = client.post("/api/add-ticker", json=ema_payload(), headers=viewer_headers)
    assert response.status_code == 403
    assert response.json["success"] is False and response.json["error"] and response.json["message"]
    assert client.delete("/api/delete-ticker", json={"strategy": "ema", "symbol": "MES"},
                         headers=viewer_headers).status_code == 403


def test_replacing_a_ticker_without_its_optional_parameters_keeps_them(client: FlaskClient,
                                                                       admin_headers: dict[str, str]) -> None:
    client.post("/api/add-ticker", json=ema_payload(stop_loss_ticks=8, atr_period=20), headers=admin_headers)
    # The dashboard's Trade switch posts the row fields only.
    response = client.post("/api/add-ticker", json=ema_payload(trade_enabled=False), headers=admin_headers)
    assert response.status_code == 201
    assert response.json["data"]["/MES"][2] == "FALSE"
    assert response.json["params"]["/MES"] == {"stop_loss_ticks": 8, "stop_loss_atr": 0.0, "atr_period": 20}


def test_naming_the_other_stop_kind_replaces_the_stop(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/add-ticker", json=ema_payload(stop_loss_ticks=8), headers=admin_headers)
    response = client.post("/api/add-ticker", json=ema_payload(stop_loss_atr=1.5), headers=admin_headers)
    assert response.json["params"]["/MES"]["stop_loss_atr"] == 1.5
    assert response.json["params"]["/MES"]["stop_loss_ticks"] == 0  # one stop kind at a time: not carried over


def test_supertrend_parameters_survive_a_row_only_update(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    client.post("/api/add-ticker", json=supertrend_payload(atr_period=7, multiplier=2.5, take_profit_atr=0),
                headers=admin_headers)
    response = client.post("/api/add-ticker", json=supertrend_payload(schwab_quantity=2, multiplier=4.0),
                           headers=admin_headers)
    params = response.json["params"]["NVDA"]
    assert params == {"atr_period": 7, "multiplier": 4.0, "trailing_stop_atr": 2.0, "take_profit_atr": 0.0}
    assert response.json["data"]["NVDA"][1] == "2"
