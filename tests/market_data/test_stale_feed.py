"""A feed that goes silent during open market is flagged stale in status() after
settings.stale_feed_seconds; outside market hours silence is normal."""
from __future__ import annotations

import pandas as pd

from config.settings import Settings
from config.timeframes import Timeframe
from domain.market import Trade
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import ManualFeed, wait_until


class Clock:
    def __init__(self, text: str) -> None:
        self.now = pd.Timestamp(text, tz="UTC").timestamp()

    def __call__(self) -> float:
        return self.now


def test_stale_after_silence_in_open_market(fake_store: Store, settings: Settings, make_service: ServiceFactory) -> None:
    clock = Clock("2024-11-26 15:00:00")  # CME open (Tuesday)
    feed = ManualFeed(realtime=True)
    svc = make_service(fake_store, feed, settings=settings.with_overrides(stale_feed_seconds=30.0), wall_clock=clock)
    svc.ensure("/MES", Timeframe.parse("512t"))
    svc.start()
    assert svc.status()["symbols"]["/MES"]["stale"] is False
    clock.now += 31
    status = svc.status()
    assert status["symbols"]["/MES"]["stale"] is True
    assert status["feeds"]["manual"]["stale"] is True
    assert status["feeds"]["manual"]["state"] == "running"
    feed.push(Trade("/MES", int(clock.now * 1e9), 6000.0, 1))
    assert wait_until(lambda: svc.status()["symbols"]["/MES"]["last_trade_ns"] is not None)
    assert svc.status()["symbols"]["/MES"]["stale"] is False
    clock.now += 29
    assert svc.status()["symbols"]["/MES"]["stale"] is False
    clock.now += 2
    assert svc.status()["symbols"]["/MES"]["stale"] is True


def test_silence_while_market_closed_is_not_stale(fake_store: Store, make_service: ServiceFactory) -> None:
    clock = Clock("2024-11-30 15:00:00")  # Saturday
    svc = make_service(fake_store, ManualFeed(realtime=True), wall_clock=clock)
    svc.ensure("/MES", Timeframe.parse("1Min"))
    svc.start()
    clock.now += 3600
    status = svc.status()["symbols"]["/MES"]
    assert status["market_open"] is False and status["stale"] is False
