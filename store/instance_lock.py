"""Single-instance guard: a Redis lock so two processes never trade the same account.

SET key value NX PX ttl takes it; a heartbeat thread renews it every ttl/3 with a token-checked
Lua PEXPIRE; release is a token-checked Lua DEL so a process whose lock expired (a long GC pause,
a frozen VM) can never delete the lock a newer process now holds. The value names the holder
(host, pid, start time) so the second process can say exactly who is running.

If renewal finds the lock gone or taken by someone else, `on_lost` is called (the app should halt
trading and exit): continuing would mean two traders on one account.
"""
from __future__ import annotations

import json
import logging
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Callable

import redis

from store.redis_store import Store

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 30_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class InstanceLockError(RuntimeError):
    """Another process holds the lock. The message names it and says what to do."""

    def __init__(self, message: str, holder: dict[str, Any] | None) -> None:
        super().__init__(message)
        self.holder = holder


@dataclass
class InstanceLock:
    store: Store
    name: str
    value: str
    ttl_ms: int = DEFAULT_TTL_MS
    on_lost: Callable[[str], None] | None = None
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)
    lost: bool = False

    @property
    def key(self) -> str:
        return self.store.key("instance_lock", self.name)

    @property
    def holder(self) -> dict[str, Any]:
        return json.loads(self.value)

    def start_heartbeat(self) -> None:
        self._thread = threading.Thread(target=self._beat, name=f"instance-lock-{self.name}", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        interval = self.ttl_ms / 3000
        while not self._stop.wait(interval):
            try:
                renewed = self.store.redis.eval(_RENEW, 1, self.key, self.value, self.ttl_ms)
            except redis.RedisError as exc:
                # Transient: keep trying until the TTL would have run out.
                log.error("instance lock renewal failed: %s", exc.__class__.__name__)
                continue
            if not int(renewed):
                self.lost = True
                message = f"instance lock {self.name!r} was lost (expired or taken by another process)"
                log.critical(message)
                if self.on_lost is not None:
                    self.on_lost(message)
                return

    def renew(self) -> bool:
        """One renewal now (the heartbeat does this on its own); False if the lock is not ours."""
        return bool(int(self.store.redis.eval(_RENEW, 1, self.key, self.value, self.ttl_ms)))

    def release(self) -> bool:
        """Stop the heartbeat and delete the lock if it is still ours. Safe to call twice."""
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._thread = None
        try:
            return bool(int(self.store.redis.eval(_RELEASE, 1, self.key, self.value)))
        except redis.RedisError as exc:
            log.error("instance lock release failed (it expires in %d ms): %s", self.ttl_ms, exc.__class__.__name__)
            return False

    def __enter__(self) -> "InstanceLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_instance_lock(store: Store, name: str, *, ttl_ms: int = DEFAULT_TTL_MS,
                          on_lost: Callable[[str], None] | None = None, heartbeat: bool = True) -> InstanceLock:
    """Take the lock or raise `InstanceLockError` naming the holder. `name` should identify what is
    protected, e.g. the trading mode plus account ("live", "paper")."""
    value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(),
                        "started": datetime.now(UTC).isoformat(timespec="seconds"), "token": uuid.uuid4().hex},
                       sort_keys=True)
    lock = InstanceLock(store, name, value, ttl_ms, on_lost)
    if not store.redis.set(lock.key, value, nx=True, px=ttl_ms):
        raw = store.redis.get(lock.key)
        remaining = store.redis.pttl(lock.key)
        holder: dict[str, Any] | None = None
        try:
            holder = json.loads(raw) if raw else None
        except ValueError:
            holder = None
        who = (f"host {holder.get('host')} pid {holder.get('pid')} (since {holder.get('started')})"
               if holder else "an unknown process")
        raise InstanceLockError(
            f"another instance is already running for {name!r}: {who}. Two processes must never trade the same "
            f"account. Stop it first (systemctl stop trading-backend); if it crashed, the lock expires in "
            f"{max(0, int(remaining)) / 1000:.0f} s.",
            {k: v for k, v in holder.items() if k != "token"} if holder else None,
        )
    if heartbeat:
        lock.start_heartbeat()
    return lock
