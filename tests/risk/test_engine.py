"""Every limit breached on real Redis (and fakeredis) with the right reason code."""
from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

import pytest

from domain.orders import OrderSide
from domain.risk import RiskReason
from risk.engine import RiskEngine
from risk.limits import LimitsValidationError
from risk.state import TradingState
from tests.risk.conftest import Clock, ctx, order


def test_allows_by_default_and_records_nothing_denied(engine: RiskEngine) -> None:
    decision = engine(order(), ctx())
    assert decision.allowed and decision.reason is RiskReason.OK
    assert engine.recent_decisions() == []


def test_the_check_writes_nothing_so_a_checked_but_unsent_id_is_not_a_duplicate(engine: RiskEngine, store) -> None:  # type: ignore[no-untyped-def]
    # A crash between the check and the order manager's claim must leave nothing behind: the
    # replayed intent is checked again and allowed (the claim of the order record is the dedupe).
    before = set(store.redis.keys(store.key("*")))
    assert engine(order(coid="dup-1"), ctx()).allowed
    assert set(store.redis.keys(store.key("*"))) == before
    assert engine(order(coid="dup-1"), ctx()).allowed


def test_denied_intent_is_not_remembered_as_sent(engine: RiskEngine) -> None:
    engine.update_limits({"max_order_quantity": 2})
    assert engine(order(qty=5, coid="big-1"), ctx()).reason is RiskReason.MAX_ORDER_QUANTITY
    engine.update_limits({"max_order_quantity": 10})
    assert engine(order(qty=5, coid="big-1"), ctx()).allowed  # the real answer, not "duplicate"


def test_max_order_quantity(engine: RiskEngine) -> None:
    engine.update_limits({"max_order_quantity": 3})
    assert engine(order(qty=3), ctx()).allowed
    denied = engine(order(qty=4), ctx())
    assert denied.reason is RiskReason.MAX_ORDER_QUANTITY and "4" in denied.detail
    # Closing more than the cap is never blocked by a fat-finger guard.
    assert engine(order(qty=4, side=OrderSide.SELL), ctx(current=4, reduces=True)).allowed


def test_max_position_default_and_per_symbol(engine: RiskEngine) -> None:
    engine.update_limits({"max_position": 5, "max_position_by_symbol": {"mes": 2}})
    assert engine(order(qty=2), ctx(current=0)).allowed
    denied = engine(order(qty=1), ctx(current=2))
    assert denied.reason is RiskReason.MAX_POSITION
    short = engine(order(qty=3, side=OrderSide.SELL), ctx(current=0))
    assert short.reason is RiskReason.MAX_POSITION  # limit is on |position|
    assert engine(order(qty=5, symbol="NVDA"), ctx(symbol="NVDA")).allowed
    assert engine(order(qty=6, symbol="NVDA"), ctx(symbol="NVDA")).reason is RiskReason.MAX_POSITION


def test_order_rate_runaway_guard(engine: RiskEngine, clock: Clock) -> None:
    engine.update_limits({"max_orders_per_minute": 3})
    take = engine.check_and_take  # the backtester's path; live, the order manager's claim takes the slot
    for _ in range(3):
        assert take(order(), ctx()).allowed
        clock.advance(seconds=5)
    denied = take(order(), ctx())
    assert denied.reason is RiskReason.ORDER_RATE
    assert engine.recent_decisions()[0]["reason"] == "order_rate"
    assert take(order(), ctx(symbol="NVDA")).allowed  # per ticker: another symbol is unaffected
    assert take(order(), ctx(strategy="supertrend")).allowed  # and another strategy too
    # The way out takes no slot and is never refused by the guard.
    assert take(order(side=OrderSide.SELL), ctx(current=1, reduces=True, reason="stop")).allowed
    assert engine.usage()["orders_per_minute"]["tickers"]["ema:/MES"] == 3
    clock.advance(seconds=50)  # first order now older than 60 s
    assert take(order(), ctx()).allowed


def test_trading_states(engine: RiskEngine) -> None:
    engine.set_state("ema", TradingState.REDUCING, "operator wants out")
    assert engine(order(), ctx()).reason is RiskReason.REDUCING_ONLY
    assert engine(order(side=OrderSide.SELL), ctx(current=1, reduces=True)).allowed
    assert engine(order(), ctx(strategy="supertrend")).allowed  # other strategies untouched
    engine.set_state("global", TradingState.HALTED, "maintenance")
    halted = engine(order(), ctx(strategy="supertrend"))
    assert halted.reason is RiskReason.HALTED and "maintenance" in halted.detail
    # A halt stops new risk, never the way out: every order that only reduces passes, whatever
    # its reason (a stop, a take-profit, a 0DTE time exit, a signal's close leg, the kill switch).
    for reason in ("stop", "target", "0dte_close", "signal", "trend_flip", "kill_switch", "risk", "manual"):
        assert engine(order(side=OrderSide.SELL), ctx(current=1, reduces=True, reason=reason)).allowed, reason
    engine.resume()
    assert engine(order(), ctx(strategy="supertrend")).allowed


