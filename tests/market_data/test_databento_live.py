"""Databento live feed offline, with the real SDK classes: a `databento.Live` whose network calls are
replaced (subscribe/start/stop) while records and reconnects go through the SDK's own dispatch, and
a `databento.Historical` whose get_range returns real DBN bytes. After a reconnect the gap is
backfilled before any later live trade is emitted; a failed backfill marks the bar as gapped."""
from __future__ import annotations

import threading
import time
from datetime import date
from typing import Any

import databento as db
import pandas as pd
import pytest

from config.timeframes import Timeframe
from market_data.databento_feed import DatabentoLiveFeed, historical_bars
from store.redis_store import Store
from tests.market_data import dbn_records as rec
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import wait_until

KEY = "db-" + "x" * 29


def ts(hms: str) -> int:
    return int(pd.Timestamp(f"2024-11-26T{hms}Z").value)


class OfflineLive(db.Live):
    """The real client minus the TCP connection."""

    def __init__(self, key: str) -> None:
        super().__init__(key=key, reconnect_policy=db.ReconnectPolicy.RECONNECT)
        self.subscriptions: list[dict[str, Any]] = []
        self.started = self.stopped = False

    def subscribe(self, dataset: Any, schema: Any, symbols: Any = "ALL_SYMBOLS", stype_in: Any = "raw_symbol",
                  start: Any = None, snapshot: bool = False) -> int:
        self.subscriptions.append({"dataset": dataset, "schema": schema, "symbols": list(symbols), "stype_in": stype_in})
        return len(self.subscriptions)

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.stopped = True

    def deliver(self, record: Any) -> None:
        for callback in self._session._user_callbacks:  # the SDK's own callback wrappers
            callback.call(record)

    def drop_and_reconnect(self, start_ns: int, end_ns: int) -> None:
        self._session._dispatch_reconnect_callbacks(gap_start=pd.Timestamp(start_ns, tz="UTC"),
                                                    gap_end=pd.Timestamp(end_ns, tz="UTC"))


class Clock:
    def __init__(self, ns: int) -> None:
        self.ns = ns

    def __call__(self) -> int:
        return self.ns


def _setup(store: Store, make_service: ServiceFactory, get_range: Any) -> tuple[Any, dict[str, OfflineLive], Clock]:
    clients: dict[str, OfflineLive] = {}

    def live_factory(key: str) -> OfflineLive:
        client = OfflineLive(key)
        clients[str(len(clients))] = client
        return client

    def historical_factory(key: str) -> db.Historical:
        hist = db.Historical(key=key)
        hist.timeseries.get_range = get_range  # type: ignore[method-assign]
        return hist

    feed = DatabentoLiveFeed(KEY, live_factory=live_factory, historical_factory=historical_factory,
                             today=lambda: date(2024, 11, 26))
    clock = Clock(ts("14:59:59"))  # the builders exist before the first bar starts
    svc = make_service(store, feed, time_ns=clock)
    svc.ensure("/ES", Timeframe.parse("1Min"))
    svc.ensure("NVDA", Timeframe.parse("1Min"))
    svc.start()
    assert wait_until(lambda: len(clients) == 2)
    return svc, clients, clock


def _es_client(clients: dict[str, OfflineLive]) -> OfflineLive:
    return next(c for c in clients.values() if c.subscriptions[0]["dataset"] == "GLBX.MDP3")


def test_subscribes_per_dataset_with_front_month_codes(store: Store, make_service: ServiceFactory) -> None:
    svc, clients, _clock = _setup(store, make_service, lambda **kw: None)
    subs = sorted((c.subscriptions[0]["dataset"], tuple(c.subscriptions[0]["symbols"]), c.subscriptions[0]["schema"])
                  for c in clients.values())
    assert subs == [("GLBX.MDP3", ("ESZ4",), "trades"), ("XNAS.ITCH", ("NVDA",), "trades")]
    assert all(c.started for c in clients.values())
    svc.ensure("SPX", Timeframe.parse("1Min"))  # no Databento index feed: not subscribed, no error
    svc.stop()
    assert all(c.stopped for c in clients.values())


def test_gap_is_backfilled_before_later_live_trades(store: Store, make_service: ServiceFactory) -> None:
    release = threading.Event()
    requests: list[dict[str, Any]] = []

    def get_range(**kwargs: Any) -> db.DBNStore:
        requests.append(kwargs)
        release.wait(5)  # the live record below arrives while the backfill is in flight
        return db.DBNStore.from_bytes(rec.encode(rec.metadata(), [
            rec.mapping(),
            rec.trade(ts("15:00:20"), 6002.0, sequence=2),  # already seen live: dropped
            rec.trade(ts("15:00:50"), 6003.0, sequence=3),
            rec.trade(ts("15:01:30"), 6004.0, sequence=4),
        ]))

    svc, clients, clock = _setup(store, make_service, get_range)
    es = _es_client(clients)
    es.deliver(rec.mapping())
    es.deliver(rec.trade(ts("15:00:10"), 6001.0, sequence=1))
    es.deliver(rec.trade(ts("15:00:20"), 6002.0, sequence=2))
    es.drop_and_reconnect(ts("15:00:20"), ts("15:02:30"))
    es.deliver(rec.trade(ts("15:02:40"), 6005.0, sequence=5))  # held until the backfill is done
    assert wait_until(lambda: len(requests) == 1)
    assert wait_until(lambda: svc.counters.trades_accepted == 2)
    assert svc.read_bars("/ES", Timeframe.parse("1Min"), "0", 0) == []  # nothing past the gap yet
    clock.ns = ts("15:02:45")
    release.set()
    tf = Timeframe.parse("1Min")
    assert wait_until(lambda: len(svc.history("/ES", tf, 10)) == 2)
    bars = svc.history("/ES", tf, 10)
    assert [(b.open, b.high, b.close, b.volume, b.gapped) for b in bars] == [
        (6001.0, 6003.0, 6003.0, 3, False), (6004.0, 6004.0, 6004.0, 1, False)]
    assert requests[0]["dataset"] == "GLBX.MDP3" and requests[0]["schema"] == "trades"
    assert (requests[0]["start"], requests[0]["end"]) == (ts("15:00:20"), ts("15:02:30"))
    assert svc.counters.late_trades == 0 and svc.counters.duplicates_dropped == 0
    status = svc.status()["feeds"]["databento"]
    assert status["state"] == "running" and status["backfills"][-1]["ok"] is True


