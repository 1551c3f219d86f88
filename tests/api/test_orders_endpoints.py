"""api/orders.py on the real app (real Redis and fakeredis): orders, positions, journal and the
reconciliation endpoints, wired to a real OrderManager over the two paper brokers."""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.orders import orders_bp
from app import create_app
from brokers.paper import PaperBroker
from brokers.registry import BrokerRegistry
from config.settings import Settings
from domain.orders import BROKERS, SCHWAB, TASTYTRADE, BrokerName, OrderRequest, OrderSide, OrderType, PositionEffect
from oms.models import TargetOrder
from oms.order_manager import OrderManager
from runtime import Halts, TradingRuntime
from store.redis_store import Store

PRICES: dict[str, float] = {}


@pytest.fixture
def app(settings: Settings, store: Store) -> Iterator[Flask]:
    application = create_app(settings, store)
    application.config["TESTING"] = True
    if "orders" not in application.blueprints:
        application.register_blueprint(orders_bp)
    PRICES.clear()
    PRICES.update({"/MES": 6000.0, "NVDA": 180.0})
    clock = lambda: datetime(2025, 6, 2, 15, 0, tzinfo=timezone.utc)  # noqa: E731
    paper: dict[BrokerName, PaperBroker] = {b: PaperBroker(store, b, settings, PRICES.get, clock=clock)
                                            for b in BROKERS}
    registry = BrokerRegistry(settings, live={}, paper=dict(paper))
    services = application.extensions["services"]
    om = OrderManager(store, registry.trading_adapters())
    halts = Halts(store)
    services.orders, services.brokers = om, registry
    services.halts = halts
    services.runtime = TradingRuntime(services, market_data=None, registry=registry,  # type: ignore[arg-type]
                                      orders=om, supervisor=None, halts=halts,  # type: ignore[arg-type]
                                      reconcile_settle=lambda: None)  # confirm without waiting
    yield application


def _om(app: Flask) -> OrderManager:
    return app.extensions["services"].orders  # type: ignore[no-any-return]


def _move(app: Flask, strategy: str, symbol: str, broker: str, qty: int, ts: int) -> None:
    r = _om(app).move_to_target(TargetOrder(strategy, symbol, BrokerName(broker), qty, ts, "signal", "t"))
    assert r.ok, r


def _broker_only_buy(app: Flask, broker: str, symbol: str, qty: int, coid: str = "manual-1") -> None:
    """A position the OMS did not place (a manual order at the broker): a reconciliation mismatch."""
    paper = app.extensions["services"].brokers.paper[broker]
    paper.place_order(OrderRequest(client_order_id=coid, symbol=symbol, side=OrderSide.BUY, quantity=qty,  # type: ignore[arg-type]
                                   position_effect=PositionEffect.OPEN, order_type=OrderType.MARKET))


def _get(client: FlaskClient, url: str, headers: dict[str, str]) -> Any:
    return client.get(url, headers=headers)


# ------------------------------------------------------------------ GET /api/orders
def test_orders_filters_and_paging(app, client, viewer_headers):
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _move(app, "ema", "/MES", TASTYTRADE, 2, 1)
    _move(app, "supertrend", "NVDA", SCHWAB, -3, 2)
    _move(app, "ema", "/MES", SCHWAB, 0, 3)
    r = _get(client, "/api/orders", viewer_headers)
    assert r.status_code == 200 and r.json["success"] is True
    assert r.json["count"] == 4 and r.json["has_more"] is False and r.json["offset"] == 0 and r.json["limit"] == 50
    row = r.json["orders"][0]
    assert {"client_order_id", "strategy", "symbol", "broker", "side", "quantity", "state", "filled_quantity",
            "avg_fill_price", "leg", "created_ns"} <= set(row)
    assert row["state"] == "FILLED" and isinstance(row["quantity"], int)
    times = [o["created_ns"] for o in r.json["orders"]]
    assert times == sorted(times, reverse=True)  # newest first

    r = _get(client, "/api/orders?strategy=ema&broker=schwab", viewer_headers)
    assert [(o["side"], o["quantity"]) for o in r.json["orders"]] == [("SELL", 1), ("BUY", 1)]
    assert r.json["filters"] == {"strategy": "ema", "broker": "schwab"}
    r = _get(client, "/api/orders?symbol=nvda", viewer_headers)  # canonicalised
    assert [o["symbol"] for o in r.json["orders"]] == ["NVDA"] and r.json["filters"]["symbol"] == "NVDA"
    r = _get(client, "/api/orders?symbol=MES&state=filled", viewer_headers)
    assert r.json["count"] == 3 and r.json["filters"]["state"] == "FILLED"
    assert _get(client, "/api/orders?state=REJECTED", viewer_headers).json["orders"] == []

    page1 = _get(client, "/api/orders?limit=3", viewer_headers).json
    page2 = _get(client, "/api/orders?limit=3&offset=3", viewer_headers).json
    assert page1["count"] == 3 and page1["has_more"] is True
    assert page2["count"] == 1 and page2["has_more"] is False
    ids = [o["client_order_id"] for o in page1["orders"] + page2["orders"]]
    assert len(set(ids)) == 4


