"""Single-instance guard: one Redis prefix is one account book, used by one process in one mode.

Two guards, both checked by `acquire_instance_lock` before anything trades:

- The prefix's mode. The first process on a prefix records its trading mode in `<prefix>:trading_mode`
  (SET NX, so two first starts cannot both win); a later start in the other mode is refused. A paper
  order must never land in a live book, nor a live position in a paper one, and the lock alone
  cannot promise that: it only stops two processes running *at the same time*.
- The lock. `<prefix>:instance_lock:book`, whatever the mode: a paper and a live process on one
  prefix would share one order book. SET key value NX PX ttl takes it; a heartbeat thread renews it
  every ttl/3 with a token-checked Lua PEXPIRE; release is a token-checked Lua DEL so a process
  whose lock expired (a long GC pause, a frozen VM) can never delete the lock a newer process now
  holds. The value names the holder (host, pid, mode, start time) so the second process can say
  exactly who is running.

A prefix written before modes were recorded has no `trading_mode` key. Its data decides
(`infer_prefix_mode`), and a start in the matching mode records it:
- no orders or positions at all (`oms:*`, the paper broker's orders/positions/fills): any mode
  may take it;
- the paper broker holds orders, positions or fills and no live broker order map exists: paper
  (the paper broker only records orders placed in paper mode);
- order-manager state or live broker order maps (`broker:schwab:coid:*`, `broker:schwab:oid:*`,
  `broker:tastytrade:order_ids`) and no paper broker orders: live;
- paper broker orders and live broker order maps both: the book is already mixed and no mode is
  safe; every start is refused until an operator records the mode by hand or picks a new prefix.

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

from config.settings import TradingMode
from store.redis_store import Store

log = logging.getLogger(__name__)

DEFAULT_TTL_MS = 30_000
LOCK_NAME = "book"  # one lock per prefix; the mode is in the holder, not in the key
# Lock keys of versions that named the lock by mode: a process of such a version still running on
# the prefix must stop a new one just as a current holder does.
_LEGACY_LOCK_NAMES = ("paper", "live")
_PAPER_STATE_SUFFIXES = (":orders", ":positions", ":fills")  # not ":account": written in both modes

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


class PrefixModeError(RuntimeError):
    """The prefix belongs to the other trading mode (or its mode cannot be told). The message
    names the prefix, the mode it holds and what to do."""

    def __init__(self, message: str, prefix: str, recorded: TradingMode | None) -> None:
        super().__init__(message)
        self.prefix = prefix
        self.recorded = recorded


def mode_key(store: Store) -> str:
    return store.key("trading_mode")


def _has_key(store: Store, pattern: str, suffixes: tuple[str, ...] = ("",)) -> bool:
    """Whether a key matching `pattern` (and ending in one of `suffixes`) exists. SCAN, not KEYS:
    run once, at the first start of an unrecorded prefix, it must not block a shared Redis."""
    return any(k.endswith(suffixes) for k in store.redis.scan_iter(match=pattern, count=1000))


def infer_prefix_mode(store: Store) -> frozenset[TradingMode]:
    """The modes whose orders or positions an unrecorded prefix holds: empty (any mode may take
    it), one mode, or both (the book is already mixed)."""
    paper = _has_key(store, store.key("paper", "*"), _PAPER_STATE_SUFFIXES)
    live_orders = bool(store.redis.exists(store.key("broker", "tastytrade", "order_ids"))
                       or _has_key(store, store.key("broker", "schwab", "coid", "*"))
                       or _has_key(store, store.key("broker", "schwab", "oid", "*")))
    if paper and live_orders:
        return frozenset(TradingMode)
    if paper:
        return frozenset({TradingMode.PAPER})
    # In paper mode every order the order manager sends reaches the paper broker, which records it;
    # order-manager state the paper broker never saw went to real brokers.
    if live_orders or _has_key(store, store.key("oms", "*")):
        return frozenset({TradingMode.LIVE})
    return frozenset()


def check_recorded_mode(store: Store, mode: TradingMode) -> bool:
    """Raise `PrefixModeError` if the prefix has recorded another mode (or a value that is no mode);
    False when it has recorded none yet."""
    key = mode_key(store)
    recorded = store.redis.get(key)
    if recorded is None:
        return False
    try:
        held = TradingMode(recorded)
    except ValueError:
        raise PrefixModeError(
            f"REDIS_PREFIX {store.prefix!r} has an unknown trading mode {recorded!r} in Redis key {key}; "
            f"it must be 'paper' or 'live'.", store.prefix, None) from None
    if held is not mode:
        raise PrefixModeError(
            f"REDIS_PREFIX {store.prefix!r} is a {held.value} account book (recorded in Redis key {key}); a "
            f"{mode.value} process must never share it. Set another REDIS_PREFIX for {mode.value} trading "
            f"(one prefix is one account book).", store.prefix, held)
    return True


def claim_prefix_mode(store: Store, mode: TradingMode) -> None:
    """Check `mode` against the recorded one, or record it (the first start). Raises
    `PrefixModeError` when the prefix belongs to the other mode or its mode cannot be told. Call it
    holding the lock: a process of a version that records no mode may otherwise be trading there."""
    if check_recorded_mode(store, mode):
        return
    key = mode_key(store)
    inferred = infer_prefix_mode(store)
    if len(inferred) > 1:
        raise PrefixModeError(
            f"REDIS_PREFIX {store.prefix!r} holds both paper and live orders and no recorded mode: its book "
            f"mixes two accounts. Start on a new REDIS_PREFIX, or, once you have checked the book, record its "
            f"mode by hand (redis-cli SET {key} paper|live).", store.prefix, None)
    if inferred and mode not in inferred:
        (held,) = inferred
        raise PrefixModeError(
            f"REDIS_PREFIX {store.prefix!r} holds {held.value} orders/positions (from before modes were "
            f"recorded in {key}); a {mode.value} process must never share that book. Set another "
            f"REDIS_PREFIX for {mode.value} trading (one prefix is one account book).", store.prefix, held)
    # NX: of two first starts in different modes exactly one records; the other is refused.
    if not store.redis.set(key, mode.value, nx=True):
        check_recorded_mode(store, mode)
        return
    log.info("REDIS_PREFIX %r is now a %s account book (recorded in %s%s)", store.prefix, mode.value, key,
             f", adopting its {mode.value} orders/positions" if inferred else "")


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
                message = f"instance lock {self.key!r} was lost (expired or taken by another process)"
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


def _held_error(store: Store, key: str) -> InstanceLockError:
    raw = store.redis.get(key)
    remaining = store.redis.pttl(key)
    holder: dict[str, Any] | None = None
    try:
        holder = json.loads(raw) if raw else None
    except ValueError:
        holder = None
    if not isinstance(holder, dict):
        holder = None
    who = (f"host {holder.get('host')} pid {holder.get('pid')}"
           + (f" ({holder['mode']})" if holder.get("mode") else "") + f" (since {holder.get('started')})"
           if holder else "an unknown process")
    return InstanceLockError(
        f"another instance is already running on REDIS_PREFIX {store.prefix!r}: {who}. Two processes must never "
        f"trade the same account book. Stop it first (systemctl stop trading-backend); if it crashed, the lock "
        f"expires in {max(0, int(remaining)) / 1000:.0f} s.",
        {k: v for k, v in holder.items() if k != "token"} if holder else None,
    )


def acquire_instance_lock(store: Store, mode: TradingMode, *, ttl_ms: int = DEFAULT_TTL_MS,
                          on_lost: Callable[[str], None] | None = None, heartbeat: bool = True) -> InstanceLock:
    """Take the prefix's one lock for a process in `mode`, or raise: `PrefixModeError` when the
    prefix belongs to the other mode, `InstanceLockError` (naming the holder) when a process runs
    there. A recorded mode is checked before the lock, so a live start on a paper prefix learns
    that, not merely that something is running; a first start records its mode only once it holds
    the lock."""
    check_recorded_mode(store, mode)
    value = json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "mode": mode.value,
                        "started": datetime.now(UTC).isoformat(timespec="seconds"), "token": uuid.uuid4().hex},
                       sort_keys=True)
    lock = InstanceLock(store, LOCK_NAME, value, ttl_ms, on_lost)
    if not store.redis.set(lock.key, value, nx=True, px=ttl_ms):
        raise _held_error(store, lock.key)
    try:
        for legacy in _LEGACY_LOCK_NAMES:
            legacy_key = store.key("instance_lock", legacy)
            if store.redis.exists(legacy_key):
                raise _held_error(store, legacy_key)
        claim_prefix_mode(store, mode)
    except BaseException:
        lock.release()
        raise
    if heartbeat:
        lock.start_heartbeat()
    return lock
