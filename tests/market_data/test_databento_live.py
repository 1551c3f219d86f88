"""Databento live feed offline, with the real SDK classes (tests/market_data/databento_fakes.py: a
`databento.Live` whose network calls are replaced while records and reconnects go through the
SDK's own dispatch, and the Historical HTTP gateway behind a requests adapter).

Sessions per dataset, also for a dataset first needed after the feed started; after a reconnect
the gap is backfilled from the live gateway's intraday replay before any later live trade is
emitted, de-duplicated by record identity (so a CME sweep's trades sharing one timestamp and
sequence all count); a failed backfill marks the bar as gapped."""
from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from config.timeframes import Timeframe
from market_data.databento_feed import DatabentoLiveFeed
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.databento_fakes import KEY, FakeLive, Market, market, ns  # noqa: F401 - fixture
from tests.market_data.helpers import wait_until

GLBX, EQUS = "GLBX.MDP3", "EQUS.MINI"
ONE_MIN = Timeframe.parse("1Min")


def ts(hms: str) -> int:
    return ns(f"2024-11-26T{hms}")


@pytest.fixture(autouse=True)
def _quiet_sdk_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="databento")


def _feed(market: Market) -> DatabentoLiveFeed:
    return DatabentoLiveFeed(KEY, live_factory=market.live_factory, clock_ns=market.clock, replay_timeout_s=5)


def _setup(store: Store, make_service: ServiceFactory, market: Market, symbols: tuple[str, ...] = ("/ES", "NVDA")) -> Any:
    market.now_ns = ts("14:59:59")  # the builders exist before the first bar starts
    svc = make_service(store, _feed(market), time_ns=market.clock)
    for symbol in symbols:
        svc.ensure(symbol, ONE_MIN)
    svc.start()
    datasets = {GLBX if symbol.startswith("/") else EQUS for symbol in symbols}
    assert wait_until(lambda: len(market.live_sessions()) == len(datasets))
    return svc


def _es(market: Market) -> FakeLive:
    [session] = market.live_sessions(GLBX)
    return session


def es_trade(market: Market, hms: str, price: float, size: int = 1, sequence: int = 1) -> Any:
    return market.trade(GLBX, "ESZ4", ts(hms), price, size, sequence=sequence)


def test_subscribes_per_dataset_with_front_month_codes(store: Store, make_service: ServiceFactory, market: Market) -> None:
    svc = _setup(store, make_service, market)
    subs = sorted((s.subscriptions[0]["dataset"], tuple(s.subscriptions[0]["symbols"]), s.subscriptions[0]["schema"],
                   s.subscriptions[0]["start"]) for s in market.live_sessions())
    # Equities from the consolidated EQUS.MINI, not Nasdaq's own prints (XNAS.ITCH).
    assert subs == [(EQUS, ("NVDA",), "trades", None), (GLBX, ("ESZ4",), "trades", None)]
    assert all(s.started for s in market.live_sessions())
    svc.ensure("SPX", ONE_MIN)  # no Databento index feed: not subscribed, no error
    svc.stop()
    assert all(s.stopped for s in market.live_sessions())


def test_a_dataset_first_needed_after_start_gets_its_own_session(store: Store, make_service: ServiceFactory,
                                                                   market: Market) -> None:
    svc = _setup(store, make_service, market, symbols=("/ES",))
    assert [s.subscriptions[0]["dataset"] for s in market.live_sessions()] == [GLBX]
    svc.ensure("NVDA", ONE_MIN)  # an equity ticker enabled while only futures stream
    [equities] = market.live_sessions(EQUS)
    assert equities.started and equities.subscriptions == [
        {"dataset": EQUS, "schema": "trades", "symbols": ["NVDA"], "stype_in": "raw_symbol", "start": None}]
    market.publish(EQUS, market.trade(EQUS, "NVDA", ts("15:00:05"), 181.25, 10))
    assert wait_until(lambda: svc.last_price("NVDA") == 181.25)
    svc.ensure("/MES", ONE_MIN)  # the futures session takes a second symbol without a second session
    assert [s.subscriptions[-1]["symbols"] for s in market.live_sessions(GLBX)] == [["MESZ4"]]


