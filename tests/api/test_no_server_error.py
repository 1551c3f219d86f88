"""Inputs that used to reach a 500 (deeply nested JSON, Unicode digits, non-finite numbers) answer a
clear 400 JSON error, and arbitrary JSON bodies never produce a 5xx."""
from __future__ import annotations

import json
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.validation import MAX_JSON_DEPTH
from tests.api.helpers import ema_payload

# Every endpoint that reads a JSON body (method, path).
JSON_ENDPOINTS = [
    ("POST", "/api/login"), ("POST", "/api/update-credentials"), ("POST", "/api/add-ticker"),
    ("DELETE", "/api/delete-ticker"), ("POST", "/api/manual-trigger"), ("POST", "/api/ema-manual-trigger"),
    ("POST", "/api/manual-spx-trigger"), ("POST", "/api/schwab/access-token"), ("POST", "/api/refresh-token-link"),
    ("POST", "/api/tasty/access-token"), ("PUT", "/api/risk"), ("POST", "/api/resume"), ("POST", "/api/backtest"),
]


def _nested(depth: int) -> bytes:
    return ("[" * depth + "]" * depth).encode()


@pytest.mark.parametrize(("method", "path"), JSON_ENDPOINTS, ids=[p for _, p in JSON_ENDPOINTS])
def test_deeply_nested_json_is_a_400_naming_the_body(client: FlaskClient, admin_headers: dict[str, str],
                                                     method: str, path: str) -> None:
    for body in (_nested(20_000), b'{"a": ' + _nested(MAX_JSON_DEPTH + 1) + b"}"):
        assert len(body) < 64 * 1024
        response = client.open(path, method=method, data=body, content_type="application/json",
                               headers=admin_headers)
        assert response.status_code == 400, (path, response.json)
        assert response.json["success"] is False and response.json["field"] == "body"
        assert "deeper than" in response.json["message"]


def test_nesting_up_to_the_limit_is_still_read(client: FlaskClient, admin_headers: dict[str, str]) -> None:
    body = ema_payload(note=json.loads(_nested(MAX_JSON_DEPTH - 1)))
    assert client.post("/api/add-ticker", json=body, headers=admin_headers).status_code == 201


@pytest.mark.parametrize("digit", ["²", "١", "５"])
def test_unicode_digits_are_refused_with_a_400(client: FlaskClient, admin_headers: dict[str, str],
                                               digit: str) -> None:
    cases: list[tuple[str, str, Any, str]] = [
        ("GET", f"/api/trades?limit={digit}", None, "limit"),
        ("GET", f"/api/trades?offset={digit}", None, "offset"),
        ("GET", f"/api/bars?symbol=MES&timeframe=5&limit={digit}", None, "limit"),
        ("POST", "/api/add-ticker", ema_payload(period_1=digit), "period_1"),
        ("POST", "/api/add-ticker", ema_payload(tastytrade_quantity=digit), "tastytrade_quantity"),
        ("PUT", "/api/risk", {"max_position": digit}, "max_position"),
        ("PUT", "/api/risk", {"daily_loss_limit_global": digit}, "daily_loss_limit_global"),
    ]
    backtest = {"strategy": "ema", "symbol": "MES", "timeframe": "5Min", "period_1": 9, "period_2": 21,
                "data": ["x.csv"]}
    cases += [("POST", "/api/backtest", {**backtest, "quantity": digit}, "quantity"),
              ("POST", "/api/backtest", {**backtest, "commission": digit}, "commission"),
              ("POST", "/api/backtest", {**backtest, "period_1": digit}, "period_1")]
    for method, path, body, field in cases:
        response = client.open(path, method=method, json=body, headers=admin_headers)
        assert response.status_code == 400, (path, field, response.json)
        assert response.json["success"] is False and response.json["field"] == field, (path, response.json)


# Python's json reads the bare literals NaN/Infinity (and 1e999 as inf): sent unquoted too. "１.5"
# (full-width digit) was taken as 1.5 by float() and Decimal().
@pytest.mark.parametrize("text", ['"NaN"', "NaN", '"Infinity"', "Infinity", "-Infinity", "1e999", '"1e999"',
                                  '"１.5"', '"٣"'])
def test_non_finite_and_non_ascii_numbers_are_refused(client: FlaskClient, admin_headers: dict[str, str],
                                                      text: str) -> None:
    for path, method, template, field in (
        ("/api/add-ticker", "POST", '{"strategy": "ema", "symbol": "MES", "timeframe": "5Min", '
         '"trade_enabled": true, "schwab_quantity": 0, "tastytrade_quantity": 1, "period_1": 9, '
         '"period_2": 21, "stop_loss_atr": %s}', "stop_loss_atr"),
        ("/api/risk", "PUT", '{"daily_loss_limit_global": %s}', "daily_loss_limit_global"),
        ("/api/risk", "PUT", '{"max_position": %s}', "max_position"),
    ):
        response = client.open(path, method=method, data=template % text, content_type="application/json",
                               headers=admin_headers)
        assert response.status_code == 400, (path, text, response.json)
        assert response.json["field"] == field


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=10)
BODY_KEYS = st.sampled_from(["email", "password", "strategy", "symbol", "timeframe", "period_1", "period_2",
                             "trade_enabled", "schwab_quantity", "tastytrade_quantity", "max_position",
                             "sizing_mode", "scope", "ticker", "action"])


@settings(max_examples=60, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=st.dictionaries(BODY_KEYS, JSON_VALUES, max_size=6) | JSON_VALUES)
def test_arbitrary_json_bodies_never_reach_a_server_error(app: Flask, admin_headers: dict[str, str],
                                                          body: Any) -> None:
    client = app.test_client()
    for method, path in (("POST", "/api/add-ticker"), ("PUT", "/api/risk"), ("POST", "/api/resume"),
                         ("POST", "/api/login")):
        response = client.open(path, method=method, data=json.dumps(body), content_type="application/json",
                               headers=admin_headers)
        assert response.status_code < 500, (path, body, response.json)
        assert response.is_json and response.json["success"] in (True, False)
