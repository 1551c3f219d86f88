"""The risk and monitoring blueprints on the real app (real auth), with stand-in order manager."""
from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from api.monitoring import monitoring_bp
from api.risk import risk_bp
from app import create_app
from auth.users import Role
from config.settings import Settings
from domain.orders import ClientOrderId, OrderRequest, OrderSide, PositionEffect, TASTYTRADE
from domain.risk import OrderContext
from ledger.trades import Ledger
from monitoring.alerts import Alerter
from monitoring.metrics import Metrics
from risk.engine import RiskEngine
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, VIEWER_EMAIL, VIEWER_PASSWORD, login


class FakeOrders:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def cancel_all(self) -> dict[str, Any]:
        self.calls.append("cancel_all")
        return {"schwab": {"broker": "schwab", "ok": True, "orders": []}}

    def flatten_all(self, reason: str) -> dict[str, Any]:
        self.calls.append(f"flatten_all:{reason}")
        return {"tastytrade": {"broker": "tastytrade", "ok": True, "results": [{"symbol": "/MES"}]}}

    def positions(self) -> list[Any]:
        return []


@pytest.fixture
def app(settings: Settings, store: Store) -> Iterator[Flask]:
    application = create_app(settings.with_overrides(metrics_token=None), store)
    application.config["TESTING"] = True
    for bp in (risk_bp, monitoring_bp):
        if bp.name not in application.blueprints:  # the lead may already register them in create_app
            application.register_blueprint(bp)
    services = application.extensions["services"]
    metrics = Metrics()
    services.risk = RiskEngine(store, services.settings, metrics=metrics)
    services.orders = FakeOrders()
    services.metrics, services.ledger, services.alerter = metrics, Ledger(store), Alerter(services.settings, store)
    yield application


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(client: FlaskClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}


@pytest.fixture
def viewer(app: Flask, client: FlaskClient) -> dict[str, str]:
    app.extensions["services"].users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    return {"Authorization": f"Bearer {login(client, VIEWER_EMAIL, VIEWER_PASSWORD)}"}


def test_risk_get_put_and_roles(client: FlaskClient, admin: dict[str, str], viewer: dict[str, str]) -> None:
    assert client.get("/api/risk").status_code == 401
    got = client.get("/api/risk", headers=viewer)
    assert got.status_code == 200 and got.json["limits"]["max_orders_per_minute"] == 30
    assert "daily_loss" in got.json["usage"]
    assert client.put("/api/risk", json={"max_position": 3}, headers=viewer).status_code == 403
    bad = client.put("/api/risk", json={"max_position": 0}, headers=admin)
    assert bad.status_code == 400 and bad.json["field"] == "max_position" and not bad.json["success"]
    put = client.put("/api/risk", json={"max_position": 3, "daily_loss_limit_global": "750"}, headers=admin)
    assert put.status_code == 200 and put.json["limits"]["daily_loss_limit_global"] == "750"
    assert client.get("/api/risk", headers=viewer).json["limits"]["max_position"] == 3


def test_kill_switch_and_resume(app: Flask, client: FlaskClient, admin: dict[str, str],
                                viewer: dict[str, str]) -> None:
    assert client.post("/api/kill-switch", headers=viewer).status_code == 403
    resp = client.post("/api/kill-switch", headers=admin)
    assert resp.status_code == 200 and resp.json["report"]["state"] == "HALTED"
    assert resp.json["report"]["flatten"]["tastytrade"]["ok"] is True
    services = app.extensions["services"]
    assert services.orders.calls == ["cancel_all", "flatten_all:kill_switch"]
    order = OrderRequest(ClientOrderId("api-1"), "/MES", OrderSide.BUY, 1, PositionEffect.OPEN)
    assert not services.risk(order, OrderContext("ema", "/MES", TASTYTRADE, 0, False, "signal")).allowed
    status_resp = client.get("/api/status", headers=viewer)
    assert status_resp.status_code == 200, status_resp.json
    status = status_resp.json
    assert status["trading_state"]["global"]["state"] == "HALTED"
    assert status["alerts"] == [] or isinstance(status["alerts"], list)
    assert client.post("/api/resume", json={"scope": "nope"}, headers=admin).status_code == 400
    resumed = client.post("/api/resume", headers=admin)
    assert resumed.status_code == 200 and resumed.json["state"]["state"] == "ACTIVE"


