"""The operations console in a real browser against the real service (see conftest.py): log in,
the overview, a ticker added and started whose chart and status update live, a manual trade whose
position and order appear, the kill switch (HALTED, flat), a viewer without trading controls, an
expired token back to the login, the unreachable-backend banner, a backtest's report, and the
Content-Security-Policy (checked on every page by the fixture: no violation reported).

Every wait is on a condition (playwright's expect / wait_for_function), never a fixed sleep.
"""
from __future__ import annotations

import time
from typing import Any

import jwt
import pytest
import redis

pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -r requirements-dev.txt)")
from playwright.sync_api import Page, expect  # noqa: E402

from auth.users import Role, UserStore  # noqa: E402
from store.redis_store import Store  # noqa: E402
from tests.api.helpers import VIEWER_EMAIL, VIEWER_PASSWORD  # noqa: E402
from tests.console.conftest import screenshot  # noqa: E402
from tests.process.harness import ADMIN_EMAIL, ADMIN_PASSWORD, JWT_SECRET, ROOT, Service  # noqa: E402

PAGES = ("overview", "strategies", "orders", "risk", "backtests")
# A bar every 50 trades at the harness's 50 simulated trades per second: a bar a second.
LIVE_TIMEFRAME = "50t"
BACKTEST_DATA = ROOT.parent / "shared" / "data" / "bars" / "index-future-2006.1min.csv"


