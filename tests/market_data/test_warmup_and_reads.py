"""Warm-up and reads: history from Redis, then the replay source; ensure() is idempotent and works
while running; listeners see every accepted trade."""
from __future__ import annotations

from pathlib import Path

from config.settings import Settings
from config.timeframes import Timeframe
from domain.market import Trade
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import ManualFeed, wait_until

S = 1_000_000_000
BASE = 1_732_633_200 * S


def test_warmup_prefers_redis_history_then_replay(store: Store, settings: Settings, shared_data: Path,
                                                  make_service: ServiceFactory) -> None:
    replay = settings.with_overrides(replay_files=(shared_data / "databento/glbx-mdp3-esh4-20231225.mbo.dbn.zst",))
    svc = make_service(store, ManualFeed(), settings=replay)
    tf = Timeframe.parse("144t")
    bars = svc.warmup("/ES", tf, 10)  # Redis is empty -> built from the replay file
    assert len(bars) == 10 and all(b.trade_count == 144 for b in bars)
    assert bars == sorted(bars, key=lambda b: b.start_ns)
    svc.ensure("/ES", tf)
    svc.process_now([Trade("/ES", BASE + i, 4800.0, 1) for i in range(288)])
    assert len(svc.history("/ES", tf, 10)) == 2
    mixed = svc.warmup("/ES", tf, 10)
    assert len(mixed) == 10 and mixed[-2:] == svc.history("/ES", tf, 2)  # Redis bars are the newest


def test_ensure_is_idempotent_and_live(store: Store, make_service: ServiceFactory) -> None:
    feed = ManualFeed(realtime=False)
    svc = make_service(store, feed)
    seen: list[Trade] = []
    svc.add_trade_listener(seen.append)
    svc.start()
    tf = Timeframe.parse("2t")
    feed.push(Trade("/MES", BASE, 6000.0, 1))  # before ensure: recorded, not in bars
    assert wait_until(lambda: svc.counters.trades_accepted == 1)
    svc.ensure("/MES", tf)
    svc.ensure("MES", tf)
    svc.ensure("/mes", tf)
    for i in range(1, 5):
        feed.push(Trade("/MES", BASE + i, 6000.0 + i, 1))
    assert wait_until(lambda: len(svc.history("/MES", tf, 10)) == 2)
    assert [b.open for b in svc.history("/MES", tf, 10)] == [6001.0, 6003.0]
    assert len(seen) == 5 and svc.last_price("MES") == 6004.0
    assert svc.status()["symbols"]["/MES"]["timeframes"] == ["2t"]
    assert svc.bars_key("/MES", tf) == store.key("md", "bars", "/MES", "2t")
    assert svc.trades_key("MES") == store.key("md", "trades", "/MES")


def test_listener_exception_does_not_stop_the_pipeline(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store)

    def broken(trade: Trade) -> None:
        raise RuntimeError("boom")

    svc.add_trade_listener(broken)
    svc.ensure("/ES", Timeframe.parse("1t"))
    svc.process_now([Trade("/ES", BASE, 5000.0, 1)])
    assert svc.counters.listener_errors == 1
    assert len(svc.history("/ES", Timeframe.parse("1t"), 5)) == 1


def test_warmup_through_a_bar_id_leaves_later_bars_to_the_live_read(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store, ManualFeed(realtime=False))  # a feed without a past of its own
    tf = Timeframe.parse("2t")
    svc.ensure("/ES", tf)
    svc.process_now([Trade("/ES", BASE + i * S, 5000.0 + i, 1) for i in range(6)])  # bars open 5000, 5002, 5004
    pinned = store.redis.xrevrange(svc.bars_key("/ES", tf), min="-", max="+", count=2)[1][0]  # the 5002 bar
    assert [b.open for b in svc.warmup("/ES", tf, 5, through_id=pinned)] == [5000.0, 5002.0]
    assert [b.open for _id, b in svc.read_bars("/ES", tf, pinned)] == [5004.0]  # the rest is live
    assert [b.open for b in svc.warmup("/ES", tf, 2)] == [5002.0, 5004.0]
    assert svc.warmup("/ES", tf, 5, through_id="0-0") == []  # pinned before any bar: all of them live
