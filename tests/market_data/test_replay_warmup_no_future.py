"""In replay mode the replay files are the live source: warm-up must not hand a strategy bars
the replay has not reached yet (it would then skip them as already seen and never trade)."""
from __future__ import annotations

from dataclasses import replace

from config.settings import MarketDataSource
from config.timeframes import Timeframe
from domain.market import Trade
from market_data.feeds import ReplayFeed
from market_data.service import MarketDataService

ESU4_TRADES = "databento/glbx-mdp3-esu4-20240701T2358.trades.dbn.zst"


def test_replay_warmup_contains_only_bars_before_the_replay_position(fake_store, settings, shared_data) -> None:
    path = shared_data / ESU4_TRADES
    replay_settings = replace(settings, market_data_source=MarketDataSource.REPLAY, replay_files=(path,))
    md = MarketDataService(replay_settings, fake_store, source=ReplayFeed([]))
    one_minute = Timeframe.parse("1Min")
    assert md.warmup("/ES", one_minute, 50) == []  # nothing replayed yet: no history, no future

    midnight_ns = 1719878400 * 1_000_000_000  # 2024-07-02 00:00 UTC, inside the file's span
    md.process_now([Trade("/ES", midnight_ns + 1, 5500.0, 1)])
    bars = md.warmup("/ES", one_minute, 50)
    assert bars, "bars before the replay position are history"
    assert all(b.end_ns <= midnight_ns + 1 for b in bars)


def test_warmup_from_replay_files_is_whole_history_when_not_the_live_source(fake_store, settings, shared_data) -> None:
    path = shared_data / ESU4_TRADES
    md = MarketDataService(replace(settings, replay_files=(path,)), fake_store, source=ReplayFeed([]))
    bars = md.warmup("/ES", Timeframe.parse("1Min"), 50)
    assert len(bars) >= 3  # 23:58 .. 00:01 complete bars from the file
