"""The runtime's reconciliation on the real app, over the two paper brokers: a mismatch halts only
once it held on the confirmation read, a mismatch halt lifts itself when a later reconciliation
agrees (halts with other causes stay), and every standing divergence is in /api/status, in the
`trading_position_divergence` metric and in the alerts."""
from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from prometheus_client.parser import text_string_to_metric_families

from brokers.paper import PaperBroker
from brokers.registry import BrokerRegistry
from config.settings import Settings
from domain.orders import BROKERS, SCHWAB, TASTYTRADE, BrokerName, OrderRequest, OrderSide, OrderType, PositionEffect
from monitoring.alerts import Alerter
from oms.models import TargetOrder
from oms.order_manager import OrderManager
from runtime import Halts, TradingRuntime
from store.redis_store import Store

PRICES: dict[str, float] = {}


class Settle:
    """The injected settle wait: records what was halted while it waited, runs `then` (the world
    moving during the wait), and never sleeps."""

    def __init__(self, halts: Halts) -> None:
        self.halts = halts
        self.seen: list[dict[str, str]] = []
        self.then: Callable[[], None] | None = None

    def __call__(self) -> None:
        self.seen.append(self.halts.all())
        if self.then is not None:
            self.then()


@pytest.fixture
def settle(store: Store) -> Settle:
    return Settle(Halts(store))


@pytest.fixture
def app(app: Flask, settings: Settings, store: Store, settle: Settle) -> Iterator[Flask]:
    PRICES.clear()
    PRICES.update({"/MES": 6000.0, "NVDA": 180.0})
    clock = lambda: datetime(2025, 6, 2, 15, 0, tzinfo=timezone.utc)  # noqa: E731
    paper = {b: PaperBroker(store, b, settings, PRICES.get, clock=clock) for b in BROKERS}
    registry = BrokerRegistry(settings, live={}, paper=dict(paper))
    services = app.extensions["services"]
    om = OrderManager(store, registry.trading_adapters())
    halts = Halts(store)
    services.orders, services.brokers = om, registry
    services.halts, services.alerter = halts, Alerter(services.settings, store)
    services.runtime = TradingRuntime(services, market_data=None, registry=registry,  # type: ignore[arg-type]
                                      orders=om, supervisor=None, halts=halts,  # type: ignore[arg-type]
                                      reconcile_settle=settle)
    yield app


def _runtime(app: Flask) -> TradingRuntime:
    return app.extensions["services"].runtime  # type: ignore[no-any-return]


def _move(app: Flask, strategy: str, symbol: str, broker: str, qty: int, ts: int) -> None:
    om = app.extensions["services"].orders
    assert om.move_to_target(TargetOrder(strategy, symbol, BrokerName(broker), qty, ts, "signal", "t")).ok


def _broker_only(app: Flask, broker: str, symbol: str, qty: int, coid: str) -> None:
    """An order the OMS did not place (manual, at the broker)."""
    paper = app.extensions["services"].brokers.paper[broker]
    side = OrderSide.BUY if qty > 0 else OrderSide.SELL
    paper.place_order(OrderRequest(client_order_id=coid, symbol=symbol, side=side, quantity=abs(qty),  # type: ignore[arg-type]
                                   position_effect=PositionEffect.OPEN, order_type=OrderType.MARKET))


def _alerts(app: Flask, kind: str) -> list[dict[str, Any]]:
    return [a for a in app.extensions["services"].alerter.recent(100) if a["kind"] == kind]


def _journal(app: Flask, event: str) -> list[dict[str, str]]:
    return [e for e in app.extensions["services"].orders.journal(100) if e.get("event") == event]


def _divergence_gauge(client: FlaskClient) -> dict[tuple[str, str, str], float]:
    text = client.get("/metrics").get_data(as_text=True)  # the test client is 127.0.0.1
    families = {f.name: f for f in text_string_to_metric_families(text)}
    return {(s.labels["strategy"], s.labels["symbol"], s.labels["broker"]): s.value
            for s in families["trading_position_divergence"].samples}


