"""monitoring.divergence: standing divergences survive a restart, alert on every appearance and
drive the trading_position_divergence gauge."""
from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from monitoring.divergence import Divergences
from monitoring.metrics import Metrics
from store.redis_store import Store


class Recorder:
    def __init__(self) -> None:
        self.alerts: list[tuple[str, str, str]] = []

    def __call__(self, kind: str, message: str, severity: str, **details: Any) -> None:
        self.alerts.append((kind, severity, message))


def _gauge(metrics: Metrics) -> dict[tuple[str, str, str], float]:
    body, _ = metrics.render()
    families = {f.name: f for f in text_string_to_metric_families(body.decode())}
    return {(s.labels["strategy"], s.labels["symbol"], s.labels["broker"]): s.value
            for s in families["trading_position_divergence"].samples}


def test_a_divergence_survives_a_restart_with_its_first_seen_time(store: Store) -> None:
    clock = iter(range(1_000, 10_000, 1_000))
    first = Divergences(store, clock=lambda: next(clock))
    assert first.report_strategy("ema", "/MNQ", "tastytrade", 1, -1, None, "strategy LONG, book short")
    assert not first.report_strategy("ema", "/MNQ", "tastytrade", 1, -1, 0, "broker read too")  # updated, not new
    metrics = Metrics()
    restarted = Divergences(store, on_lane=metrics.set_position_divergence)
    (d,) = restarted.current()
    assert (d.source, d.strategy, d.symbol, d.broker, d.strategy_quantity, d.book_quantity, d.broker_quantity,
            d.note, d.since_ns, d.updated_ns) == (
        "strategy", "ema", "/MNQ", "tastytrade", 1, -1, 0, "broker read too", 1_000, 2_000)
    assert _gauge(metrics) == {("ema", "/MNQ", "tastytrade"): 1.0}  # restored at start-up
    assert restarted.clear_strategy("ema", "/MNQ", "tastytrade")
    assert Divergences(store).current() == [] and _gauge(metrics) == {("ema", "/MNQ", "tastytrade"): 0.0}


def test_every_appearance_alerts_even_soon_after_a_clear(store: Store) -> None:
    recorder = Recorder()
    divergences = Divergences(store, alert=recorder)
    for _ in range(2):
        divergences.report_strategy("supertrend", "NVDA", "schwab", 3, 0)
        divergences.report_strategy("supertrend", "NVDA", "schwab", 3, 0)
        divergences.clear_strategy("supertrend", "NVDA", "schwab", "set to the book")
    assert [(k, s) for k, s, _ in recorder.alerts] == [
        ("position_divergence", "critical"), ("position_divergence_cleared", "info")] * 2
    assert "strategy 3, book 0" in recorder.alerts[0][2] and "set to the book" in recorder.alerts[1][2]


def test_the_gauge_stays_up_while_any_source_stands_for_the_lane(store: Store) -> None:
    metrics = Metrics()
    divergences = Divergences(store, on_lane=metrics.set_position_divergence)
    divergences.report_strategy("ema", "/MES", "schwab", 1, 0)
    assert divergences.report_reconciliation("schwab", "/MES", [("ema", "/MES")], 0, 2) == [("ema", "/MES")]
    divergences.clear_strategy("ema", "/MES", "schwab")
    assert _gauge(metrics) == {("ema", "/MES", "schwab"): 1.0}
    assert divergences.clear_reconciliation("schwab", "/MES", "agrees") == [("ema", "/MES")]
    assert _gauge(metrics) == {("ema", "/MES", "schwab"): 0.0}


def test_a_failing_alert_or_metric_hook_never_reaches_the_reporter(store: Store) -> None:
    def boom(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("hook down")

    divergences = Divergences(store, alert=boom, on_lane=boom)
    assert divergences.report_strategy("ema", "/MES", "schwab", 1, 0)
    assert divergences.clear_strategy("ema", "/MES", "schwab")
