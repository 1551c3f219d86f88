"""The hand-over from warm-up history to live bars: every bar reaches the strategy exactly once,
whether it closes while the warm-up reads history or the warm-up's other source (Databento
Historical) already held it."""
from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from config.settings import Settings
from config.timeframes import Timeframe
from domain.market import Bar, Trade
from engine.runner import StrategyRunner
from store.redis_store import Store
from tests.engine.conftest import MINUTE_NS, EngineRig, FedBars, build_rig, wait_until

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, a Tuesday inside the CME session
SECOND = 1_000_000_000
TICKER = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
              tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)


def bar_trade(i: int, price: float) -> Trade:
    """A trade inside minute bar i (it also completes bar i-1)."""
    return Trade("/MES", START + i * MINUTE_NS + SECOND, price, 1)


def test_a_bar_closing_while_the_warm_up_reads_history_is_acted_on_live(rig: EngineRig, fed: FedBars) -> None:
    rig.md.ensure("/MES", Timeframe.parse("1Min"))
    for i in range(4):  # bars 0..2 complete: the warm-up history
        rig.push([bar_trade(i, 6000.0 + i)])
    rig.add_ticker(**TICKER)
    # While the thread feeds its history to the strategy, bar 3 closes (bar 4's first trade).
    fed.on_first_warmup_bar = lambda: rig.push([bar_trade(4, 6004.0)])
    rig.supervisor.start_strategy("ema")
    runner = rig.supervisor._runners[("ema", "/MES")]
    wait_until(lambda: bool(runner.status.last_bar) and runner.status.last_bar["start_ns"] == START + 3 * MINUTE_NS,
               timeout=5.0, what="bar 3, closed during the warm-up, to be acted on")
    rig.wait_idle("ema", "/MES")
    strategy_bars = fed.per_strategy[-1]
    assert strategy_bars == [START + i * MINUTE_NS for i in range(4)]  # each once, in order


def test_a_bar_closing_after_the_start_but_before_the_warm_up_read_is_acted_on_live(
        rig: EngineRig, fed: FedBars, monkeypatch: pytest.MonkeyPatch) -> None:
    # The thread is slow to get going: bar 3 closes after start-trading returned, before the
    # thread reads its history. It is a live bar (its signal trades), not warm-up history.
    rig.md.ensure("/MES", Timeframe.parse("1Min"))
    for i in range(4):
        rig.push([bar_trade(i, 6000.0 + i)])
    warmup = rig.md.warmup

    def late_warmup(*args: Any, **kwargs: Any) -> list[Bar]:
        rig.push([bar_trade(4, 6004.0)])
        return warmup(*args, **kwargs)

    monkeypatch.setattr(rig.md, "warmup", late_warmup)
    rig.add_ticker(**TICKER)
    rig.supervisor.start_strategy("ema")
    runner = rig.supervisor._runners[("ema", "/MES")]
    wait_until(lambda: bool(runner.status.last_bar) and runner.status.last_bar["start_ns"] == START + 3 * MINUTE_NS,
               timeout=5.0, what="bar 3 to be acted on as a live bar")
    rig.wait_idle("ema", "/MES")
    assert fed.per_strategy[-1] == [START + i * MINUTE_NS for i in range(4)]


# Databento Historical already has minute bars 0..4 when the ticker starts; the live feed then
# publishes bar 4 too (it was under way when the service started), then bar 5.
HISTORICAL = [Bar("/MES", "1", START + i * MINUTE_NS, START + (i + 1) * MINUTE_NS, 6000.0 + i, 6000.0 + i,
                  6000.0 + i, 6000.0 + i, 1, 1) for i in range(5)]


def databento_rig(store: Store, replay_settings: Settings, monkeypatch: pytest.MonkeyPatch) -> EngineRig:
    """A rig whose warm-up finds no Redis history and gets HISTORICAL from "Databento"."""
    rig = build_rig(store, replace(replay_settings, databento_api_key="db-test-key"))
    monkeypatch.setattr(rig.md, "_warmup_from_databento", lambda sym, tf, n: HISTORICAL[-n:])
    return rig


def start_warmed_on_databento(rig: EngineRig) -> None:
    rig.add_ticker(**TICKER)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")


def close_bars_4_and_5(rig: EngineRig) -> StrategyRunner:
    for i, price in ((4, 6004.0), (5, 6005.0), (6, 6006.0)):
        rig.push([bar_trade(i, price)])
    runner = rig.supervisor._runners[("ema", "/MES")]
    wait_until(lambda: bool(runner.status.last_bar) and runner.status.last_bar["start_ns"] == START + 5 * MINUTE_NS,
               what="bar 5")
    rig.wait_idle("ema", "/MES")
    return runner


def test_a_warm_up_bar_the_live_feed_publishes_again_is_not_fed_twice(
        real_store: Store, replay_settings: Settings, fed: FedBars, monkeypatch: pytest.MonkeyPatch) -> None:
    rig = databento_rig(real_store, replay_settings, monkeypatch)
    try:
        start_warmed_on_databento(rig)
        assert fed.per_strategy[-1] == [bar.start_ns for bar in HISTORICAL]
        close_bars_4_and_5(rig)
        assert fed.per_strategy[-1] == [START + i * MINUTE_NS for i in range(6)]  # bar 4 once
        log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
        assert "skipped: the strategy was already fed a bar starting then" in log_text
    finally:
        rig.supervisor.shutdown()


def test_the_warm_up_boundary_survives_a_restart(
        real_store: Store, replay_settings: Settings, fed: FedBars, monkeypatch: pytest.MonkeyPatch) -> None:
    first = databento_rig(real_store, replay_settings, monkeypatch)
    try:
        start_warmed_on_databento(first)
    finally:
        first.supervisor.shutdown()  # saved with the warm-up's last bar, before the live feed sent it

    restarted = databento_rig(real_store, replay_settings, monkeypatch)
    try:
        restarted.supervisor.resume()
        restarted.ready_runner("ema", "/MES")
        close_bars_4_and_5(restarted)
        assert fed.per_strategy[-1] == [START + 5 * MINUTE_NS]  # restored at bar 4: bar 4 not again
    finally:
        restarted.supervisor.shutdown()