def test_a_mismatch_halts_only_once_it_held_on_the_confirmation_read(app, settle):
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _broker_only(app, SCHWAB, "/MES", 2, "manual-1")
    report = _runtime(app).reconcile_now()
    assert settle.seen == [{}]  # nothing was halted on the first read
    assert report.affected == (("ema", "/MES"),)
    halts = app.extensions["services"].halts
    assert halts.reason("ema", "/MES") == "reconciliation mismatch at schwab /MES: broker 3, ours 1"
    (halted,) = _journal(app, "ticker_halted")
    assert (halted["strategy"], halted["symbol"], halted["broker"], halted["key"]) == ("ema", "/MES", SCHWAB, "/MES")


def test_a_difference_gone_by_the_confirmation_read_halts_nothing(app, settle):
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _broker_only(app, SCHWAB, "/MES", 2, "manual-1")
    settle.then = lambda: _broker_only(app, SCHWAB, "/MES", -2, "manual-2")  # undone during the wait
    report = _runtime(app).reconcile_now()
    assert settle.seen == [{}] and report.ok
    assert app.extensions["services"].halts.all() == {}
    assert _runtime(app).position_truth() == {"ok": True, "divergences": [], "halts": []}


def test_a_mismatch_halt_lifts_itself_when_a_later_reconciliation_agrees(app, caplog):
    halts: Halts = app.extensions["services"].halts
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _move(app, "supertrend", "/MES", SCHWAB, 1, 2)
    halts.set("supertrend", "/MES", "held by the operator")  # another cause: reconciliation must keep it
    _broker_only(app, SCHWAB, "/MES", 2, "manual-1")
    _runtime(app).reconcile_now()
    assert set(halts.all()) == {"ema|/MES", "supertrend|/MES"}

    _runtime(app).reconcile_now()  # still disagreeing: still halted, journaled once
    assert set(halts.all()) == {"ema|/MES", "supertrend|/MES"} and len(_journal(app, "ticker_halted")) == 2

    _broker_only(app, SCHWAB, "/MES", -2, "manual-2")  # the broker agrees with the book again
    with caplog.at_level(logging.WARNING, logger="runtime"):
        report = _runtime(app).reconcile_now()
    assert report.ok
    assert halts.all() == {"supertrend|/MES": "held by the operator"}
    assert any("RESUMED" in r.getMessage() and "ema" in r.getMessage() for r in caplog.records)
    (cleared,) = _alerts(app, "halt_cleared")
    assert cleared["severity"] == "info" and "ema /MES resumed" in cleared["message"]
    assert [(e["strategy"], e["symbol"]) for e in _journal(app, "halt_cleared")] == [("ema", "/MES")]
    assert [d["source"] for d in _runtime(app).divergences.to_json()] == []


def test_a_halt_recorded_before_causes_were_kept_lifts_too(app, store):
    # Halts written by the earlier version: only the reason string, in the same format.
    store.redis.hset(store.key("engine", "halts"), "ema|NVDA",
                     "reconciliation mismatch at tastytrade NVDA: broker 3, ours 0")
    store.redis.hset(store.key("engine", "halts"), "ema|/MES", "halted by hand")
    _runtime(app).reconcile_now()  # NVDA agrees now (0 and 0)
    assert app.extensions["services"].halts.all() == {"ema|/MES": "halted by hand"}


def test_an_in_flight_key_neither_halts_nor_lifts(app):
    _broker_only(app, TASTYTRADE, "NVDA", 3, "manual-1")
    _runtime(app).reconcile_now()
    halts: Halts = app.extensions["services"].halts
    assert set(halts.all()) == {"reconcile|NVDA"}
    om = app.extensions["services"].orders
    paper = app.extensions["services"].brokers.paper[TASTYTRADE]
    read = paper.positions

    def positions_while_an_order_fills():  # the key moves during the read: no verdict on it
        paper.positions = read
        om.set_position("reconcile", "NVDA", TASTYTRADE, "NVDA", 1, 180, 1, "", "test: booked meanwhile")
        return read()

    paper.positions = positions_while_an_order_fills
    report = _runtime(app).reconcile_now()
    (moving,) = report.broker(TASTYTRADE).in_flight  # type: ignore[union-attr]
    assert (moving.key, moving.why) == ("NVDA", "book changed during the read")
    assert set(halts.all()) == {"reconcile|NVDA"}  # not lifted (and not confirmed again either)