def test_a_full_page_of_the_largest_size_says_another_follows(app, client, viewer_headers):
    for ts in range(1, 1003):  # 1,002 orders: in and out of one contract
        _move(app, "ema", "/MES", TASTYTRADE, ts % 2, ts)
    page1 = _get(client, "/api/orders?limit=1000", viewer_headers).json
    page2 = _get(client, "/api/orders?limit=1000&offset=1000", viewer_headers).json
    assert page1["count"] == 1000 and page1["has_more"] is True
    assert page2["count"] == 2 and page2["has_more"] is False
    ids = {o["client_order_id"] for o in page1["orders"] + page2["orders"]}
    assert len(ids) == 1002


@pytest.mark.parametrize("query, field", [
    ("limit=0", "limit"), ("limit=1001", "limit"), ("limit=abc", "limit"), ("offset=-1", "offset"),
    ("offset=100001", "offset"), ("state=BOGUS", "state"), ("broker=ibkr", "broker"),
    ("strategy=momentum", "strategy"), ("symbol=NOTASYMBOL", "symbol"),
])
def test_orders_bad_query_is_400_naming_the_field(client, viewer_headers, query, field):
    r = _get(client, f"/api/orders?{query}", viewer_headers)
    assert r.status_code == 400 and r.json["success"] is False and r.json["field"] == field
    assert r.json["message"] and r.json["error"]


# ------------------------------------------------------------------ GET /api/positions
def test_positions_show_the_book_and_each_brokers_own(app, client, viewer_headers):
    _move(app, "ema", "/MES", SCHWAB, 2, 1)
    _move(app, "supertrend", "/MES", SCHWAB, -1, 1)
    _move(app, "ema", "NVDA", TASTYTRADE, 5, 1)
    r = _get(client, "/api/positions", viewer_headers)
    assert r.status_code == 200
    book = {(p["strategy"], p["symbol"], p["broker"]): p["quantity"] for p in r.json["positions"]}
    assert book == {("ema", "/MES", "schwab"): 2, ("supertrend", "/MES", "schwab"): -1,
                    ("ema", "NVDA", "tastytrade"): 5}
    assert r.json["brokers"]["schwab"]["ok"] is True
    assert [(p["key"], p["quantity"]) for p in r.json["brokers"]["schwab"]["positions"]] == [("/MES", 1)]
    assert [(p["key"], p["quantity"]) for p in r.json["brokers"]["tastytrade"]["positions"]] == [("NVDA", 5)]
    assert r.json["paused_brokers"] == {}
    _move(app, "ema", "NVDA", TASTYTRADE, 0, 2)
    flat = _get(client, "/api/positions?include_flat=true", viewer_headers).json["positions"]
    assert {(p["strategy"], p["symbol"], p["broker"], p["quantity"]) for p in flat} >= {
        ("ema", "NVDA", "tastytrade", 0)}


def test_positions_report_a_failing_broker_per_broker_not_500(app, client, viewer_headers, monkeypatch):
    _move(app, "ema", "/MES", TASTYTRADE, 1, 1)
    paper = app.extensions["services"].brokers.paper[SCHWAB]

    def boom() -> list[Any]:
        raise ConnectionError("account 12345678 unreachable")

    monkeypatch.setattr(paper, "positions", boom)
    r = _get(client, "/api/positions", viewer_headers)
    assert r.status_code == 200
    assert r.json["brokers"]["schwab"] == {"ok": False, "error": "ConnectionError", "positions": []}
    assert r.json["brokers"]["tastytrade"]["ok"] is True
    assert "12345678" not in r.get_data(as_text=True)


