"""The kill switch end to end, in-process, on real Redis: the real app, the real trading runtime
(paper brokers, order manager, risk engine, strategy supervisor) with prices pushed through the
market data service, then POST /api/kill-switch and /api/resume as admin.

Also a round trip through the real path: entry by manual trigger, exit by the kill switch, fills
folded by the ledger, /api/trades and /api/pnl equal to the hand computation.

About "open orders": the order manager only ever sends MARKET orders and the paper broker fills a
market order at once, so the normal order path cannot leave an order resting at a paper broker.
To have working orders at both brokers when the switch is hit, one ticker's orders are sent to the
paper brokers as far-away LIMIT orders (the wrapper below): they rest at the broker exactly as a
live broker's accepted-but-unfilled order does, and the order manager tracks them as ACCEPTED.
"""
from __future__ import annotations

import dataclasses
import json
import time
from decimal import Decimal
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from app import attach_monitoring, create_app
from brokers.paper import PaperBroker
from config.symbology import contract_key_at
from config.settings import Settings
from domain.market import Trade
from domain.orders import SCHWAB, TASTYTRADE, OrderRequest, OrderType
from domain.tickers import TickerConfig
from monitoring.alerts import Alerter
from oms.models import OrderState
from runtime import TradingRuntime
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login

SLIPPAGE_TICKS = 1
COMMISSION = Decimal("0.01")  # per share / contract, each fill
ENTRY = {"NVDA": 180.00, "/MES": 6000.00, "TSLA": 350.00}
EXIT = {"NVDA": 182.50, "/MES": 6010.00, "TSLA": 350.00}
API_NOW_NS = 1_795_532_400 * 1_000_000_000  # Tuesday 2026-11-24 10:00 New York: NYSE and CME open
WORKING_SYMBOL = "TSLA"  # its orders rest at the paper brokers (see the module docstring)


def _ticker(symbol: str, schwab: int, tastytrade: int) -> TickerConfig:
    return TickerConfig.from_payload({
        "strategy": "ema", "symbol": symbol, "timeframe": "1Min", "trade_enabled": True,
        "schwab_quantity": schwab, "tastytrade_quantity": tastytrade,
        "trend_line_1": "EMA", "period_1": 2, "trend_line_2": "EMA", "period_2": 4,
    })


def _push(services: Any, prices: dict[str, float]) -> None:
    now = time.time_ns()
    services.market_data.process_now([Trade(sym, now + i, px, 1) for i, (sym, px) in enumerate(prices.items())])