def test_denials_go_to_stream_audit_and_metrics(engine: RiskEngine, settings) -> None:  # type: ignore[no-untyped-def]
    engine.update_limits({"max_order_quantity": 1})
    engine(order(qty=2, coid="aud-1"), ctx())
    rows = engine.recent_decisions()
    assert rows[0]["client_order_id"] == "aud-1" and rows[0]["allowed"] == "0"
    lines = [json.loads(x) for x in (settings.log_dir / "audit.log").read_text().splitlines()]
    denial = [x for x in lines if x["kind"] == "risk_decision" and x["client_order_id"] == "aud-1"]
    assert denial and denial[0]["reason"] == "max_order_quantity"
    sample = engine.metrics.registry.get_sample_value("trading_risk_denials_total", {"reason": "max_order_quantity"})
    assert sample == 1.0


def test_loss_limit_halts_flattens_and_next_session_reactivates(engine: RiskEngine, clock: Clock,
                                                                flattens: list) -> None:  # type: ignore[type-arg]
    engine.update_limits({"daily_loss_limit_per_strategy": "500"})
    assert engine.on_pnl("ema", Decimal("-200"), Decimal("-100")) == []
    assert engine(order(), ctx()).allowed
    events = engine.on_pnl("ema", Decimal("-300"), Decimal("-250"))
    assert len(events) == 1 and events[0].scope == "ema" and events[0].pnl == Decimal("-550")
    assert flattens == [("ema", "risk")]
    assert events[0].flatten_report == {"tastytrade": {"flattened": 1}}
    # Tuesday 10:00 NY -> halted until Tuesday 18:00 NY (22:00 UTC).
    assert datetime.fromisoformat(events[0].resumes_at) == datetime(2025, 6, 10, 22, 0, tzinfo=UTC)  # type: ignore[arg-type]
    assert engine.scope_state("ema").state is TradingState.HALTED
    assert engine(order(), ctx()).reason is RiskReason.HALTED
    assert engine(order(side=OrderSide.SELL), ctx(current=1, reduces=True, reason="risk")).allowed
    assert engine(order(), ctx(strategy="supertrend")).allowed
    # Further P&L updates in the same session do not flatten again.
    assert engine.on_pnl("ema", Decimal("-600"), Decimal("0")) == []
    assert flattens == [("ema", "risk")]
    assert engine.recent_events()[0]["type"] == "loss_limit_breach"
    clock.advance(hours=7, minutes=59)  # 17:59 NY: same session
    assert engine(order(), ctx()).reason is RiskReason.HALTED
    clock.advance(minutes=2)  # 18:01 NY: new session
    assert engine(order(), ctx()).allowed
    assert engine.scope_state("ema").state is TradingState.ACTIVE
    assert engine.recent_events()[0]["type"] == "reactivated"


def test_global_loss_limit(engine: RiskEngine, flattens: list) -> None:  # type: ignore[type-arg]
    engine.update_limits({"daily_loss_limit_global": 1000})
    engine.on_pnl("ema", "-400", "0")
    engine(order(), ctx())
    events = engine.on_pnl("supertrend", "-300", "-300.01")
    assert [e.scope for e in events] == ["global"]
    assert flattens == [(None, "risk")]
    assert engine(order(), ctx(strategy="zeroday", symbol="SPX")).reason is RiskReason.HALTED
    usage = engine.usage()
    assert usage["daily_loss"]["global"]["total"] == "-1000.01"
    assert usage["states"]["global"]["state"] == "HALTED"


def test_loss_limit_denies_before_halt_lands(engine: RiskEngine, store) -> None:  # type: ignore[no-untyped-def]
    engine.update_limits({"daily_loss_limit_by_strategy": {"ema": 100}})
    # P&L written by another process without evaluation yet.
    key = engine._k("pnl", engine.session_start().isoformat())
    store.redis.hset(key, "ema", json.dumps({"realized": "-150", "unrealized": "0"}))
    assert engine(order(), ctx()).reason is RiskReason.DAILY_LOSS_LIMIT


