"""Warm from the first bar: a ticker started on the simulated feed is warmed up on the feed's
generated past before its first live bar, so that bar can already signal and trade; a ticker
moved to a longer timeframe warms up on the shorter bars already built."""
from __future__ import annotations

import math
from typing import Iterator

import pytest

from config.settings import Settings
from domain.market import Trade
from domain.orders import TASTYTRADE
from market_data.feeds import SimulatedFeed
from store.redis_store import Store
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, session_minute, wait_until

SECOND = 1_000_000_000
OPEN_BAR = session_minute("2024-07-02", 10, 0)  # 10:00 ET on a Tuesday: inside the CME session
EMA_9_21 = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                tastytrade_quantity=1, trend_line_1="EMA", period_1=9, trend_line_2="EMA", period_2=21)


class Clock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


@pytest.fixture
def simulated(real_store: Store, settings: Settings) -> Iterator[tuple[EngineRig, SimulatedFeed, Clock]]:
    """An engine on the simulated feed, whose walk the test advances on its own clock (the feed's
    trade thread would take a real minute per bar)."""
    clock = Clock(OPEN_BAR + 25 * SECOND)  # the ticker is started at 10:00:25
    feed = SimulatedFeed(settings.simulated_trades_per_second, seed=15)
    rig = build_rig(real_store, settings, time_ns=clock, source=feed)
    yield rig, feed, clock
    rig.supervisor.shutdown()


def crossing_close(fast: float, slow: float, fast_period: int, slow_period: int, tick: float) -> float:
    """A close two ticks beyond the one at which the EMAs would meet: the lines cross on it."""
    a, b = 2 / (fast_period + 1), 2 / (slow_period + 1)
    meet = (slow * (1 - b) - fast * (1 - a)) / (a - b)  # fast' == slow' for this close
    if fast > slow:
        return (math.floor(meet / tick) - 2) * tick
    return (math.ceil(meet / tick) + 2) * tick


def test_a_ticker_on_the_simulated_feed_is_warm_at_start_and_signals_on_its_first_live_bar(simulated) -> None:
    rig, feed, clock = simulated
    rig.add_ticker(**EMA_9_21)
    rig.supervisor.start_strategy("ema")
    runner = rig.ready_runner("ema", "/MES")

    status = rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]
    assert status["warmed_up"] is True
    assert status["indicators"]["fast"] is not None and status["indicators"]["slow"] is not None
    log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
    assert "warmed up on 22 bars (need 22)" in log_text

    # The first live bar (10:00, under way since the start): the walk, then a close through the lines.
    walk = [feed.next_trade("/MES", ts) for ts in range(clock.now_ns, OPEN_BAR + 59 * SECOND, SECOND // 20)]
    strategy = runner.strategy
    fast, slow = strategy.fast.value, strategy.slow.value
    assert fast is not None and slow is not None
    close = crossing_close(fast, slow, 9, 21, 0.25)
    side = "SHORT" if fast > slow else "LONG"
    rig.push([t for t in walk if t is not None] + [Trade("/MES", OPEN_BAR + 59 * SECOND, close, 1)])
    clock.now_ns = OPEN_BAR + MINUTE_NS + SECOND // 20
    rig.push([Trade("/MES", clock.now_ns, close, 1)])  # 10:01's first trade closes the 10:00 bar
    rig.wait_caught_up("ema", "/MES")

    assert runner.status.last_bar is not None and runner.status.last_bar["start_ns"] == OPEN_BAR
    assert runner.status.last_signal is not None and runner.status.last_signal.startswith(f"{side} (signal)")
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == (1 if side == "LONG" else -1),
               timeout=5.0, what="the paper order of the first signal")
    order = rig.orders.orders(strategy="ema", limit=1)[0]
    assert order.intent_reason == "signal" and order.state.value == "FILLED"


def test_moving_a_held_ticker_to_a_longer_timeframe_warms_it_on_the_shorter_bars(rig: EngineRig) -> None:
    ticker = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                  tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4,
                  stop_loss_ticks=40)
    rig.add_ticker(**ticker)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    closes = [100.0] * 5 + [100.0 + i for i in range(1, 36)]  # 10:00 .. 10:39, rising from 10:05
    for i, close in enumerate(closes):
        t0 = OPEN_BAR + i * MINUTE_NS
        first, last = Trade("/MES", t0 + SECOND, close - 0.25, 1), Trade("/MES", t0 + 30 * SECOND, close, 1)
        if i == 0:
            rig.push([first])
        else:  # its first trade closes the previous minute: wait for the thread to act on it
            rig.push_bar_and_wait("ema", [first], t0)
        rig.push([last])
    assert rig.position("ema", "/MES", TASTYTRADE) == 1  # held: the rise crossed the lines up

    config = rig.add_ticker(**{**ticker, "timeframe": "5Min"})
    rig.supervisor.ticker_changed(config)
    runner = rig.ready_runner("ema", "/MES")

    log_text = (rig.settings.log_dir / "ema" / "MES.log").read_text()
    # 10:35 is under way; the 1Min bars of 10:10 .. 10:34 resampled are the 5Min bars 10:10 .. 10:30.
    assert "warmed up on 5 bars (need 5)" in log_text
    assert runner.status.warmed_up is True
    assert runner.strategy.target.value == "LONG" and runner.strategy.stop_price is not None
    # The 5Min lines are those of the 5-minute closes, not of a fresh start.
    five_minute_closes = [closes[i + 4] for i in range(0, 35, 5)]  # each bucket's last 1Min close
    assert runner.strategy.fast.value == pytest.approx(_ema(five_minute_closes[-5:], 2))


def _ema(values: list[float], n: int) -> float:
    value = sum(values[:n]) / n
    for x in values[n:]:
        value += (x - value) * 2 / (n + 1)
    return value