@pytest.fixture
def app(settings: Settings, real_store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[Flask]:
    settings = settings.with_overrides(paper_slippage_ticks=SLIPPAGE_TICKS,
                                       paper_commission_per_contract=str(COMMISSION), metrics_token=None)
    application = create_app(settings, real_store)
    application.config["TESTING"] = True
    services = application.extensions["services"]
    services.time_ns = lambda: API_NOW_NS  # manual triggers' session check: a fixed open session
    runtime = TradingRuntime.build(services)  # market data thread is NOT started: prices come from _push
    services.alerter = Alerter(settings, real_store)  # not started: nothing is sent anywhere
    services.risk.alerter = services.alerter
    attach_monitoring(services, runtime)
    for name, adapter in runtime.registry.paper.items():
        assert isinstance(adapter, PaperBroker)
        original = adapter.place_then

        def resting(order: OrderRequest, then: Any, _original: Any = original) -> Any:
            if order.symbol == WORKING_SYMBOL and order.option is None:
                far = Decimal("100") if order.side.value == "BUY" else Decimal("99999")
                order = dataclasses.replace(order, order_type=OrderType.LIMIT, limit_price=far)
            return _original(order, then)

        monkeypatch.setattr(adapter, "place_then", resting)
        original_after = adapter.place_with_claim

        def not_at_once(order: OrderRequest, then: Any, first: Any, _original: Any = original_after) -> Any:
            # This symbol's orders rest (above), so they cannot go the fill-at-once path.
            return None if order.symbol == WORKING_SYMBOL and order.option is None else _original(order, then, first)

        monkeypatch.setattr(adapter, "place_with_claim", not_at_once)
    yield application
    runtime.supervisor.shutdown()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def admin(client: FlaskClient) -> dict[str, str]:
    return {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}


def _paper(app: Flask) -> dict[str, PaperBroker]:
    return app.extensions["services"].brokers.paper  # type: ignore[no-any-return]


def _book(app: Flask) -> dict[tuple[str, str, str], int]:
    return {(p.strategy, p.symbol, p.broker): p.quantity for p in app.extensions["services"].orders.positions()}


def _held(app: Flask) -> dict[str, dict[str, int]]:
    return {name: {p.key: p.quantity for p in adapter.positions()} for name, adapter in _paper(app).items()}


def _open_orders(app: Flask) -> dict[str, list[str]]:
    return {name: sorted(str(u.client_order_id) for u in adapter.open_orders()) for name, adapter in _paper(app).items()}


def test_kill_switch_flattens_both_paper_brokers_halts_and_resume_reactivates(
        app: Flask, client: FlaskClient, admin: dict[str, str], real_store: Store) -> None:
    services = app.extensions["services"]
    for cfg in (_ticker("NVDA", 10, 5), _ticker("/MES", 0, 1), _ticker(WORKING_SYMBOL, 3, 2)):
        services.tickers.upsert(cfg)
    _push(services, ENTRY)

    for symbol in ("NVDA", "/MES", WORKING_SYMBOL):
        trade = services.engine.manual_trigger("ema", symbol, "LONG")
        assert trade.outcome().acknowledged and not trade.outcome().refused, trade.message
    assert _book(app) == {("ema", "NVDA", SCHWAB): 10, ("ema", "NVDA", TASTYTRADE): 5,
                          ("ema", "/MES", TASTYTRADE): 1}
    mes_month = contract_key_at("/MES", time.time_ns())  # futures positions are keyed by contract month
    assert _held(app) == {SCHWAB: {"NVDA": 10}, TASTYTRADE: {"NVDA": 5, mes_month: 1}}
    working = _open_orders(app)
    assert len(working[SCHWAB]) == 1 and len(working[TASTYTRADE]) == 1, working
    working_ids = working[SCHWAB] + working[TASTYTRADE]
    assert {services.orders.order(c).state for c in working_ids} == {OrderState.ACCEPTED}

    _push(services, EXIT)
    anonymous = client.post("/api/kill-switch")  # unauthenticated: refused, nothing happens
    assert anonymous.status_code == 401 and _book(app)
    resp = client.post("/api/kill-switch", headers=admin)
    assert resp.status_code == 200, resp.json
    report = resp.json["report"]

    # Everything flat and nothing working, at both brokers, in the OMS book and at the broker itself.
    assert _book(app) == {}
    assert _held(app) == {SCHWAB: {}, TASTYTRADE: {}}
    assert _open_orders(app) == {SCHWAB: [], TASTYTRADE: []}
    assert {services.orders.order(c).state for c in working_ids} == {OrderState.CANCELLED}
    positions = client.get("/api/positions", headers=admin).json
    assert positions["positions"] == []
    assert all(b["ok"] and b["positions"] == [] for b in positions["brokers"].values()), positions["brokers"]

    # The strategies agree they are flat (ema was never started: these are the saved states a later
    # start-trading resumes from, so they must not still say LONG).
    for symbol in ("NVDA", "/MES"):
        saved = json.loads(real_store.redis.get(real_store.key("engine", "state", "ema", symbol)))
        assert saved["position"] == "FLAT", (symbol, saved["position"])

    # The report: HALTED, cancel and flatten results per broker.
    assert report["state"] == "HALTED"
    for broker in (SCHWAB, TASTYTRADE):
        assert report["cancel"][broker]["ok"] is True, report["cancel"]
        assert len(report["cancel"][broker]["orders"]) == 1  # the working order, cancelled
        flatten = report["flatten"][broker]
        assert flatten["ok"] is True, flatten
        closed = {r["symbol"]: (r["previous_quantity"], r["quantity"], r["status"]) for r in flatten["results"]}
        assert closed == ({"NVDA": (10, 0, "filled")} if broker == SCHWAB
                          else {"NVDA": (5, 0, "filled"), "/MES": (1, 0, "filled")}), flatten["results"]

    # Trading state, audit stream, risk events and OMS journal all record it.
    assert services.risk.states()["global"]["state"] == "HALTED"
    audit = services.audit.recent(50, kind="kill_switch")
    assert len(audit) == 1 and audit[0]["actor"] == ADMIN_EMAIL, audit
    events = real_store.redis.xrange(services.risk.events_key)
    assert any('"kill_switch"' in e[1]["json"] for e in events)
    journal = client.get("/api/journal?limit=200", headers=admin).json["entries"]
    kill_fills = [e for e in journal if e.get("intent_reason") == "kill_switch" and e.get("state") == "FILLED"]
    assert len(kill_fills) == 3, journal  # NVDA at both brokers, /MES at tastytrade
    cancelled = [e for e in journal if e.get("state") == "CANCELLED"]
    assert sorted(e["client_order_id"] for e in cancelled) == sorted(working_ids)
    status = client.get("/api/status", headers=admin).json
    assert status["trading_state"]["global"]["state"] == "HALTED"

    # HALTED: a new manual LONG is denied by the risk engine; nothing is sent.
    before = {o.client_order_id for o in services.orders.orders(limit=1000)}
    broker_orders = {name: real_store.redis.hlen(real_store.key("paper", name, "orders")) for name in _paper(app)}
    assert all(broker_orders.values()), broker_orders  # the right key: both brokers hold their earlier orders
    refused = client.post("/api/ema-manual-trigger", json={"ticker": "NVDA", "action": "LONG"}, headers=admin)
    assert refused.status_code == 409 and refused.json["success"] is False, refused.json  # nothing was sent
    assert refused.json["code"] == "risk_denied" and len(refused.json["results"]) == 2, refused.json
    assert refused.json["message"].count("denied") == 2 and "HALTED" in refused.json["message"], refused.json
    assert _book(app) == {} and _held(app) == {SCHWAB: {}, TASTYTRADE: {}}
    denied = [o for o in services.orders.orders(limit=1000) if o.client_order_id not in before]
    # The denial is recorded (one per broker, with its reason) but nothing reached a broker.
    assert sorted(o.broker for o in denied) == [SCHWAB, TASTYTRADE]
    assert all(o.state is OrderState.REJECTED and o.broker_order_id is None for o in denied), denied
    assert {name: real_store.redis.hlen(real_store.key("paper", name, "orders")) for name in _paper(app)} == broker_orders
    assert all("HALTED" in o.reason for o in denied), [o.reason for o in denied]
    assert _open_orders(app) == {SCHWAB: [], TASTYTRADE: []}
    # The strategy did not adopt a position no broker took.
    nvda = client.get("/api/strategies", headers=admin).json["data"]["ema"]["tickers"]["NVDA"]
    assert nvda["position"] == "FLAT", nvda

    resumed = client.post("/api/resume", headers=admin)
    assert resumed.status_code == 200 and resumed.json["state"]["state"] == "ACTIVE", resumed.json
    assert services.risk.states()["global"]["state"] == "ACTIVE"
    again = client.post("/api/ema-manual-trigger", json={"ticker": "NVDA", "action": "LONG"}, headers=admin)
    assert again.status_code == 200 and "denied" not in again.json["message"], again.json
    assert _book(app) == {("ema", "NVDA", SCHWAB): 10, ("ema", "NVDA", TASTYTRADE): 5}
    assert _held(app) == {SCHWAB: {"NVDA": 10}, TASTYTRADE: {"NVDA": 5}}


def test_round_trip_pnl_through_the_kill_switch(app: Flask, client: FlaskClient, admin: dict[str, str]) -> None:
    services = app.extensions["services"]
    services.tickers.upsert(_ticker("NVDA", 10, 5))
    services.tickers.upsert(_ticker("/MES", 0, 1))
    _push(services, ENTRY)
    services.engine.manual_trigger("ema", "NVDA", "LONG")
    services.engine.manual_trigger("ema", "/MES", "LONG")
    _push(services, EXIT)
    assert client.post("/api/kill-switch", headers=admin).status_code == 200
    assert _book(app) == {}
    services.ledger.sync()

    trades = client.get("/api/trades", headers=admin).json
    assert trades["total"] == 3, trades
    rows = {(t["symbol"], t["broker"]): t for t in trades["trades"]}
    assert set(rows) == {("NVDA", SCHWAB), ("NVDA", TASTYTRADE), ("/MES", TASTYTRADE)}
    assert {t["exit_reason"] for t in trades["trades"]} == {"kill_switch"}
    assert {t["entry_reason"] for t in trades["trades"]} == {"manual"}

    # By hand: 1 tick of slippage against us on each fill, COMMISSION per share/contract per fill.
    def expected(symbol: str, qty: int, tick: Decimal, multiplier: Decimal) -> tuple[Decimal, Decimal, Decimal]:
        entry = Decimal(str(ENTRY[symbol])) + tick * SLIPPAGE_TICKS  # buy pays up
        exit_ = Decimal(str(EXIT[symbol])) - tick * SLIPPAGE_TICKS  # sell gives up
        gross = (exit_ - entry) * qty * multiplier
        commission = COMMISSION * qty * 2
        return gross, commission, gross - commission

    hand = {
        ("NVDA", SCHWAB): expected("NVDA", 10, Decimal("0.01"), Decimal(1)),  # (182.49-180.01)*10 - 0.20 = 24.60
        ("NVDA", TASTYTRADE): expected("NVDA", 5, Decimal("0.01"), Decimal(1)),  # 12.40 - 0.10 = 12.30
        ("/MES", TASTYTRADE): expected("/MES", 1, Decimal("0.25"), Decimal(5)),  # 9.50*5 - 0.02 = 47.48
    }
    assert hand[("NVDA", SCHWAB)][2] == Decimal("24.60") and hand[("/MES", TASTYTRADE)][2] == Decimal("47.48")
    for key, (gross, commission, net) in hand.items():
        row = rows[key]
        assert Decimal(row["gross_pnl"]) == gross, row
        assert Decimal(row["commission"]) == commission, row
        assert Decimal(row["net_pnl"]) == net, row

    pnl = client.get("/api/pnl", headers=admin).json["pnl"]
    total = sum(net for _, _, net in hand.values())
    assert total == Decimal("84.38")
    assert Decimal(pnl["realized"]["by_strategy"]["ema"]["net"]) == total, pnl["realized"]
    assert Decimal(pnl["unrealized"]["total"]) == 0, pnl["unrealized"]
