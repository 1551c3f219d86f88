"""Housekeeping and health: stale-feed notes (session-aware), the metrics callbacks
(bar -> order latency, restarts) and thread liveness."""
from __future__ import annotations

from datetime import datetime, timezone

from domain.market import Trade
from tests.engine.conftest import MINUTE_NS, build_rig, wait_until
from tests.engine.test_supertrend_zeroday import TestClock

START = 1719928800 * 1_000_000_000  # 2024-07-02 14:00 UTC, Tuesday, CME open
SATURDAY_NOON = int(datetime(2024, 7, 6, 12, tzinfo=timezone.utc).timestamp()) * 1_000_000_000
EMA = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
           tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)


def _housekeep(rig, runner, clock: TestClock) -> None:
    rig.supervisor.housekeeping_now("ema")
    expected = datetime.fromtimestamp(clock.now_ns / 1e9, timezone.utc).isoformat()
    wait_until(lambda: runner.status.last_housekeeping == expected, what="housekeeping")
    rig.wait_idle("ema", "/MES")


def test_stale_feed_note_only_while_the_session_is_open(real_store, replay_settings) -> None:
    clock = TestClock(START)
    rig = build_rig(real_store, replay_settings, time_ns=clock)
    try:
        rig.add_ticker(**EMA)
        rig.supervisor.start_strategy("ema")
        runner = rig.supervisor._runners[("ema", "/MES")]
        clock.now_ns = START + 119 * 1_000_000_000  # < 2 x 1 min without a bar: fine
        _housekeep(rig, runner, clock)
        assert runner.status.stale_feed is None
        clock.now_ns = START + 121 * 1_000_000_000
        _housekeep(rig, runner, clock)
        assert runner.status.stale_feed and "no bar for 121s" in runner.status.stale_feed
        assert rig.supervisor.health()["stale_feed"] == ["ema:/MES"]
        assert rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]["stale_feed"]
        # A bar arrives: the note clears.
        rig.push([Trade("/MES", START + 1, 5000.0, 1)])
        rig.push_bar_and_wait("ema", [Trade("/MES", START + MINUTE_NS + 1, 5000.25, 1)], START + MINUTE_NS)
        assert runner.status.stale_feed is None
        # Weekend: days without bars are not a stale feed (CME closed).
        clock.now_ns = SATURDAY_NOON
        _housekeep(rig, runner, clock)
        assert runner.status.stale_feed is None
        assert rig.supervisor.health()["stale_feed"] == []
    finally:
        rig.supervisor.shutdown()


def test_callbacks_latency_restart_and_liveness(real_store, replay_settings, monkeypatch) -> None:
    latencies: list[tuple[str, str, float]] = []
    restarts: list[tuple[str, str]] = []
    rig = build_rig(real_store, replay_settings,
                    on_bar_to_order=lambda s, sym, sec: latencies.append((s, sym, sec)),
                    on_restart=lambda s, sym: restarts.append((s, sym)))
    try:
        rig.add_ticker(**EMA)
        rig.supervisor.start_strategy("ema")
        runner = rig.supervisor._runners[("ema", "/MES")]
        assert rig.supervisor.health() == {"threads": 1, "alive": 1, "dead": [], "stale_feed": [], "restarts": 0}

        calls = {"n": 0}
        original = runner.strategy.on_bar

        def flaky(bar):
            calls["n"] += 1
            if calls["n"] == 1:
                raise RuntimeError("boom")
            return original(bar)

        monkeypatch.setattr(runner.strategy, "on_bar", flaky)
        closes = [100.0] * 5 + [101.0, 102.0, 103.0]
        for i, close in enumerate(closes):
            t = Trade("/MES", START + i * MINUTE_NS + 1, close, 1)
            if i == 0:
                rig.push([t])
            elif i == 1:
                rig.push([t])  # completes bar 0 -> crash -> restart (replays bar 0 after the backoff)
                wait_until(lambda: restarts == [("ema", "/MES")], what="on_restart")
                wait_until(lambda: runner.status.last_bar is not None, timeout=5.0, what="bar 0 after restart")
            else:
                rig.push_bar_and_wait("ema", [t], START + i * MINUTE_NS)
        assert rig.position("ema", "/MES", "tastytrade") == 1  # the bullish cross traded
        assert len(latencies) == 1
        strategy, symbol, seconds = latencies[0]
        assert (strategy, symbol) == ("ema", "/MES") and 0 < seconds < 1.0
        assert rig.supervisor.health()["restarts"] == 1

        # A thread that ended shows as dead in health and not alive in status.
        runner._stop.set()
        runner.housekeeping_now()
        wait_until(lambda: not runner.is_alive(), what="thread exit")
        health = rig.supervisor.health()
        assert health["dead"] == ["ema:/MES"] and health["alive"] == 0
        assert rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]["alive"] is False
    finally:
        rig.supervisor.shutdown()


def test_no_stale_feed_note_right_after_the_session_opens(real_store, replay_settings) -> None:
    # Tuesday 2024-07-02: the CME session closes at 17:00 ET (21:00 UTC) and reopens at 18:00 ET.
    reopen = START + 8 * 60 * MINUTE_NS  # 22:00 UTC
    clock = TestClock(reopen - 50 * MINUTE_NS)  # started during the daily break: no bars
    rig = build_rig(real_store, replay_settings, time_ns=clock)
    try:
        rig.add_ticker(**EMA)
        rig.supervisor.start_strategy("ema")
        runner = rig.supervisor._runners[("ema", "/MES")]
        clock.now_ns = reopen + 10 * 1_000_000_000  # 10 s into the session: no bar could have closed yet
        _housekeep(rig, runner, clock)
        assert runner.status.stale_feed is None
        clock.now_ns = reopen + 121 * 1_000_000_000  # 2 bar-lengths into the session without a bar
        _housekeep(rig, runner, clock)
        assert runner.status.stale_feed and "no bar for 121s" in runner.status.stale_feed
    finally:
        rig.supervisor.shutdown()
