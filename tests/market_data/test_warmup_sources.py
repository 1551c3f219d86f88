"""Warm-up sources beyond the timeframe's own Redis history: bars rebuilt from what Redis holds of
the instrument (finer timeframes' bars, the trade stream), then the feed's own past (the simulated
feed's generated history). Every source ends where the timeframe's live bars begin, and the
simulated history joins the live walk at its price."""
from __future__ import annotations

from dataclasses import replace

from config.timeframes import Timeframe
from domain.market import Bar, Trade
from market_data import calendars
from market_data.bars import build_bars
from market_data.feeds import SimulatedFeed
from market_data.service import MarketDataService
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import ManualFeed, wait_until

S = 1_000_000_000
MIN = 60 * S
T0 = 1719928800 * S  # 2024-07-02 14:00 UTC (10:00 ET), a Tuesday inside the CME session
MINUTE, FIVE = Timeframe.parse("1Min"), Timeframe.parse("5Min")


class Clock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def walk(feed: SimulatedFeed, start_ns: int, end_ns: int, per_second: int = 20) -> list[Trade]:
    """The feed's live walk between two instants (its trade thread, without the wall clock)."""
    step = S // per_second
    trades = (feed.next_trade("/MES", ts) for ts in range(start_ns, end_ns, step))
    return [t for t in trades if t is not None]


def without_gap_flag(bars: list[Bar]) -> list[Bar]:
    return [replace(b, gapped=False) for b in bars]


def test_a_fresh_start_warms_up_on_the_walk_so_far_then_on_generated_bars(
        store: Store, make_service: ServiceFactory) -> None:
    clock = Clock(T0 + 25 * S)  # 10:00:25 ET
    feed = SimulatedFeed(20.0, seed=1)
    svc = make_service(store, feed, time_ns=clock)
    printed = walk(feed, T0 - 150 * S, clock.now_ns)  # the walk ran 2.5 minutes before the ticker started
    svc.process_now(printed)
    svc.ensure("/MES", MINUTE)  # the first live bar, 10:00, is under way

    bars = svc.warmup("/MES", MINUTE, 22)

    assert len(bars) == 22
    assert bars[-1].end_ns == T0  # history ends where the live bars begin
    # 09:58 and 09:59 are the walk's own bars (from the trade stream; 09:57 lacks its first half),
    # built as the live builder builds them.
    before_live = [t for t in printed if t.ts_ns < T0]
    assert bars[-2:] == build_bars(before_live, "/MES", MINUTE, watermark_ns=T0)[-2:]
    assert bars[-2].start_ns == T0 - 2 * MIN and bars[-1].close == before_live[-1].price
    # Before them the generated past closes at the price the walk's 09:58 bar opened at.
    assert bars[-3].end_ns == bars[-2].start_ns and bars[-3].close == bars[-2].open
    assert [b.end_ns for b in bars[:-1]] == [b.start_ns for b in bars[1:]]
    assert all(calendars.bar_in_session("/MES", b.start_ns, b.end_ns) for b in bars)
    assert svc.warmup("/MES", MINUTE, 22) == bars  # a second strategy on the same bars sees the same


def test_with_nothing_printed_yet_the_history_closes_at_the_price_the_walk_continues_from(
        store: Store, make_service: ServiceFactory) -> None:
    clock = Clock(T0 + 25 * S)
    feed = SimulatedFeed(20.0, seed=2)
    svc = make_service(store, feed, time_ns=clock)
    svc.ensure("/MES", MINUTE)

    bars = svc.warmup("/MES", MINUTE, 22)

    assert len(bars) == 22 and bars[-1].end_ns == T0
    assert bars[-1].close == 6000.0  # the walk's current price (the instrument's typical price)
    first_live = feed.next_trade("/MES", clock.now_ns)
    assert first_live is not None and abs(first_live.price - bars[-1].close) <= 1.0  # one step on


def test_a_new_timeframe_warms_up_on_the_finer_bars_already_built(store: Store, make_service: ServiceFactory) -> None:
    clock = Clock(T0 - 60 * MIN + 10 * S)  # 09:00:10
    svc = make_service(store, ManualFeed(), time_ns=clock)  # a feed without a past of its own
    svc.ensure("/MES", MINUTE)  # a 1Min ticker has run for an hour ...
    trades = [Trade("/MES", ts, 6000.0 + (ts // (7 * S)) % 13 * 0.25, 1) for ts in range(clock.now_ns, T0 + 150 * S, 10 * S)]
    svc.process_now(trades)
    clock.now_ns = T0 + 150 * S  # ... when, at 10:02:30, the ticker moves to 5Min
    svc.ensure("/MES", FIVE)

    bars = svc.warmup("/MES", FIVE, 20)

    # 09:00 .. 09:55: the 10:00 bar is under way (live); the 09:00 one lacks 09:00:00-09:00:10, as
    # the first 1Min bar did, and is marked so.
    expected = build_bars([t for t in trades if t.ts_ns < T0], "/MES", FIVE, watermark_ns=T0)
    assert [b.start_ns for b in bars] == [T0 - 60 * MIN + i * 5 * MIN for i in range(12)]
    assert without_gap_flag(bars) == without_gap_flag(expected)
    assert bars[0].gapped and not any(b.gapped for b in bars[1:])


def test_a_tick_timeframe_warms_up_on_the_trade_stream(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store, ManualFeed(realtime=False))
    trades = [Trade("/MES", T0 + i * S, 6000.0 + i % 7 * 0.25, 1 + i % 3) for i in range(95)]
    svc.process_now(trades)
    tf = Timeframe.parse("10t")
    svc.ensure("/MES", tf)

    bars = svc.warmup("/MES", tf, 5)

    assert bars == build_bars(trades[45:], "/MES", tf)  # counted back from the newest trade
    svc.process_now([Trade("/MES", T0 + 200 * S, 6001.0, 1)] * 10)
    live = svc.history("/MES", tf, 5)
    assert [b.start_ns for b in live] == [T0 + 200 * S]  # the live bars begin after the history


def test_a_time_timeframe_without_finer_bars_warms_up_on_the_trade_stream(
        store: Store, make_service: ServiceFactory) -> None:
    clock = Clock(T0 + 30 * S)
    svc = make_service(store, ManualFeed(), time_ns=clock)
    trades = [Trade("/MES", ts, 6000.0 + (ts // S) % 11 * 0.25, 1) for ts in range(T0 - 42 * MIN, clock.now_ns, 5 * S)]
    svc.process_now(trades)
    svc.ensure("/MES", FIVE)

    bars = svc.warmup("/MES", FIVE, 20)

    # 09:20 .. 09:55: the trades begin inside 09:15 (partial, left out); 10:00 is under way.
    assert [b.start_ns for b in bars] == [T0 - 40 * MIN + i * 5 * MIN for i in range(8)]
    assert bars == build_bars([t for t in trades if t.ts_ns < T0], "/MES", FIVE, watermark_ns=T0)[1:]


def test_the_simulated_walk_continues_from_the_last_published_price_after_a_restart(
        real_store: Store, make_service: ServiceFactory) -> None:
    before = make_service(real_store, ManualFeed(realtime=False))
    before.process_now([Trade("/MES", T0, 6123.25, 1)])  # the previous run's last /MES price

    after: MarketDataService = make_service(real_store, SimulatedFeed(50.0, seed=3))
    after.start()
    assert wait_until(lambda: after._last_trade.get("/MES") is not None)  # type: ignore[attr-defined]
    first = after._last_trade["/MES"]  # type: ignore[attr-defined]
    assert abs(first.price - 6123.25) < 5  # not back at the typical 6000
