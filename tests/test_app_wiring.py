"""The process wiring in app.py: monitoring hooks reach every real adapter and the order path."""
from __future__ import annotations

from dataclasses import replace

from prometheus_client.parser import text_string_to_metric_families

from app import attach_monitoring, create_app
from domain.orders import SCHWAB, TASTYTRADE
from monitoring.alerts import Alerter
from runtime import TradingRuntime


def _samples(metrics, name: str) -> dict[tuple, float]:
    text = metrics.render()[0].decode()
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def test_attach_monitoring_wires_latency_of_both_real_adapters(fake_store, settings) -> None:
    configured = replace(settings, schwab_api_key="k" * 32, schwab_app_secret="s" * 16, schwab_account_id="12345678",
                         tastytrade_client_id="c" * 16, tastytrade_client_secret="t" * 16, tastytrade_account_id="5WX0001")
    services = create_app(configured, fake_store).extensions["services"]
    services.extras["alerter"] = Alerter(configured, fake_store)  # never started: nothing is sent
    runtime = TradingRuntime.build(services)
    attach_monitoring(services, runtime)
    assert set(runtime.registry.live) == {SCHWAB, TASTYTRADE}
    for name, adapter in runtime.registry.live.items():
        adapter.on_latency("place_order", 0.02)
    counts = _samples(services.extras["metrics"], "trading_broker_request_seconds_count")
    brokers = {dict(labels)["broker"] for labels, value in counts.items() if value >= 1}
    assert brokers == {"schwab", "tastytrade"}
    runtime.registry.close()
