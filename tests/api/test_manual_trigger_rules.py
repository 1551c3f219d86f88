"""Manual triggers: refused orders are not reported as success (A5), and the 0DTE / session time
rules are enforced before anything is sent (A4). The API clock is pinned through
`services.time_ns`: nothing here depends on the real wall clock or weekday."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from flask import Flask
from flask.testing import FlaskClient

from domain.intents import Intent, IntentReason, PositionTarget
from domain.tickers import TickerConfig
from engine.executor import ExecutionReport
from engine.manual import ManualTrade
from oms.models import TargetResult, TargetStatus
from tests.api.helpers import ema_payload

NY = ZoneInfo("America/New_York")


def _ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=NY).timestamp()) * 1_000_000_000


SATURDAY_NOON = _ns(2026, 11, 21, 12, 0)
TUESDAY_09_34 = _ns(2026, 11, 24, 9, 34)
TUESDAY_09_35 = _ns(2026, 11, 24, 9, 35)
TUESDAY_10_00 = _ns(2026, 11, 24, 10, 0)
TUESDAY_15_30 = _ns(2026, 11, 24, 15, 30)
TUESDAY_15_31 = _ns(2026, 11, 24, 15, 31)
TUESDAY_15_50 = _ns(2026, 11, 24, 15, 50)
TUESDAY_17_30 = _ns(2026, 11, 24, 17, 30)  # CME daily halt (17:00-18:00 ET)
THANKSGIVING_11_00 = _ns(2026, 11, 26, 11, 0)  # NYSE closed
BLACK_FRIDAY_12_50 = _ns(2026, 11, 27, 12, 50)  # NYSE closes 13:00: 0DTE forced close 12:45


def _r(broker: str, status: TargetStatus, prev: int, qty: int, target: int, reason: str = "") -> TargetResult:
    return TargetResult("ema", "/NQ", broker, target, prev, qty, status, reason)


def _error(broker: str, reason: str) -> tuple[str, str]:
    """A broker (or "all") for which no order was built, and why."""
    return broker, reason


Outcome = TargetResult | tuple[str, str]


@dataclass
class ScriptedEngine:
    """Answers like StrategySupervisor.manual_trigger: a ManualTrade whose report holds `outcomes`."""

    outcomes: tuple[Outcome, ...] = (_r("tastytrade", TargetStatus.FILLED, 0, 1, 1),)
    triggers: list[tuple[str, str, str]] = field(default_factory=list)

    def manual_trigger(self, strategy: str, symbol: str, action: str) -> ManualTrade:
        self.triggers.append((strategy, symbol, action))
        intent = Intent(strategy, symbol, PositionTarget.LONG, IntentReason.MANUAL, f"manual {action.lower()}", 1, 1.0)
        report = ExecutionReport(intent, [o for o in self.outcomes if isinstance(o, TargetResult)],
                                 dict(o for o in self.outcomes if isinstance(o, tuple)))
        return ManualTrade(f"manual {action.lower()} on {symbol}: {report.summary()}", report)


@pytest.fixture
def engine(app: Flask) -> ScriptedEngine:
    scripted = ScriptedEngine()
    app.extensions["services"].engine = scripted
    app.extensions["services"].time_ns = lambda: TUESDAY_10_00
    return scripted


def _at(app: Flask, now_ns: int) -> None:
    app.extensions["services"].time_ns = lambda: now_ns


def _add_spx(app: Flask) -> None:
    app.extensions["services"].tickers.upsert(TickerConfig.from_payload(
        ema_payload(strategy="zeroday", symbol="SPX", timeframe="1Min", schwab_quantity=1, tastytrade_quantity=1)))


def _ema(client: FlaskClient, headers: dict[str, str], action: str, ticker: str = "/NQ") -> Any:
    return client.post("/api/ema-manual-trigger", json={"ticker": ticker, "action": action}, headers=headers)


def _zeroday(client: FlaskClient, headers: dict[str, str], action: str) -> Any:
    return client.post("/api/manual-trigger", json={"ticker": "SPX", "action": action}, headers=headers)


# --- A5: refused orders are not success ---------------------------------------------------------
def test_trigger_denied_by_risk_after_kill_switch_is_409_not_success(
        client: FlaskClient, admin_headers: dict[str, str], engine: ScriptedEngine) -> None:
    engine.outcomes = (_r("tastytrade", TargetStatus.DENIED, 0, 0, 1,
                          "risk:halted: trading state HALTED (kill switch by admin)"),)
    response = _ema(client, admin_headers, "LONG")
    assert response.status_code == 409, response.json
    body = response.json
    assert body["success"] is False and body["code"] == "risk_denied"
    assert body["error"] == body["message"]  # the dashboard toasts `error`: the sentence, not the code
    assert "not executed" in body["message"] and "risk:halted" in body["message"]
    assert body["results"] == [{"broker": "tastytrade", "status": "denied", "ok": False,
                                "reason": "risk:halted: trading state HALTED (kill switch by admin)",
                                "previous_quantity": 0, "quantity": 0, "target_quantity": 1}]


@pytest.mark.parametrize(("outcomes", "error"), [
    ((_r("tastytrade", TargetStatus.DENIED, 0, 0, 5, "risk:max_order_quantity: 5 > 2"),), "risk_denied"),
    ((_r("tastytrade", TargetStatus.PAUSED, 0, 0, 1, "paused: tastytrade needs a new login"),), "broker_paused"),
    ((_r("tastytrade", TargetStatus.REJECTED, 0, 0, 1, "insufficient buying power"),), "order_refused"),
    ((_r("schwab", TargetStatus.ERROR, 0, 0, 1, "no adapter"), _r("tastytrade", TargetStatus.BLOCKED, 0, 0, 1, "lane busy")),
     "order_refused"),
    ((_error("all", "ticker halted, no order sent: position mismatch"),), "ticker_halted"),
    ((), "no_broker_quantity"),
])
def test_trigger_refused_by_every_broker_is_409_with_reasons(
        client: FlaskClient, admin_headers: dict[str, str], engine: ScriptedEngine, outcomes: tuple[Outcome, ...],
        error: str) -> None:
    engine.outcomes = outcomes
    response = _ema(client, admin_headers, "LONG")
    assert response.status_code == 409, response.json
    assert response.json["success"] is False and response.json["code"] == error
    assert all(r["ok"] is False for r in response.json["results"])


def test_trigger_refused_at_one_broker_is_partial_success(
        client: FlaskClient, admin_headers: dict[str, str], engine: ScriptedEngine) -> None:
    engine.outcomes = (_r("schwab", TargetStatus.FILLED, 0, 2, 2),
                       _r("tastytrade", TargetStatus.DENIED, 0, 0, 1, "risk:max_order_quantity: 1 > 0"))
    response = _ema(client, admin_headers, "LONG", ticker="NVDA")
    assert response.status_code == 200, response.json
    body = response.json
    assert body["success"] is True and body["partial"] is True
    assert "partial" in body["message"] and "tastytrade denied" in body["message"]
    assert [(r["broker"], r["status"], r["ok"]) for r in body["results"]] == [
        ("schwab", "filled", True), ("tastytrade", "denied", False)]


@pytest.mark.parametrize("outcome", [
    _r("tastytrade", TargetStatus.NOOP, 1, 1, 1),
    _r("tastytrade", TargetStatus.DUPLICATE, 0, 1, 1, "duplicate intent (filled); nothing new sent"),
])
def test_trigger_already_at_target_is_success_and_says_so(
        client: FlaskClient, admin_headers: dict[str, str], engine: ScriptedEngine, outcome: TargetResult) -> None:
    engine.outcomes = (outcome,)
    response = _ema(client, admin_headers, "LONG")
    assert response.status_code == 200, response.json
    assert response.json["success"] is True and response.json["partial"] is False
    assert "already at target" in response.json["message"]


def test_duplicate_of_a_denied_intent_is_not_success(client: FlaskClient, admin_headers: dict[str, str],
                                                     engine: ScriptedEngine) -> None:
    engine.outcomes = (_r("tastytrade", TargetStatus.DUPLICATE, 0, 0, 1, "duplicate intent: risk:halted: HALTED"),)
    response = _ema(client, admin_headers, "LONG")
    assert response.status_code == 409 and response.json["success"] is False


@pytest.mark.parametrize("outcome", [_r("tastytrade", TargetStatus.WORKING, 0, 0, 1),
                                     _r("tastytrade", TargetStatus.PENDING_OPEN, 1, 0, -1)])
def test_trigger_accepted_but_not_filled_is_success(client: FlaskClient, admin_headers: dict[str, str],
                                                    engine: ScriptedEngine, outcome: TargetResult) -> None:
    engine.outcomes = (outcome,)
    response = _ema(client, admin_headers, "SHORT")
    assert response.status_code == 200 and response.json["success"] is True and response.json["partial"] is False


def test_trigger_with_unknown_outcome_is_not_success(client: FlaskClient, admin_headers: dict[str, str],
                                                     engine: ScriptedEngine) -> None:
    engine.outcomes = (_r("tastytrade", TargetStatus.UNKNOWN, 0, 0, 1, "timeout"),)
    response = _ema(client, admin_headers, "LONG")
    assert response.status_code == 502 and response.json["success"] is False
    assert response.json["code"] == "order_outcome_unknown" and "/api/orders" in response.json["message"]


# --- A4: 0DTE time rules --------------------------------------------------------------------------
@pytest.mark.parametrize(("now_ns", "action", "error", "words"), [
    (SATURDAY_NOON, "call", "no_session", "Saturday"),
    (THANKSGIVING_11_00, "put", "no_session", "2026-11-26"),
    (TUESDAY_15_50, "put", "outside_entry_window", "09:35-15:30"),
    (TUESDAY_15_31, "call", "outside_entry_window", "15:45"),
    (TUESDAY_09_34, "call", "outside_entry_window", "09:35-15:30"),
    (BLACK_FRIDAY_12_50, "call", "outside_entry_window", "12:45"),
])
def test_zeroday_call_put_outside_entry_window_is_409_and_nothing_sent(
        app: Flask, client: FlaskClient, admin_headers: dict[str, str], engine: ScriptedEngine,
        now_ns: int, action: str, error: str, words: str) -> None:
    _add_spx(app)
    _at(app, now_ns)
    response = _zeroday(client, admin_headers, action)
    assert response.status_code == 409, response.json
    assert response.json["success"] is False and response.json["code"] == error
    assert words in response.json["message"] and action in response.json["message"], response.json["message"]
    assert engine.triggers == []


@pytest.mark.parametrize("now_ns", [TUESDAY_09_35, TUESDAY_10_00, TUESDAY_15_30])
def test_zeroday_call_inside_entry_window_reaches_the_engine(app: Flask, client: FlaskClient,
                                                             admin_headers: dict[str, str], engine: ScriptedEngine,
                                                             now_ns: int) -> None:
    _add_spx(app)
    _at(app, now_ns)
    response = _zeroday(client, admin_headers, "call")
    assert response.status_code == 200 and response.json["success"] is True, response.json
    assert engine.triggers == [("zeroday", "SPX", "call")]


@pytest.mark.parametrize("now_ns", [TUESDAY_15_50, SATURDAY_NOON])
def test_zeroday_close_is_allowed_at_any_time(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                              engine: ScriptedEngine, now_ns: int) -> None:
    _add_spx(app)
    _at(app, now_ns)
    engine.outcomes = (_r("schwab", TargetStatus.FILLED, 1, 0, 0), _r("tastytrade", TargetStatus.FILLED, 1, 0, 0))
    response = _zeroday(client, admin_headers, "close")
    assert response.status_code == 200 and response.json["success"] is True, response.json
    assert engine.triggers == [("zeroday", "SPX", "close")]


# --- A4: session rule for the EMA manual trigger --------------------------------------------------
@pytest.mark.parametrize(("ticker", "now_ns"), [("/MES", SATURDAY_NOON), ("/MES", TUESDAY_17_30),
                                                ("NVDA", TUESDAY_17_30), ("NVDA", THANKSGIVING_11_00)])
@pytest.mark.parametrize("action", ["LONG", "SHORT", "CLOSE"])
def test_ema_trigger_on_closed_market_is_409_and_nothing_sent(app: Flask, client: FlaskClient,
                                                              admin_headers: dict[str, str], engine: ScriptedEngine,
                                                              ticker: str, now_ns: int, action: str) -> None:
    _at(app, now_ns)
    response = _ema(client, admin_headers, action, ticker=ticker)
    assert response.status_code == 409, response.json
    assert response.json["success"] is False and response.json["code"] == "market_closed"
    assert "closed" in response.json["message"] and "next open" in response.json["message"]
    assert engine.triggers == []


def test_ema_trigger_on_open_market_reaches_the_engine(app: Flask, client: FlaskClient,
                                                       admin_headers: dict[str, str], engine: ScriptedEngine) -> None:
    _at(app, TUESDAY_10_00)
    assert _ema(client, admin_headers, "LONG", ticker="/MES").status_code == 200
    assert _ema(client, admin_headers, "LONG", ticker="NVDA").status_code == 200
    assert engine.triggers == [("ema", "/MES", "LONG"), ("ema", "NVDA", "LONG")]


# --- the dashboard build that posts /api/manual-spx-trigger -----------------------------------------
@pytest.mark.parametrize(("button", "taken"), [("buy_call", "call"), ("buy_put", "put"), ("close_position", "close")])
def test_spx_trigger_buttons_reach_the_same_path(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                                 engine: ScriptedEngine, button: str, taken: str) -> None:
    _add_spx(app)
    response = client.post("/api/manual-spx-trigger", json={"action": button, "symbol": "SPX"}, headers=admin_headers)
    assert response.status_code == 200 and response.json["success"] is True, response.json
    assert engine.triggers == [("zeroday", "SPX", taken)]


def test_spx_trigger_keeps_the_time_rules(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                          engine: ScriptedEngine) -> None:
    _add_spx(app)
    _at(app, SATURDAY_NOON)
    response = client.post("/api/manual-spx-trigger", json={"action": "buy_call", "symbol": "SPX"}, headers=admin_headers)
    assert response.status_code == 409 and response.json["code"] == "no_session" and engine.triggers == []


@pytest.mark.parametrize(("body", "field"), [
    ({"action": "buy_call", "symbol": "SPX", "strike": 6000}, "strike"),
    ({"action": "buy_put", "symbol": "SPX", "expiration": "2026-11-25"}, "expiration"),
    ({"action": "sell_call", "symbol": "SPX"}, "action"),
    ({"action": "buy_call", "symbol": "NVDA"}, "ticker"),
])
def test_spx_trigger_refuses_what_it_cannot_honour(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                                   engine: ScriptedEngine, body: dict[str, Any], field: str) -> None:
    _add_spx(app)
    response = client.post("/api/manual-spx-trigger", json=body, headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == field, response.json
    assert engine.triggers == []  # never another contract than the one asked for


def test_spx_trigger_accepts_todays_expiration(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                               engine: ScriptedEngine) -> None:
    _add_spx(app)
    response = client.post("/api/manual-spx-trigger", json={"action": "buy_put", "symbol": "SPX",
                                                            "expiration": "2026-11-24", "strike": None},
                           headers=admin_headers)
    assert response.status_code == 200, response.json
    assert engine.triggers == [("zeroday", "SPX", "put")]


@pytest.mark.parametrize(("disabled", "action"), [("put_enabled", "put"), ("call_enabled", "call")])
def test_zeroday_trigger_refuses_a_disabled_side(app: Flask, client: FlaskClient, admin_headers: dict[str, str],
                                                 engine: ScriptedEngine, disabled: str, action: str) -> None:
    app.extensions["services"].tickers.upsert(TickerConfig.from_payload(ema_payload(
        strategy="zeroday", symbol="SPX", timeframe="1Min", schwab_quantity=1, tastytrade_quantity=1, **{disabled: False})))
    response = _zeroday(client, admin_headers, action)
    assert response.status_code == 409 and response.json["code"] == f"{action}_disabled", response.json
    assert engine.triggers == []
    assert _zeroday(client, admin_headers, "close").status_code == 200  # closing is never blocked
