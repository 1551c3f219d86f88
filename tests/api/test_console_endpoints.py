"""The endpoints the operations console reads beyond the original API: a ticker's price chart
(GET /api/strategies/chart) on a real engine, the session's equity curve (GET /api/pnl/intraday),
a finished backtest's series (GET /api/backtest/<id>/results) from a real backtest job, futures
marks by contract month, and the console's own pages with their security headers."""
from __future__ import annotations

import re
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.console import CONTENT_SECURITY_POLICY, STATIC_DIR
from app import build_services, create_app
from auth.users import Role
from backtest.jobs import RESULT_POINTS, BacktestJobs
from config.settings import MarketDataSource, Settings
from config.timeframes import Timeframe
from domain.orders import OrderState
from risk.engine import EQUITY_SAMPLE_SECONDS, RiskEngine
from store.redis_store import Store
from tests.api.helpers import VIEWER_EMAIL, VIEWER_PASSWORD, login
from tests.engine.conftest import MINUTE_NS, EngineRig, build_rig, minute_trades, session_minute

# A Tuesday 10:00 New York: the CME session is open.
START = session_minute("2024-07-02", 10, 0)


# ---------------------------------------------------------------------------- the price chart
@pytest.fixture
def engine_app(real_store: Store, settings: Settings) -> Iterator[tuple[FlaskClient, dict[str, str], EngineRig]]:
    replay = replace(settings, market_data_source=MarketDataSource.REPLAY)
    app = create_app(replay, real_store)
    app.config["TESTING"] = True
    rig = build_rig(real_store, replay)
    services = app.extensions["services"]
    services.engine, services.market_data, services.orders = rig.supervisor, rig.md, rig.orders
    services.users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    client = app.test_client()
    yield client, {"Authorization": f"Bearer {login(client, VIEWER_EMAIL, VIEWER_PASSWORD)}"}, rig
    rig.supervisor.shutdown()


def test_the_chart_shows_the_lines_the_strategy_computed_on_each_bar_and_its_fills(engine_app) -> None:
    client, headers, rig = engine_app
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.supervisor.start_strategy("ema")
    rig.ready_runner("ema", "/MES")
    closes = [5000.0, 5001.0, 5002.0, 5003.0, 5004.0, 5003.0, 5000.0, 4996.0, 4992.0, 4990.0]
    bars = minute_trades("/MES", START, closes + [4990.0])
    rig.push(bars[0])
    for i, trades in enumerate(bars[1:], start=1):  # each bar completes with the first trade of the next
        rig.push_bar_and_wait("ema", trades, START + i * MINUTE_NS)

    response = client.get("/api/strategies/chart?strategy=ema&symbol=MES", headers=headers)
    assert response.status_code == 200, response.json
    chart = response.json["data"]
    assert chart["strategy"] == "ema" and chart["symbol"] == "/MES" and chart["lines"] == ["fast", "slow", "stop"]
    assert [b["close"] for b in chart["bars"]] == closes
    ticker = client.get("/api/strategies", headers=headers).json["data"]["ema"]["tickers"]["/MES"]
    last = chart["bars"][-1]
    assert last["end_ns"] == ticker["last_bar"]["end_ns"]
    assert last["lines"]["fast"] == ticker["indicators"]["fast"]
    assert last["lines"]["slow"] == ticker["indicators"]["slow"]
    assert all(b["lines"] is not None for b in chart["bars"])  # every bar went through the running strategy
    assert chart["bars"][0]["lines"]["slow"] is None  # EMA 4 is not defined after one bar

    fills = [o for o in rig.orders.orders(strategy="ema", symbol="/MES") if o.state is OrderState.FILLED]
    assert fills, "the cross up and back down traded"
    assert [(m["side"], m["price"], m["ts_ns"]) for m in chart["markers"]] == \
        sorted(((o.side.value, str(o.avg_fill_price), o.updated_ns) for o in fills), key=lambda m: m[2])
    assert chart["position"] == ticker["position"]