def test_injected_calendar(store, settings, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def session_start(symbol: str, now: datetime) -> datetime:
        calls.append(symbol)
        return now.replace(hour=0, minute=0, second=0, microsecond=0)  # UTC-day sessions

    eng = RiskEngine(store, settings, clock=clock, calendar_session_start=session_start, session_symbol="/MES")
    eng.update_limits({"daily_loss_limit_global": 10})
    events = eng.on_pnl("ema", "-11", "0")
    assert events and datetime.fromisoformat(events[0].resumes_at) == datetime(2025, 6, 11, tzinfo=UTC)  # type: ignore[arg-type]
    assert set(calls) == {"/MES"}
    clock.advance(hours=10)
    assert eng.scope_state().state is TradingState.ACTIVE


def test_kill_switch_records_everything(engine: RiskEngine, settings) -> None:  # type: ignore[no-untyped-def]
    calls: list[str] = []

    def cancel_all() -> dict:  # type: ignore[type-arg]
        calls.append("cancel")
        return {"schwab": {"cancelled": ["a"]}, "tastytrade": {"cancelled": ["b", "c"]}}

    def flatten_all(reason: str) -> dict:  # type: ignore[type-arg]
        calls.append("flatten:" + reason)
        return {"schwab": {"flattened": []}, "tastytrade": {"error": "AuthenticationRequired"}}

    report = engine.kill_switch(cancel_all, flatten_all, actor="admin@example.com")
    assert calls == ["cancel", "flatten:kill_switch"]
    assert report["state"] == "HALTED" and report["cancel"]["tastytrade"]["cancelled"] == ["b", "c"]
    assert report["flatten"]["tastytrade"] == {"error": "AuthenticationRequired"}
    assert engine(order(), ctx()).reason is RiskReason.HALTED
    assert engine.recent_events()[0]["type"] == "kill_switch"
    kinds = [json.loads(x)["kind"] for x in (settings.log_dir / "audit.log").read_text().splitlines()]
    assert "kill_switch" in kinds
    engine.resume(actor="admin@example.com")
    assert engine(order(), ctx()).allowed
    assert engine.recent_events()[0]["type"] == "resume"


def test_kill_switch_survives_failing_callables(engine: RiskEngine) -> None:
    def boom() -> dict:  # type: ignore[type-arg]
        raise RuntimeError("oms down")

    report = engine.kill_switch(boom, None)
    assert report["cancel"] == {"error": "RuntimeError: oms down"}
    assert "error" in report["flatten"]
    assert engine.trading_state() == "HALTED"


def test_kill_switch_halt_does_not_lift_at_session_change(engine: RiskEngine, clock: Clock) -> None:
    engine.kill_switch(lambda: {}, lambda reason: {})
    clock.advance(days=1)
    assert engine.trading_state() == "HALTED"


def test_update_limits_validation_and_persistence(engine: RiskEngine, store, settings, clock) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(LimitsValidationError) as err:
        engine.update_limits({"max_postion": 3})
    assert err.value.field == "max_postion"
    for payload, field in [({"max_position": -1}, "max_position"), ({"max_order_quantity": "x"}, "max_order_quantity"),
                           ({"daily_loss_limit_global": "NaN"}, "daily_loss_limit_global"),
                           ({"max_position_by_symbol": {"ZZZ": 1}}, "max_position_by_symbol.ZZZ"),
                           ({"daily_loss_limit_by_strategy": {"foo": 1}}, "daily_loss_limit_by_strategy.foo"),
                           ({"sizing_mode": "risk"}, "risk_per_trade"), ({"max_orders_per_minute": True},
                                                                         "max_orders_per_minute")]:
        with pytest.raises(LimitsValidationError) as err:
            engine.update_limits(payload)
        assert err.value.field == field, payload
    limits = engine.update_limits({"daily_loss_limit_global": "1500.50", "max_position_by_symbol": {"/es": 2}})
    assert limits.daily_loss_limit_global == Decimal("1500.50")
    again = RiskEngine(store, settings, clock=clock).get_limits()  # a restarted process sees them
    assert again.max_position_by_symbol == {"/ES": 2} and again.daily_loss_limit_global == Decimal("1500.50")
    assert engine.update_limits({"daily_loss_limit_global": None}).daily_loss_limit_global is None


def test_fails_closed_when_redis_is_down(settings, clock: Clock) -> None:  # type: ignore[no-untyped-def]
    import redis as redis_lib

    from store.redis_store import Store

    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis_lib.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2, retry=Retry(NoBackoff(), 0))
    dead = Store(client, "x", True, "dead")
    eng = RiskEngine(dead, settings, clock=clock)
    assert eng(order(), ctx()).reason is RiskReason.HALTED
    assert eng(order(side=OrderSide.SELL), ctx(current=1, reduces=True)).allowed


def test_usage_with_positions(engine: RiskEngine) -> None:
    engine.update_limits({"max_position": 4})
    usage = engine.usage(positions=[{"strategy": "ema", "symbol": "/MES", "broker": "tastytrade", "quantity": -2}])
    assert usage["max_position"]["positions"][0]["used_pct"] == 50.0
    assert usage["orders_per_minute"]["limit"] == 30