def test_gap_is_backfilled_from_the_replay_before_later_live_trades(store: Store, make_service: ServiceFactory,
                                                                   market: Market) -> None:
    market.replay_gate = threading.Event()  # the live record below arrives while the backfill is in flight
    svc = _setup(store, make_service, market)
    es = _es(market)
    market.publish(GLBX, es_trade(market, "15:00:10", 6001.0, sequence=1))
    market.publish(GLBX, es_trade(market, "15:00:20", 6002.0, sequence=2))
    es.drop()
    market.publish(GLBX, es_trade(market, "15:00:50", 6003.0, sequence=3))  # missed by the session
    market.publish(GLBX, es_trade(market, "15:01:30", 6004.0, sequence=4))
    market.now_ns = ts("15:02:30")
    es.reconnect()  # gap from the last ts_event seen (15:00:20) to the new session's start
    market.publish(GLBX, es_trade(market, "15:02:40", 6005.0, sequence=5))  # held until the backfill is done
    assert wait_until(lambda: len(market.replay_sessions()) == 1)
    assert wait_until(lambda: svc.counters.trades_accepted == 2)
    assert svc.read_bars("/ES", ONE_MIN, "0", 0) == []  # nothing past the gap yet
    market.now_ns = ts("15:02:45")
    market.replay_gate.set()
    assert wait_until(lambda: len(svc.history("/ES", ONE_MIN, 10)) == 2)
    bars = svc.history("/ES", ONE_MIN, 10)
    assert [(b.open, b.high, b.close, b.volume, b.gapped) for b in bars] == [
        (6001.0, 6003.0, 6003.0, 3, False), (6004.0, 6004.0, 6004.0, 1, False)]
    # The gap (newer than Historical's available end) comes from the replay alone, from a few
    # seconds before the last trade seen; the trade both the replay and the held live stream
    # carry (15:02:40) counts once.
    [replay] = market.replay_sessions()
    assert replay.subscriptions == [{"dataset": GLBX, "schema": "trades", "symbols": ["ESZ4"],
                                     "stype_in": "raw_symbol", "start": ts("15:00:15")}]
    assert replay.stopped and market.get_range_calls == []
    assert wait_until(lambda: svc.counters.trades_accepted == 5)
    assert svc.counters.late_trades == 0 and svc.counters.duplicates_dropped == 0
    status = svc.status()["feeds"]["databento"]
    assert status["state"] == "running" and status["backfills"][-1]["ok"] is True
    assert status["backfills"][-1]["trades"] == 3


def test_backfill_keeps_distinct_trades_that_share_the_last_timestamp(store: Store, make_service: ServiceFactory,
                                                                     market: Market) -> None:
    # A CME sweep: one aggressor matches several resting orders in one event, printed as trades
    # with one ts_event, ts_recv and sequence; two of them here even share price and size. The
    # connection drops after the first one arrived.
    svc = _setup(store, make_service, market)
    es = _es(market)
    sweep = ts("15:00:20")
    market.publish(GLBX, market.trade(GLBX, "ESZ4", sweep, 6000.00, 2, sequence=7))
    es.drop()
    for price, size in ((6000.00, 2), (6000.25, 1), (6000.50, 3)):
        market.publish(GLBX, market.trade(GLBX, "ESZ4", sweep, price, size, sequence=7))
    market.now_ns = ts("15:00:30")
    es.reconnect()
    assert wait_until(lambda: svc.status()["feeds"]["databento"]["backfills"] != [])
    market.now_ns = ts("15:01:05")
    market.publish(GLBX, es_trade(market, "15:01:05", 6001.0, sequence=8))
    assert wait_until(lambda: len(svc.history("/ES", ONE_MIN, 10)) == 1)
    [bar] = svc.history("/ES", ONE_MIN, 10)
    assert (bar.open, bar.high, bar.close, bar.volume, bar.trade_count, bar.gapped) == (6000.0, 6000.5, 6000.5, 8, 4,
                                                                                       False)
    assert svc.counters.trades_accepted == 5 and svc.counters.duplicates_dropped == 0


