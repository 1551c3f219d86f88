"""Alerts: logged, the last N kept in Redis for /api/status, and POSTed to an optional webhook.

The webhook is sent by one background worker fed by a bounded queue, so raising an alert never
blocks a trading thread (a slow or dead webhook must not delay a flatten). Each alert is retried a
bounded number of times with exponential backoff; after that it is counted as failed and dropped.
The webhook URL is never logged: Slack/Discord-style URLs carry their secret in the path.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Callable

import redis
import requests

from config.settings import Settings
from monitoring.audit import redact
from store.redis_store import Store

log = logging.getLogger(__name__)


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"
    CRITICAL = "critical"


@dataclass(frozen=True, slots=True)
class Alert:
    kind: str  # "loss_limit", "broker_disconnected", "token_expiry", "reconciliation", "kill_switch", ...
    message: str
    severity: Severity = Severity.WARNING
    details: dict[str, Any] = field(default_factory=dict)
    ts: str = field(default_factory=lambda: datetime.now(UTC).isoformat())
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["severity"] = self.severity.value
        return doc


_STOP = object()


class Alerter:
    def __init__(
        self,
        settings: Settings,
        store: Store | None,
        *,
        keep: int = 200,
        max_attempts: int = 4,
        backoff_seconds: float = 0.5,
        timeout_seconds: float = 5.0,
        queue_size: int = 1000,
        dedupe_seconds: float = 60.0,
        on_raised: Callable[[Alert], None] | None = None,  # e.g. lambda a: metrics.alert_raised(a.kind, a.severity)
        on_failed: Callable[[Alert], None] | None = None,  # e.g. lambda a: metrics.alert_webhook_failures.inc()
        session: requests.Session | None = None,
    ) -> None:
        self._webhook_url = settings.alert_webhook_url
        self._store = store
        self._keep = keep
        self.max_attempts = max(1, max_attempts)
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.dedupe_seconds = dedupe_seconds
        self._on_raised = on_raised
        self._on_failed = on_failed
        self._session = session or requests.Session()
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._recent_keys: dict[str, float] = {}
        self._lock = threading.Lock()
        self._local: list[Alert] = []  # used when there is no store
        self.sent = 0
        self.failed = 0
        self.dropped = 0

    @property
    def webhook_configured(self) -> bool:
        return bool(self._webhook_url)

    def _key(self) -> str | None:
        return self._store.key("alerts") if self._store else None

    # --- lifecycle ---
    def start(self) -> "Alerter":
        if self._webhook_url and (self._thread is None or not self._thread.is_alive()):
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="alert-webhook", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the worker; alerts still queued after `timeout` are dropped (the process is exiting)."""
        self._stop.set()
        if self._thread is not None:
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
            self._thread.join(timeout)
            self._thread = None

    def wait_idle(self, timeout: float = 10.0) -> bool:
        """For tests and graceful shutdown: True once every queued alert was sent or given up."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._queue.unfinished_tasks == 0:
                return True
            time.sleep(0.01)
        return False

    # --- raising ---
    def alert(self, kind: str, message: str, severity: Severity | str = Severity.WARNING, *,
              dedupe_key: str | None = None, **details: Any) -> Alert | None:
        """Record and (if configured) send. Returns None when suppressed as a duplicate.

        `dedupe_key`: repeated alerts with the same key within `dedupe_seconds` are suppressed, so a
        token-expiry check running every minute does not page the trader every minute.
        """
        if dedupe_key is not None:
            now = time.monotonic()
            with self._lock:
                last = self._recent_keys.get(dedupe_key)
                if last is not None and now - last < self.dedupe_seconds:
                    return None
                self._recent_keys[dedupe_key] = now
        alert = Alert(kind, message, Severity(severity), redact(details))
        level = {Severity.INFO: logging.INFO, Severity.WARNING: logging.WARNING,
                 Severity.ERROR: logging.ERROR, Severity.CRITICAL: logging.CRITICAL}[alert.severity]
        log.log(level, "ALERT %s: %s", kind, message)
        self._remember(alert)
        if self._on_raised is not None:
            try:
                self._on_raised(alert)
            except Exception:  # noqa: BLE001 - a metrics hook must never break alerting
                log.exception("alert hook failed")
        if self._webhook_url:
            try:
                self._queue.put_nowait(alert)
            except queue.Full:
                self.dropped += 1
                log.error("alert queue full; webhook for alert %s dropped", alert.id)
        return alert

    def _remember(self, alert: Alert) -> None:
        key = self._key()
        if key is None:
            with self._lock:
                self._local.insert(0, alert)
                del self._local[self._keep:]
            return
        try:
            pipe = self._store.redis.pipeline()  # type: ignore[union-attr]
            pipe.lpush(key, json.dumps(alert.to_json(), default=str))
            pipe.ltrim(key, 0, self._keep - 1)
            pipe.execute()
        except redis.RedisError as exc:
            log.error("could not store alert in Redis: %s", exc)

    def recent(self, count: int = 50, min_severity: Severity | None = None) -> list[dict[str, Any]]:
        order = list(Severity)
        if self._store is None:
            items = [a.to_json() for a in self._local]
        else:
            try:
                items = [json.loads(x) for x in self._store.redis.lrange(self._key(), 0, self._keep - 1)]  # type: ignore[arg-type]
            except redis.RedisError:
                return []
        if min_severity is not None:
            items = [a for a in items if order.index(Severity(a["severity"])) >= order.index(min_severity)]
        return items[:count]

    # --- webhook worker ---
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._deliver(item)
            finally:
                self._queue.task_done()

    def _deliver(self, alert: Alert) -> bool:
        body = {"text": f"[{alert.severity.value.upper()}] {alert.kind}: {alert.message}", **alert.to_json()}
        for attempt in range(1, self.max_attempts + 1):
            if self._stop.is_set() and attempt > 1:
                break  # shutting down: do not hold the process for retries
            try:
                resp = self._session.post(self._webhook_url, json=body, timeout=self.timeout_seconds)  # type: ignore[arg-type]
                if 200 <= resp.status_code < 300:
                    self.sent += 1
                    return True
                # 4xx other than 429 will not get better by retrying (bad URL / payload).
                if 400 <= resp.status_code < 500 and resp.status_code != 429:
                    log.error("alert webhook refused alert %s with HTTP %s", alert.id, resp.status_code)
                    break
                log.warning("alert webhook HTTP %s (attempt %d/%d)", resp.status_code, attempt, self.max_attempts)
            except requests.RequestException as exc:
                log.warning("alert webhook error %s (attempt %d/%d)", exc.__class__.__name__, attempt,
                            self.max_attempts)
            if attempt < self.max_attempts:
                self._stop.wait(self.backoff_seconds * (2 ** (attempt - 1)))
        self.failed += 1
        if self._on_failed is not None:
            try:
                self._on_failed(alert)
            except Exception:  # noqa: BLE001
                log.exception("alert failure hook failed")
        return False
