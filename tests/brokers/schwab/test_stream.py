"""SPX from Schwab's streamer: the real schwab-py StreamClient (login through the real REST client
and authlib on the fake HTTP transport, then a real websocket to the fake streamer in
tests/brokers/schwab/fixtures/streamer.py, which answers as schwab/streaming.py expects), into
the index feed, through the real bar builder into the Redis bar stream."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, replace

import pytest
from schwab.streaming import StreamClient

from brokers.schwab.parsing import IndexValue, parse_level_one
from brokers.retry import ReconnectBackoff
from brokers.schwab.stream import DEFAULT_SYMBOLS, SchwabIndexStream
from config.settings import MarketDataSource
from config.timeframes import Timeframe
from domain.market import Bar
from market_data.index_feed import IndexStreamFeed
from market_data.service import MarketDataService
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    SchwabEnv,
    json_reply,
    load,
    schwab_env,
)
from tests.brokers.schwab.fixtures.streamer import NOW_MS, FakeStreamer, preferences, spx_frame
from tests.engine.conftest import wait_until

PREFERENCES_PATH = "/trader/v1/userPreference"
ACCESS_TOKEN = load("token_response.json")["access_token"]
THREE_TICKS = Timeframe.parse("3t")


class WallClock:
    """The market data service's wall clock (staleness), pinned inside an SPX session."""

    def __init__(self, seconds: float) -> None:
        self.now = seconds

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    env: SchwabEnv
    streamer: FakeStreamer
    stream: SchwabIndexStream
    feed: IndexStreamFeed
    md: MarketDataService
    clock: WallClock

    def bars(self) -> list[Bar]:
        return [bar for _id, bar in self.md.read_bars("SPX", THREE_TICKS, "0")]

    def trades_accepted(self) -> int:
        return self.md.counters.trades_accepted


@pytest.fixture
def streamer() -> Iterator[FakeStreamer]:
    fake = FakeStreamer(access_token=ACCESS_TOKEN).start()
    yield fake
    fake.close()


def make_rig(env: SchwabEnv, streamer: FakeStreamer, **stream_args: object) -> Rig:
    env.settings = replace(env.settings, market_data_source=MarketDataSource.DATABENTO, databento_api_key="db-test")
    adapter = env.logged_in()
    env.fake.on("GET", PREFERENCES_PATH, json_reply(preferences(streamer.url)))
    args: dict[str, object] = {"backoff": ReconnectBackoff(base=0.01, cap=0.05, jitter=0.0)}
    args.update(stream_args)
    stream = SchwabIndexStream(adapter.streaming_client, **args)  # type: ignore[arg-type]
    feed = IndexStreamFeed(stream, restart_delay=0.05)
    clock = WallClock(NOW_MS / 1000)
    md = MarketDataService(env.settings, env.store, source=feed, wall_clock=clock)
    md.ensure("SPX", THREE_TICKS)
    return Rig(env, streamer, stream, feed, md, clock)


@pytest.fixture
def rig(schwab_env: SchwabEnv, streamer: FakeStreamer) -> Iterator[Rig]:
    built = make_rig(schwab_env, streamer)
    yield built
    built.md.stop()


def test_spx_values_streamed_by_schwab_py_become_bars(rig: Rig) -> None:
    rig.md.start()
    rig.streamer.wait_subscribed(1)
    # The login went through the real SDK: the REST preferences, then ADMIN LOGIN with the token.
    assert len(rig.env.fake.calls("GET", PREFERENCES_PATH)) == 1
    [login] = rig.streamer.of("ADMIN", "LOGIN")
    assert login["parameters"] == {"Authorization": ACCESS_TOKEN, "SchwabClientChannel": "N9",
                                   "SchwabClientFunctionId": "APIAPP"}
    [subs] = rig.streamer.of("LEVELONE_EQUITIES", "SUBS")
    assert subs["parameters"] == {"keys": "$SPX", "fields": "0,3,35"}  # symbol, last price, trade time
    for i, price in enumerate((6850.25, 6851.5, 6849.75)):
        rig.streamer.send(spx_frame(price, NOW_MS + i * 1000))
    rig.streamer.send(spx_frame(None, None, extra={"18": 12.5}))  # only the net change moved: no value
    wait_until(lambda: len(rig.bars()) == 1, what="the 3-tick SPX bar")
    [bar] = rig.bars()
    assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (
        "SPX", 6850.25, 6851.5, 6849.75, 6849.75, 0, 3)
    assert (bar.start_ns, bar.end_ns) == (NOW_MS * 1_000_000, (NOW_MS + 2000) * 1_000_000)
    assert not bar.gapped
    assert rig.md.last_price("SPX") == 6849.75
    status = rig.md.status()["feeds"]["index:schwab"]
    assert status["connected"] and status["source"]["values"] == 3 and status["source"]["sessions"] == 1