def test_failed_backfill_marks_bar_gapped(store: Store, make_service: ServiceFactory, market: Market) -> None:
    market.refuse_replay = "user is not entitled to replay this dataset"
    svc = _setup(store, make_service, market)
    es = _es(market)
    market.publish(GLBX, es_trade(market, "15:00:10", 6001.0, sequence=1))
    es.drop()
    market.now_ns = ts("15:00:40")
    es.reconnect()
    market.publish(GLBX, es_trade(market, "15:00:45", 6002.0, sequence=9))
    market.now_ns = ts("15:01:05")
    market.publish(GLBX, es_trade(market, "15:01:05", 6003.0, sequence=10))
    assert wait_until(lambda: len(svc.history("/ES", ONE_MIN, 10)) == 1)
    bar = svc.history("/ES", ONE_MIN, 10)[0]
    assert bar.gapped is True and bar.volume == 2
    backfill = svc.status()["feeds"]["databento"]["backfills"][-1]
    assert backfill["ok"] is False and "not entitled to replay" in backfill["error"]


def test_bar_timer_waits_for_a_backfill_in_flight(store: Store, make_service: ServiceFactory, market: Market) -> None:
    # The wall clock passes the bar's end while the gap inside that bar is still being fetched:
    # closing it now would publish a bar without the gap's trades and without the gapped mark.
    market.replay_gate = threading.Event()
    market.refuse_replay = "gateway unavailable"
    svc = _setup(store, make_service, market)
    es = _es(market)
    market.publish(GLBX, es_trade(market, "15:00:10", 6001.0, sequence=1))
    assert wait_until(lambda: svc.counters.trades_accepted == 1)
    es.drop()
    market.now_ns = ts("15:00:40")
    es.reconnect()
    market.publish(GLBX, es_trade(market, "15:00:45", 6002.0, sequence=9))  # held until the backfill is done
    market.now_ns = ts("15:01:30")  # well past the bar's end and the timer's grace
    svc._wake.set()  # the writer makes its timer pass now
    time.sleep(0.3)
    assert svc.history("/ES", ONE_MIN, 10) == []  # not closed while its gap is being fetched
    market.replay_gate.set()
    assert wait_until(lambda: len(svc.history("/ES", ONE_MIN, 10)) == 1)
    bar = svc.history("/ES", ONE_MIN, 10)[0]
    assert bar.gapped is True and bar.volume == 2 and bar.close == 6002.0


def test_undefined_timestamp_and_unknown_instrument_skipped(market: Market) -> None:
    import databento_dbn as dbn

    feed = _feed(market)
    session = market.live_factory(KEY)
    session.add_callback(lambda record: feed.on_record(record, GLBX))
    session.subscribe(dataset=GLBX, schema="trades", symbols=["ESZ4"])
    session.start()  # announces ESZ4's instrument id
    good = es_trade(market, "15:00:00", 6000.0)
    assert feed.to_trade(good, GLBX) is not None
    assert feed.to_trade(market.trade(GLBX, "ESZ4", dbn.UNDEF_TIMESTAMP, 6000.0), GLBX) is None
    assert feed.to_trade(market.trade(GLBX, "NQZ4", ts("15:00:00"), 21000.0), GLBX) is None  # never announced
    malformed = dbn.TradeMsg(publisher_id=1, instrument_id=good.instrument_id, ts_event=ts("15:00:00"),
                             price=dbn.UNDEF_PRICE, size=1, action=dbn.Action.TRADE, side=dbn.Side.BID, depth=0,
                             ts_recv=ts("15:00:00"), ts_in_delta=0, sequence=1, flags=0)
    assert feed.to_trade(malformed, GLBX) is None
    c = feed.state.counters
    assert (c.skipped_undefined_ts, c.skipped_unknown_symbol, c.skipped_malformed) == (1, 1, 1)