# ------------------------------------------------------------------ GET /api/journal
def test_journal_newest_first_with_limit_and_fills_stream(app, client, viewer_headers):
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _move(app, "ema", "/MES", SCHWAB, 0, 2)
    r = _get(client, "/api/journal?limit=4", viewer_headers)
    assert r.status_code == 200 and r.json["count"] == 4 and r.json["stream"] == "journal"
    entries = r.json["entries"]
    assert entries[0]["state"] == "FILLED" and entries[0]["side"] == "SELL" and "id" in entries[0]
    assert [e["id"] for e in entries] == sorted((e["id"] for e in entries), reverse=True)
    assert _get(client, "/api/journal", viewer_headers).json["count"] == 6
    fills = _get(client, "/api/journal?stream=fills", viewer_headers).json["entries"]
    assert [(f["side"], f["quantity"]) for f in fills] == [("SELL", "1"), ("BUY", "1")]
    for query, field in (("limit=0", "limit"), ("limit=5000", "limit"), ("stream=audit", "stream")):
        bad = _get(client, f"/api/journal?{query}", viewer_headers)
        assert bad.status_code == 400 and bad.json["field"] == field


# ------------------------------------------------------------------ reconciliation
def test_reconcile_run_halts_then_adopt_clears_the_halt(app, client, admin_headers, viewer_headers):
    r = _get(client, "/api/reconcile", viewer_headers)
    assert r.status_code == 200 and r.json["report"] is None and r.json["halts"] == []
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _broker_only_buy(app, SCHWAB, "/MES", 2)  # broker holds 3, the OMS book 1
    r = client.post("/api/reconcile", headers=admin_headers)
    assert r.status_code == 200 and r.json["report"]["ok"] is False
    mismatch = r.json["report"]["brokers"][0]["mismatches"][0]
    assert (mismatch["broker"], mismatch["key"], mismatch["broker_quantity"], mismatch["oms_quantity"]) == (
        "schwab", "/MES", 3, 1)
    assert [(h["strategy"], h["symbol"]) for h in r.json["halts"]] == [("ema", "/MES")]
    shown = _get(client, "/api/reconcile", viewer_headers).json
    assert shown["report"]["ok"] is False and shown["halts"][0]["reason"].startswith("reconciliation mismatch")

    r = client.post("/api/reconcile/adopt", headers=admin_headers,
                    json={"broker": "schwab", "key": "/MES", "strategy": "ema"})
    assert r.status_code == 200, r.json
    assert r.json["position"]["quantity"] == 3 and r.json["cleared_halts"] == [["ema", "/MES"]]
    assert r.json["halts"] == [] and app.extensions["services"].halts.all() == {}
    assert _om(app).position("ema", "/MES", SCHWAB).quantity == 3
    assert client.post("/api/reconcile", headers=admin_headers).json["report"]["ok"] is True
    adopted = [e for e in _om(app).journal(20) if e.get("event") == "position_adopted"]
    assert adopted and adopted[0]["before"] == "1" and adopted[0]["after"] == "3"


def test_adopt_keeps_halts_another_mismatch_still_explains(app, client, admin_headers):
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _move(app, "ema", "/MES", TASTYTRADE, 1, 1)
    _broker_only_buy(app, SCHWAB, "/MES", 1)
    _broker_only_buy(app, TASTYTRADE, "/MES", 1, coid="manual-2")
    report = client.post("/api/reconcile", headers=admin_headers).json["report"]
    assert sum(len(b["mismatches"]) for b in report["brokers"]) == 2
    r = client.post("/api/reconcile/adopt", headers=admin_headers,
                    json={"broker": "schwab", "key": "/MES", "strategy": "ema", "symbol": "MES"})
    assert r.status_code == 200 and r.json["cleared_halts"] == []  # tastytrade still disagrees
    assert [(h["strategy"], h["symbol"]) for h in r.json["halts"]] == [("ema", "/MES")]


def test_flatten_closes_the_broker_position_and_clears_halts(app, client, admin_headers):
    _broker_only_buy(app, TASTYTRADE, "NVDA", 4)  # no strategy owns it
    report = client.post("/api/reconcile", headers=admin_headers).json
    assert [(h["strategy"], h["symbol"]) for h in report["halts"]] == [("reconcile", "NVDA")]
    r = client.post("/api/reconcile/flatten", headers=admin_headers, json={"broker": "tastytrade", "key": "NVDA"})
    assert r.status_code == 200, r.json
    assert r.json["report"]["ok"] is True and r.json["cleared_halts"] == [["reconcile", "NVDA"]]
    res = r.json["report"]["results"]
    assert [(x["strategy"], x["previous_quantity"], x["quantity"], x["status"]) for x in res] == [
        ("reconcile", 4, 0, "filled")]
    paper = app.extensions["services"].brokers.paper[TASTYTRADE]
    assert paper.positions() == []
    assert client.post("/api/reconcile", headers=admin_headers).json["report"]["ok"] is True