def test_a_dropped_connection_reconnects_and_marks_the_bar_it_cut(rig: Rig) -> None:
    rig.md.start()
    rig.streamer.wait_subscribed(1)
    rig.streamer.send(spx_frame(6850.0, NOW_MS))
    rig.streamer.send(spx_frame(6851.0, NOW_MS + 1000))
    wait_until(lambda: rig.trades_accepted() == 2, what="two values")
    rig.streamer.drop()
    rig.streamer.wait_subscribed(2)  # logged in again (a second REST preferences read) and resubscribed
    assert rig.streamer.logins == 2 and len(rig.env.fake.calls("GET", PREFERENCES_PATH)) == 2
    rig.streamer.send(spx_frame(6851.0, NOW_MS + 1000))  # the snapshot a new subscription repeats
    for i, price in enumerate((6852.0, 6853.0, 6854.0, 6855.0)):
        rig.streamer.send(spx_frame(price, NOW_MS + (5 + i) * 1000))
    wait_until(lambda: len(rig.bars()) == 2, what="two bars")
    first, second = rig.bars()
    # The bar the drop cut lacks the values of the outage; the one after the reconnect is whole.
    assert (first.open, first.close, first.trade_count, first.gapped) == (6850.0, 6852.0, 3, True)
    assert (second.open, second.close, second.trade_count, second.gapped) == (6853.0, 6855.0, 3, False)
    source = rig.md.status()["feeds"]["index:schwab"]["source"]
    assert source["reconnects"] == 1 and source["connected"]


def test_a_silent_connection_is_given_up_and_reconnected(schwab_env: SchwabEnv, streamer: FakeStreamer) -> None:
    # No frame at all, not even a heartbeat: the socket is dead even if TCP has not noticed.
    rig = make_rig(schwab_env, streamer, silence_seconds=0.3)
    try:
        rig.md.start()
        rig.streamer.wait_subscribed(2)  # each session is silent, so it is given up again and again
        assert rig.streamer.logins >= 2
        wait_until(lambda: rig.stream.status()["reconnects"] >= 1, what="the reconnect counted")
        assert rig.stream.status()["last_drop"] == "no frame from Schwab for 0.3s"

        def delivered() -> bool:  # each session goes silent again: send until one carries the value
            try:
                rig.streamer.send(spx_frame(6850.0, NOW_MS))
            except Exception:  # that connection was just given up
                pass
            return rig.md.last_price("SPX") == 6850.0

        wait_until(delivered, what="a value after the reconnect")
    finally:
        rig.md.stop()


def test_a_stream_silent_during_the_session_is_flagged_stale(schwab_env: SchwabEnv, streamer: FakeStreamer) -> None:
    streamer.heartbeat_seconds = 0.05  # the connection is alive: only the values stopped
    rig = make_rig(schwab_env, streamer)
    try:
        rig.md.start()
        rig.streamer.wait_subscribed(1)
        rig.streamer.send(spx_frame(6850.0, NOW_MS))
        wait_until(lambda: rig.trades_accepted() == 1, what="a value")
        status = rig.md.status()
        assert status["symbols"]["SPX"]["market_open"] and not status["symbols"]["SPX"]["stale"]
        rig.clock.now += rig.env.settings.stale_feed_seconds + 1
        status = rig.md.status()
        assert status["symbols"]["SPX"]["stale"] and status["feeds"]["index:schwab"]["stale"]
        assert status["feeds"]["index:schwab"]["connected"]  # heartbeats kept it up: the values are stale
        rig.streamer.send(spx_frame(6851.0, NOW_MS + 31_000))
        wait_until(lambda: rig.trades_accepted() == 2, what="the next value")
        assert not rig.md.status()["symbols"]["SPX"]["stale"]
    finally:
        rig.md.stop()


