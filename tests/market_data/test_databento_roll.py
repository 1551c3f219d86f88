"""The live feed follows the futures roll on New York dates (config/symbology.py: from the second
Thursday of the expiry month the book trades the next contract): the next contract is subscribed
an hour before the roll moment, and a future's trades are the ones of the contract the book
trades at the trade's own time. Fakes: tests/market_data/databento_fakes.py."""
from __future__ import annotations

from config.symbology import contract_key_at
from config.timeframes import Timeframe
from market_data.databento_feed import ROLL_LEAD_NS, DatabentoLiveFeed
from market_data.service import MarketDataService
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.databento_fakes import KEY, NS, Market, market, ns  # noqa: F401 - fixture
from tests.market_data.helpers import wait_until

GLBX = "GLBX.MDP3"
ROLL = ns("2024-12-12T00:00:00-05:00")  # ESZ4 -> ESH5: New York midnight starting Thursday 2024-12-12


def _start(store: Store, make_service: ServiceFactory, market: Market) -> tuple[MarketDataService, DatabentoLiveFeed]:
    feed = DatabentoLiveFeed(KEY, live_factory=market.live_factory, clock_ns=market.clock, replay_timeout_s=5)
    svc = make_service(store, feed, time_ns=market.clock)
    svc.ensure("/ES", Timeframe.parse("1Min"))
    svc.start()
    assert wait_until(lambda: len(market.live_sessions(GLBX)) == 1)
    return svc, feed


def test_trades_switch_to_the_new_front_month_at_the_new_york_roll_moment(store: Store, make_service: ServiceFactory,
                                                                        market: Market) -> None:
    # 23:30 New York on Wednesday is already Thursday in UTC: the book still trades December.
    market.now_ns = ROLL - 30 * 60 * NS
    svc, feed = _start(store, make_service, market)
    [session] = market.live_sessions(GLBX)
    assert session.subscriptions[0]["symbols"] == ["ESH5", "ESZ4"]  # March already streams before the roll
    prints = [("ESZ4", ROLL - NS, 6000.0), ("ESH5", ROLL - NS, 6060.0),  # the last second of December
              ("ESZ4", ROLL + NS, 6001.0), ("ESH5", ROLL + NS, 6061.0)]  # the first second of March
    for raw, at, price in prints:
        market.now_ns = at
        market.publish(GLBX, market.trade(GLBX, raw, at, price))
    assert wait_until(lambda: store.redis.xlen(svc.trades_key("/ES")) == 2)
    trades = [t for _id, t in store.redis.xrange(svc.trades_key("/ES"))]
    assert [(int(t["t"]), float(t["p"])) for t in trades] == [(ROLL - NS, 6000.0), (ROLL + NS, 6061.0)]
    assert [contract_key_at("/ES", int(t["t"])) for t in trades] == ["/ESZ24", "/ESH25"]  # what the book trades
    status = svc.status()["feeds"]["databento"]
    assert status["skipped_other_contract"] == 2 and status["contracts"] == {"/ES": "/ESH25"}


def test_the_next_contract_is_subscribed_an_hour_before_the_roll(store: Store, make_service: ServiceFactory,
                                                                 market: Market) -> None:
    market.now_ns = ROLL - 36 * 3600 * NS  # Tuesday noon New York
    svc, feed = _start(store, make_service, market)
    [session] = market.live_sessions(GLBX)
    assert [s["symbols"] for s in session.subscriptions] == [["ESZ4"]]
    assert feed.next_roll_check_ns() == ROLL - ROLL_LEAD_NS  # when the session loop wakes next
    market.now_ns = ROLL - ROLL_LEAD_NS
    feed.recheck()  # the loop's timer, without waiting 35 hours for it
    assert wait_until(lambda: len(session.subscriptions) == 2)
    assert session.subscriptions[1] == {"dataset": GLBX, "schema": "trades", "symbols": ["ESH5"],
                                        "stype_in": "raw_symbol", "start": None}
    assert len(market.live_sessions(GLBX)) == 1  # the same session takes it
    assert feed.next_roll_check_ns() == ns("2025-03-13T00:00:00-04:00") - ROLL_LEAD_NS  # the March roll
    market.now_ns = ROLL + NS
    market.publish(GLBX, market.trade(GLBX, "ESH5", ROLL + NS, 6061.0))
    assert wait_until(lambda: svc.last_price("/ES") == 6061.0)