def test_the_chart_of_a_stopped_ticker_has_its_bars_without_lines(engine_app) -> None:
    client, headers, rig = engine_app
    rig.add_ticker(strategy="ema", symbol="/MES", timeframe="1Min", trade_enabled=True, schwab_quantity=0,
                   tastytrade_quantity=1, trend_line_1="EMA", period_1=2, trend_line_2="EMA", period_2=4)
    rig.md.ensure("/MES", Timeframe.parse("1Min"))  # bars are built for the timeframes asked for
    for trades in minute_trades("/MES", START, [5000.0, 5001.0, 5002.0]):
        rig.push(trades)
    chart = client.get("/api/strategies/chart?strategy=ema&symbol=/MES&limit=1", headers=headers).json["data"]
    assert [(b["close"], b["lines"]) for b in chart["bars"]] == [(5001.0, None)]  # the last completed bar
    assert chart["markers"] == [] and chart["stop"] is None and chart["position"] is None


def test_the_chart_refuses_what_is_not_a_ticker(engine_app) -> None:
    client, headers, _ = engine_app
    missing = client.get("/api/strategies/chart?strategy=ema&symbol=/ES", headers=headers)
    assert missing.status_code == 404 and missing.json["field"] == "symbol"
    assert client.get("/api/strategies/chart?strategy=ema", headers=headers).status_code == 400
    assert client.get("/api/strategies/chart?strategy=ema&symbol=/ES&limit=501", headers=headers).status_code == 400
    assert client.get("/api/strategies/chart?strategy=ema&symbol=/ES").status_code == 401


# ---------------------------------------------------------------------------- the equity curve
class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


def test_the_equity_curve_samples_the_session_pnl_at_most_every_ten_seconds(store: Store, settings: Settings) -> None:
    clock = Clock(datetime(2024, 7, 2, 14, 0, tzinfo=UTC))
    risk = RiskEngine(store, settings, clock=clock)
    risk.on_pnl("ema", "120.50", "-20.25")
    risk.on_pnl("supertrend", "-10", "0")
    assert risk.sample_equity() is True
    clock.now += timedelta(seconds=EQUITY_SAMPLE_SECONDS - 1)
    risk.on_pnl("ema", "130.50", "-20.25")
    assert risk.sample_equity() is False  # too soon: no point
    clock.now += timedelta(seconds=1)
    assert risk.sample_equity() is True
    curve = risk.intraday_equity()
    assert curve["session_start"] == risk.session_start().isoformat()
    assert [(p["realized"], p["unrealized"], p["total"]) for p in curve["points"]] == [
        ("110.50", "-20.25", "90.25"), ("120.50", "-20.25", "100.25")]
    clock.now += timedelta(days=1)  # the next session starts an empty curve
    assert risk.intraday_equity()["points"] == []


def test_the_intraday_endpoint_answers_the_risk_engines_curve(app: Flask, client: FlaskClient,
                                                              viewer_headers: dict[str, str]) -> None:
    risk = app.extensions["services"].risk
    risk.on_pnl("ema", "10", "-2.5")
    risk.sample_equity()
    response = client.get("/api/pnl/intraday", headers=viewer_headers)
    assert response.status_code == 200, response.json
    assert response.json["points"][-1]["total"] == "7.5"
    assert response.json["session_start"] == risk.session_start().isoformat()
    assert client.get("/api/pnl/intraday").status_code == 401


