"""Databento history near real time, through the real SDK on the fakes of
tests/market_data/databento_fakes.py: Historical is asked only up to the dataset's available end
(it refuses a later end with a 422, as the real service does), the rest comes from the live
gateway's intraday replay; a warm-up across a futures roll takes each contract while the book
traded it; a warm-up that could not get its history says so and why."""
from __future__ import annotations

import databento as db
import pytest

from config.timeframes import Timeframe
from market_data.databento_feed import REPLAY_OVERLAP_NS, DatabentoHistory, DatabentoLiveFeed
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.databento_fakes import KEY, NS, Market, market, ns  # noqa: F401 - fixture

GLBX = "GLBX.MDP3"
MINUTE = 60 * NS


def _history(market: Market) -> DatabentoHistory:
    return DatabentoHistory(KEY, live_factory=market.live_factory, clock_ns=market.clock, replay_timeout_s=5)


def _minute_bars(market: Market, raw: str, start: int, end: int, base: float) -> None:
    """ohlcv-1m bars of `raw` for every minute in [start, end): close = base + minutes from start."""
    for i, t in enumerate(range(start, end, MINUTE)):
        close = base + i
        market.add(GLBX, market.bar(GLBX, raw, t, close - 0.5, close + 0.25, close - 0.75, close, 10))


def test_a_warmup_near_real_time_takes_historical_to_its_available_end_and_the_replay_to_now(market: Market) -> None:
    _minute_bars(market, "ESZ4", market.now_ns - 300 * MINUTE, market.now_ns, 6000.0)
    # What the fakes encode, through the real SDK: Historical refuses an end past its available
    # end with the 422 the real service sends, and maps symbols in the response's metadata (none
    # in the record stream).
    client = db.Historical(key=KEY)
    with pytest.raises(db.BentoClientError) as refused:
        client.timeseries.get_range(dataset=GLBX, schema="ohlcv-1m", symbols=["ESZ4"],
                                    start=market.now_ns - 60 * MINUTE, end=market.now_ns)
    assert refused.value.http_status == 422
    assert "data_end_after_available_end" in str(refused.value) and "14:40:00" in str(refused.value)
    available = market.available_end("ohlcv-1m")  # 14:40, 20 minutes behind
    store = client.timeseries.get_range(dataset=GLBX, schema="ohlcv-1m", symbols=["ESZ4"],
                                        start=available - 60 * MINUTE, end=available)
    records = list(store)
    assert len(records) == 60 and {type(r).__name__ for r in records} == {"OHLCVMsg"}
    assert [interval["symbol"] for interval in store.mappings["ESZ4"]] == [str(records[0].instrument_id)]
    market.get_range_calls.clear()

    found = _history(market).bars("/ES", Timeframe.parse("5Min"), 40)
    assert found.note is None
    [request] = market.get_range_calls
    assert (request["symbols"], request["schema"], int(request["end"])) == ("ESZ4", "ohlcv-1m", available)
    [replay] = market.replay_sessions()
    assert replay.subscriptions[0]["start"] == available - REPLAY_OVERLAP_NS and replay.stopped
    # 40 five-minute bars without a hole, the last one ending now; the bars after 14:40 are the
    # replay's, each 1-minute bar once (Historical and the replay overlap by a few seconds).
    assert [b.end_ns for b in found.bars] == [market.now_ns - (39 - i) * 5 * MINUTE for i in range(40)]
    assert all(b.volume == 50 for b in found.bars)
    assert found.bars[-1].close == 6000.0 + 299


def test_the_available_end_is_asked_once_for_a_few_minutes(market: Market) -> None:
    _minute_bars(market, "ESZ4", market.now_ns - 120 * MINUTE, market.now_ns, 6000.0)
    history = _history(market)
    history.bars("/ES", Timeframe.parse("1Min"), 30)
    market.now_ns += 60 * NS
    history.bars("/ES", Timeframe.parse("5Min"), 10)
    assert market.range_calls == [GLBX]
    market.now_ns += 10 * MINUTE
    history.bars("/ES", Timeframe.parse("5Min"), 10)
    assert market.range_calls == [GLBX, GLBX]


