"""GET /api/strategies (api/strategies.py) on a real engine: viewer access, the status document, and a
JSON 503 without an engine."""
from __future__ import annotations

from typing import Iterator

import pytest
from flask import Flask

from api.strategies import strategies_bp
from app import create_app
from auth.users import Role
from domain.market import Trade
from tests.api.helpers import VIEWER_EMAIL, VIEWER_PASSWORD, login
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig

START = 1719928800 * 1_000_000_000


@pytest.fixture
def api(real_store, replay_settings) -> Iterator[tuple[Flask, dict[str, str], EngineRig]]:
    app = create_app(replay_settings, real_store)
    if "strategies" not in app.blueprints:
        app.register_blueprint(strategies_bp)
    app.config["TESTING"] = True
    services = app.extensions["services"]
    services.users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    headers = {"Authorization": f"Bearer {login(app.test_client(), VIEWER_EMAIL, VIEWER_PASSWORD)}"}
    rig = build_rig(real_store, replay_settings)
    yield app, headers, rig
    rig.supervisor.shutdown()


def test_strategies_status_for_a_viewer(api) -> None:
    app, headers, rig = api
    client = app.test_client()
    app.extensions["services"].engine = None
    response = client.get("/api/strategies", headers=headers)
    assert response.status_code == 503
    assert response.json["success"] is False and response.json["error"] and response.json["message"]
    assert client.get("/api/strategies").status_code == 401

    app.extensions["services"].engine = rig.supervisor
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.add_ticker(strategy="supertrend", symbol="/ES", timeframe="5Min", trade_enabled=False, schwab_quantity=0,
                   tastytrade_quantity=1)
    rig.supervisor.start_strategy("ema")
    rig.push([Trade("/MES", START + 1, 5000.0, 1)])
    rig.push_bar_and_wait("ema", [Trade("/MES", START + MINUTE_NS + 1, 5001.0, 1)], START + MINUTE_NS)

    response = client.get("/api/strategies", headers=headers)
    assert response.status_code == 200, response.json
    body = response.json
    assert body["success"] is True
    data = body["data"]
    assert set(data) == {"ema", "supertrend", "zeroday"}
    ema = data["ema"]
    assert ema["running"] is True
    mes = ema["tickers"]["/MES"]
    assert mes["running"] is True and mes["alive"] is True and mes["trade_enabled"] is True
    assert mes["last_bar"]["close"] == 5000.0 and mes["last_bar"]["end_ns"] == START + MINUTE_NS
    assert set(mes["indicators"]) >= {"fast", "slow"}
    assert mes["position"] == "FLAT" and mes["positions"] is None
    assert mes["last_error"] is None and mes["stale_feed"] is None and mes["restarts"] == 0
    st = data["supertrend"]
    assert st["running"] is False and st["tickers"]["/ES"]["running"] is False
    assert st["tickers"]["/ES"]["trade_enabled"] is False
    assert data["zeroday"] == {"running": False, "tickers": {}}
