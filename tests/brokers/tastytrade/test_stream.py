"""SPX from Tastytrade's DXLink streamer: the real tastytrade SDK `DXLinkStreamer` on the adapter's
own session and event loop (the quote token through the SDK's httpx2 client on the scripted API's
transport, then a real websocket to the fake DXLink server in fixtures/dxlink_fake.py, which
answers as the DXLink specification and tastytrade/streamer.py define the exchange), into the
index feed, through the real bar builder into the Redis bar stream."""
from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from dxlink_fake import (  # noqa: E402
    NOW_MS,
    QUOTE_TOKEN,
    QUOTE_TOKEN_PATH,
    ApiAndDXLinkTransport,
    FakeDXLink,
    quote_token_reply,
    spx_trade,
)
from tt_fake import Harness, TastytradeAccount, error_body, make_settings, tt  # noqa: E402,F401

from tests.brokers.schwab.fixtures.harness import schwab_env  # noqa: E402,F401 - fixture

from brokers.tastytrade.adapter import TastytradeAdapter  # noqa: E402
from brokers.retry import ReconnectBackoff  # noqa: E402
from brokers.tastytrade.stream import (  # noqa: E402
    IndexValue,
    TastytradeIndexStream,
    trade_value,
)
from config.settings import MarketDataSource, TradingMode  # noqa: E402
from config.timeframes import Timeframe  # noqa: E402
from domain.market import Bar  # noqa: E402
from market_data.index_feed import IndexStreamFeed  # noqa: E402
from market_data.service import MarketDataService  # noqa: E402
from tests.engine.conftest import wait_until  # noqa: E402

THREE_TICKS = Timeframe.parse("3t")
FAST_BACKOFF = ReconnectBackoff(base=0.01, cap=0.05, jitter=0.0)


class WallClock:
    """The market data service's wall clock (staleness), pinned inside an SPX session."""

    def __init__(self, seconds: float) -> None:
        self.now = seconds

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def dxlink() -> Iterator[FakeDXLink]:
    fake = FakeDXLink().start()
    yield fake
    fake.close()


def serve_dxlink(tt: Harness, dxlink: FakeDXLink, *, live: bool = False) -> None:
    """Real (Databento) market data; the quote token points at the fake DXLink server, which the
    adapter's transport reaches over a real socket."""
    tt.base = tt.base.with_overrides(market_data_source=MarketDataSource.DATABENTO, databento_api_key="db-test")
    if live:
        tt.base = tt.base.with_overrides(trading_mode=TradingMode.LIVE)
    tt.fake.transport = ApiAndDXLinkTransport(tt.fake.transport)
    tt.fake.on("GET", QUOTE_TOKEN_PATH, quote_token_reply(dxlink.url))


@dataclass
class Rig:
    tt: Harness
    dxlink: FakeDXLink
    adapter: TastytradeAdapter
    stream: TastytradeIndexStream
    feed: IndexStreamFeed
    md: MarketDataService
    clock: WallClock

    def bars(self) -> list[Bar]:
        return [bar for _id, bar in self.md.read_bars("SPX", THREE_TICKS, "0")]

    def trades_accepted(self) -> int:
        return self.md.counters.trades_accepted

    def source(self) -> dict[str, Any]:
        return dict(self.md.status()["feeds"]["index:tastytrade"]["source"])


def make_rig(tt: Harness, dxlink: FakeDXLink, *, logged_in: bool = True, **stream_args: Any) -> Rig:
    serve_dxlink(tt, dxlink)
    adapter = tt.connected() if logged_in else tt.adapter()
    args: dict[str, Any] = {"backoff": FAST_BACKOFF}
    args.update(stream_args)
    stream = TastytradeIndexStream(adapter.start_on_session, **args)
    feed = IndexStreamFeed(stream, restart_delay=0.05)
    clock = WallClock(NOW_MS / 1000)
    md = MarketDataService(make_settings(tt.base), tt.store, source=feed, wall_clock=clock)
    md.ensure("SPX", THREE_TICKS)
    return Rig(tt, dxlink, adapter, stream, feed, md, clock)