def test_a_warmup_across_a_roll_takes_each_contract_while_the_book_traded_it(market: Market) -> None:
    # The December 2024 E-mini rolls on Thursday 2024-12-12 (second Thursday): from New York
    # midnight on the book trades March. Both contracts trade on both sides of that moment.
    roll = ns("2024-12-12T00:00:00-05:00")
    market.now_ns = roll + 40 * MINUTE
    _minute_bars(market, "ESZ4", roll - 60 * MINUTE, market.now_ns, 6000.0)
    _minute_bars(market, "ESH5", roll - 60 * MINUTE, market.now_ns, 6060.0)  # March trades 60 points over
    bars = _history(market).bars("/ES", Timeframe.parse("1Min"), 100).bars
    assert market.get_range_calls[0]["symbols"] == "ESZ4,ESH5"
    before = [b for b in bars if b.start_ns < roll]
    after = [b for b in bars if b.start_ns >= roll]
    assert len(before) == 60 and len(after) == 40
    assert [b.close for b in before] == [6000.0 + i for i in range(60)]  # December until the roll
    assert [b.close for b in after] == [6060.0 + 60 + i for i in range(40)]  # March from it, to now


def test_a_warmup_without_history_says_why(store: Store, make_service: ServiceFactory, settings: object,
                                           market: Market) -> None:
    # A key without the dataset's license: Historical answers 403, the live gateway refuses the
    # replay. The service's warm-up then has nothing, and says so for the strategy's status.
    market.refuse_historical = True
    market.refuse_replay = "user is not entitled to replay GLBX.MDP3"
    feed = DatabentoLiveFeed(KEY, live_factory=market.live_factory, clock_ns=market.clock, replay_timeout_s=5)
    svc = make_service(store, feed, settings=settings.with_overrides(databento_api_key=KEY),  # type: ignore[attr-defined]
                       time_ns=market.clock)
    tf = Timeframe.parse("5Min")
    assert svc.warmup("/ES", tf, 20) == []
    note = svc.warmup_note("/ES", tf, 0, 20)
    assert note is not None and note.startswith("warmed up on 0 of 20 bars: Databento Historical failed (")
    assert "403" in note and "No license found" in note
    assert "Databento live replay failed (user is not entitled to replay GLBX.MDP3)" in note
    assert KEY not in note


def test_a_warmup_whose_replay_failed_reports_the_hole_before_now(store: Store, make_service: ServiceFactory,
                                                                  settings: object, market: Market) -> None:
    # Enough bars, but they end at Historical's available end: the 20 minutes before the live
    # bars are missing, which the strategy's status must show.
    _minute_bars(market, "ESZ4", market.now_ns - 300 * MINUTE, market.now_ns, 6000.0)
    market.refuse_replay = "too many sessions"
    feed = DatabentoLiveFeed(KEY, live_factory=market.live_factory, clock_ns=market.clock, replay_timeout_s=5)
    svc = make_service(store, feed, settings=settings.with_overrides(databento_api_key=KEY),  # type: ignore[attr-defined]
                       time_ns=market.clock)
    tf = Timeframe.parse("5Min")
    bars = svc.warmup("/ES", tf, 20)
    assert len(bars) == 20 and bars[-1].end_ns == market.available_end("ohlcv-1m")
    assert svc.warmup_note("/ES", tf, 20, 20) == ("warmed up on 20 bars, but the history is incomplete: "
                                                  "Databento live replay failed (too many sessions)")
    market.refuse_replay = None
    svc.warmup("/ES", tf, 20)
    assert svc.warmup_note("/ES", tf, 20, 20) is None  # a later warm-up that got everything clears it
