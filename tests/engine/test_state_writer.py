"""Write-behind of the strategy threads' saved state: newest wins, flush is durable, errors retry,
documents handed in together go in one write after the linger."""
from __future__ import annotations

import threading
import time
from typing import Iterator

import pytest
import redis

from engine.state_writer import StateWriter
from store.redis_store import Store


@pytest.fixture
def writer(store: Store) -> Iterator[StateWriter]:
    w = StateWriter(store)
    w.start()
    yield w
    w.stop()


def test_flush_returns_once_every_document_is_in_redis(store: Store, writer: StateWriter) -> None:
    keys = [store.key("engine", "state", "ema", f"S{i}") for i in range(50)]
    for i, key in enumerate(keys):
        writer.put(key, f'{{"bar_id": "{i}-0"}}')
    assert writer.flush(5.0)
    assert store.redis.mget(keys) == [f'{{"bar_id": "{i}-0"}}' for i in range(50)]


def test_the_newest_document_of_a_key_wins(store: Store, writer: StateWriter) -> None:
    key = store.key("engine", "state", "ema", "/MES")
    for i in range(200):
        writer.put(key, str(i))
    writer.flush(5.0)
    assert store.redis.get(key) == "199"


def test_get_sees_a_pending_document_before_redis_does(store: Store) -> None:
    writer = StateWriter(store)  # not started: put writes inline
    key = store.key("engine", "state", "ema", "/ES")
    writer.put(key, "inline")
    assert store.redis.get(key) == "inline"  # a writer that is not running never loses a save
    writer._pending[key] = "pending"  # as if the writer thread had not sent it yet
    assert writer.get(key) == "pending"


def test_a_redis_error_keeps_the_batch_and_a_newer_document_still_wins(store: Store,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    writer = StateWriter(store)
    key = store.key("engine", "state", "supertrend", "NVDA")
    original = store.redis.mset
    calls = {"n": 0}

    def failing_once(*args: object, **kwargs: object) -> object:
        calls["n"] += 1
        if calls["n"] == 1:
            raise redis.ConnectionError("redis went away")
        return original(*args, **kwargs)

    monkeypatch.setattr(store.redis, "mset", failing_once)
    writer._pending[key] = "old"
    assert writer._write_pending() is False and writer.errors == 1
    writer.put(key, "new")  # not started: written inline, merged over the kept batch
    assert store.redis.get(key) == "new"


def test_documents_from_many_threads_all_land(store: Store, writer: StateWriter) -> None:
    def saver(n: int) -> None:
        for i in range(100):
            writer.put(store.key("engine", "state", "ema", f"T{n}"), str(i))

    threads = [threading.Thread(target=saver, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert writer.flush(5.0)
    assert store.redis.mget([store.key("engine", "state", "ema", f"T{n}") for n in range(8)]) == ["99"] * 8


def test_documents_handed_in_within_the_linger_go_in_one_write(store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    writer = StateWriter(store, linger_s=2.0, quiet_s=0.5)  # wide margins: a loaded CI machine stalls sleeps
    writes: list[dict[str, str]] = []
    original = store.redis.mset
    monkeypatch.setattr(store.redis, "mset", lambda mapping: (writes.append(dict(mapping)), original(mapping))[1])
    writer.start()
    try:
        keys = [store.key("engine", "state", "ema", f"L{i}") for i in range(30)]
        for key in keys:  # a bar close: every thread saves within a few milliseconds
            writer.put(key, "1")
            time.sleep(0.001)
        assert writes == []  # still lingering
        deadline = time.monotonic() + 5
        while not writes and time.monotonic() < deadline:
            time.sleep(0.01)
        assert len(writes) == 1 and sorted(writes[0]) == sorted(keys)
    finally:
        writer.stop()


def test_flush_does_not_wait_for_the_linger(store: Store) -> None:
    writer = StateWriter(store, linger_s=30.0)
    writer.start()
    try:
        key = store.key("engine", "state", "ema", "/NQ")
        writer.put(key, "x")
        started = time.monotonic()
        assert writer.flush(5.0)
        assert time.monotonic() - started < 1.0 and store.redis.get(key) == "x"
    finally:
        writer.stop()


def test_a_steady_stream_of_documents_is_still_written_every_linger(store: Store) -> None:
    writer = StateWriter(store, linger_s=0.1, quiet_s=0.05)
    writer.start()
    try:
        key = store.key("engine", "state", "ema", "/RTY")
        deadline = time.monotonic() + 2.0  # 20 lingers: the margin for a loaded machine
        i = 0
        while time.monotonic() < deadline:  # never quiet for 50 ms
            writer.put(key, str(i))
            i += 1
            time.sleep(0.005)
            if store.redis.get(key) is not None:
                break
        assert store.redis.get(key) is not None  # written within the linger although never quiet
    finally:
        writer.stop()
