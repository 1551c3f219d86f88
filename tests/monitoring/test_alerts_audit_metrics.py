from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from config.settings import Settings
from monitoring.alerts import Alerter, Severity
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from store.redis_store import Store


class Hook:
    def __init__(self, failures: int, status: int = 500) -> None:
        self.failures = failures
        self.status = status
        self.bodies: list[dict[str, Any]] = []
        self.attempts = 0


@pytest.fixture
def webhook() -> Iterator[tuple[str, Hook]]:
    hook = Hook(0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            hook.attempts += 1
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if hook.attempts <= hook.failures:
                self.send_response(hook.status)
            else:
                hook.bodies.append(body)
                self.send_response(200)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook/secret-part", hook
    server.shutdown()
    server.server_close()


def test_webhook_retries_then_delivers(webhook: tuple[str, Hook], settings: Settings, store: Store,
                                       caplog: pytest.LogCaptureFixture) -> None:
    url, hook = webhook
    hook.failures = 2
    metrics = Metrics()
    # Two failures then a delivery take at least 0.2 + 0.4 s of backoff: a caller that waited for
    # delivery would be seen, with a wide margin for a loaded machine.
    alerter = Alerter(settings.with_overrides(alert_webhook_url=url), store, backoff_seconds=0.2,
                      on_raised=lambda a: metrics.alert_raised(a.kind, a.severity.value)).start()
    try:
        started = time.monotonic()
        alert = alerter.alert("loss_limit", "ema halted", Severity.CRITICAL, scope="ema", api_token="abc")
        assert time.monotonic() - started < 0.5  # never blocks the caller
        assert alerter.wait_idle(5)
    finally:
        alerter.stop()
    assert hook.attempts == 3 and alerter.sent == 1
    assert hook.bodies[0]["kind"] == "loss_limit" and "ema halted" in hook.bodies[0]["text"]
    assert hook.bodies[0]["details"]["api_token"] == "***"
    assert alert is not None and alerter.recent(5)[0]["id"] == alert.id
    assert "secret-part" not in caplog.text
    assert metrics.registry.get_sample_value("trading_alerts_total", {"kind": "loss_limit", "severity": "critical"}) == 1


def test_webhook_gives_up_after_bounded_attempts(webhook: tuple[str, Hook], settings: Settings) -> None:
    url, hook = webhook
    hook.failures = 100
    failed: list[str] = []
    alerter = Alerter(settings.with_overrides(alert_webhook_url=url), None, max_attempts=3, backoff_seconds=0.01,
                      on_failed=lambda a: failed.append(a.id)).start()
    try:
        alerter.alert("broker_disconnected", "schwab down", Severity.ERROR)
        assert alerter.wait_idle(5)
    finally:
        alerter.stop()
    assert hook.attempts == 3 and alerter.failed == 1 and len(failed) == 1
    assert alerter.recent(5, min_severity=Severity.ERROR)[0]["kind"] == "broker_disconnected"
    assert alerter.recent(5, min_severity=Severity.CRITICAL) == []


def test_no_retry_on_client_error_and_dedupe(webhook: tuple[str, Hook], settings: Settings) -> None:
    url, hook = webhook
    hook.failures, hook.status = 100, 404
    alerter = Alerter(settings.with_overrides(alert_webhook_url=url), None, backoff_seconds=0.01).start()
    try:
        assert alerter.alert("token_expiry", "schwab token expires in 1 day", dedupe_key="schwab-token") is not None
        assert alerter.alert("token_expiry", "schwab token expires in 1 day", dedupe_key="schwab-token") is None
        assert alerter.wait_idle(5)
    finally:
        alerter.stop()
    assert hook.attempts == 1 and alerter.failed == 1


def test_alerter_without_webhook_keeps_last_n(settings: Settings, store: Store) -> None:
    alerter = Alerter(settings, store, keep=3)
    for i in range(5):
        alerter.alert("reconciliation", f"mismatch {i}")
    assert [a["message"] for a in alerter.recent()] == ["mismatch 4", "mismatch 3", "mismatch 2"]
    alerter.stop()  # no thread: harmless


def test_audit_file_and_stream_without_secrets(settings: Settings, store: Store) -> None:
    audit = AuditLog(settings, store)
    audit.login("admin@example.com", True, "10.0.0.1")
    audit.credential_change("schwab", "token_refreshed", detail="ok")
    audit.broker_connection("tastytrade", False, "401")
    audit.order_transition({"client_order_id": "ema-MES-open-1", "state": "FILLED", "access_token": "SECRET1",
                            "nested": {"refresh_token": "SECRET2", "refresh_token_expires_at": "2025-06-17"}})
    text = Path(settings.log_dir, "audit.log").read_text()
    assert "SECRET1" not in text and "SECRET2" not in text and "2025-06-17" in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert [x["kind"] for x in lines] == ["login", "credential", "broker_connection", "order"]
    recent = audit.recent(10)
    assert recent[0]["kind"] == "order" and recent[0]["access_token"] == "***"
    assert [x["kind"] for x in audit.recent(10, kind="login")] == ["login"]
    raw = store.redis.xrange(store.key("audit"))
    assert len(raw) == 4 and all("SECRET" not in f["json"] for _, f in raw)


def test_metrics_parse_and_move() -> None:
    m1, m2 = Metrics(), Metrics()  # two instances in one interpreter do not collide
    m1.order_transition("tastytrade", "FILLED")
    m1.order_transition("tastytrade", "FILLED")
    m1.fill("tastytrade", "ema", "/MES", 3)
    m1.risk_decision(False, "order_rate")
    m1.risk_decision(True, "ok")
    hook = m1.latency_hook("schwab")
    hook("place_order", 0.12)
    m1.observe_bar_to_order("ema", "/MES", 0.004)
    m1.set_feed_lag("databento", "/MES", 2.5, stale=False)
    m1.strategy_alive("ema", "/MES", True, 1_750_000_000.0)
    m1.strategy_restarted("ema", "/MES")
    m1.set_pnl("ema", 12.5, -3)
    m1.set_trading_state("global", "HALTED")
    m1.set_broker("schwab", True, 1_750_600_000.0)
    body, content_type = m1.render()
    assert content_type.startswith("text/plain")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body.decode()) for s in fam.samples}
    assert samples[("trading_orders_total", (("broker", "tastytrade"), ("state", "FILLED")))] == 2
    assert samples[("trading_filled_quantity_total", (("broker", "tastytrade"), ("strategy", "ema"),
                                                      ("symbol", "/MES")))] == 3
    assert samples[("trading_risk_denials_total", (("reason", "order_rate"),))] == 1
    assert samples[("trading_broker_request_seconds_count", (("broker", "schwab"), ("endpoint", "place_order")))] == 1
    assert samples[("trading_trading_state", (("scope", "global"),))] == 2
    assert samples[("trading_pnl_unrealized", (("scope", "ema"),))] == -3
    assert samples[("trading_strategy_restarts_total", (("strategy", "ema"), ("symbol", "/MES")))] == 1
    assert m2.registry.get_sample_value("trading_orders_total", {"broker": "tastytrade", "state": "FILLED"}) is None
