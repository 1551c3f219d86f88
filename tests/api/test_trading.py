"""start/stop-trading, manual triggers and current-position, with and without a strategy engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from domain.intents import Intent, IntentReason, PositionTarget
from engine.executor import ExecutionReport
from engine.manual import ManualTrade
from oms.models import TargetResult, TargetStatus
from store.redis_store import Store
from tests.api.helpers import ema_payload, snapshot

TUESDAY_10_00_ET_NS = 1_795_532_400 * 1_000_000_000  # 2026-11-24 10:00 America/New_York (15:00 UTC)


@dataclass
class StartResult:
    started: list[str]
    already_running: list[str]


@dataclass
class FakeEngine:
    running: set[str] = field(default_factory=set)
    triggers: list[tuple[str, str, str]] = field(default_factory=list)
    position: dict[str, Any] | None = None

    def start_strategy(self, strategy: str) -> StartResult:
        if strategy in self.running:
            return StartResult([], ["/MES"])
        self.running.add(strategy)
        return StartResult(["/MES"], [])

    def stop_strategy(self, strategy: str) -> list[str]:
        if strategy in self.running:
            self.running.discard(strategy)
            return ["/MES"]
        return []

    def manual_trigger(self, strategy: str, symbol: str, action: str) -> ManualTrade:
        self.triggers.append((strategy, symbol, action))
        intent = Intent(strategy, symbol, PositionTarget.LONG, IntentReason.MANUAL, f"manual {action.lower()}", 1, 1.0)
        filled = TargetResult(strategy, symbol, "tastytrade", 1, 0, 1, TargetStatus.FILLED)
        report = ExecutionReport(intent, [filled], {})
        return ManualTrade(f"manual {action.lower()} on {symbol}: {report.summary()}", report)

    def current_position(self, strategy: str, symbol: str) -> dict[str, Any] | None:
        return self.position


def test_start_with_nothing_enabled_is_400(client: FlaskClient, admin_headers: dict[str, str], store: Store) -> None:
    client.post("/api/add-ticker", json=ema_payload(trade_enabled=False), headers=admin_headers)
    before = snapshot(store)
    response = client.get("/api/start-trading?strategy=ema", headers=admin_headers)
    assert response.status_code == 400
    assert "trade_enabled" in response.json["message"] and response.json["error"]
    assert snapshot(store) == before


def test_start_stop_without_engine_records_desired_state(client: FlaskClient, admin_headers: dict[str, str],
                                                         store: Store) -> None:
    client.post("/api/add-ticker", json=ema_payload(), headers=admin_headers)
    first = client.get("/api/start-trading?strategy=ema", headers=admin_headers)
    assert first.status_code == 200 and first.json["success"] is True and "/MES" in first.json["message"]
    assert store.redis.smembers(store.key("engine", "running")) == {"ema"}
    second = client.get("/api/start-trading?strategy=ema", headers=admin_headers)
    assert second.json == {"success": True, "message": "ema is already running"}
    stop = client.get("/api/stop-trading?strategy=ema", headers=admin_headers)
    assert stop.json == {"success": True, "message": "ema stopped"}
    assert store.redis.smembers(store.key("engine", "running")) == set()
    again = client.get("/api/stop-trading?strategy=ema", headers=admin_headers)
    assert again.json == {"success": True, "message": "ema was not running"}


def test_start_stop_with_engine(app: Flask, client: FlaskClient, admin_headers: dict[str, str]) -> None:
    engine = FakeEngine()
    app.extensions["services"].engine = engine
    client.post("/api/add-ticker", json=ema_payload(), headers=admin_headers)
    assert client.get("/api/start-trading?strategy=ema", headers=admin_headers).json == {
        "success": True, "message": "ema started for /MES"}
    assert "already running" in client.get("/api/start-trading?strategy=ema", headers=admin_headers).json["message"]
    assert client.get("/api/stop-trading?strategy=ema", headers=admin_headers).json == {
        "success": True, "message": "ema stopped for /MES"}


def test_start_trading_needs_admin_and_valid_strategy(client: FlaskClient, admin_headers: dict[str, str],
                                                      viewer_headers: dict[str, str]) -> None:
    assert client.get("/api/start-trading?strategy=ema", headers=viewer_headers).status_code == 403
    assert client.get("/api/stop-trading?strategy=ema", headers=viewer_headers).status_code == 403
    response = client.get("/api/start-trading?strategy=nope", headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == "strategy"


@pytest.mark.parametrize(("path", "body"), [
    ("/api/manual-trigger", {"ticker": "SPX", "action": "call"}),
    ("/api/ema-manual-trigger", {"ticker": "/MES", "action": "LONG"}),
])
def test_manual_trigger_without_order_path_is_503(client: FlaskClient, admin_headers: dict[str, str],
                                                  path: str, body: dict[str, str]) -> None:
    response = client.post(path, json=body, headers=admin_headers)
    assert response.status_code == 503
    assert response.json["success"] is False and "order path not available" in response.json["message"]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/manual-trigger", {"ticker": "SPX", "action": "buy"}, "action"),
    ("/api/manual-trigger", {"ticker": "SPX"}, "action"),
    ("/api/manual-trigger", {"ticker": "SPX", "action": 3}, "action"),
    ("/api/manual-trigger", {"ticker": "/MES", "action": "call"}, "ticker"),
    ("/api/manual-trigger", {"ticker": "../../etc", "action": "call"}, "ticker"),
    ("/api/ema-manual-trigger", {"ticker": "/MES", "action": "sideways"}, "action"),
    ("/api/ema-manual-trigger", {"ticker": "AAPL", "action": "LONG"}, "ticker"),
    ("/api/ema-manual-trigger", {"action": "LONG"}, "ticker"),
])
def test_manual_trigger_validates_before_anything(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                                  store: Store, path: str, body: dict[str, Any], field: str) -> None:
    engine = FakeEngine()
    app.extensions["services"].engine = engine
    before = snapshot(store)
    response = client.post(path, json=body, headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == field
    assert engine.triggers == [] and snapshot(store) == before


def test_manual_triggers_reach_the_engine_normalised(app: Flask, client: FlaskClient,
                                                     admin_headers: dict[str, str],
                                                     viewer_headers: dict[str, str]) -> None:
    engine = FakeEngine()
    services = app.extensions["services"]
    services.engine = engine
    # Pinned inside both the CME session and the 0DTE entry window (never the real wall clock).
    services.time_ns = lambda: TUESDAY_10_00_ET_NS
    response = client.post("/api/manual-trigger", json={"ticker": "spx", "action": "PUT"}, headers=admin_headers)
    assert response.status_code == 200
    assert response.json["success"] is True and response.json["partial"] is False
    assert response.json["message"] == "manual put on SPX: tastytrade: filled 0->1 (target 1)"
    response = client.post("/api/ema-manual-trigger", json={"ticker": "MES", "action": "close"}, headers=admin_headers)
    assert response.json["success"] is True
    assert response.json["message"] == "manual close on /MES: tastytrade: filled 0->1 (target 1)"
    assert engine.triggers == [("zeroday", "SPX", "put"), ("ema", "/MES", "CLOSE")]
    assert client.post("/api/manual-trigger", json={"ticker": "SPX", "action": "call"},
                       headers=viewer_headers).status_code == 403


@pytest.mark.parametrize(("sent", "taken"), [("long", "call"), ("Short", "put"), ("LONG", "call")])
def test_zeroday_trigger_takes_the_dashboards_long_short_as_call_put(app: Flask, client: FlaskClient,
                                                                    admin_headers: dict[str, str],
                                                                    sent: str, taken: str) -> None:
    engine = FakeEngine()
    services = app.extensions["services"]
    services.engine = engine
    services.time_ns = lambda: TUESDAY_10_00_ET_NS
    response = client.post("/api/manual-trigger", json={"ticker": "SPX", "action": sent}, headers=admin_headers)
    assert response.status_code == 200 and response.json["success"] is True, response.json
    assert engine.triggers == [("zeroday", "SPX", taken)]


def test_ema_trigger_does_not_take_call_put(app: Flask, client: FlaskClient, admin_headers: dict[str, str]) -> None:
    app.extensions["services"].engine = engine = FakeEngine()
    response = client.post("/api/ema-manual-trigger", json={"ticker": "/MES", "action": "call"}, headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == "action"
    assert engine.triggers == []


def test_current_position(app: Flask, client: FlaskClient, viewer_headers: dict[str, str]) -> None:
    url = "/api/current-position?ticker=SPX&strategy=zeroday"
    assert client.get(url, headers=viewer_headers).json == {"success": True, "data": None}
    services = app.extensions["services"]
    services.engine = FakeEngine(position={"symbol": "SPX", "quantity": 1, "right": "C"})
    services.orders = object()
    assert client.get(url, headers=viewer_headers).json == {
        "success": True, "data": {"symbol": "SPX", "quantity": 1, "right": "C"}}
    bad = client.get("/api/current-position?ticker=../../etc&strategy=zeroday", headers=viewer_headers)
    assert bad.status_code == 400 and bad.json["field"] == "ticker"
