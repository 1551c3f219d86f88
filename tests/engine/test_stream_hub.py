"""The engine's single reader: every subscriber gets exactly its entries, in order, once."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any, Iterator

import pytest
import redis

from engine.stream_hub import StreamHub, Subscription
from store.redis_store import Store


@pytest.fixture
def hub(real_store: Store) -> Iterator[StreamHub]:
    # Real Redis: fakeredis misses cross-thread XREAD wake-ups (see tests/conftest.py).
    h = StreamHub(real_store, block_ms=5_000)
    h.start()
    yield h
    h.stop()


def _take(sub: Subscription, timeout: float = 2.0) -> list[tuple[str, list[tuple[str, dict[str, str]]]]]:
    return sub.inbox.get(timeout=timeout)


def _ids(message: Any, key: str) -> list[str]:
    return [entry_id for k, entries in message for entry_id, _ in entries if k == key]


def test_entries_after_the_cursor_are_delivered_once_in_order(real_store: Store, hub: StreamHub) -> None:
    key = real_store.key("md", "bars", "/MES", "1")
    real_store.redis.xadd(key, {"c": "1"}, id="1000-0")
    sub = hub.subscribe("ema-/MES", {key: "1000-0"})  # already has 1000-0
    for ms in (2000, 3000):
        real_store.redis.xadd(key, {"c": str(ms)}, id=f"{ms}-0")
    got: list[str] = []
    while len(got) < 2:
        got += _ids(_take(sub), key)
    assert got == ["2000-0", "3000-0"]
    with pytest.raises(queue.Empty):
        sub.inbox.get(timeout=0.3)  # nothing delivered twice


def test_two_subscribers_on_one_stream_from_different_cursors(real_store: Store, hub: StreamHub) -> None:
    key = real_store.key("md", "bars", "/ES", "1")
    for ms in (1000, 2000, 3000):
        real_store.redis.xadd(key, {"c": str(ms)}, id=f"{ms}-0")
    current = hub.subscribe("ema-/ES", {key: "3000-0"})
    catching_up = hub.subscribe("supertrend-/ES", {key: "1000-0"})
    assert _ids(_take(catching_up), key) == ["2000-0", "3000-0"]
    real_store.redis.xadd(key, {"c": "4"}, id="4000-0")
    assert _ids(_take(current), key) == ["4000-0"]  # never the older entries the other one needed
    assert _ids(_take(catching_up), key) == ["4000-0"]


def test_watch_and_unwatch_change_the_streams_at_once(real_store: Store, hub: StreamHub) -> None:
    bars = real_store.key("md", "bars", "NVDA", "1")
    trades = real_store.key("md", "trades", "NVDA")
    sub = hub.subscribe("ema-NVDA", {bars: "0-0"})
    time.sleep(0.1)  # the hub is now blocked on the bar stream only
    hub.watch(sub, trades, "0-0")
    real_store.redis.xadd(trades, {"p": "120.5"}, id="5000-0")
    assert _ids(_take(sub), trades) == ["5000-0"]
    hub.unwatch(sub, trades)
    time.sleep(0.1)
    real_store.redis.xadd(trades, {"p": "120.6"}, id="6000-0")
    real_store.redis.xadd(bars, {"c": "120.6"}, id="6000-0")
    message = _take(sub)
    assert _ids(message, trades) == [] and _ids(message, bars) == ["6000-0"]


def test_an_unsubscribed_inbox_gets_nothing_more(real_store: Store, hub: StreamHub) -> None:
    key = real_store.key("md", "bars", "TSLA", "1")
    sub = hub.subscribe("ema-TSLA", {key: "0-0"})
    real_store.redis.xadd(key, {"c": "1"}, id="1000-0")
    assert _ids(_take(sub), key) == ["1000-0"]
    hub.unsubscribe(sub)
    real_store.redis.xadd(key, {"c": "2"}, id="2000-0")
    with pytest.raises(queue.Empty):
        sub.inbox.get(timeout=0.3)


def test_one_read_wakes_every_subscriber_of_a_bar_close(real_store: Store, hub: StreamHub) -> None:
    keys = [real_store.key("md", "bars", f"SYM{i}", "1") for i in range(30)]
    subs = [hub.subscribe(f"t{i}", {k: "0-0"}) for i, k in enumerate(keys)]
    time.sleep(0.1)
    pipe = real_store.redis.pipeline(transaction=False)
    for k in keys:
        pipe.xadd(k, {"c": "1"}, id="60000-0")
    pipe.execute()
    for sub, k in zip(subs, keys):
        assert _ids(_take(sub), k) == ["60000-0"]


def test_a_concrete_start_is_required(real_store: Store) -> None:
    hub = StreamHub(real_store)
    with pytest.raises(ValueError):
        hub.subscribe("x", {real_store.key("md", "bars", "X", "1"): "$"})


def test_the_reader_survives_a_failing_read_and_goes_on(real_store: Store, hub: StreamHub,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    key = real_store.key("md", "bars", "MSTR", "1")
    sub = hub.subscribe("ema-MSTR", {key: "0-0"})
    original = hub._deliver
    failures = threading.Event()

    def flaky(by_key: Any) -> None:
        if not failures.is_set():
            failures.set()
            raise RuntimeError("boom")
        original(by_key)

    monkeypatch.setattr(hub, "_deliver", flaky)
    monkeypatch.setattr("engine.stream_hub.RETRY_SECONDS", 0.05)
    real_store.redis.xadd(key, {"c": "1"}, id="1000-0")
    # The failed delivery advanced no cursor, so the entry comes on the next read.
    assert _ids(_take(sub, timeout=5.0), key) == ["1000-0"]
    assert hub.errors == 1 and hub.alive


def test_stop_ends_the_thread_and_removes_its_wake_stream(real_store: Store) -> None:
    hub = StreamHub(real_store, block_ms=30_000)
    hub.start()
    hub.subscribe("x", {real_store.key("md", "bars", "X", "1"): "0-0"})
    started = time.monotonic()
    hub.stop()
    assert not hub.alive and time.monotonic() - started < 2.0  # the wake stream interrupts the 30 s block
    assert not list(real_store.redis.scan_iter(match=real_store.key("engine", "hub", "*")))


# ------------------------------------------------------------------ hot work first (done / wait_quiet)
def test_bookkeeping_waits_until_every_woken_thread_has_acted(real_store: Store, hub: StreamHub) -> None:
    a_key, b_key = real_store.key("md", "bars", "/MES", "1"), real_store.key("md", "bars", "/ES", "1")
    a = hub.subscribe("ema-/MES", {a_key: "0-0"})
    b = hub.subscribe("ema-/ES", {b_key: "0-0"})
    pipe = real_store.redis.pipeline(transaction=True)  # one bar close: both bars at once
    pipe.xadd(a_key, {"c": "1"}, id="1000-0")
    pipe.xadd(b_key, {"c": "1"}, id="1000-0")
    pipe.execute()
    _take(a)
    _take(b)
    hub.done(a)  # a has sent its orders; b is still sending
    started = time.monotonic()
    assert hub.wait_quiet(a, 0.2) == "timeout" and time.monotonic() - started >= 0.19
    waited: list[str] = []
    waiter = threading.Thread(target=lambda: waited.append(hub.wait_quiet(a, 5.0)))
    waiter.start()
    time.sleep(0.05)
    assert waited == []  # still waiting for b ...
    hub.done(b)
    waiter.join(2.0)
    assert waited == ["quiet"]  # ... and released the moment b is done


def test_a_new_message_for_the_waiting_thread_ends_its_wait(real_store: Store, hub: StreamHub) -> None:
    a_key, b_key = real_store.key("md", "bars", "NVDA", "1"), real_store.key("md", "trades", "NVDA")
    a = hub.subscribe("supertrend-NVDA", {a_key: "0-0"})
    b = hub.subscribe("ema-NVDA", {b_key: "0-0"})
    real_store.redis.xadd(b_key, {"p": "1"}, id="1000-0")
    _take(b)  # b busy (not done): a would wait for it ...
    waited: list[str] = []
    waiter = threading.Thread(target=lambda: waited.append(hub.wait_quiet(a, 5.0)))
    waiter.start()
    time.sleep(0.05)
    real_store.redis.xadd(a_key, {"c": "1"}, id="2000-0")  # ... until a has a message of its own
    waiter.join(2.0)
    assert waited == ["input"]
    _take(a)


def test_unsubscribing_releases_what_the_thread_never_acted_on(real_store: Store, hub: StreamHub) -> None:
    key = real_store.key("md", "bars", "TSLA", "1")
    crashed = hub.subscribe("ema-TSLA", {key: "0-0"})
    other = hub.subscribe("supertrend-TSLA", {real_store.key("md", "bars", "MSTR", "1"): "0-0"})
    real_store.redis.xadd(key, {"c": "1"}, id="1000-0")
    _take(crashed)
    assert hub.wait_quiet(other, 0.05) == "timeout"
    hub.unsubscribe(crashed)  # a thread that crashed mid-message never reports done
    assert hub.wait_quiet(other, 1.0) == "quiet"


def test_an_idle_hub_on_a_client_with_a_socket_timeout_reads_on_without_errors(real_store: Store) -> None:
    # redis-py 8 gives a client a 5 s socket timeout unless told otherwise. A BLOCK longer than it
    # ended every idle read in a TimeoutError, logged as "redis unavailable", and a 1 s pause in
    # which a bar close was not delivered.
    short = redis.Redis.from_url(_url(real_store),
                                 decode_responses=True, socket_timeout=0.6)
    store = Store(short, real_store.prefix, persistent=True, url=real_store.url)
    hub = StreamHub(store, block_ms=30_000)
    hub.start()
    try:
        key = store.key("md", "bars", "/MNQ", "1")
        sub = hub.subscribe("ema-/MNQ", {key: "0-0"})
        time.sleep(2.0)  # several socket timeouts long
        short.xadd(key, {"c": "1"}, id="1000-0")
        started = time.monotonic()
        assert _ids(_take(sub), key) == ["1000-0"]
        assert time.monotonic() - started < 0.5
        assert hub.errors == 0
    finally:
        hub.stop()
        short.close()


def _url(store: Store) -> str:
    kwargs = store.redis.connection_pool.connection_kwargs
    return f"redis://{kwargs['host']}:{kwargs['port']}/{kwargs.get('db', 0)}"