def test_failed_backfill_marks_bar_gapped(store: Store, make_service: ServiceFactory) -> None:
    def get_range(**kwargs: Any) -> db.DBNStore:
        raise db.BentoServerError(http_status=503, message="unavailable")

    svc, clients, clock = _setup(store, make_service, get_range)
    es = _es_client(clients)
    es.deliver(rec.mapping())
    es.deliver(rec.trade(ts("15:00:10"), 6001.0, sequence=1))
    es.drop_and_reconnect(ts("15:00:10"), ts("15:00:40"))
    es.deliver(rec.trade(ts("15:00:45"), 6002.0, sequence=9))
    clock.ns = ts("15:01:05")
    es.deliver(rec.trade(ts("15:01:05"), 6003.0, sequence=10))
    tf = Timeframe.parse("1Min")
    assert wait_until(lambda: len(svc.history("/ES", tf, 10)) == 1)
    bar = svc.history("/ES", tf, 10)[0]
    assert bar.gapped is True and bar.volume == 2
    assert svc.status()["feeds"]["databento"]["backfills"][-1]["ok"] is False


def test_undefined_timestamp_and_unknown_instrument_skipped() -> None:
    import databento_dbn as dbn

    feed = DatabentoLiveFeed(KEY, live_factory=OfflineLive, today=lambda: date(2024, 11, 26))
    feed.on_record(rec.mapping())
    assert feed.to_trade(rec.trade(dbn.UNDEF_TIMESTAMP, 6000.0)) is None
    assert feed.to_trade(rec.trade(ts("15:00:00"), 6000.0, instrument_id=5)) is None
    assert feed.to_trade(rec.trade(ts("15:00:00"), None)) is None
    c = feed.state.counters
    assert (c.skipped_undefined_ts, c.skipped_unknown_symbol, c.skipped_malformed) == (1, 1, 1)


def test_historical_warmup_resamples_ohlcv_1m(shared_data: Any) -> None:
    class FakeTimeseries:
        def get_range(self, **kwargs: Any) -> db.DBNStore:
            assert kwargs["schema"] == "ohlcv-1m" and kwargs["symbols"] == ["ESU4"]
            return db.DBNStore.from_file(shared_data / "databento/glbx-mdp3-esu4-nqu4-20240701T2340.ohlcv-1m.dbn.zst")

    hist = db.Historical(key=KEY)
    hist.timeseries = FakeTimeseries()  # type: ignore[assignment]
    now = pd.Timestamp("2024-07-02T00:10:00Z").to_pydatetime()
    bars = historical_bars(hist, None, "/ES", Timeframe.parse("5Min"), 4, now=now)
    assert [pd.Timestamp(b.start_ns, tz="UTC").strftime("%H:%M") for b in bars] == ["23:50", "23:55", "00:00", "00:05"]
    assert all(b.timeframe == "5" for b in bars)
    assert bars[2].volume == 175 + 37 + 112 + 108 + 75  # 00:00..00:04 from Databento's own 1m bars


@pytest.fixture(autouse=True)
def _quiet_sdk_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("ERROR", logger="databento")


def test_bar_timer_waits_for_a_backfill_in_flight(store: Store, make_service: ServiceFactory) -> None:
    # The wall clock passes the bar's end while the gap inside that bar is still being fetched:
    # closing it now would publish a bar without the gap's trades and without the gapped mark.
    release = threading.Event()

    def get_range(**kwargs: Any) -> db.DBNStore:
        release.wait(5)
        raise db.BentoServerError(http_status=503, message="unavailable")

    svc, clients, clock = _setup(store, make_service, get_range)
    es = _es_client(clients)
    es.deliver(rec.mapping())
    es.deliver(rec.trade(ts("15:00:10"), 6001.0, sequence=1))
    assert wait_until(lambda: svc.counters.trades_accepted == 1)
    es.drop_and_reconnect(ts("15:00:10"), ts("15:00:40"))
    es.deliver(rec.trade(ts("15:00:45"), 6002.0, sequence=9))  # held until the backfill is done
    clock.ns = ts("15:01:30")  # well past the bar's end and the timer's grace
    svc._wake.set()  # the writer makes its timer pass now
    time.sleep(0.3)
    tf = Timeframe.parse("1Min")
    assert svc.history("/ES", tf, 10) == []  # not closed while its gap is being fetched
    release.set()
    assert wait_until(lambda: len(svc.history("/ES", tf, 10)) == 1)
    bar = svc.history("/ES", tf, 10)[0]
    assert bar.gapped is True and bar.volume == 2 and bar.close == 6002.0