def test_metrics_localhost_and_token(app: Flask, client: FlaskClient, store: Store) -> None:
    services = app.extensions["services"]
    assert client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 403
    services.risk.update_limits({"max_order_quantity": 1})
    services.risk(OrderRequest(ClientOrderId("m-1"), "/MES", OrderSide.BUY, 5, PositionEffect.OPEN),
                  OrderContext("ema", "/MES", TASTYTRADE, 0, False, "signal"))
    resp = client.get("/metrics")  # the test client is 127.0.0.1
    assert resp.status_code == 200
    families = {f.name: f for f in text_string_to_metric_families(resp.get_data(as_text=True))}
    denials = [s for s in families["trading_risk_denials"].samples if s.name == "trading_risk_denials_total"]
    assert denials[0].labels == {"reason": "max_order_quantity"} and denials[0].value == 1
    services.settings = services.settings.with_overrides(metrics_token="m" * 24)
    assert client.get("/metrics").status_code == 401  # token set: localhost alone is not enough
    assert client.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
    ok = client.get("/metrics", headers={"Authorization": "Bearer " + "m" * 24},
                    environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 200


def test_status_sections_survive_a_broken_provider(app: Flask, client: FlaskClient, viewer: dict[str, str]) -> None:
    class BrokenEngine:
        def strategies_status(self) -> dict[str, Any]:
            raise RuntimeError("supervisor wedged")

    app.extensions["services"].engine = BrokenEngine()
    status = client.get("/api/status", headers=viewer).json
    assert status["mode"]["trading_mode"] == "paper"
    assert status["strategies"] == {"error": "RuntimeError: supervisor wedged"}
    assert status["feeds"] == {"available": False}
    assert "daily_loss" in status["risk"]


def _fills(store: Store) -> None:
    stream = store.key("oms", "fills")
    for i, (side, price, minute) in enumerate((("BUY", "5000", 0), ("SELL", "5004", 5), ("BUY", "5001", 10))):
        store.redis.xadd(stream, {"client_order_id": f"c{i}", "broker": "tastytrade", "strategy": "ema",
                                  "symbol": "/MES", "key": "/MES", "side": side, "quantity": "2", "price": price,
                                  "commission": "1.24", "multiplier": "5", "reason": "signal",
                                  "ts_ns": str(int(datetime(2025, 6, 10, 14, minute, tzinfo=UTC).timestamp()) * 10**9)})


def test_trades_and_pnl(app: Flask, client: FlaskClient, viewer: dict[str, str], store: Store) -> None:
    _fills(store)
    app.extensions["services"].mark_price = lambda key: Decimal("5002")
    resp = client.get("/api/trades?strategy=ema&symbol=mes&from=2025-06-10&to=2025-06-11", headers=viewer)
    assert resp.status_code == 200 and resp.json["total"] == 1
    trade = resp.json["trades"][0]
    assert trade["net_pnl"] == "37.52" and trade["gross_pnl"] == "40"  # 4 x 2 x 5 - 2.48
    assert client.get("/api/trades?broker=schwab", headers=viewer).json["total"] == 0
    for bad, field in (("symbol=ZZZ", "symbol"), ("from=yesterday", "from"), ("limit=5000", "limit"),
                       ("format=xml", "format"), ("strategy=x", "strategy")):
        r = client.get(f"/api/trades?{bad}", headers=viewer)
        assert r.status_code == 400 and r.json["field"] == field, bad
    csv_resp = client.get("/api/trades?format=csv", headers=viewer)
    assert csv_resp.mimetype == "text/csv"
    assert list(csv.DictReader(io.StringIO(csv_resp.get_data(as_text=True))))[0]["net_pnl"] == "37.52"
    pnl = client.get("/api/pnl", headers=viewer).json["pnl"]
    assert pnl["realized"]["by_strategy"]["ema"]["net"] == "37.52"
    assert pnl["unrealized"]["total"] == "10"  # long 2 from 5001, mark 5002, x5
    assert len(pnl["equity_curve"]) == 1


def test_status_reports_redis_persistence_as_redis_reports_it(app: Flask, client: FlaskClient,
                                                               viewer: dict[str, str]) -> None:
    # It said "persistent": true for any real Redis, including the suite's (save "" appendonly no).
    redis_status = client.get("/api/status", headers=viewer).json["mode"]["redis"]
    store = app.extensions["services"].store
    if store.persistent:  # the private redis-server: started keeping nothing
        assert redis_status["persistent"] is False and redis_status["appendonly"] == "no" and redis_status["save"] == ""
    else:  # in-process fakeredis keeps nothing either
        assert redis_status["persistent"] is False
    assert redis_status["ok"] is True
