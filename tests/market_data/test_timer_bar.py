"""A time bar with no trade after its boundary is emitted by the writer's timer at the boundary
(plus a short grace), not by polling; and a trade past the boundary emits it at once."""
from __future__ import annotations

import time

import pandas as pd

from config.timeframes import Timeframe
from domain.market import Trade
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import ManualFeed


# The first two tests block in XREAD while the service's writer thread writes: real Redis only
# (fakeredis misses such cross-thread wake-ups once a second FakeRedis exists in the process).
def test_timer_emits_bar_at_boundary_without_a_trade(real_store: Store, make_service: ServiceFactory) -> None:
    store = real_store
    boundary = int(pd.Timestamp("2024-11-26T15:00:00Z").value)
    offset = boundary - 400_000_000 - time.time_ns()  # "now" is 0.4 s before a minute boundary
    feed = ManualFeed(realtime=True)
    svc = make_service(store, feed, time_ns=lambda: time.time_ns() + offset)
    tf = Timeframe.parse("1Min")
    svc.ensure("/MES", tf)
    svc.start()
    pushed = time.monotonic()
    feed.push(Trade("/MES", time.time_ns() + offset, 6000.25, 3))
    assert svc.read_bars("/MES", tf, "0", block_ms=150) == []  # not complete yet: no early bar
    got = svc.read_bars("/MES", tf, "0", block_ms=3000)
    waited = time.monotonic() - pushed
    assert len(got) == 1
    bar = got[0][1]
    assert bar.end_ns == boundary and bar.start_ns == boundary - 60_000_000_000
    assert (bar.open, bar.close, bar.volume, bar.trade_count) == (6000.25, 6000.25, 3, 1)
    assert 0.35 < waited < 2.5


def test_first_trade_past_boundary_emits_immediately(real_store: Store, make_service: ServiceFactory) -> None:
    store = real_store
    feed = ManualFeed(realtime=False)  # no timers: only trades close bars
    svc = make_service(store, feed)
    tf = Timeframe.parse("1Min")
    svc.ensure("/MES", tf)
    svc.start()
    t0 = int(pd.Timestamp("2024-11-26T15:00:10Z").value)
    feed.push(Trade("/MES", t0, 6000.0, 1))
    feed.push(Trade("/MES", t0 + 30_000_000_000, 6001.0, 2))
    assert svc.read_bars("/MES", tf, "0", block_ms=100) == []
    feed.push(Trade("/MES", t0 + 60_000_000_000, 6002.0, 1))  # 15:01:10 -> completes 15:00
    got = svc.read_bars("/MES", tf, "0", block_ms=2000)
    assert [(b.open, b.high, b.low, b.close, b.volume) for _i, b in got] == [(6000.0, 6001.0, 6000.0, 6001.0, 3)]


def test_bar_under_way_when_builder_starts_is_marked_gapped(store: Store, make_service: ServiceFactory) -> None:
    now = int(pd.Timestamp("2024-11-26T15:00:30Z").value)
    feed = ManualFeed(realtime=True)
    clock = {"ns": now}
    svc = make_service(store, feed, time_ns=lambda: clock["ns"])
    tf = Timeframe.parse("1Min")
    svc.ensure("/MES", tf)  # 30 s into the 15:00 bar: its first half was never seen
    svc.process_now([Trade("/MES", now + 1, 6000.0, 1), Trade("/MES", now + 60_000_000_000, 6001.0, 1),
                     Trade("/MES", now + 120_000_000_000, 6002.0, 1)])
    assert [b.gapped for b in svc.history("/MES", tf, 10)] == [True, False]