def test_flatten_that_cannot_trade_keeps_the_halt_and_says_so(app, client, admin_headers):
    _broker_only_buy(app, SCHWAB, "NVDA", 2)
    client.post("/api/reconcile", headers=admin_headers)
    PRICES.pop("NVDA")  # the paper broker cannot price the close: rejected
    r = client.post("/api/reconcile/flatten", headers=admin_headers, json={"broker": "schwab", "key": "NVDA"})
    assert r.status_code == 502 and r.json["success"] is False and r.json["error"] == "flatten_incomplete"
    assert r.json["report"]["ok"] is False and r.json["cleared_halts"] == []
    assert [(h["strategy"], h["symbol"]) for h in r.json["halts"]] == [("reconcile", "NVDA")]


@pytest.mark.parametrize("url, body, field", [
    ("/api/reconcile/adopt", {"key": "/MES", "strategy": "ema"}, "broker"),
    ("/api/reconcile/adopt", {"broker": "ibkr", "key": "/MES", "strategy": "ema"}, "broker"),
    ("/api/reconcile/adopt", {"broker": "schwab", "strategy": "ema"}, "key"),
    ("/api/reconcile/adopt", {"broker": "schwab", "key": "", "strategy": "ema"}, "key"),
    ("/api/reconcile/adopt", {"broker": "schwab", "key": "/MES"}, "strategy"),
    ("/api/reconcile/adopt", {"broker": "schwab", "key": "/MES", "strategy": "x"}, "strategy"),
    ("/api/reconcile/adopt", {"broker": "schwab", "key": "/MES", "strategy": "ema", "symbol": "??"}, "symbol"),
    ("/api/reconcile/adopt", ["schwab"], "body"),
    ("/api/reconcile/flatten", {"key": "/MES"}, "broker"),
    ("/api/reconcile/flatten", {"broker": "schwab", "key": 5}, "key"),
    ("/api/reconcile/flatten", None, "body"),
])
def test_reconcile_actions_validate_their_body(app, client, admin_headers, url, body, field):
    kwargs: dict[str, Any] = {"json": body} if body is not None else {"data": "not json",
                                                                        "content_type": "application/json"}
    r = client.post(url, headers=admin_headers, **kwargs)
    assert r.status_code == 400 and r.json["field"] == field, r.json
    assert _om(app).journal(5) == []  # nothing happened


# ------------------------------------------------------------------ roles / availability
def test_roles_viewer_reads_admin_acts(client, viewer_headers):
    for url in ("/api/orders", "/api/positions", "/api/journal", "/api/reconcile"):
        assert client.get(url).status_code == 401
        assert client.get(url, headers=viewer_headers).status_code == 200
    for url in ("/api/reconcile", "/api/reconcile/adopt", "/api/reconcile/flatten"):
        r = client.post(url, headers=viewer_headers, json={})
        assert r.status_code == 403 and r.json["success"] is False
        assert client.post(url, json={}).status_code == 401


def test_no_order_manager_is_503_json(app, client, admin_headers):
    app.extensions["services"].orders = None
    for url in ("/api/orders", "/api/positions", "/api/journal", "/api/reconcile"):
        r = client.get(url, headers=admin_headers)
        assert r.status_code == 503 and r.json["success"] is False and r.json["error"] == "unavailable"
    for url, body in (("/api/reconcile", {}), ("/api/reconcile/adopt", {"broker": "schwab", "key": "/MES",
                                                                      "strategy": "ema"}),
                      ("/api/reconcile/flatten", {"broker": "schwab", "key": "/MES"})):
        r = client.post(url, headers=admin_headers, json=body)
        assert r.status_code == 503 and r.json["success"] is False


def test_no_runtime_post_reconcile_is_503_get_still_answers(app, client, admin_headers):
    app.extensions["services"].runtime = None
    assert client.post("/api/reconcile", headers=admin_headers).status_code == 503
    r = client.get("/api/reconcile", headers=admin_headers)
    assert r.status_code == 200 and r.json["report"] is None


@pytest.mark.parametrize("url", ["/api/reconcile/adopt", "/api/reconcile/flatten"])
def test_reconcile_action_at_a_key_nobody_holds_is_404_and_creates_no_lane(app, client, admin_headers, url):
    before = _om(app).positions(include_flat=True)
    r = client.post(url, headers=admin_headers, json={"broker": "tastytrade", "key": "NOPE", "strategy": "ema"})
    assert r.status_code == 404 and r.json["success"] is False and r.json["field"] == "key"
    assert "NOPE" in r.json["message"]
    assert _om(app).positions(include_flat=True) == before  # no junk lane in the book
