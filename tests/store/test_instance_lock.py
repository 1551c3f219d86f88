from __future__ import annotations

import os
import socket
import time

import pytest

from store.instance_lock import InstanceLockError, acquire_instance_lock
from store.redis_store import Store


def test_second_acquire_fails_naming_holder_then_succeeds_after_release(store: Store) -> None:
    first = acquire_instance_lock(store, "paper")
    try:
        with pytest.raises(InstanceLockError) as err:
            acquire_instance_lock(store, "paper")
        message = str(err.value)
        assert socket.gethostname() in message and f"pid {os.getpid()}" in message
        assert "already running" in message and "token" not in message
        assert err.value.holder and err.value.holder["pid"] == os.getpid() and "token" not in err.value.holder
        other = acquire_instance_lock(store, "live")  # another name is independent
        other.release()
    finally:
        assert first.release() is True
    second = acquire_instance_lock(store, "paper")
    assert second.release() is True
    assert second.release() is False  # twice is harmless


def test_heartbeat_keeps_lock_alive_past_ttl(store: Store) -> None:
    lock = acquire_instance_lock(store, "hb", ttl_ms=300)
    try:
        time.sleep(0.7)  # > 2 TTLs: only renewal keeps it
        with pytest.raises(InstanceLockError):
            acquire_instance_lock(store, "hb", heartbeat=False)
    finally:
        lock.release()


def test_release_never_deletes_someone_elses_lock_and_loss_is_reported(store: Store) -> None:
    lost: list[str] = []
    lock = acquire_instance_lock(store, "steal", ttl_ms=300, on_lost=lost.append)
    store.redis.set(lock.key, '{"host": "other", "pid": 1}')  # another process took over after expiry
    deadline = time.monotonic() + 2
    while not lost and time.monotonic() < deadline:
        time.sleep(0.02)
    assert lost and lock.lost
    assert lock.release() is False
    assert store.redis.get(lock.key) == '{"host": "other", "pid": 1}'
