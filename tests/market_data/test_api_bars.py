"""GET /api/bars: completed bars as JSON; bad symbol/timeframe/limit -> 400 naming the field."""
from __future__ import annotations

from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.bars import bars_bp
from config.settings import Settings
from config.timeframes import Timeframe
from domain.market import Trade
from store.redis_store import Store
from tests.market_data.helpers import ManualFeed

S = 1_000_000_000
BASE = 1_732_633_200 * S


@pytest.fixture
def app(settings: Settings, store: Store) -> Iterator[Flask]:
    from app import create_app
    from market_data.service import MarketDataService

    application = create_app(settings, store)
    if "bars" not in application.blueprints:  # app.py registers it once its owner wires it
        application.register_blueprint(bars_bp)
    application.config["TESTING"] = True
    svc = MarketDataService(settings, store, ManualFeed())
    svc.ensure("/MES", Timeframe.parse("5Min"))
    svc.process_now([Trade("/MES", BASE + m * 60 * S, 6000.0 + m, 1) for m in range(16)])
    application.extensions["services"].market_data = svc
    yield application


@pytest.fixture
def headers(app: Flask) -> dict[str, str]:
    client = app.test_client()
    response = client.post("/api/login", json={"email": settings_email(), "password": "correct horse battery staple"})
    assert response.status_code == 200, response.json
    return {"Authorization": f"Bearer {response.json['token']}"}


def settings_email() -> str:
    return "admin@example.com"


def test_bars_endpoint_returns_completed_bars(app: Flask, headers: dict[str, str]) -> None:
    client: FlaskClient = app.test_client()
    response = client.get("/api/bars?symbol=/MES&timeframe=5&limit=50", headers=headers)
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert [(b["start_ns"], b["open"], b["close"], b["volume"]) for b in body["data"]] == [
        (BASE, 6000.0, 6004.0, 5), (BASE + 300 * S, 6005.0, 6009.0, 5), (BASE + 600 * S, 6010.0, 6014.0, 5)]
    assert body["data"][0]["timeframe"] == "5"
    limited = client.get("/api/bars?symbol=MES&timeframe=5Min&limit=1", headers=headers).json
    assert [b["start_ns"] for b in limited["data"]] == [BASE + 600 * S]


@pytest.mark.parametrize("query,field", [
    ("timeframe=5", "symbol"), ("symbol=/XYZ&timeframe=5", "symbol"), ("symbol=../etc&timeframe=5", "symbol"),
    ("symbol=/MES", "timeframe"), ("symbol=/MES&timeframe=7Min", "timeframe"),
    ("symbol=/MES&timeframe=5&limit=0", "limit"), ("symbol=/MES&timeframe=5&limit=abc", "limit"),
    ("symbol=/MES&timeframe=5&limit=999999", "limit"),
])
def test_bad_input_names_the_field(app: Flask, headers: dict[str, str], query: str, field: str) -> None:
    response = app.test_client().get(f"/api/bars?{query}", headers=headers)
    assert response.status_code == 400
    assert response.json["success"] is False and response.json.get("field") == field
    assert field in response.json["message"]


def test_requires_login(app: Flask) -> None:
    assert app.test_client().get("/api/bars?symbol=/MES&timeframe=5").status_code == 401
