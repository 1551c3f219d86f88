"""Append-only audit journal: JSON lines in `<log_dir>/audit.log` plus the Redis stream `audit`.

Recorded: every order transition (the lead forwards OMS journal entries), every risk decision,
logins, credential changes and broker connection changes. Two sinks on purpose: the file survives
a Redis loss and is what an auditor greps; the stream feeds the dashboard.

Secrets never reach either sink: any field whose name looks secret (token, secret, password,
authorization, api key, ...) is replaced by "***" before writing, recursively.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import Enum
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Mapping

import redis

from config.settings import Settings
from store.redis_store import Store

log = logging.getLogger(__name__)

AUDIT_STREAM_MAXLEN = 200_000  # approximate cap; the file is the long-term record
_SECRET_MARKERS = ("token", "secret", "password", "passwd", "authorization", "api_key", "apikey", "cookie",
                   "credential", "private_key", "refresh", "code_verifier")
REDACTED = "***"


@lru_cache(maxsize=4096)  # field names repeat (every order's audit record has the same ones)
def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    # "token_expires_at" style fields are useful and harmless: expiry times are not secrets.
    if lowered.endswith(("_expires_at", "_expiry", "_expires_in")):
        return False
    return any(marker in lowered for marker in _SECRET_MARKERS)


def redact(value: Any) -> Any:
    """Copy of `value` with every secret-looking field replaced, at any depth."""
    if isinstance(value, str):  # the usual leaf, decided before the (slower) abstract Mapping check
        return value
    if isinstance(value, Mapping):
        return {str(k): (REDACTED if _is_secret_name(str(k)) else redact(v)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact(v) for v in value]
    return value


def _jsonable(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return str(value)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    ts: str
    kind: str  # "order", "risk_decision", "login", "credential", "broker_connection", "kill_switch", ...
    data: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps({"ts": self.ts, "kind": self.kind, **self.data}, default=_jsonable, sort_keys=True)


class AuditLog:
    """Thread-safe; a failing sink is logged and never breaks the caller (trading must go on)."""

    def __init__(self, settings: Settings, store: Store | None, *,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._store = store
        self._clock = clock
        self._lock = threading.Lock()
        self.path = Path(settings.log_dir) / "audit.log"
        self.path.parent.mkdir(parents=True, exist_ok=True)

    @property
    def stream_key(self) -> str | None:
        return self._store.key("audit") if self._store else None

    def record(self, kind: str, **data: Any) -> AuditEvent:
        event = self.event(kind, **data)
        line = self.write_file(event)
        if self._store is not None:
            try:
                self._store.redis.xadd(self._store.key("audit"), {"ts": event.ts, "kind": kind, "json": line},
                                       maxlen=AUDIT_STREAM_MAXLEN, approximate=True)
            except redis.RedisError as exc:
                log.error("audit stream write failed: %s", exc)
        return event

    def event(self, kind: str, **data: Any) -> AuditEvent:
        """The event `record` would write (secrets redacted), for a caller that adds it to the
        stream in a Redis call of its own (the risk check's claim) and writes the file line
        with `write_file`."""
        return AuditEvent(self._clock().isoformat(), kind, redact(data))

    def write_file(self, event: AuditEvent) -> str:
        """Append the event's line to the audit file; returns the line."""
        line = event.to_json()
        data = (line + "\n").encode("utf-8")
        with self._lock:
            try:
                # Opened per write in append mode: survives log rotation (logrotate copytruncate or
                # move) and each line is one write() so concurrent writers never interleave. A raw
                # descriptor: no buffered text file object to build for every order's decision.
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
                try:
                    written = os.write(fd, data)
                    while written < len(data):  # only on a short write (a full disk): the rest
                        written += os.write(fd, data[written:])
                finally:
                    os.close(fd)
            except OSError as exc:
                log.error("audit file write failed: %s", exc)
        return line

    # Named helpers so every caller records the same shape.
    def order_transition(self, entry: Mapping[str, Any]) -> AuditEvent:
        return self.record("order", **dict(entry))

    def risk_decision(self, **data: Any) -> AuditEvent:
        return self.record("risk_decision", **data)

    def login(self, email: str, success: bool, remote_addr: str | None = None, detail: str = "") -> AuditEvent:
        return self.record("login", email=email, success=success, remote_addr=remote_addr, detail=detail)

    def credential_change(self, subject: str, action: str, actor: str | None = None, detail: str = "") -> AuditEvent:
        return self.record("credential", subject=subject, action=action, actor=actor, detail=detail)

    def broker_connection(self, broker: str, connected: bool, message: str = "") -> AuditEvent:
        return self.record("broker_connection", broker=broker, connected=connected, message=message)

    def recent(self, count: int = 100, kind: str | None = None) -> list[dict[str, Any]]:
        """Newest first, from the Redis stream (the file is for humans and auditors)."""
        if self._store is None:
            return []
        entries = self._store.redis.xrevrange(self._store.key("audit"), count=count if kind is None else count * 10)
        out: list[dict[str, Any]] = []
        for entry_id, fields in entries:
            if kind is not None and fields.get("kind") != kind:
                continue
            doc = json.loads(fields["json"])
            doc["id"] = entry_id
            out.append(doc)
            if len(out) >= count:
                break
        return out
