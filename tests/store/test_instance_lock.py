from __future__ import annotations

import os
import socket
import time
from typing import Iterator

import pytest

from config.settings import TradingMode
from store import instance_lock
from store.instance_lock import (
    InstanceLockError, PrefixModeError, acquire_instance_lock, claim_prefix_mode, infer_prefix_mode, mode_key,
)
from store.redis_store import Store

PAPER, LIVE = TradingMode.PAPER, TradingMode.LIVE


@pytest.fixture
def other_prefix(store: Store) -> Iterator[Store]:
    """A second prefix on the same Redis (its keys are deleted afterwards)."""
    other = Store(store.redis, f"{store.prefix}-other", store.persistent, store.url)
    yield other
    keys = list(store.redis.scan_iter(match=f"{other.prefix}:*"))
    if keys:
        store.redis.delete(*keys)


def test_second_acquire_fails_naming_holder_then_succeeds_after_release(store: Store) -> None:
    first = acquire_instance_lock(store, PAPER)
    try:
        with pytest.raises(InstanceLockError) as err:
            acquire_instance_lock(store, PAPER)
        message = str(err.value)
        assert socket.gethostname() in message and f"pid {os.getpid()}" in message and "(paper)" in message
        assert "already running" in message and repr(store.prefix) in message and "token" not in message
        assert err.value.holder and err.value.holder["pid"] == os.getpid() and "token" not in err.value.holder
    finally:
        assert first.release() is True
    second = acquire_instance_lock(store, PAPER)
    assert second.release() is True
    assert second.release() is False  # twice is harmless


def test_the_lock_is_one_per_prefix_whatever_the_mode(store: Store) -> None:
    paper = acquire_instance_lock(store, PAPER)
    try:
        store.redis.delete(mode_key(store))  # even with the mode record gone, the lock alone refuses
        with pytest.raises(InstanceLockError, match="already running"):
            acquire_instance_lock(store, LIVE)
    finally:
        paper.release()


@pytest.mark.parametrize(("first", "second"), [(PAPER, LIVE), (LIVE, PAPER)])
def test_a_prefix_keeps_the_mode_of_its_first_process(store: Store, first: TradingMode, second: TradingMode) -> None:
    running = acquire_instance_lock(store, first)
    try:  # while the first runs: the mode is the reason given, not merely "already running"
        with pytest.raises(PrefixModeError) as err:
            acquire_instance_lock(store, second)
        assert err.value.recorded is first and err.value.prefix == store.prefix
    finally:
        running.release()
    with pytest.raises(PrefixModeError) as err:  # and after it stopped
        acquire_instance_lock(store, second)
    message = str(err.value)
    assert "\n" not in message
    assert f"REDIS_PREFIX {store.prefix!r} is a {first.value} account book" in message
    assert mode_key(store) in message and f"Set another REDIS_PREFIX for {second.value}" in message
    assert store.redis.get(mode_key(store)) == first.value
    acquire_instance_lock(store, first, heartbeat=False).release()  # its own mode still starts


def test_same_or_other_mode_on_another_prefix_is_independent(store: Store, other_prefix: Store) -> None:
    paper = acquire_instance_lock(store, PAPER)
    try:
        acquire_instance_lock(other_prefix, PAPER, heartbeat=False).release()
        other_prefix.redis.delete(mode_key(other_prefix))
        acquire_instance_lock(other_prefix, LIVE, heartbeat=False).release()
        assert other_prefix.redis.get(mode_key(other_prefix)) == "live"
        assert store.redis.get(mode_key(store)) == "paper"
    finally:
        paper.release()


def test_a_rival_first_start_recording_between_read_and_write_wins(store: Store,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Two first starts in different modes: SET NX lets exactly one record; the other is refused."""
    real_infer = instance_lock.infer_prefix_mode

    def rival_records_live(s: Store) -> frozenset[TradingMode]:
        inferred = real_infer(s)
        s.redis.set(mode_key(s), "live")  # the other process's SET NX lands first
        return inferred

    monkeypatch.setattr(instance_lock, "infer_prefix_mode", rival_records_live)
    with pytest.raises(PrefixModeError, match="is a live account book"):
        claim_prefix_mode(store, PAPER)
    assert store.redis.get(mode_key(store)) == "live"


def test_an_old_version_holding_a_mode_named_lock_blocks_either_mode_and_no_mode_is_recorded(store: Store) -> None:
    """A process of a version that named the lock by mode (and records no mode) still runs there."""
    store.redis.set(store.key("instance_lock", "paper"), '{"host": "old", "pid": 7, "started": "x", "token": "t"}',
                    px=30_000)
    with pytest.raises(InstanceLockError, match="host old pid 7"):
        acquire_instance_lock(store, LIVE)
    assert not store.redis.exists(store.key("instance_lock", instance_lock.LOCK_NAME))  # ours was given back
    assert store.redis.get(mode_key(store)) is None  # the old paper process may be trading: live never claimed it


def test_an_unrecorded_prefix_without_orders_takes_any_mode(store: Store) -> None:
    store.redis.hset(store.key("users", "admin@example.com"), "role", "admin")
    store.redis.hset(store.key("paper", "schwab", "account"), "cash", "100000")  # every mode creates this
    assert infer_prefix_mode(store) == frozenset()
    acquire_instance_lock(store, LIVE, heartbeat=False).release()
    assert store.redis.get(mode_key(store)) == "live"


def test_an_unknown_recorded_mode_is_refused(store: Store) -> None:
    store.redis.set(mode_key(store), "demo")
    with pytest.raises(PrefixModeError, match="unknown trading mode 'demo'"):
        acquire_instance_lock(store, PAPER)


def test_heartbeat_keeps_lock_alive_past_ttl(store: Store) -> None:
    lock = acquire_instance_lock(store, PAPER, ttl_ms=300)
    try:
        time.sleep(0.7)  # > 2 TTLs: only renewal keeps it
        with pytest.raises(InstanceLockError):
            acquire_instance_lock(store, PAPER, heartbeat=False)
    finally:
        lock.release()


def test_release_never_deletes_someone_elses_lock_and_loss_is_reported(store: Store) -> None:
    lost: list[str] = []
    lock = acquire_instance_lock(store, PAPER, ttl_ms=300, on_lost=lost.append)
    store.redis.set(lock.key, '{"host": "other", "pid": 1}')  # another process took over after expiry
    deadline = time.monotonic() + 2
    while not lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lost and lock.lost
    assert lock.release() is False
    assert store.redis.get(lock.key) == '{"host": "other", "pid": 1}'
