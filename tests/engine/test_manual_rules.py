"""engine/manual.py: the manual-trigger outcome read from the executor's report, and the 0DTE entry rule taken from the zeroday strategy and the SPX session clock."""
from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from domain.intents import Intent, IntentReason, PositionTarget
from domain.tickers import TickerConfig
from engine.executor import ExecutionReport
from engine.manual import ManualTrade, outcome_from_report, session_refusal, zeroday_entry_refusal
from oms.models import TargetResult, TargetStatus

NY = ZoneInfo("America/New_York")


def _ns(*args: int) -> int:
    return int(datetime(*args, tzinfo=NY).timestamp()) * 1_000_000_000


def _report(*results: TargetResult, errors: dict[str, str] | None = None) -> ExecutionReport:
    intent = Intent("ema", "/NQ", PositionTarget.LONG, IntentReason.MANUAL, "manual long", 1, 1.0)
    return ExecutionReport(intent, list(results), errors or {})


def _result(broker: str, status: TargetStatus, prev: int, qty: int, target: int, reason: str = "") -> TargetResult:
    return TargetResult("ema", "/NQ", broker, target, prev, qty, status, reason)


@pytest.mark.parametrize(("report", "acked", "refused", "code"), [
    (_report(_result("tastytrade", TargetStatus.DENIED, 0, 0, 1, "risk:halted: HALTED; by admin")), [], ["tastytrade"],
     "risk_denied"),
    (_report(_result("schwab", TargetStatus.FILLED, 0, 2, 2),
             _result("tastytrade", TargetStatus.DENIED, 0, 0, 1, "risk:max_order_quantity: 1 > 0")),
     ["schwab"], ["tastytrade"], None),
    (_report(_result("schwab", TargetStatus.NOOP, 2, 2, 2)), ["schwab"], [], None),
    (_report(_result("schwab", TargetStatus.PAUSED, 0, 0, 2, "paused: login")), [], ["schwab"], "broker_paused"),
    (_report(errors={"all": "ticker halted, no order sent: mismatch"}), [], ["all"], "ticker_halted"),
    (_report(_result("schwab", TargetStatus.FILLED, 0, 1, 1), errors={"tastytrade": "no ATM contract: x"}),
     ["schwab"], ["tastytrade"], None),
    (_report(), [], [], "no_broker_quantity"),
])
def test_outcome_names_who_acknowledged_and_who_refused(report: ExecutionReport, acked: list[str],
                                                        refused: list[str], code: str | None) -> None:
    outcome = ManualTrade(f"manual long on /NQ: {report.summary()}", report).outcome()
    assert outcome == outcome_from_report(report)
    assert [r.broker for r in outcome.acknowledged] == acked
    assert [r.broker for r in outcome.refused] == refused
    if code is not None:
        assert outcome.error_code() == code


SPX = TickerConfig.from_payload({"strategy": "zeroday", "symbol": "SPX", "timeframe": "1Min", "trade_enabled": True,
                                 "schwab_quantity": 1, "tastytrade_quantity": 0, "trend_line_1": "EMA",
                                 "period_1": 9, "trend_line_2": "EMA", "period_2": 21})


@pytest.mark.parametrize(("now_ns", "code"), [
    (_ns(2026, 11, 21, 12, 0), "no_session"),  # Saturday: no same-day SPXW expiration
    (_ns(2026, 11, 26, 12, 0), "no_session"),  # Thanksgiving
    (_ns(2026, 11, 24, 9, 34), "outside_entry_window"),
    (_ns(2026, 11, 24, 9, 35), None),
    (_ns(2026, 11, 24, 15, 30), None),
    (_ns(2026, 11, 24, 15, 31), "outside_entry_window"),
    (_ns(2026, 11, 24, 15, 50), "outside_entry_window"),
    (_ns(2026, 11, 27, 12, 44), None),  # early close 13:00: forced close 12:45
    (_ns(2026, 11, 27, 12, 45), "outside_entry_window"),
])
def test_zeroday_entry_rule(now_ns: int, code: str | None) -> None:
    refusal = zeroday_entry_refusal(SPX, "call", now_ns)
    assert (refusal.code if refusal else None) == code


def test_session_rule() -> None:
    assert session_refusal("/MES", "LONG", _ns(2026, 11, 24, 10, 0)) is None
    closed = session_refusal("/MES", "CLOSE", _ns(2026, 11, 21, 12, 0))
    assert closed is not None and closed.code == "market_closed" and "Sunday 2026-11-22 18:00" in closed.message
