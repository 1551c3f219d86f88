"""The last step of an allowed check is one atomic claim: the client order id, the orders-per-minute
slot and the allowed decision's audit record, in one Redis call."""
from __future__ import annotations

import json
from typing import Any

import pytest

from domain.risk import RiskReason
from risk.engine import RiskEngine
from store.redis_store import Store
from tests.risk.conftest import ctx, order


def _audit_stream(store: Store) -> list[dict[str, Any]]:
    return [json.loads(fields["json"]) for _id, fields in store.redis.xrange(store.key("audit"))]


def _audit_file(settings: Any) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (settings.log_dir / "audit.log").read_text().splitlines()]


def test_an_allowed_order_is_audited_once_in_the_stream_and_once_in_the_file(
        engine: RiskEngine, store: Store, settings: Any) -> None:
    assert engine(order(coid="claim-1"), ctx()).allowed
    streamed = [e for e in _audit_stream(store) if e.get("client_order_id") == "claim-1"]
    filed = [e for e in _audit_file(settings) if e.get("client_order_id") == "claim-1"]
    assert len(streamed) == 1 and streamed == filed
    assert streamed[0]["kind"] == "risk_decision" and streamed[0]["allowed"] == "1" and streamed[0]["reason"] == "ok"
    assert streamed[0]["strategy"] == "ema" and streamed[0]["symbol"] == "/MES"


def test_a_denied_order_leaves_no_allowed_record(engine: RiskEngine, store: Store) -> None:
    engine.update_limits({"max_order_quantity": 1})
    assert not engine(order(qty=2, coid="claim-2"), ctx()).allowed
    records = [e for e in _audit_stream(store) if e.get("client_order_id") == "claim-2"]
    assert [e["allowed"] for e in records] == ["0"]


def test_losing_the_race_for_an_id_takes_no_rate_slot(engine: RiskEngine, store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine.update_limits({"max_orders_per_minute": 2})
    assert engine(order(coid="race-0"), ctx()).allowed
    # Another thread claims "race-1" after this check read its snapshot (seen: no).
    snapshot = engine._snapshot

    def claimed_meanwhile(o: Any, c: Any, now: Any) -> Any:
        snap = snapshot(o, c, now)
        store.redis.set(engine._k("seen", o.client_order_id), "other thread")
        return snap

    monkeypatch.setattr(engine, "_snapshot", claimed_meanwhile)
    lost = engine(order(coid="race-1"), ctx())
    assert lost.reason is RiskReason.DUPLICATE_INTENT
    monkeypatch.undo()
    assert engine.usage()["orders_per_minute"]["tickers"]["ema:/MES"] == 1  # the duplicate took no slot
    assert engine(order(coid="race-2"), ctx()).allowed  # so the second real order still fits


def test_an_allowed_check_costs_two_redis_round_trips(engine: RiskEngine, store: Store,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    engine(order(coid="warm"), ctx())  # scripts loaded
    calls: list[str] = []
    client_execute = type(store.redis).execute_command
    pipeline_execute = type(store.redis.pipeline()).execute

    def counting_execute(self: Any, *args: Any, **options: Any) -> Any:
        calls.append(str(args[0]))
        return client_execute(self, *args, **options)

    def counting_pipeline(self: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("pipeline")
        return pipeline_execute(self, *args, **kwargs)

    monkeypatch.setattr(type(store.redis), "execute_command", counting_execute)
    monkeypatch.setattr(type(store.redis.pipeline()), "execute", counting_pipeline)
    assert engine(order(coid="counted"), ctx()).allowed
    monkeypatch.undo()
    assert calls == ["pipeline", "EVALSHA"]  # the snapshot, then the claim (id, rate slot, audit)


def test_an_audit_log_without_a_stream_still_gets_the_file_line(store: Store, settings: Any) -> None:
    from monitoring.audit import AuditLog

    engine = RiskEngine(store, settings, audit=AuditLog(settings, None))
    assert engine(order(coid="file-only"), ctx()).allowed
    assert [e["client_order_id"] for e in _audit_file(settings) if e.get("kind") == "risk_decision"] == ["file-only"]
    assert not store.redis.exists(engine._k("no-audit"))
