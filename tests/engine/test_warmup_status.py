"""`warmed_up` in the status (/api/strategies) says whether every indicator the ticker's rules use
is defined - after a warm-up, a resume, or live bars alike - and a held position keeps its exits
armed while the lines warm up."""
from __future__ import annotations

import pytest

from config.settings import Settings
from domain.market import Trade
from domain.orders import TASTYTRADE
from store.redis_store import Store
from tests.engine.conftest import EngineRig, build_rig, wait_until
from tests.engine.test_position_resume import EMA_TICKER, START, _long_ema
from tests.engine.test_supertrend_zeroday import ST_CLOSES, bar_trades, feed_bars

HOUR_NS = 3600 * 1_000_000_000
EMA_9_21 = dict(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                tastytrade_quantity=1, trend_line_1="EMA", period_1=9, trend_line_2="EMA", period_2=21)


def warmed_up(rig: EngineRig, strategy: str, symbol: str = "/MES") -> bool:
    return rig.supervisor.strategies_status()[strategy]["tickers"][symbol]["warmed_up"]


def test_a_resume_with_no_bars_behind_it_is_not_warmed_up(real_store: Store, replay_settings: Settings) -> None:
    first = build_rig(real_store, replay_settings)
    try:
        first.add_ticker(**EMA_9_21)
        first.supervisor.start_strategy("ema")
        first.ready_runner("ema", "/MES")  # no history anywhere: 0 of 22 bars
        assert warmed_up(first, "ema") is False
    finally:
        first.supervisor.shutdown()
    restarted = build_rig(real_store, replay_settings)
    try:
        restarted.supervisor.resume()
        runner = restarted.ready_runner("ema", "/MES")
        assert "resumed from saved state" in (restarted.settings.log_dir / "ema" / "MES.log").read_text()
        assert runner.strategy.fast.value is None
        assert warmed_up(restarted, "ema") is False
    finally:
        restarted.supervisor.shutdown()


def test_supertrend_is_warmed_up_once_live_bars_define_its_indicators(rig: EngineRig) -> None:
    rig.add_ticker(strategy="supertrend", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1)
    rig.supervisor.start_strategy("supertrend")
    rig.ready_runner("supertrend", "/MES")
    feed_bars(rig, "supertrend", "/MES", START, ST_CLOSES[:21], spread=0.25)  # 20 bars closed
    indicators = rig.supervisor.strategies_status()["supertrend"]["tickers"]["/MES"]["indicators"]
    assert indicators["s"] is None and warmed_up(rig, "supertrend") is False  # EMA 21 needs a 21st bar
    feed_bars(rig, "supertrend", "/MES", START + 21 * 60 * 1_000_000_000, ST_CLOSES[21:23], spread=0.25,
              first_open=ST_CLOSES[20])  # bars 20 and 21 close
    indicators = rig.supervisor.strategies_status()["supertrend"]["tickers"]["/MES"]["indicators"]
    assert None not in (indicators["sf"], indicators["f"], indicators["s"], indicators["supertrend"])
    assert warmed_up(rig, "supertrend") is True


def _move_to_hourly(rig: EngineRig, **changes: object):
    """Edit the held ticker to 1Hour bars: nothing of that timeframe exists (the 1Min bars cover
    ten minutes), so its lines warm up on live bars."""
    config = rig.add_ticker(**{**EMA_TICKER, "timeframe": "1Hour", **changes})
    rig.supervisor.ticker_changed(config)
    runner = rig.ready_runner("ema", "/MES")
    assert "warmed up on 0 bars" in (rig.settings.log_dir / "ema" / "MES.log").read_text()
    return runner


def _hourly_bar(rig: EngineRig, hour: int, close: float) -> None:
    """Hour `hour` after 10:00 ET: its first trade closes the previous hour's bar."""
    trades = bar_trades("/MES", START + hour * HOUR_NS, close - 1.0, close, spread=0.5)
    if hour == 1:
        rig.push(trades)
        return
    rig.push_bar_and_wait("ema", trades[:1], START + hour * HOUR_NS)
    rig.push(trades[1:])


def test_a_held_position_keeps_its_tick_stop_armed_while_the_lines_warm_up(rig: EngineRig) -> None:
    avg = _long_ema(rig)
    runner = _move_to_hourly(rig, stop_loss_ticks=8)
    assert warmed_up(rig, "ema") is False
    assert runner.strategy.stop_price == pytest.approx(avg - 8 * 0.25)  # armed before any line is defined

    for hour, close in enumerate([104.0, 105.0, 106.0, 107.0], start=1):
        _hourly_bar(rig, hour, close)
    assert warmed_up(rig, "ema") is False  # 3 hourly bars closed: EMA 4 is not defined yet
    _hourly_bar(rig, 5, 108.0)
    assert warmed_up(rig, "ema") is True  # the 4th bar defines it

    rig.push([Trade("/MES", START + 5 * HOUR_NS + 50 * 1_000_000_000, avg - 2.25, 1)])
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == 0, what="the stop exit")
    assert rig.orders.orders(limit=1)[0].intent_reason == "stop"


def test_a_held_position_gets_its_atr_stop_as_soon_as_live_bars_define_the_atr(rig: EngineRig) -> None:
    avg = _long_ema(rig)
    runner = _move_to_hourly(rig, stop_loss_atr=1.5, atr_period=3)
    assert runner.strategy.stop_price is None  # no ATR yet: nothing to measure the stop with

    for hour, close in enumerate([104.0, 105.0, 106.0, 107.0, 108.0], start=1):
        _hourly_bar(rig, hour, close)  # 4 bars closed: ATR(3) is defined from the 4th
    atr = runner.strategy.atr.value
    assert atr is not None
    assert runner.strategy.stop_price == pytest.approx(avg - 1.5 * atr)
    assert rig.supervisor.strategies_status()["ema"]["tickers"]["/MES"]["indicators"]["stop"] == pytest.approx(
        avg - 1.5 * atr)

    rig.push([Trade("/MES", START + 5 * HOUR_NS + 50 * 1_000_000_000, avg - 1.5 * atr - 0.25, 1)])
    wait_until(lambda: rig.position("ema", "/MES", TASTYTRADE) == 0, what="the ATR stop exit")
    assert rig.orders.orders(limit=1)[0].intent_reason == "stop"