def test_status_metric_and_alerts_show_every_divergence(app, client, viewer_headers):
    _move(app, "ema", "/MES", SCHWAB, 1, 1)
    _broker_only(app, SCHWAB, "/MES", 2, "manual-1")
    _runtime(app).reconcile_now()
    _runtime(app).reconcile_now()
    status = client.get("/api/status", headers=viewer_headers).json
    section = status["divergences"]
    assert section["ok"] is False
    (book_vs_broker,) = section["divergences"]
    assert {k: book_vs_broker[k] for k in ("source", "strategy", "symbol", "broker", "key", "book_quantity",
                                           "broker_quantity")} == {
        "source": "reconciliation", "strategy": "ema", "symbol": "/MES", "broker": SCHWAB, "key": "/MES",
        "book_quantity": 1, "broker_quantity": 3}
    (halt,) = section["halts"]
    assert halt["strategy"] == "ema" and halt["reason"].startswith("reconciliation mismatch at schwab /MES")
    assert halt["causes"] == [{"cause": "mismatch", "broker": SCHWAB, "key": "/MES", "reason": halt["reason"]}]
    assert _divergence_gauge(client) == {("ema", "/MES", SCHWAB): 1.0}
    assert len(_alerts(app, "position_divergence")) == 1  # once, not on every reconciliation

    # The strategy engine's own report: the strategy believes long 1, the book is flat.
    runtime = _runtime(app)
    assert runtime.report_divergence("supertrend", "NVDA", TASTYTRADE, 1, 0, None, "strategy LONG, book flat")
    assert not runtime.report_divergence("supertrend", "NVDA", TASTYTRADE, 1, 0, None, "strategy LONG, book flat")
    rows = client.get("/api/status", headers=viewer_headers).json["divergences"]["divergences"]
    strategy_row = next(r for r in rows if r["source"] == "strategy")
    assert (strategy_row["strategy"], strategy_row["symbol"], strategy_row["strategy_quantity"],
            strategy_row["book_quantity"], strategy_row["broker_quantity"], strategy_row["note"]) == (
        "supertrend", "NVDA", 1, 0, None, "strategy LONG, book flat")
    assert _divergence_gauge(client)[("supertrend", "NVDA", TASTYTRADE)] == 1.0
    assert len(_alerts(app, "position_divergence")) == 2

    assert runtime.clear_divergence("supertrend", "NVDA", TASTYTRADE, "set to the book")
    assert not runtime.clear_divergence("supertrend", "NVDA", TASTYTRADE)
    assert _divergence_gauge(client)[("supertrend", "NVDA", TASTYTRADE)] == 0.0
    assert len(_alerts(app, "position_divergence_cleared")) == 1

    r = client.post("/api/reconcile/adopt", headers=_admin(client), json={"broker": SCHWAB, "key": "/MES",
                                                                         "strategy": "ema"})
    assert r.status_code == 200 and r.json["cleared_halts"] == [["ema", "/MES"]]
    section = client.get("/api/status", headers=viewer_headers).json["divergences"]
    assert section == {"ok": True, "divergences": [], "halts": []}
    assert _divergence_gauge(client)[("ema", "/MES", SCHWAB)] == 0.0


def _admin(client: FlaskClient) -> dict[str, str]:
    from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login

    return {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}


def test_the_runners_divergence_callback_reports_per_broker_and_clears(app, client, viewer_headers):
    from engine.runner import Divergence
    from runtime import strategy_divergence

    runtime = _runtime(app)
    d = Divergence("ema", "/MNQ", "LONG", {SCHWAB: 0, TASTYTRADE: 1}, {SCHWAB: 0, TASTYTRADE: -1},
                   "entry denied: set to the book")
    strategy_divergence(runtime.divergences, d, "ema", "/MNQ")
    (row,) = client.get("/api/status", headers=viewer_headers).json["divergences"]["divergences"]
    assert (row["source"], row["broker"], row["strategy_quantity"], row["book_quantity"]) == (
        "strategy", TASTYTRADE, 1, -1)
    assert row["note"] == "strategy LONG: entry denied: set to the book"
    assert _divergence_gauge(client) == {("ema", "/MNQ", TASTYTRADE): 1.0}
    strategy_divergence(runtime.divergences, None, "ema", "/MNQ")
    assert client.get("/api/status", headers=viewer_headers).json["divergences"]["divergences"] == []
    assert _divergence_gauge(client) == {("ema", "/MNQ", TASTYTRADE): 0.0}