# ---------------------------------------------------------------------------- backtest results
def _bars_csv(path: Path, minutes: int) -> Path:
    """One-minute bars of a slow wave, so that EMA 3/8 crosses a few times."""
    import math

    start = datetime(2024, 7, 2, 14, 0)
    lines = ["Date,Time,Open,High,Low,Close,Volume"]
    for i in range(minutes):
        t = start + timedelta(minutes=i)
        close = round((5000 + 20 * math.sin(i / 15)) * 4) / 4  # on the /ES tick (0.25)
        lines.append(f"{t:%Y-%m-%d},{t:%H:%M:%S},{close:.2f},{close + 1:.2f},{close - 1:.2f},{close:.2f},10")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_finished_backtest_hands_its_equity_trades_and_bars(app: Flask, client: FlaskClient,
                                                              admin_headers: dict[str, str], tmp_path: Path) -> None:
    jobs = BacktestJobs(app.extensions["services"].store, out_root=tmp_path / "out", allowed_data_dirs=(tmp_path,))
    app.extensions["services"].backtests = jobs
    data = _bars_csv(tmp_path / "wave.csv", 3000)
    submitted = client.post("/api/backtest", headers=admin_headers, json={
        "strategy": "ema", "symbol": "/ES", "timeframe": "1Min", "trend_line_1": "EMA", "period_1": 3,
        "trend_line_2": "EMA", "period_2": 8, "data": [str(data)]})
    assert submitted.status_code == 202, submitted.json
    job_id = submitted.json["id"]
    assert client.get(f"/api/backtest/{job_id}/results", headers=admin_headers).status_code in (200, 404)
    deadline = time.monotonic() + 60
    while (job := jobs.get(job_id))["status"] not in ("done", "failed") and time.monotonic() < deadline:
        time.sleep(0.1)
    assert job["status"] == "done", job.get("error")
    jobs.shutdown()

    response = client.get(f"/api/backtest/{job_id}/results", headers=admin_headers)
    assert response.status_code == 200, response.json
    body = response.json
    out = Path(job["out_dir"])
    equity_rows = (out / "equity.csv").read_text().strip().splitlines()[1:]
    trade_rows = (out / "trades.csv").read_text().strip().splitlines()[1:]
    assert body["trades_total"] == len(trade_rows) == job["report"]["metrics"]["trades"] > 0
    assert len(body["equity"]) <= RESULT_POINTS < len(equity_rows)
    assert body["equity"][0]["time"] == equity_rows[0].split(",")[0]
    assert body["equity"][-1]["time"] == equity_rows[-1].split(",")[0]  # the last point is kept
    assert body["lines"] == ["fast", "slow", "stop"]
    assert {"start", "open", "close", "fast", "slow"} <= set(body["bars"][-1])
    assert client.get("/api/backtest/0123456789abcdef/results", headers=admin_headers).status_code == 404


# ---------------------------------------------------------------------------- marks by contract month
class LastPrices:
    def last_price(self, symbol: str) -> float | None:
        return {"/MES": 5012.25}.get(symbol)


def test_a_futures_position_is_marked_by_its_month_only_while_it_is_the_front_month(store: Store,
                                                                                      settings: Settings) -> None:
    services = build_services(settings, store)
    services.market_data = LastPrices()  # type: ignore[assignment]
    services.time_ns = lambda: session_minute("2024-07-02", 10, 0)  # the September 2024 contract trades
    assert services.mark_price is not None
    assert services.mark_price("/MESU24") == 5012.25
    assert services.mark_price("/MES") == 5012.25
    assert services.mark_price("/MESZ24") is None  # another month: not the price the feed streams


# ---------------------------------------------------------------------------- the console's pages
def test_the_console_is_served_with_a_strict_content_security_policy(client: FlaskClient) -> None:
    root = client.get("/")
    assert root.status_code == 302 and root.headers["Location"].endswith("/console/")
    page = client.get("/console/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    csp = page.headers["Content-Security-Policy"]
    assert csp == CONTENT_SECURITY_POLICY
    for directive in ("default-src 'none'", "script-src 'self'", "object-src 'none'", "frame-ancestors 'none'",
                      "connect-src 'self'"):
        assert directive in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    html = page.get_data(as_text=True)
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", html, flags=re.S)
    assert scripts and all(body.strip() == "" for body in scripts)  # no inline script
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert not re.search(r"\son[a-z]+\s*=", html)  # no inline event handlers

    bundle = client.get("/console/vendor/plotly.min.js")
    assert bundle.status_code == 200 and bundle.mimetype == "text/javascript"
    assert b"plotly.js v" in bundle.get_data()[:200]
    script = client.get("/console/static/js/main.js")
    assert script.status_code == 200 and "javascript" in script.mimetype
    assert script.headers["X-Content-Type-Options"] == "nosniff"
    assert client.get("/console/static/../../app.py").status_code == 404


def test_the_console_never_writes_api_data_as_html() -> None:
    """Every value reaches the page through textContent or Text nodes (js/dom.js): no innerHTML,
    outerHTML, insertAdjacentHTML or document.write anywhere in the console's scripts."""
    offenders = []
    for path in sorted(STATIC_DIR.rglob("*.js")):
        text = path.read_text(encoding="utf-8")
        for pattern in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
            if pattern in text:
                offenders.append(f"{path.relative_to(STATIC_DIR)}: {pattern}")
    assert not offenders, offenders
