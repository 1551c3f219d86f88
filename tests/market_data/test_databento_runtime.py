"""The live runtime on Databento end to end: `TradingRuntime.build` with TRADING_MODE=live and
MARKET_DATA_SOURCE=databento builds the real feed and market data service, with the SDK's
`databento.Live` replaced by the fake session and Historical answering over the fake HTTP
gateway (tests/market_data/databento_fakes.py). A strategy started through the API warms up on
Historical bars up to the available end plus the replay's, and /api/strategies says so; with a
key that gets no history, /api/strategies and the ticker log say why the warm-up is short.

The runtime runs on the wall clock, so the fake market's bars are the last session minutes
before now (on a weekend, Friday's: then Historical holds them all and the replay has none)."""
from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import databento as db
import pytest
from flask.testing import FlaskClient

from app import create_app
from config.settings import MarketDataSource, Settings, TradingMode
from config.symbology import front_month, new_york_date
from domain.tickers import TickerConfig
from market_data import calendars
from market_data.databento_feed import REPLAY_OVERLAP_NS
from runtime import TradingRuntime
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login
from tests.market_data.databento_fakes import KEY, NS, Market, install_historical

GLBX = "GLBX.MDP3"
MINUTE = 60 * NS
EMA = {"strategy": "ema", "symbol": "/MES", "timeframe": "1Min", "trade_enabled": True,
       "schwab_quantity": 0, "tastytrade_quantity": 1,
       "trend_line_1": "EMA", "period_1": 2, "trend_line_2": "EMA", "period_2": 4}  # 5 bars to warm up


def _session_minutes(now_ns: int, count: int) -> list[int]:
    """Starts of the last `count` complete in-session /MES minutes before now."""
    starts: list[int] = []
    t = now_ns - now_ns % MINUTE - MINUTE
    while len(starts) < count:
        if calendars.bar_in_session("/MES", t, t + MINUTE):
            starts.append(t)
        t -= MINUTE
    return starts[::-1]


@pytest.fixture
def world(settings: Settings, store: Store, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FlaskClient, Market, Any]]:
    market = Market(now_ns=time.time_ns())
    install_historical(monkeypatch, market)
    monkeypatch.setattr(db, "Live", market.live_class())  # the feed's default factory builds databento.Live
    for i, start in enumerate(_session_minutes(market.now_ns, 30)):
        raw = front_month("MES", new_york_date(start)).databento
        close = 6000.0 + i
        market.add(GLBX, market.bar(GLBX, raw, start, close - 0.5, close + 0.25, close - 0.75, close, 7))
    live = replace(settings, trading_mode=TradingMode.LIVE, market_data_source=MarketDataSource.DATABENTO,
                   databento_api_key=KEY)
    app = create_app(live, store)
    services = app.extensions["services"]
    runtime = TradingRuntime.build(services, live_adapters={})
    services.tickers.upsert(TickerConfig.from_payload(EMA))
    runtime.start()
    yield app.test_client(), market, runtime
    runtime.stop()


def _ticker_status(client: FlaskClient, headers: dict[str, str], done: Any) -> dict[str, Any]:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        body = client.get("/api/strategies", headers=headers).json
        ticker = body["data"]["ema"]["tickers"]["/MES"]
        if done(ticker):
            return ticker
        time.sleep(0.02)
    raise AssertionError(f"the ticker never got there: {ticker}")


def test_a_live_strategy_warms_up_on_databento_history_up_to_now(world: tuple[FlaskClient, Market, Any]) -> None:
    client, market, _runtime = world
    headers = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    started = client.get("/api/start-trading?strategy=ema", headers=headers)
    assert started.status_code == 200, started.json
    ticker = _ticker_status(client, headers, lambda t: t.get("warmed_up") or t.get("warmup_note"))
    assert ticker["warmed_up"] is True and ticker["warmup_note"] is None
    # Historical was asked up to its available end only (the fake refuses later ends with the
    # real service's 422) and the replay started just before it.
    ohlcv = [c for c in market.get_range_calls if c["schema"] == "ohlcv-1m"]
    assert ohlcv and all(int(c["end"]) <= market.available_end("ohlcv-1m") for c in ohlcv)
    replays = [s.subscriptions[0] for s in market.replay_sessions()]
    assert {(r["schema"], r["start"]) for r in replays} == {("ohlcv-1m", market.available_end("ohlcv-1m") - REPLAY_OVERLAP_NS)}
    # The live session streams the front month.
    [session] = market.live_sessions(GLBX)
    assert front_month("MES", new_york_date(time.time_ns())).databento in session.subscriptions[0]["symbols"]


def test_a_warmup_without_history_shows_why_in_the_strategy_status_and_log(world: tuple[FlaskClient, Market, Any],
                                                                           settings: Settings) -> None:
    client, market, _runtime = world
    market.refuse_historical = True
    market.refuse_replay = "user is not entitled to replay GLBX.MDP3"
    headers = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    assert client.get("/api/start-trading?strategy=ema", headers=headers).status_code == 200
    ticker = _ticker_status(client, headers, lambda t: t.get("warmup_note"))
    assert ticker["warmed_up"] is False
    note = ticker["warmup_note"]
    assert note.startswith("warmed up on 0 of 5 bars: Databento Historical failed (BentoClientError: 403")
    assert "Databento live replay failed (user is not entitled to replay GLBX.MDP3)" in note
    logs = "".join(p.read_text() for p in settings.log_dir.rglob("*.log"))
    assert note in logs and KEY not in logs
