"""`start_behavior`: what a ticker does on its first start when the book holds nothing.

`wait_for_signal` (the default) stays flat until a live signal; `join_current` takes the position
its warmed-up rules hold, at once when the session is open and the history reaches the present,
else at its first live bar. Either way the book is the truth the strategy follows afterwards."""
from __future__ import annotations

from typing import Iterator

import pytest

from config.settings import Settings
from domain.market import Trade
from domain.orders import TASTYTRADE
from domain.tickers import StartBehavior, TickerConfig, TickerValidationError
from market_data.feeds import SimulatedFeed
from store.redis_store import Store
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, session_minute, wait_until

SECOND = 1_000_000_000
OPEN_BAR = session_minute("2024-07-02", 10, 0)  # 10:00 ET on a Tuesday: inside the CME session
JOIN_9_21 = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                 tastytrade_quantity=1, trend_line_1="EMA", period_1=9, trend_line_2="EMA", period_2=21,
                 start_behavior="join_current")


class Clock:
    def __init__(self, now_ns: int) -> None:
        self.now_ns = now_ns

    def __call__(self) -> int:
        return self.now_ns


def _engine(store: Store, settings: Settings, now_ns: int, seed: int) -> tuple[EngineRig, SimulatedFeed, Clock]:
    clock = Clock(now_ns)
    feed = SimulatedFeed(settings.simulated_trades_per_second, seed=seed)
    return build_rig(store, settings, time_ns=clock, source=feed), feed, clock


def _join_order(rig: EngineRig):
    (order,) = [o for o in rig.orders.orders(strategy="ema", limit=10) if o.leg != "stop"]
    assert order.intent_reason == "join"
    return order


@pytest.fixture
def in_session(real_store: Store, settings: Settings) -> Iterator[tuple[EngineRig, SimulatedFeed, Clock]]:
    rig, feed, clock = _engine(real_store, settings, OPEN_BAR + 25 * SECOND, seed=15)
    trade = feed.next_trade("/MES", OPEN_BAR + 20 * SECOND)  # the feed has printed (the paper broker's price)
    assert trade is not None
    rig.push([trade])
    yield rig, feed, clock
    rig.supervisor.shutdown()


def test_join_current_takes_the_side_its_rules_hold_at_once_and_arms_its_exits_from_the_fill(in_session) -> None:
    rig, _, _ = in_session
    rig.add_ticker(**JOIN_9_21, stop_loss_ticks=40)
    rig.supervisor.start_strategy("ema")
    runner = rig.ready_runner("ema", "/MES")

    strategy = runner.strategy
    side = strategy.target
    assert side.value in ("LONG", "SHORT")
    # The rules' side after 500 warm-up bars is the side of the lines now.
    assert (strategy.fast.value > strategy.slow.value) == (side.value == "LONG")
    want = 1 if side.value == "LONG" else -1
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == want, timeout=10.0, what="the join order")
    order = _join_order(rig)
    assert order.state.value == "FILLED"
    assert runner.status.last_signal is not None and runner.status.last_signal.startswith(f"{side.value} (join)")
    # The stop is measured from the fill, not from the history bar where the lines crossed.
    fill = float(rig.orders.position("ema", "/MES", TASTYTRADE).avg_price)
    assert strategy.entry_price == pytest.approx(fill)
    assert strategy.stop_price == pytest.approx(fill - want * 40 * 0.25)
    assert runner.status.divergence is None


def test_join_current_sends_nothing_again_when_restarted(in_session) -> None:
    rig, _, _ = in_session
    rig.add_ticker(**JOIN_9_21)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) != 0, timeout=10.0, what="the join order")
    rig.supervisor.stop_strategy("ema")
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    entries = [o for o in rig.orders.orders(strategy="ema", limit=10) if o.leg != "stop"]
    assert len(entries) == 1  # resumed from its saved state


def test_wait_for_signal_stays_flat_at_start(in_session) -> None:
    rig, _, _ = in_session
    rig.add_ticker(**{**JOIN_9_21, "start_behavior": "wait_for_signal"})
    rig.supervisor.start_strategy("ema")
    runner = rig.ready_runner("ema", "/MES")
    assert runner.status.warmed_up is True
    assert runner.strategy.target.value == "FLAT"
    assert rig.orders.orders(strategy="ema", limit=10) == []


def test_a_join_outside_the_session_waits_for_the_first_live_bar(real_store: Store, settings: Settings) -> None:
    # Started at 17:30 ET on a Sunday: CME opens at 18:00.
    sunday = session_minute("2024-07-07", 17, 30)
    rig, feed, clock = _engine(real_store, settings, sunday, seed=4)
    try:
        rig.add_ticker(**JOIN_9_21)
        rig.supervisor.start_strategy("ema")
        runner = rig.ready_runner("ema", "/MES")
        side = runner.strategy.target
        assert side.value in ("LONG", "SHORT")
        assert rig.orders.orders(strategy="ema", limit=10) == []
        assert runner.status.divergence is None  # the book is expected flat until the join is sent
        # 18:00's bar, at the last close (no cross), then 18:01's first trade closes it.
        open_bar = session_minute("2024-07-07", 18, 0)
        price = runner.strategy.last_close
        clock.now_ns = open_bar + MINUTE_NS + SECOND
        rig.push([Trade("/MES", open_bar + SECOND, price, 1), Trade("/MES", open_bar + MINUTE_NS + SECOND // 2, price, 1)])
        want = 1 if side.value == "LONG" else -1
        wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == want, timeout=10.0, what="the join at 18:00's bar")
        assert _join_order(rig).event_ts_ns == open_bar + MINUTE_NS
    finally:
        rig.supervisor.shutdown()


def test_start_behavior_is_validated_and_kept_out_of_the_stored_config_at_its_default() -> None:
    base = {k: v for k, v in JOIN_9_21.items() if k != "start_behavior"}
    assert TickerConfig.from_payload(base).start_behavior is StartBehavior.WAIT_FOR_SIGNAL
    assert "start_behavior" not in TickerConfig.from_payload(base).to_json()
    joined = TickerConfig.from_payload({**base, "start_behavior": "JOIN_current"})
    assert joined.start_behavior is StartBehavior.JOIN_CURRENT
    assert TickerConfig.from_json(joined.to_json()) == joined
    # get-ticker's params show it when chosen, so a dashboard save without it keeps it
    assert joined.optional_fields()["start_behavior"] == "join_current"
    assert "start_behavior" not in TickerConfig.from_payload(base).optional_fields()
    assert joined.kept_by_update({"timeframe": "5Min"})["start_behavior"] == "join_current"
    with pytest.raises(TickerValidationError) as bad:
        TickerConfig.from_payload({**base, "start_behavior": "now"})
    assert bad.value.field == "start_behavior"
    zeroday = dict(strategy="zeroday", symbol="SPX", timeframe="1Min", trade_enabled=True, schwab_quantity=1,
                   tastytrade_quantity=0, period_1=9, period_2=21, start_behavior="join_current")
    with pytest.raises(TickerValidationError) as refused:
        TickerConfig.from_payload(zeroday)
    assert refused.value.field == "start_behavior"
