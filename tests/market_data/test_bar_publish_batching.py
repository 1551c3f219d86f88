"""Bars that close together are published together: one Redis write wakes every strategy at once;
a backlog never holds a completed bar back for more than BAR_FLUSH_MAX_TRADES trades."""
from __future__ import annotations

import threading
import time
from typing import Any

import pandas as pd
import redis

from config.timeframes import Timeframe
from domain.market import Trade
from market_data.redis_buffer import WriteBatch
from market_data.service import MarketDataService
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import ManualFeed

NS = 1_000_000_000
T0 = int(pd.Timestamp("2024-07-02T14:00:00Z").value)  # a Tuesday, 10:00 New York
SYMBOLS = ("/MES", "/ES", "NVDA", "TSLA")


def _service(store: Store, make_service: ServiceFactory) -> tuple[MarketDataService, list[WriteBatch]]:
    svc = make_service(store, ManualFeed(realtime=False))
    for sym in SYMBOLS:
        svc.ensure(sym, Timeframe.parse("1Min"))
    writes: list[WriteBatch] = []
    svc.on_flush = writes.append
    return svc, writes


def test_bars_closing_in_one_batch_are_written_in_one_round_trip(store: Store, make_service: ServiceFactory) -> None:
    svc, writes = _service(store, make_service)
    svc.process_now([Trade(sym, T0 + 5 * NS, 100.0 + i, 1) for i, sym in enumerate(SYMBOLS)])
    writes.clear()
    closing = [Trade(sym, T0 + 60 * NS + i * 1_000_000, 101.0 + i, 2) for i, sym in enumerate(SYMBOLS)]
    svc.process_now(closing)
    assert len(writes) == 1  # not one write per completed bar
    assert sorted(bar.symbol for _, _, bar in writes[0].bars) == sorted(SYMBOLS)
    for sym in SYMBOLS:
        (_, bar), = svc.read_bars(sym, Timeframe.parse("1Min"), "0")
        assert bar.end_ns == T0 + 60 * NS


def test_a_bar_close_of_many_symbols_is_one_command_to_redis(store: Store, make_service: ServiceFactory,
                                                             monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from tests.oms.test_oms_listeners_fastpath import record_round_trips

    svc, writes = _service(store, make_service)
    svc.process_now([Trade(sym, T0 + 5 * NS, 100.0 + i, 1) for i, sym in enumerate(SYMBOLS)])  # script loaded
    writes.clear()
    sent = record_round_trips(monkeypatch)
    svc.process_now([Trade(sym, T0 + 60 * NS + i * 1_000_000, 101.0 + i, 2) for i, sym in enumerate(SYMBOLS)])
    monkeypatch.undo()
    if store.persistent:  # (fakeredis has no sockets to count)
        assert len(sent) == 1 and sent[0][0].startswith(b"*") and b"EVALSHA" in sent[0][0]
    assert len(writes) == 1
    for sym in SYMBOLS:
        assert [bar.close for _, bar in svc.read_bars(sym, Timeframe.parse("1Min"), "0")] == [100.0 + SYMBOLS.index(sym)]
        assert svc.last_price(sym) == 101.0 + SYMBOLS.index(sym)
        assert len(store.redis.xrange(svc.trades_key(sym))) == 2


def test_a_bar_write_that_fails_for_another_reason_than_a_resend_is_raised(store: Store,
                                                                          make_service: ServiceFactory) -> None:
    import pytest

    svc, _ = _service(store, make_service)
    svc.process_now([Trade("/MES", T0 + 5 * NS, 100.0, 1)])
    store.redis.set(svc.bars_key("/MES", Timeframe.parse("1Min")), "not a stream")
    with pytest.raises(redis.ResponseError, match="WRONGTYPE"):
        svc.process_now([Trade("/MES", T0 + 65 * NS, 101.0, 1)])  # closes the bar: its XADD fails


def test_a_backlog_does_not_hold_a_completed_bar_back(store: Store, make_service: ServiceFactory) -> None:
    svc, writes = _service(store, make_service)
    svc.process_now([Trade("/MES", T0 + 5 * NS, 6000.0, 1)])
    writes.clear()
    backlog = [Trade("/MES", T0 + 60 * NS + k * 1000, 6001.0, 1) for k in range(3 * MarketDataService.BAR_FLUSH_MAX_TRADES)]
    svc.process_now(backlog)  # the first trade completes the bar; many more follow in the same batch
    first_with_bar = next(i for i, w in enumerate(writes) if w.bars)
    assert first_with_bar == 0 and writes[0].trade_count == MarketDataService.BAR_FLUSH_MAX_TRADES + 1


def test_a_blocked_reader_woken_by_a_batch_finds_all_of_it_written(real_store: Store, real_redis_url: str,
                                                                    make_service: ServiceFactory) -> None:
    # The batch is one atomic script: a reader blocked on every stream (the engine's hub) is woken once
    # the whole batch is in, so its next read finds every bar; it never wakes into half a batch.
    # (Redis 7.0 answers a multi-stream block with the first stream only; 7.2+ with all of them.)
    svc, _ = _service(real_store, make_service)
    svc.process_now([Trade(sym, T0 + 5 * NS, 100.0 + i, 1) for i, sym in enumerate(SYMBOLS)])
    tf = Timeframe.parse("1Min")
    keys = [svc.trades_key(sym) for sym in SYMBOLS] + [svc.bars_key(sym, tf) for sym in SYMBOLS]
    cursors = {k: (real_store.redis.xrevrange(k, count=1) or [("0-0", {})])[0][0] for k in keys}
    reader = redis.Redis.from_url(real_redis_url, decode_responses=True)
    name = f"blocked-{real_store.prefix}"
    reader.client_setname(name)
    replies: list[list[Any]] = []
    thread = threading.Thread(target=lambda: replies.append(reader.xread(dict(cursors), block=5000)))
    thread.start()
    deadline = time.monotonic() + 5
    while not any(c.get("name") == name and "b" in c.get("flags", "") for c in real_store.redis.client_list()):
        assert time.monotonic() < deadline
        time.sleep(0.005)
    svc.process_now([Trade(sym, T0 + 60 * NS + i * 1_000_000, 101.0 + i, 2) for i, sym in enumerate(SYMBOLS)])
    thread.join(5)
    (woken,) = replies
    for key, entries in woken:
        cursors[key] = entries[-1][0]
    rest = reader.xread(cursors)  # right after waking, not blocking
    reader.close()
    assert sorted({k for k, _ in woken} | {k for k, _ in rest}) == sorted(keys)


def test_trades_are_still_written_after_redis_lost_its_scripts(store: Store, make_service: ServiceFactory) -> None:
    # After a Redis restart the trade script is gone (NOSCRIPT); redis-py 8 reports that as
    # NoScriptError("No matching script..."). The write must reload it, not drop the trades.
    svc, _ = _service(store, make_service)
    svc.process_now([Trade("/MES", T0 + 5 * NS, 6000.0, 1)])
    svc.buffer._sha = "0" * 40  # as if the server had restarted
    svc.process_now([Trade("/MES", T0 + 6 * NS, 6001.0, 2), Trade("/MES", T0 + 61 * NS, 6002.0, 3)])
    prices = [fields["p"] for _, fields in store.redis.xrange(svc.trades_key("/MES"))]
    assert prices == ["6000.0", "6001.0", "6002.0"]
    (_, bar), = svc.read_bars("/MES", Timeframe.parse("1Min"), "0")
    assert bar.close == 6001.0
