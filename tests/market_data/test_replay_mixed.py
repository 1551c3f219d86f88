"""Replaying a live-gateway capture with every record type (symbol mappings, statistics, MBO,
MBP-1/10, OHLCV, definitions, trades) works: no error, only real trades become trades."""
from __future__ import annotations

from pathlib import Path

from config.timeframes import Timeframe
from market_data.feeds import ReplayFeed, load_dbn
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import wait_until

MIXED = "databento/live-glbx-esz4-mixed.dbn.zst"


def test_mixed_capture_replays_without_error(store: Store, shared_data: Path, make_service: ServiceFactory) -> None:
    source = load_dbn(shared_data / MIXED)
    # Two trade events, each present as TradeMsg and MBP1Msg: counted once (TradeMsg wins).
    assert [(t.symbol, t.price, t.size) for _ts, t in source.trades] == [("/ES", 4756.0, 2), ("/ES", 4756.0, 1)]
    assert source.counters.skipped_other_records == 46 - 2 - 20  # 20 symbol mappings are consumed
    feed = ReplayFeed([shared_data / MIXED])
    svc = make_service(store, feed)
    svc.ensure("/ES", Timeframe.parse("1t"))
    svc.start()
    assert feed.finished.wait(10)
    assert wait_until(lambda: len(svc.history("/ES", Timeframe.parse("1t"), 10)) == 2)
    status = svc.status()
    assert status["feeds"]["replay"]["state"] == "finished"
    assert status["feeds"]["replay"]["error"] is None
    assert status["counters"]["trades_accepted"] == 2


def test_replay_merges_files_in_timestamp_order(shared_data: Path) -> None:
    feed = ReplayFeed([shared_data / "databento/glbx-mdp3-esu4-nqu4-20240701T2340.ohlcv-1m.dbn.zst",
                       shared_data / "databento/glbx-mdp3-esu4-20240701T2358.trades.dbn.zst"])
    seen: list[int] = []
    feed.start(lambda t: seen.append(t.ts_ns))
    assert feed.finished.wait(10)
    assert len(seen) == 240 + 120  # ohlcv bars of ESU4 and NQU4 become 4 synthetic trades each
    assert seen == sorted(seen)
