"""The simulated feed (the default source): random-walk trades at each instrument's tick size for
every catalog instrument; SPX from a broker quote callable when given; stops promptly."""
from __future__ import annotations

from decimal import Decimal

from config.instruments import CATALOG
from config.settings import Settings
from config.timeframes import Timeframe
from domain.market import Trade
from market_data.feeds import SimulatedFeed
from market_data.service import build_feed
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import wait_until


def test_default_source_is_simulated(settings: Settings) -> None:
    assert isinstance(build_feed(settings), SimulatedFeed)


def test_prices_on_tick_grid_for_every_instrument() -> None:
    feed = SimulatedFeed(20.0, seed=7)
    for symbol, instrument in CATALOG.items():
        prices = [t.price for t in (feed.next_trade(symbol, i) for i in range(200)) if t is not None]
        assert len(prices) == 200
        tick = instrument.tick_size
        assert all((Decimal(str(p)) / tick) % 1 == 0 for p in prices), symbol
        typical = float(instrument.typical_price)
        assert all(0.8 * typical < p < 1.2 * typical for p in prices), symbol
        assert len(set(prices)) > 1  # it moves


def test_spx_from_quote_source() -> None:
    feed = SimulatedFeed(20.0, symbols=["SPX"], quote_sources={"SPX": lambda: 6012.345})
    trade = feed.next_trade("SPX", 1)
    assert trade == Trade("SPX", 1, 6012.35, 0)  # rounded to the index tick; an index has no volume
    broken = SimulatedFeed(20.0, symbols=["SPX"], quote_sources={"SPX": lambda: None})
    assert broken.next_trade("SPX", 1) is None


def test_simulated_bars_reach_a_blocked_consumer(real_store: Store, make_service: ServiceFactory) -> None:
    # Real Redis only: the feed's writer thread must wake this thread's blocked XREAD, and
    # fakeredis misses such cross-thread wake-ups once a second FakeRedis exists in the process.
    feed = SimulatedFeed(100.0, seed=1)
    svc = make_service(real_store, feed)
    tf = Timeframe.parse("5t")
    svc.ensure("/MES", tf)
    svc.start()
    got = svc.read_bars("/MES", tf, "0", block_ms=3000)  # XREAD BLOCK, no polling
    assert got and got[0][1].trade_count == 5 and got[0][1].symbol == "/MES"
    assert wait_until(lambda: all(svc.last_price(s) is not None for s in CATALOG), 3)
    svc.stop(timeout=2)
    assert feed._thread is not None and not feed._thread.is_alive()
    assert svc._writer is not None and not svc._writer.is_alive()
    assert svc.status()["feeds"]["simulated"]["state"] == "stopped"


def test_databento_source_takes_spx_from_the_index_feed(settings: Settings) -> None:
    from config.settings import MarketDataSource
    from market_data.databento_feed import DatabentoLiveFeed
    from market_data.feeds import CompositeFeed

    quotes = {"SPX": lambda: 6000.0}
    feed = build_feed(settings.with_overrides(market_data_source=MarketDataSource.DATABENTO,
                                              databento_api_key="db-" + "k" * 29), quotes)
    assert isinstance(feed, CompositeFeed)
    databento, index = feed.feeds
    assert isinstance(databento, DatabentoLiveFeed) and isinstance(index, SimulatedFeed)
    feed.subscribe("SPX")
    feed.subscribe("/MES")
    assert index.status()["subscribed"] == ["SPX"] and databento.status()["subscribed"] == ["/MES"]
    assert index.next_trade("SPX", 1) == Trade("SPX", 1, 6000.0, 0)
    assert set(feed.status()["feeds"]) == {"databento", "simulated"}