@pytest.fixture
def rig(tt: Harness, dxlink: FakeDXLink) -> Iterator[Rig]:
    built = make_rig(tt, dxlink)
    yield built
    built.md.stop()


# --- the source itself ----------------------------------------------------------------------------
@dataclass
class Received:
    """What `IndexSource.run` hands its callbacks, recorded on the thread that runs it."""

    values: list[tuple[str, float, int]]
    states: list[tuple[bool, str]]
    threads: set[str]


def run_source(stream: TastytradeIndexStream) -> tuple[Received, threading.Event, threading.Thread]:
    got = Received([], [], set())

    def on_value(symbol: str, value: float, ts_ns: int) -> None:
        got.threads.add(threading.current_thread().name)
        got.values.append((symbol, value, ts_ns))

    def on_state(connected: bool, detail: str) -> None:
        got.threads.add(threading.current_thread().name)
        got.states.append((connected, detail))

    stopping = threading.Event()
    thread = threading.Thread(target=stream.run, args=(on_value, on_state, stopping), name="index-source")
    thread.start()
    return got, stopping, thread


def stop_source(stream: TastytradeIndexStream, stopping: threading.Event, thread: threading.Thread) -> float:
    started = time.monotonic()
    stopping.set()
    stream.interrupt()
    thread.join(10)
    assert not thread.is_alive()
    return time.monotonic() - started


def test_the_source_hands_over_spx_values_with_the_exchange_time_in_ns(tt: Harness, dxlink: FakeDXLink) -> None:
    serve_dxlink(tt, dxlink)
    adapter = tt.connected()
    stream = TastytradeIndexStream(adapter.start_on_session, backoff=FAST_BACKOFF)
    got, stopping, thread = run_source(stream)
    try:
        dxlink.wait_subscribed(1)
        dxlink.send_trades(spx_trade(6850.25, NOW_MS), spx_trade(6851.5, NOW_MS + 1000, timeNanoPart=250_000))
        dxlink.send_trades(spx_trade("NaN", NOW_MS + 1500))  # no price: the SDK's model refuses it
        dxlink.send_trades(spx_trade(6849.75, NOW_MS + 2000))
        wait_until(lambda: len(got.values) == 3, what="three SPX values")
    finally:
        stop_source(stream, stopping, thread)
    assert got.values == [("SPX", 6850.25, NOW_MS * 1_000_000),
                          ("SPX", 6851.5, (NOW_MS + 1000) * 1_000_000 + 250_000),
                          ("SPX", 6849.75, (NOW_MS + 2000) * 1_000_000)]
    assert got.states[0][0] is True and "SPX" in got.states[0][1]
    assert got.threads == {"index-source"}  # never on the adapter's loop, which serves the orders


def test_the_handshake_follows_the_sdk_on_the_adapters_own_session(rig: Rig) -> None:
    rig.md.start()
    rig.dxlink.wait_subscribed(1)
    # One quote token, through the adapter's session (its bearer token, no second login).
    [token_call] = rig.tt.fake.calls("GET", QUOTE_TOKEN_PATH)
    assert token_call.headers["authorization"].startswith("Bearer atoken-")
    assert len(rig.tt.fake.calls("POST", "/oauth/token")) == 1  # the adapter's own connect
    [setup] = rig.dxlink.of("SETUP")
    assert (setup["channel"], setup["keepaliveTimeout"], setup["acceptKeepaliveTimeout"]) == (0, 60, 60)
    [auth] = rig.dxlink.of("AUTH")
    assert auth == {"type": "AUTH", "channel": 0, "token": QUOTE_TOKEN}
    [channel] = rig.dxlink.of("CHANNEL_REQUEST")
    assert (channel["service"], channel["parameters"]) == ("FEED", {"contract": "AUTO"})
    [feed_setup] = rig.dxlink.of("FEED_SETUP")
    assert feed_setup["acceptDataFormat"] == "COMPACT"
    fields = feed_setup["acceptEventFields"]["Trade"]
    assert {"eventSymbol", "price", "time", "timeNanoPart"} <= set(fields)
    [subscription] = rig.dxlink.of("FEED_SUBSCRIPTION")
    assert subscription["add"] == [{"symbol": "SPX", "type": "Trade"}]  # Trade carries the index, not Quote