def test_delayed_values_never_become_prices(rig: Rig) -> None:
    rig.md.start()
    rig.streamer.wait_subscribed(1)
    rig.streamer.send(spx_frame(6850.0, NOW_MS, delayed=True))  # a login without real-time data
    rig.streamer.send(spx_frame(6851.0, NOW_MS + 1000))  # later entries carry only changed fields
    wait_until(lambda: rig.stream.status()["delayed"] == ["$SPX"], what="the delayed flag")
    rig.streamer.send(spx_frame(6852.0, NOW_MS + 2000, delayed=False))  # entitlement came back
    wait_until(lambda: rig.trades_accepted() == 1, what="the real-time value")
    assert rig.md.last_price("SPX") == 6852.0


def test_a_refused_login_is_retried_with_backoff(rig: Rig) -> None:
    rig.streamer.access_token = "some other token"  # the streamer denies the login (code 3)
    rig.md.start()
    wait_until(lambda: len(rig.streamer.of("ADMIN", "LOGIN")) >= 3, what="three login attempts")
    assert rig.streamer.logins == 0 and not rig.stream.status()["connected"]
    assert "Login Denied" in str(rig.stream.status()["last_error"])
    rig.streamer.access_token = ACCESS_TOKEN
    rig.streamer.wait_subscribed(1)


def test_stop_ends_the_stream_thread_promptly(rig: Rig) -> None:
    rig.md.start()
    rig.streamer.wait_subscribed(1)
    started = time.monotonic()
    rig.md.stop()
    assert time.monotonic() - started < 3
    assert rig.feed._thread is not None and not rig.feed._thread.is_alive()
    assert not rig.stream.status()["connected"]


def test_a_stop_landing_with_the_subscription_ack_still_stops(schwab_env: SchwabEnv, streamer: FakeStreamer) -> None:
    # The stop arrives in the same loop turn as Schwab's SUBS ack. Python 3.11's asyncio.wait_for
    # returned the ack and dropped that cancel, and the stream then waited silence_seconds (60 s)
    # for a frame: the service's stop gave up on the thread after 5 s.
    def stream_that_is_stopped_on_the_ack(client: object) -> StreamClient:
        stream = StreamClient(client, enforce_enums=True)  # type: ignore[arg-type]
        subscribe = stream.level_one_equity_subs

        async def subscribe_then_stop(*args: object, **kwargs: object) -> None:
            await subscribe(*args, **kwargs)
            rig.feed.stop()  # from the stream's own thread: sets `stopping` and interrupts, as md.stop() does

        stream.level_one_equity_subs = subscribe_then_stop  # type: ignore[method-assign]
        return stream

    rig = make_rig(schwab_env, streamer, stream_factory=stream_that_is_stopped_on_the_ack)
    try:
        rig.md.start()
        rig.streamer.wait_subscribed(1)
        wait_until(lambda: rig.feed._thread is not None and not rig.feed._thread.is_alive(), timeout=3,
                   what="the stream thread to end")
        assert rig.streamer.logins == 1 and not rig.stream.status()["connected"]
    finally:
        rig.md.stop()


def test_backoff_doubles_to_its_cap() -> None:
    backoff = ReconnectBackoff(base=1.0, cap=60.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 7, 8, 20)] == [1.0, 2.0, 4.0, 60.0, 60.0, 60.0]


def test_parse_level_one_reads_relabelled_entries() -> None:
    to_catalog = {v: k for k, v in DEFAULT_SYMBOLS.items()}
    message = {"service": "LEVELONE_EQUITIES", "timestamp": NOW_MS, "command": "SUBS", "content": [
        {"key": "$SPX", "delayed": False, "LAST_PRICE": 6850.5, "TRADE_TIME_MILLIS": NOW_MS - 400},
        {"key": "$SPX", "LAST_PRICE": 6851.0},  # no trade time: the frame's
        {"key": "$SPX", "NET_CHANGE": 3.0},  # nothing to price
        {"key": "$COMPX", "LAST_PRICE": 21000.0},  # not ours
        {"key": "$SPX", "LAST_PRICE": float("nan")},
    ]}
    values, delayed = parse_level_one(message, to_catalog)
    assert values == [IndexValue("SPX", 6850.5, (NOW_MS - 400) * 1_000_000),
                      IndexValue("SPX", 6851.0, NOW_MS * 1_000_000)]
    assert delayed == {"$SPX": False}
