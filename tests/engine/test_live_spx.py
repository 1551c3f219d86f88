"""Live SPX: the live runtime takes SPX from Schwab's streamer and the zeroday ticker trades on
those values; without a broker stream, live zeroday refuses to start (and to enter by hand) with a
clear 409, never a 500 and never on made-up prices."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pytest
from flask.testing import FlaskClient

from app import create_app
from brokers.schwab.adapter import SchwabAdapter
from config.settings import MarketDataSource, Settings, TradingMode
from domain.orders import SCHWAB
from domain.tickers import TickerConfig
from engine.supervisor import NoRealPriceSource
from market_data.feeds import CompositeFeed
from market_data.index_feed import IndexStreamFeed, NoIndexFeed
from runtime import TradingRuntime
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    SchwabEnv,
    json_reply,
    load,
    schwab_env,
)
from tests.brokers.schwab.fixtures.streamer import NOW_MS, FakeStreamer, preferences, spx_frame
from tests.engine.conftest import wait_until

ZERODAY = {"strategy": "zeroday", "symbol": "SPX", "timeframe": "3t", "trade_enabled": True,
           "schwab_quantity": 1, "tastytrade_quantity": 0,
           "trend_line_1": "EMA", "period_1": 2, "trend_line_2": "EMA", "period_2": 3}


def live(settings: Settings) -> Settings:
    """Live settings as settings_from_mapping accepts them: real (Databento) market data."""
    return replace(settings, trading_mode=TradingMode.LIVE, market_data_source=MarketDataSource.DATABENTO,
                   databento_api_key="db-test")


def _spx_feed(runtime: TradingRuntime) -> Any:
    feed = runtime.market_data.feed
    assert isinstance(feed, CompositeFeed)
    [index] = [f for f in feed.feeds if f.name != "databento"]
    return index


# --- without a broker stream ------------------------------------------------------------------------
@pytest.fixture
def no_stream(settings: Settings, store: Store) -> Iterator[tuple[FlaskClient, TradingRuntime]]:
    app = create_app(live(settings), store)
    services = app.extensions["services"]
    runtime = TradingRuntime.build(services, live_adapters={})  # no broker configured
    services.tickers.upsert(TickerConfig.from_payload(ZERODAY))
    yield app.test_client(), runtime
    runtime.supervisor.shutdown()


def test_live_zeroday_start_without_an_spx_stream_is_a_clear_409(no_stream: tuple[FlaskClient, TradingRuntime]) -> None:
    client, runtime = no_stream
    headers = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    response = client.get("/api/start-trading?strategy=zeroday", headers=headers)
    assert response.status_code == 409
    body = response.json
    assert body["success"] is False and body["code"] == "no_real_price_source"
    assert "SPX" in body["error"] and "Schwab" in body["error"]
    assert runtime.supervisor.running_strategies() == set()  # nothing starts, nothing is marked running
    assert runtime.supervisor.runner("zeroday", "SPX") is None
    # SPX gets no made-up values in live mode: its feed emits nothing.
    assert isinstance(_spx_feed(runtime), NoIndexFeed)


def test_live_zeroday_manual_entry_without_an_spx_stream_is_refused(
        no_stream: tuple[FlaskClient, TradingRuntime]) -> None:
    # (The API answers it like start-trading: 409 no_real_price_source, after its time rules.)
    _client, runtime = no_stream
    for action in ("call", "put"):
        with pytest.raises(NoRealPriceSource, match="SPX"):
            runtime.supervisor.manual_trigger("zeroday", "SPX", action)
    assert runtime.orders.positions() == []


def test_a_resumed_live_zeroday_without_an_spx_stream_stays_stopped(
        no_stream: tuple[FlaskClient, TradingRuntime]) -> None:
    _client, runtime = no_stream
    runtime.services.store.redis.sadd(runtime.services.store.key("engine", "running"), "zeroday")  # running before
    assert runtime.supervisor.resume() == {}
    assert runtime.supervisor.running_strategies() == set()


# --- the live runtime with Schwab's stream --------------------------------------------------------
@pytest.fixture
def streamer() -> Iterator[FakeStreamer]:
    fake = FakeStreamer(access_token=load("token_response.json")["access_token"], heartbeat_seconds=0.5).start()
    yield fake
    fake.close()


def test_the_live_runtime_feeds_zeroday_with_spx_from_schwabs_stream(schwab_env: SchwabEnv, streamer: FakeStreamer,
                                                                     tmp_path: Any) -> None:
    settings = replace(live(schwab_env.settings), jwt_secret="j" * 48, admin_email=ADMIN_EMAIL,
                       admin_password=ADMIN_PASSWORD, log_dir=tmp_path / "logs")
    schwab_env.settings = settings
    schwab_env.seed_token()
    schwab_env.fake.on("GET", "/trader/v1/userPreference", json_reply(preferences(streamer.url)))
    adapter = schwab_env.adapter()  # the real SDK on the fake HTTP transport
    app = create_app(settings, schwab_env.store)
    services = app.extensions["services"]
    runtime = TradingRuntime.build(services, live_adapters={SCHWAB: adapter})
    assert isinstance(runtime.registry.live[SCHWAB], SchwabAdapter)
    feed = _spx_feed(runtime)
    assert isinstance(feed, IndexStreamFeed) and feed.name == "index:schwab"
    services.tickers.upsert(TickerConfig.from_payload(ZERODAY))
    runtime.start()  # Schwab connects and reconciles through the fake REST API, market data starts
    try:
        client = app.test_client()
        headers = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
        response = client.get("/api/start-trading?strategy=zeroday", headers=headers)
        assert response.status_code == 200, response.json
        streamer.wait_subscribed(1)
        runner = runtime.supervisor.runner("zeroday", "SPX")
        assert runner is not None
        for i, value in enumerate((6850.25, 6852.5, 6851.75)):
            streamer.send(spx_frame(value, NOW_MS + i * 1000))
        wait_until(lambda: runner.status.last_bar is not None, what="the zeroday thread's first SPX bar")
        bar = runner.status.last_bar
        assert (bar["symbol"], bar["open"], bar["high"], bar["low"], bar["close"]) == (
            "SPX", 6850.25, 6852.5, 6850.25, 6851.75)
        assert runtime.market_data.last_price("SPX") == 6851.75  # what the ATM strike is chosen from
        assert runtime.market_data.status()["feeds"]["index:schwab"]["connected"]
    finally:
        runtime.stop()
    assert feed._thread is not None and not feed._thread.is_alive()