def test_spx_values_streamed_over_dxlink_become_bars(rig: Rig) -> None:
    rig.md.start()
    rig.dxlink.wait_subscribed(1)
    rig.dxlink.send_trades(*(spx_trade(price, NOW_MS + i * 1000) for i, price in enumerate((6850.25, 6851.5, 6849.75))))
    wait_until(lambda: len(rig.bars()) == 1, what="the 3-tick SPX bar")
    [bar] = rig.bars()
    assert (bar.symbol, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (
        "SPX", 6850.25, 6851.5, 6849.75, 6849.75, 0, 3)
    assert (bar.start_ns, bar.end_ns) == (NOW_MS * 1_000_000, (NOW_MS + 2000) * 1_000_000)
    assert not bar.gapped
    assert rig.md.last_price("SPX") == 6849.75
    status = rig.md.status()["feeds"]["index:tastytrade"]
    assert status["connected"] and status["source"]["values"] == 3 and status["source"]["sessions"] == 1


def test_a_dropped_socket_reconnects_reports_both_states_and_marks_the_bar_it_cut(rig: Rig) -> None:
    rig.md.start()
    rig.dxlink.wait_subscribed(1)
    rig.dxlink.send_trades(spx_trade(6850.0, NOW_MS), spx_trade(6851.0, NOW_MS + 1000))
    wait_until(lambda: rig.trades_accepted() == 2, what="two values")
    rig.dxlink.snapshot = spx_trade(6851.0, NOW_MS + 1000)  # the ticker's last value, repeated on subscribing
    rig.dxlink.drop()
    rig.dxlink.wait_subscribed(2)  # a new quote token, socket, authorisation and subscription
    assert len(rig.tt.fake.calls("GET", QUOTE_TOKEN_PATH)) == 2 and rig.dxlink.authorized == 2
    rig.dxlink.send_trades(*(spx_trade(price, NOW_MS + (5 + i) * 1000) for i, price in enumerate(
        (6852.0, 6853.0, 6854.0, 6855.0))))
    wait_until(lambda: len(rig.bars()) == 2, what="two bars")
    first, second = rig.bars()
    # The bar the drop cut lacks the values of the outage; the one after the reconnect is whole.
    assert (first.open, first.close, first.trade_count, first.gapped) == (6850.0, 6852.0, 3, True)
    assert (second.open, second.close, second.trade_count, second.gapped) == (6853.0, 6855.0, 3, False)
    source = rig.source()
    assert source["reconnects"] == 1 and source["connected"] and source["values"] == 6  # the snapshot is not a new value
    assert "WebSocketDisconnect" in source["last_drop"]


def test_a_drop_reaches_the_state_callback_down_then_up(tt: Harness, dxlink: FakeDXLink) -> None:
    serve_dxlink(tt, dxlink)
    stream = TastytradeIndexStream(tt.connected().start_on_session, backoff=FAST_BACKOFF)
    got, stopping, thread = run_source(stream)
    try:
        dxlink.wait_subscribed(1)
        dxlink.drop()
        dxlink.wait_subscribed(2)
        wait_until(lambda: len(got.states) == 3, what="up, down, up")
    finally:
        stop_source(stream, stopping, thread)
    assert [connected for connected, _ in got.states] == [True, False, True]
    assert "WebSocketDisconnect" in got.states[1][1]


def test_a_silent_connection_is_given_up_and_reconnected(tt: Harness, dxlink: FakeDXLink) -> None:
    # Not even a KEEPALIVE: the server must send something within the 60 s the SDK asked for,
    # so the socket is dead even if TCP has not noticed.
    rig = make_rig(tt, dxlink, silence_seconds=0.3)
    try:
        rig.md.start()
        rig.dxlink.wait_subscribed(2)  # each session is silent, so it is given up again and again
        wait_until(lambda: rig.stream.status()["reconnects"] >= 1, what="the reconnect counted")
        assert rig.stream.status()["last_drop"] == "no frame from Tastytrade DXLink for 0.3s"
    finally:
        rig.md.stop()


def test_keepalives_keep_a_quiet_connection_up(tt: Harness, dxlink: FakeDXLink) -> None:
    dxlink.heartbeat_seconds = 0.05
    rig = make_rig(tt, dxlink, silence_seconds=1.0)
    try:
        rig.md.start()
        rig.dxlink.wait_subscribed(1)
        rig.dxlink.wait_keepalives(40)  # two seconds of nothing but KEEPALIVE: twice the silence allowed
        source = rig.source()
        assert (source["sessions"], source["reconnects"], source["connected"]) == (1, 0, True)
        assert source["last_frame_wall"] is not None
    finally:
        rig.md.stop()


def test_a_stream_up_without_values_is_flagged_stale(tt: Harness, dxlink: FakeDXLink) -> None:
    dxlink.heartbeat_seconds = 0.05  # the connection is alive: only the values stopped
    rig = make_rig(tt, dxlink)
    try:
        rig.md.start()
        rig.dxlink.wait_subscribed(1)
        rig.dxlink.send_trades(spx_trade(6850.0, NOW_MS))
        wait_until(lambda: rig.trades_accepted() == 1, what="a value")
        status = rig.md.status()
        assert status["symbols"]["SPX"]["market_open"] and not status["symbols"]["SPX"]["stale"]
        rig.clock.now += rig.tt.base.stale_feed_seconds + 1
        status = rig.md.status()
        assert status["symbols"]["SPX"]["stale"] and status["feeds"]["index:tastytrade"]["stale"]
        assert status["feeds"]["index:tastytrade"]["connected"]
        rig.dxlink.send_trades(spx_trade(6851.0, NOW_MS + 31_000))
        wait_until(lambda: rig.trades_accepted() == 2, what="the next value")
        assert not rig.md.status()["symbols"]["SPX"]["stale"]
    finally:
        rig.md.stop()


def test_a_refused_quote_token_is_retried_with_backoff(tt: Harness, dxlink: FakeDXLink) -> None:
    rig = make_rig(tt, dxlink)
    # developer.tastytrade.com/docs/concepts/streaming: a customer not fully onboarded is refused so.
    refused = httpx2.Response(404, json=error_body("quote_streamer.customer_not_found_error",
                                                   "customer not found"))
    rig.tt.fake.on("GET", QUOTE_TOKEN_PATH, refused, refused, refused, quote_token_reply(dxlink.url))
    try:
        rig.md.start()
        rig.dxlink.wait_subscribed(1)
        assert len(rig.tt.fake.calls("GET", QUOTE_TOKEN_PATH)) == 4
        assert "customer_not_found_error" in rig.source()["last_drop"]
        assert rig.dxlink.connections == 1  # no socket without a token
    finally:
        rig.md.stop()


def test_a_refused_authorisation_is_retried(tt: Harness, dxlink: FakeDXLink) -> None:
    dxlink.token = "another token"  # the server refuses the quote token on the socket
    rig = make_rig(tt, dxlink)
    try:
        rig.md.start()
        wait_until(lambda: len(rig.dxlink.of("AUTH")) >= 3, what="three authorisations")
        assert rig.dxlink.authorized == 0 and not rig.source()["connected"]
        assert "token is not valid" in str(rig.source()["last_error"])
        rig.dxlink.token = QUOTE_TOKEN
        rig.dxlink.wait_subscribed(1)
    finally:
        rig.md.stop()


def test_a_login_made_after_start_is_picked_up(tt: Harness, dxlink: FakeDXLink) -> None:
    rig = make_rig(tt, dxlink, logged_in=False)
    try:
        rig.md.start()
        wait_until(lambda: rig.source()["last_error"] is not None, what="the first failed attempt")
        assert "tastytrade is not connected" in rig.source()["last_error"] and rig.dxlink.connections == 0
        rig.tt.login()  # the refresh token is stored: the next attempt connects the adapter
        rig.dxlink.wait_subscribed(1)
        assert rig.adapter.status().connected
    finally:
        rig.md.stop()


def test_stop_ends_the_stream_promptly_and_leaves_the_adapter_serving(rig: Rig) -> None:
    TastytradeAccount(rig.tt.fake)
    rig.md.start()
    rig.dxlink.wait_subscribed(1)
    started = time.monotonic()
    rig.md.stop()
    assert time.monotonic() - started < 3
    assert rig.feed._thread is not None and not rig.feed._thread.is_alive()
    assert not rig.stream.status()["connected"]
    assert rig.adapter.positions() == []  # the adapter's loop outlives the stream it ran


def test_stop_during_the_backoff_wait_is_prompt(tt: Harness, dxlink: FakeDXLink) -> None:
    rig = make_rig(tt, dxlink, backoff=ReconnectBackoff(base=600.0, cap=600.0, jitter=0.0))
    rig.tt.fake.on("GET", QUOTE_TOKEN_PATH, httpx2.Response(500, json=error_body("internal", "down")))
    rig.md.start()
    wait_until(lambda: rig.source()["next_attempt_in"] == 600.0, what="the long backoff wait")
    started = time.monotonic()
    rig.md.stop()
    assert time.monotonic() - started < 3


# --- the pure mapping ------------------------------------------------------------------------------
def _trade(price: str, time_ms: int, nanos: int = 0, symbol: str = "SPX") -> Any:
    from tastytrade.dxfeed import Trade

    return Trade.model_validate(spx_trade(price, time_ms, timeNanoPart=nanos, eventSymbol=symbol))


def test_trade_value_takes_the_trade_time_and_price() -> None:
    to_catalog = {"SPX": "SPX"}
    assert trade_value(_trade("6850.5", NOW_MS, 999), to_catalog, 7) == IndexValue(
        "SPX", 6850.5, NOW_MS * 1_000_000 + 999)
    assert trade_value(_trade("6850.5", 0), to_catalog, 7) == IndexValue("SPX", 6850.5, 7, timed_on_receipt=True)
    assert trade_value(_trade("21000", NOW_MS, symbol="NDX"), to_catalog, 7) is None
    assert trade_value(_trade("0", NOW_MS), to_catalog, 7) is None
    assert isinstance(_trade("6850.5", NOW_MS).price, Decimal)


def test_backoff_doubles_to_its_cap() -> None:
    backoff = ReconnectBackoff(base=1.0, cap=60.0, jitter=0.0)
    assert [backoff.delay(n) for n in (1, 2, 3, 7, 8, 20)] == [1.0, 2.0, 4.0, 60.0, 60.0, 60.0]



def test_the_session_is_renewed_before_the_quote_token_lapses_without_backoff(tt: Harness, dxlink: FakeDXLink) -> None:
    # A backoff of ten minutes would hold the second session back: a renewal must not wait for it.
    dxlink.heartbeat_seconds = 0.05
    rig = make_rig(tt, dxlink, renew_after_seconds=0.3, backoff=ReconnectBackoff(base=600.0, cap=600.0, jitter=0.0))
    try:
        rig.md.start()
        rig.dxlink.wait_subscribed(2)
        assert len(rig.tt.fake.calls("GET", QUOTE_TOKEN_PATH)) >= 2  # a fresh token for the new session
        assert rig.stream.status()["last_drop"] == "renewing the DXLink session before its 24-hour quote token lapses"
    finally:
        rig.md.stop()


# --- the live runtime -----------------------------------------------------------------------------
ZERODAY_AT_TASTYTRADE = {"strategy": "zeroday", "symbol": "SPX", "timeframe": "3t", "trade_enabled": True,
                         "schwab_quantity": 0, "tastytrade_quantity": 1,
                         "trend_line_1": "EMA", "period_1": 2, "trend_line_2": "EMA", "period_2": 3}


def live_runtime(tt: Harness, dxlink: FakeDXLink, tmp_path: Path, **others: Any) -> tuple[Any, Any, IndexStreamFeed]:
    """The live runtime (Databento market data) with the Tastytrade adapter on the fake API and
    DXLink server, next to `others` (broker name -> adapter); the runtime connects them all."""
    from app import create_app
    from domain.orders import TASTYTRADE
    from market_data.feeds import CompositeFeed
    from runtime import TradingRuntime
    from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD

    serve_dxlink(tt, dxlink, live=True)
    tt.base = tt.base.with_overrides(jwt_secret="j" * 48, admin_email=ADMIN_EMAIL, admin_password=ADMIN_PASSWORD,
                                     log_dir=tmp_path / "logs")
    TastytradeAccount(tt.fake)  # positions and orders for the start-up reconciliation
    tt.login()
    adapter = tt.adapter(live=True)  # the real SDK on the fake transport
    app = create_app(make_settings(tt.base, live=True), tt.store)
    runtime = TradingRuntime.build(app.extensions["services"], live_adapters={**others, TASTYTRADE: adapter})
    feed = runtime.market_data.feed
    assert isinstance(feed, CompositeFeed)
    [index] = [f for f in feed.feeds if f.name != "databento"]
    assert isinstance(index, IndexStreamFeed)
    return app, runtime, index


def test_the_live_runtime_with_only_tastytrade_feeds_zeroday_from_dxlink(tt: Harness, dxlink: FakeDXLink,
                                                                         tmp_path: Path) -> None:
    from domain.tickers import TickerConfig
    from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login

    app, runtime, index = live_runtime(tt, dxlink, tmp_path)  # no Schwab configured
    assert index.name == "index:tastytrade" and isinstance(index.source, TastytradeIndexStream)
    app.extensions["services"].tickers.upsert(TickerConfig.from_payload(ZERODAY_AT_TASTYTRADE))
    runtime.start()  # Tastytrade connects and reconciles through the fake API, market data starts
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
        response = client.get("/api/start-trading?strategy=zeroday", headers=headers)
        assert response.status_code == 200, response.json  # not 409 no_real_price_source
        dxlink.wait_subscribed(1)
        runner = runtime.supervisor.runner("zeroday", "SPX")
        assert runner is not None
        dxlink.send_trades(*(spx_trade(value, NOW_MS + i * 1000) for i, value in enumerate((6850.25, 6852.5, 6851.75))))
        wait_until(lambda: runner.status.last_bar is not None, what="the zeroday thread's first SPX bar")
        bar = runner.status.last_bar
        assert (bar["symbol"], bar["open"], bar["high"], bar["low"], bar["close"]) == (
            "SPX", 6850.25, 6852.5, 6850.25, 6851.75)
        assert runtime.market_data.last_price("SPX") == 6851.75  # what the ATM strike is chosen from
        assert runtime.market_data.status()["feeds"]["index:tastytrade"]["connected"]
    finally:
        runtime.stop()
    assert index._thread is not None and not index._thread.is_alive()


def test_with_schwab_configured_but_not_logged_in_spx_comes_from_tastytrade(
        tt: Harness, dxlink: FakeDXLink, schwab_env: Any, tmp_path: Path) -> None:
    from domain.orders import SCHWAB
    from market_data.index_feed import FirstConnectedSource

    schwab = schwab_env.adapter()  # configured, never logged in: not connected after start()
    _app, runtime, index = live_runtime(tt, dxlink, tmp_path, **{SCHWAB: schwab})
    assert index.name == "index:schwab+tastytrade" and isinstance(index.source, FirstConnectedSource)
    runtime.start()
    try:
        dxlink.wait_subscribed(1)
        dxlink.send_trades(spx_trade(6850.25, NOW_MS))
        wait_until(lambda: runtime.market_data.last_price("SPX") == 6850.25, what="SPX from Tastytrade")
        feed = runtime.market_data.status()["feeds"]["index:schwab+tastytrade"]
        assert feed["connected"] and feed["source"]["active"] == "tastytrade"
        assert not schwab.status().connected
    finally:
        runtime.stop()