def login(page: Page, svc: Service, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> None:
    page.goto(svc.base + "/")
    page.fill("#login-email", email)
    page.fill("#login-password", password)
    page.click("#login-submit")
    expect(page.locator("#overview")).to_be_visible()


def open_tab(page: Page, name: str) -> None:
    page.click(f"#tabs a[data-page='{name}']")
    expect(page.locator(f"#{name}")).to_be_visible()


def add_ticker(page: Page, symbol: str, timeframe: str, fast: int, slow: int) -> None:
    form = page.locator("#ticker-form")
    form.locator("[name=strategy]").select_option("ema")
    form.locator("[name=symbol]").fill(symbol)
    form.locator("[name=timeframe]").fill(timeframe)
    form.locator("[name=schwab_quantity]").fill("0")
    form.locator("[name=tastytrade_quantity]").fill("1")
    form.locator("[name=period_1]").fill(str(fast))
    form.locator("[name=period_2]").fill(str(slow))
    form.locator("button[type=submit]").click()
    expect(page.locator(f"[data-chart='ema:{symbol}']")).to_be_visible()


def ticker_row(page: Page, strategy: str, symbol: str) -> Any:
    return page.locator("#strategies tr", has=page.locator(f"[data-chart='{strategy}:{symbol}']"))


def ensure_mes_ticker(svc: Service, token: str) -> None:
    """/MES on hourly bars: it takes manual trades and signals nothing during the test."""
    svc.api("POST", "/api/add-ticker", token, {
        "strategy": "ema", "symbol": "/MES", "timeframe": "1Hour", "trade_enabled": True, "schwab_quantity": 0,
        "tastytrade_quantity": 1, "trend_line_1": "EMA", "period_1": 9, "trend_line_2": "EMA", "period_2": 21},
        expect=201)


def skip_unless_cme_open(svc: Service, token: str) -> None:
    """Manual trades are refused while the instrument's session is closed (weekends, 17-18 ET),
    and this service runs on the real wall clock."""
    status, payload = svc.request("POST", "/api/ema-manual-trigger", {"ticker": "/MES", "action": "CLOSE"}, token)
    if status == 409 and payload.get("code") == "market_closed":
        pytest.skip(f"/MES session closed at the real wall clock: {payload['message']}")


def book_quantity(svc: Service, token: str, symbol: str) -> int:
    rows = svc.api("GET", "/api/positions", token)["positions"]
    return sum(int(p["quantity"]) for p in rows if p["symbol"] == symbol)


# ---------------------------------------------------------------------------------------------
def test_log_in_and_see_the_overview_under_a_strict_csp(page: Page, console_service: Service) -> None:
    response = page.goto(console_service.base + "/console/")
    assert response is not None and response.ok
    csp = response.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "object-src 'none'" in csp and "frame-ancestors 'none'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    assert response.headers["x-content-type-options"] == "nosniff"
    expect(page.locator("#login-view")).to_be_visible()
    login(page, console_service)
    expect(page.locator("#global-state")).to_have_text("ACTIVE")
    expect(page.locator("#mode-badge")).to_contain_text("paper")
    overview = page.locator("#overview")
    for title in ("Trading state", "Today's P&L", "Loss limits", "Alerts", "Brokers", "Market data"):
        expect(overview.locator("h2", has_text=title)).to_be_visible()
    expect(overview.locator("td", has_text="paper-tastytrade")).to_be_visible()  # the paper account
    expect(page.locator("#loss-gauge .main-svg").first).to_be_attached()  # plotly drew the gauge
    expect(page.locator("#user")).to_have_text(f"{ADMIN_EMAIL} (admin)")


def test_add_and_start_a_ticker_and_watch_its_chart_update_live(page: Page, console_service: Service) -> None:
    login(page, console_service)
    open_tab(page, "strategies")
    add_ticker(page, "/MNQ", LIVE_TIMEFRAME, 3, 8)
    page.click("[data-action='start-ema']")
    row = ticker_row(page, "ema", "/MNQ")
    expect(row.locator(".badge", has_text="running")).to_be_visible()
    page.click("[data-chart='ema:/MNQ']")
    chart = page.locator("#price-chart")
    expect(chart).to_have_attribute("data-ticker", "ema:/MNQ")
    page.wait_for_function("() => Number(document.querySelector('#price-chart').dataset.points) > 0")
    first_bar = chart.get_attribute("data-last-bar")
    # A newer bar arrives and is drawn, and the table's last bar and indicator values follow.
    page.wait_for_function(
        "(before) => { const bar = document.querySelector('#price-chart').dataset.lastBar;"
        " return bar && bar !== before; }", arg=first_bar)
    expect(row.locator("td[data-label='last bar']")).not_to_have_text("-")
    expect(row.locator("td[data-label='indicators']")).to_contain_text("fast")
    expect(chart.locator(".scatterlayer .trace").first).to_be_attached()  # the strategy's lines
    screenshot(page, "strategies")


def test_a_manual_trade_shows_its_position_and_order(page: Page, console_service: Service, admin_token: str) -> None:
    token = admin_token
    ensure_mes_ticker(console_service, token)
    skip_unless_cme_open(console_service, token)
    login(page, console_service)
    open_tab(page, "strategies")
    row = ticker_row(page, "ema", "/MES")
    row.locator("[data-action='long-/MES']").click()
    expect(page.locator("#toast")).to_contain_text("long")
    expect(row.locator(".position")).to_contain_text("tastytrade +1")
    open_tab(page, "orders")
    orders = page.locator("#orders-table")
    expect(orders.locator("tr", has_text="manual long").first).to_contain_text("FILLED")
    expect(orders.locator("tr", has_text="manual long").first).to_contain_text("ema-MES-")  # the client id
    expect(page.locator("#book-table tr", has_text="/MES").first).to_contain_text("1")
    expect(page.locator("#broker-positions tr", has_text="/MES").first).to_be_visible()
    screenshot(page, "orders")
    open_tab(page, "overview")
    expect(page.locator("#equity-chart .main-svg").first).to_be_attached()
    page.wait_for_function("() => Number(document.querySelector('#equity-chart').dataset.points) > 0")


def test_the_kill_switch_halts_and_flattens(page: Page, console_service: Service, admin_token: str) -> None:
    token = admin_token
    ensure_mes_ticker(console_service, token)
    skip_unless_cme_open(console_service, token)
    if book_quantity(console_service, token, "/MES") == 0:
        console_service.api("POST", "/api/ema-manual-trigger", token, {"ticker": "/MES", "action": "LONG"})
    assert book_quantity(console_service, token, "/MES") != 0
    login(page, console_service)
    page.wait_for_function("() => Number(document.querySelector('#equity-chart').dataset.points) > 0")
    screenshot(page, "overview")  # with the position open: the README's picture
    open_tab(page, "risk")
    page.click("#kill-switch")
    expect(page.locator("#confirm-dialog")).to_be_visible()
    page.click("#confirm-ok")
    expect(page.locator("#global-state")).to_have_text("HALTED")
    expect(page.locator("[data-scope='global']")).to_have_text("HALTED")
    screenshot(page, "risk")
    open_tab(page, "orders")
    expect(page.locator("#book-table")).to_contain_text("flat everywhere")
    assert book_quantity(console_service, token, "/MES") == 0
    open_tab(page, "overview")
    expect(page.locator("#global-reason")).to_have_text("kill switch")
    console_service.api("POST", "/api/resume", token, {"scope": "global"})  # leave the service trading
    expect(page.locator("#global-state")).to_have_text("ACTIVE")


def test_an_admin_edits_a_per_symbol_position_cap(page: Page, console_service: Service, admin_token: str) -> None:
    login(page, console_service)
    open_tab(page, "risk")
    caps = page.locator("#limits-form [name=by_symbol]")
    caps.fill("MES=3, NVDA=250")
    page.locator("#limits-form button[type=submit]").click()
    expect(page.locator("#risk-limits")).to_contain_text("max position /MES")
    limits = console_service.api("GET", "/api/risk", admin_token)["limits"]
    assert limits["max_position_by_symbol"] == {"/MES": 3, "NVDA": 250}
    expect(caps).to_have_value("/MES=3, NVDA=250")  # refilled from what the API holds
    caps.fill("/MES=3")  # NVDA's cap removed
    page.locator("#limits-form button[type=submit]").click()
    page.wait_for_function("() => !document.querySelector('#risk-limits').textContent.includes('max position NVDA')")
    assert console_service.api("GET", "/api/risk", admin_token)["limits"]["max_position_by_symbol"] == {"/MES": 3}
    # A map is replaced whole by the API: changing one strategy's loss limit keeps the others.
    console_service.api("PUT", "/api/risk", admin_token, {"daily_loss_limit_by_strategy": {"ema": "100", "zeroday": "300"}})
    page.reload()
    expect(page.locator("#limits-form [name='by_strategy.zeroday']")).not_to_have_value("")
    page.locator("#limits-form [name='by_strategy.ema']").fill("150")
    page.locator("#limits-form button[type=submit]").click()
    page.wait_for_function("() => document.querySelector('#risk-limits').textContent.includes('150')")
    by_strategy = console_service.api("GET", "/api/risk", admin_token)["limits"]["daily_loss_limit_by_strategy"]
    assert {k: float(v) for k, v in by_strategy.items()} == {"ema": 150.0, "zeroday": 300.0}
    console_service.api("PUT", "/api/risk", admin_token,
                        {"max_position_by_symbol": {"/MES": None}, "daily_loss_limit_by_strategy": {}})


def test_a_viewer_sees_no_trading_controls(page: Page, console_service: Service, admin_token: str) -> None:
    url = console_service.env["REDIS_URL"]
    client = redis.Redis.from_url(url, decode_responses=True)
    users = UserStore(Store(client, console_service.env["REDIS_PREFIX"], persistent=False, url=url))
    if users.get(VIEWER_EMAIL) is None:
        users.add(VIEWER_EMAIL, VIEWER_PASSWORD, Role.VIEWER)
    ensure_mes_ticker(console_service, admin_token)
    login(page, console_service, VIEWER_EMAIL, VIEWER_PASSWORD)
    expect(page.locator("#user")).to_have_text(f"{VIEWER_EMAIL} (viewer)")
    for name in PAGES:
        open_tab(page, name)
        if name == "strategies":
            expect(page.locator("[data-chart='ema:/MES']")).to_be_visible()  # the data is there
        assert page.locator("button.action").count() == 0, name
    for admin_only in ("#kill-switch", "#resume", "#ticker-form", "#limits-form", "#backtest-form"):
        assert page.locator(admin_only).count() == 0, admin_only
    client.close()


def test_an_expired_token_leads_back_to_the_login(page: Page, console_service: Service) -> None:
    login(page, console_service)
    token = page.evaluate("() => sessionStorage.getItem('console.token')")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"])
    now = int(time.time())
    claims.update(iat=now - 7200, nbf=now - 7200, exp=now - 3600)  # the same login, an hour past its expiry
    expired = jwt.encode(claims, JWT_SECRET, algorithm="HS256")
    page.evaluate("(t) => sessionStorage.setItem('console.token', t)", expired)
    page.reload()
    expect(page.locator("#login-view")).to_be_visible()
    expect(page.locator("#login-message")).to_contain_text("expired")
    assert page.evaluate("() => sessionStorage.getItem('console.token')") is None
    login(page, console_service)  # and a new login works at once


def test_an_unreachable_backend_shows_a_banner(page: Page, console_service: Service) -> None:
    login(page, console_service)
    banner = page.locator("#banner")
    expect(banner).to_be_hidden()
    page.context.set_offline(True)
    expect(banner).to_be_visible()
    expect(banner).to_contain_text("unreachable")
    page.context.set_offline(False)
    expect(banner).to_be_hidden()
    expect(page.locator("#overview")).to_be_visible()


def test_a_backtest_runs_and_shows_its_report(page: Page, console_service: Service) -> None:
    if not BACKTEST_DATA.is_file():
        pytest.skip(f"real market data not present at {BACKTEST_DATA} (a plain clone has no ../shared)")
    login(page, console_service)
    open_tab(page, "backtests")
    form = page.locator("#backtest-form")
    form.locator("[name=data]").fill(str(BACKTEST_DATA))
    form.locator("[name=from]").fill("2006-01-02")
    form.locator("[name=to]").fill("2006-01-20")
    form.locator("button[type=submit]").click()
    expect(page.locator("#backtest-progress .badge")).to_have_text("done", timeout=60_000)
    expect(page.locator("#backtest-metrics")).to_contain_text("net_pnl")
    page.wait_for_function("() => Number(document.querySelector('#backtest-equity').dataset.points) > 0")
    page.wait_for_function("() => Number(document.querySelector('#backtest-price').dataset.points) > 0")
    expect(page.locator("#backtest-trades tbody tr").first).to_be_visible()
    # Drawn by bar number with dates as tick labels: no straight line across a closed market.
    axes = page.evaluate("""() => ['#backtest-price', '#backtest-equity'].map((id) => {
        const chart = document.querySelector(id);
        return {x: chart.data[0].x, mode: chart.layout.xaxis.tickmode, labels: chart.layout.xaxis.ticktext};
    })""")
    for axis in axes:
        assert axis["x"] == list(range(len(axis["x"]))) and axis["mode"] == "array"
        assert all(label.startswith("01-") or label.startswith("2006-01") for label in axis["labels"]), axis["labels"]
    screenshot(page, "backtests")

    # The job list comes from the API (GET /api/backtest), not from this tab: a fresh tab lists
    # the job with its figures and opens it from the list.
    job_id = page.locator("#backtest-progress code").inner_text()
    fresh = page.context.new_page()
    login(fresh, console_service)
    open_tab(fresh, "backtests")
    row = fresh.locator("#backtest-jobs tr", has=fresh.locator(f"[data-job='{job_id}']"))
    expect(row.locator(".badge")).to_have_text("done")
    expect(fresh.locator("#backtest-progress")).to_be_empty()
    row.locator(f"[data-job='{job_id}']").click()
    expect(fresh.locator("#backtest-progress code")).to_have_text(job_id)
    fresh.wait_for_function("() => Number(document.querySelector('#backtest-equity').dataset.points) > 0")
    fresh.close()


def test_a_parameter_search_shows_its_ranked_candidates(page: Page, console_service: Service) -> None:
    if not BACKTEST_DATA.is_file():
        pytest.skip(f"real market data not present at {BACKTEST_DATA} (a plain clone has no ../shared)")
    login(page, console_service)
    open_tab(page, "backtests")
    form = page.locator("#backtest-form")
    form.locator("[name=data]").fill(str(BACKTEST_DATA))
    form.locator("[name=from]").fill("2006-01-02")
    form.locator("[name=to]").fill("2006-01-20")
    form.locator("[name=sweep]").fill("period_1=5:7:1 period_2=20:30:10")
    form.locator("[name=split]").select_option("train")
    form.locator("button[type=submit]").click()
    expect(page.locator("#backtest-progress .badge")).to_have_text("done", timeout=60_000)
    ranking = page.locator("#backtest-ranking")
    expect(ranking.locator("tbody tr")).to_have_count(6)  # 3 x 2 grid points, best first
    expect(ranking.locator("thead")).to_contain_text("oos_net_pnl")
    expect(ranking.locator("tbody tr").first.locator("td").first).to_have_text("1")
    expect(ranking).to_contain_text("train 0.7 / test")
    with page.expect_download() as download:
        page.click("#backtest-sweep-html")
    assert download.value.suggested_filename.endswith("-sweep.html")
    screenshot(page, "backtest-search")


def test_the_overview_fits_a_phone(browser: Any, console_service: Service, console_log: Any) -> None:
    phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
    try:
        page = phone.new_page()
        page.on("console", lambda m: console_log.messages.append((m.type, m.text)))
        login(page, console_service)
        expect(page.locator("#equity-chart .main-svg").first).to_be_attached()
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390, f"the page scrolls sideways on a phone: {width} px"
        screenshot(page, "overview-phone")
    finally:
        phone.close()
    assert not console_log.violations(), console_log.violations()
