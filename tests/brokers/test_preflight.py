"""The pre-flight command (preflight.py) through the real SDKs on fake transports: schwab-py and
the tastytrade SDK over httpx2 MockTransports (tests/brokers/schwab/fixtures, tests/brokers/tastytrade/fixtures),
databento's Historical client over a requests transport adapter, or a closed port.

Sources of the fakes' answers beyond the shared fixtures:
- Schwab previewOrder: the Trader API's `PreviewOrder` schema (developer.schwab.com, Accounts and
  Trading, POST /accounts/{accountNumber}/previewOrder): `orderStrategy` with a `status` and an
  `orderBalance`, and `orderValidationResult` with `rejects`/`alerts`/... lists of
  `OrderValidationDetail`; a preview Schwab would refuse answers 200 with its rejects and status
  REJECTED (as a recorded real answer shows: schwab_api crate, tests/model/Trader/PreviewOrder_real.json).
- Tastytrade dry run: POST /accounts/{n}/orders/dry-run, validated by `TastytradeAccount` (tt_fake);
  a failed preflight check is the 422 `preflight_check_failure` envelope the SDK's
  `validate_response` parses (its inner code is this fake's own).
- Tastytrade quotes: GET /market-data/by-type with `index`/`equity`/`future` (SDK
  `get_market_data_by_type`), rows shaped as in test_tastytrade_account.py.
- Databento: GET {gateway}/v0/metadata.get_dataset_range?dataset=..., HTTP Basic auth with the API
  key as user name (SDK `BentoHttpAPI._get`); the answer's `start`/`end`/`schema` fields as
  databento.com/docs/api-historical/metadata/metadata-get-dataset-range documents; 401 "invalid
  username or API key" (databento.com/docs/api-historical/basics/errors) with a `detail` body, the
  field the SDK's `check_http_error` reads.
"""
from __future__ import annotations

import base64
import json
import socket
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import databento as db
import httpx2
import pytest
import requests
from requests.adapters import BaseAdapter
from requests.structures import CaseInsensitiveDict

sys.path.insert(0, str(Path(__file__).parent / "tastytrade" / "fixtures"))
from tt_fake import (  # noqa: E402,F401
    ACCOUNT as TT_ACCOUNT,
)
from tt_fake import (  # noqa: E402
    CLIENT_ID,
    CLIENT_SECRET,
    DRY_RUN_PATH,
    NOW,
    ORDERS_PATH,
    REFRESH_TOKEN,
    Harness,
    TastytradeAccount,
    error_body,
    make_settings,
    tt,
)
from tt_fake import load as tt_load  # noqa: E402

import preflight  # noqa: E402
from app import secret_values  # noqa: E402
from config.settings import MarketDataSource, Settings  # noqa: E402
from domain.orders import SCHWAB, TASTYTRADE  # noqa: E402
from preflight import Outcome, Report, run_preflight  # noqa: E402
from tests.brokers.schwab.fixtures.harness import (  # noqa: E402,F401
    ACCOUNT_HASH,
    ACCOUNT_ID as SCHWAB_ACCOUNT,
    API_KEY,
    APP_SECRET,
    FIXTURES as SCHWAB_FIXTURES,
    SchwabEnv,
    json_reply,
    load as schwab_load,
    schwab_env,
)

DATABENTO_KEY = "db-Fk3u9QeXw7Lm2Pz8Rt6Vb1Yc4Nd5"
DATABENTO_GATEWAY = "https://hist.databento.com"
PREVIEW_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}/previewOrder"
SCHWAB_ORDERS_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}/orders"


# --- Databento over a requests transport adapter --------------------------------------------------
class FakeDatabento(BaseAdapter):
    """Databento's Historical gateway for the metadata call the pre-flight makes (see the module
    docstring for the sources). It checks the Basic-auth key as the gateway does."""

    def __init__(self, key: str = DATABENTO_KEY, *, refusal_detail: str = "Authentication failed.") -> None:
        super().__init__()
        self.key = key
        self.refusal_detail = refusal_detail
        self.requests: list[requests.PreparedRequest] = []

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.requests.append(request)
        url = urlsplit(request.url or "")
        expected = "Basic " + base64.b64encode(f"{self.key}:".encode()).decode()
        if request.headers.get("Authorization") != expected:
            return _response(request, 401, {"detail": self.refusal_detail})
        if url.path != "/v0/metadata.get_dataset_range":
            return _response(request, 404, {"detail": f"no fake route for {url.path}"})
        dataset = parse_qs(url.query)["dataset"][0]
        # Historical data lags real time: the available end is some minutes before now.
        end = "2025-11-20T14:50:00.000000000Z"
        return _response(request, 200, {"start": "2017-05-21T00:00:00.000000000Z", "end": end,
                                        "schema": {"trades": {"start": "2017-05-21T00:00:00.000000000Z", "end": end},
                                                   "ohlcv-1m": {"start": "2017-05-21T00:00:00.000000000Z",
                                                                "end": "2025-11-20T14:49:00.000000000Z"}},
                                        "dataset": dataset})

    def close(self) -> None:
        pass


def _response(request: requests.PreparedRequest, status: int, body: Any) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response._content = json.dumps(body).encode()
    response.headers = CaseInsensitiveDict({"Content-Type": "application/json"})
    response.url = request.url or ""
    response.request = request
    response.encoding = "utf-8"
    return response


@pytest.fixture
def databento(monkeypatch: pytest.MonkeyPatch) -> FakeDatabento:
    """The SDK calls requests.get, whose fresh Session asks get_adapter for the gateway's URL."""
    fake = FakeDatabento()
    original = requests.Session.get_adapter

    def get_adapter(self: requests.Session, url: str) -> BaseAdapter:
        return fake if url.startswith(DATABENTO_GATEWAY) else original(self, url)

    monkeypatch.setattr(requests.Session, "get_adapter", get_adapter)
    return fake


# --- Schwab and Tastytrade answering like a healthy account --------------------------------------
def schwab_preview(rejects: tuple[str, ...] = ()) -> Callable[[httpx2.Request], httpx2.Response]:
    """previewOrder: Schwab's PreviewOrder for the order in the body (rejects -> status REJECTED)."""
    def reply(request: httpx2.Request) -> httpx2.Response:
        order = json.loads(request.content)
        legs = [{"legId": i + 1, "instruction": leg["instruction"], "quantity": float(leg["quantity"]),
                 "finalSymbol": leg["instrument"]["symbol"], "assetType": leg["instrument"]["assetType"],
                 "positionEffect": "OPENING", "projectedCommission": 0.0}
                for i, leg in enumerate(order["orderLegCollection"])]
        body = {
            "orderId": 0,
            "orderStrategy": {
                "accountNumber": SCHWAB_ACCOUNT, "advancedOrderType": "NONE", "orderStrategyType": "SINGLE",
                "session": order["session"], "duration": order["duration"], "orderType": order["orderType"],
                "status": "REJECTED" if rejects else "ACCEPTED", "quantity": float(order["orderLegCollection"][0]["quantity"]),
                "orderBalance": {"orderValue": 182.5, "projectedAvailableFund": 47449.7,
                                 "projectedBuyingPower": 47449.7, "projectedCommission": 0.65},
                "orderLegs": legs,
            },
            "orderValidationResult": {"rejects": [
                {"validationRuleName": "AccountBuyingPower", "message": m, "activityMessage": m,
                 "originalSeverity": "REJECT"} for m in rejects]},
            "commissionAndFee": {"commission": {"commissionLegs": [{"commissionValues": [
                {"value": 0.65, "type": "COMMISSION"}]}]}},
        }
        return httpx2.Response(200, json=body)
    return reply


def schwab_quotes(request: httpx2.Request) -> httpx2.Response:
    """GET /marketdata/v1/quotes?symbols=...: Schwab's quote bodies per requested symbol."""
    files = {"$SPX": "quote_spx.json", "NVDA": "quote_nvda.json"}
    body: dict[str, Any] = {}
    for symbol in request.url.params.get("symbols", "").split(","):
        if symbol in files:
            body.update(schwab_load(files[symbol]))
    return httpx2.Response(200, json=body)


def schwab_chain_on_test_day() -> dict[str, Any]:
    """The SPXW chain fixture moved from 2025-12-19 to the tests' day (2025-11-20)."""
    text = (SCHWAB_FIXTURES / "chain_spx.json").read_text()
    return dict(json.loads(text.replace("2025-12-19", "2025-11-20").replace("251219", "251120")))


def tt_market_row(symbol: str, kind: str, last: str) -> dict[str, Any]:
    return {"symbol": symbol, "instrument-type": kind, "updated-at": "2025-11-20T15:00:00.5+00:00",
            "bid-size": "12", "ask-size": "9", "close-price-type": "Regular", "summary-date": "2025-11-20",
            "prev-close-date": "2025-11-19", "prev-close-price-type": "Final", "halt-start-time": -1,
            "halt-end-time": -1, "bid": last, "ask": last, "last": last, "mark": last}


def tt_quotes(request: httpx2.Request) -> httpx2.Response:
    rows = {("index", "SPX"): ("Index", "6652.4"), ("equity", "NVDA"): ("Equity", "182.5"),
            ("future", "/MESZ5"): ("Future", "6612.25")}
    items = [tt_market_row(symbol, *rows[(kind, symbol)])
             for kind, symbol in request.url.params.multi_items() if (kind, symbol) in rows]
    return httpx2.Response(200, json={"data": {"items": items}})


@dataclass
class World:
    schwab_env: SchwabEnv
    tt: Harness
    tt_account: TastytradeAccount
    databento: FakeDatabento
    settings: Settings

    def adapters(self) -> dict[Any, Any]:
        return {SCHWAB: self.schwab_env.adapter(), TASTYTRADE: self.tt.adapter(live=True)}

    def run(self, *, historical: Callable[[str], Any] = lambda key: db.Historical(key=key),
            secrets: tuple[str | None, ...] = ()) -> Report:
        return run_preflight(self.settings, self.adapters(), historical_factory=historical, now=NOW, secrets=secrets)

    def secrets(self) -> list[str]:
        """Everything that must never be printed, in clear."""
        schwab_token = self.schwab_env.tokens.load(SCHWAB)
        assert schwab_token is not None
        values = [*secret_values(self.settings), API_KEY, APP_SECRET, CLIENT_SECRET, CLIENT_ID, REFRESH_TOKEN,
                  DATABENTO_KEY, ACCOUNT_HASH, SCHWAB_ACCOUNT, TT_ACCOUNT,
                  *(schwab_token["token"][k] for k in ("access_token", "refresh_token", "id_token"))]
        values += [f"atoken-{n:04d}-zz9" for n in range(1, self.tt.fake.access_tokens + 1)]
        return values


@pytest.fixture
def world(schwab_env: SchwabEnv, tt: Harness, databento: FakeDatabento) -> Iterator[World]:
    schwab_env.clock.now = NOW
    schwab_env.seed_token()
    schwab_env.fake.on("GET", "/marketdata/v1/quotes", schwab_quotes)
    schwab_env.fake.on("GET", "/marketdata/v1/chains", json_reply(schwab_chain_on_test_day()))
    schwab_env.fake.on("POST", PREVIEW_PATH, schwab_preview())
    account = TastytradeAccount(tt.fake)
    tt.login()
    tt.fake.on("GET", "/market-data/by-type", tt_quotes)
    tt.fake.on("GET", f"/accounts/{TT_ACCOUNT}/balances/USD", httpx2.Response(200, json=tt_load("balances.json")))
    tt.fake.on("GET", "/option-chains/SPX/nested", httpx2.Response(200, json=tt_load("spx_nested_chain.json")))
    settings = make_settings(schwab_env.settings, live=True).with_overrides(
        databento_api_key=DATABENTO_KEY, market_data_source=MarketDataSource.DATABENTO)
    yield World(schwab_env, tt, account, databento, settings)


def outcomes(report: Report) -> dict[tuple[str, str], Outcome]:
    return {(c.area, c.name): c.outcome for c in report.checks}


def detail(report: Report, area: str, name: str) -> str:
    return next(c.detail for c in report.checks if (c.area, c.name) == (area, name))


# --- tests ----------------------------------------------------------------------------------------
def test_every_check_passes_on_healthy_fakes_and_nothing_is_placed(world: World) -> None:
    report = world.run()

    assert report.exit_code == 0, report.render()
    assert outcomes(report) == {
        **{(SCHWAB, name): Outcome.PASS for name in (
            "login", "account", "positions", "quote $SPX", "quote NVDA", "SPXW chain 2025-11-20",
            "dry run: equity market", "dry run: SPXW option market", "dry run: equity stop")},
        **{(TASTYTRADE, name): Outcome.PASS for name in (
            "login", "account", "positions", "quote $SPX", "quote NVDA", "quote /MES", "SPXW chain 2025-11-20",
            "dry run: futures market", "dry run: equity market", "dry run: SPXW option market",
            "dry run: futures stop")},
        ("databento", "GLBX.MDP3"): Outcome.PASS,
        ("databento", "EQUS.MINI"): Outcome.PASS,
    }
    assert "account ****4321 found on the login" in detail(report, SCHWAB, "login")
    assert "account ****0001 found on the login" in detail(report, TASTYTRADE, "login")
    assert detail(report, "databento", "GLBX.MDP3") == (
        "key entitled; history available up to 2025-11-20 14:50 UTC (10 min behind now)")
    assert "ready" in report.render().splitlines()[-1]

    # Schwab: previews only, the same JSON place_order would send; the option is the ATM SPXW call.
    previews = [r.json() for r in world.schwab_env.fake.calls("POST", PREVIEW_PATH)]
    assert [(p["orderType"], p["orderLegCollection"][0]["instruction"], p["orderLegCollection"][0]["instrument"]["symbol"])
            for p in previews] == [("MARKET", "BUY", "NVDA"), ("MARKET", "BUY_TO_OPEN", "SPXW  251120C06855000"),
                                   ("STOP", "SELL_SHORT", "NVDA")]  # the account holds no NVDA: a short sale
    # The stop as place_order would rest it: 5 % under the last 183.35 on the cent, good till cancelled.
    assert (previews[2]["stopPrice"], previews[2]["duration"]) == ("174.18", "GOOD_TILL_CANCEL")
    assert world.schwab_env.fake.calls("POST", SCHWAB_ORDERS_PATH) == []

    # Tastytrade: dry runs only (the adapter is in live mode, so its own orders would be routed).
    dry = [r.json() for r in world.tt.fake.calls("POST", DRY_RUN_PATH)]
    assert [(d["order-type"], d["legs"][0]["action"], d["legs"][0]["symbol"], d.get("stop-trigger")) for d in dry] == [
        ("Market", "Buy", "/MESZ5", None),
        ("Market", "Buy to Open", "NVDA", None),
        ("Market", "Buy to Open", "SPXW  251120C06650000", None),
        ("Stop", "Sell", "/MESZ5", "6281.75"),  # 5 % under the last 6612.25, on the 0.25 tick
    ]
    assert world.tt.fake.calls("POST", ORDERS_PATH) == []
    assert world.tt_account.orders == []
    # Databento: one authenticated metadata call per dataset the catalog uses.
    assert sorted(parse_qs(urlsplit(r.url or "").query)["dataset"][0] for r in world.databento.requests) == [
        "EQUS.MINI", "GLBX.MDP3"]


def test_refused_tastytrade_login_fails_with_the_reason(world: World) -> None:
    world.tt.fake.on("POST", "/oauth/token", httpx2.Response(401, json=error_body("invalid_grant", "revoked")))

    report = world.run()

    assert report.exit_code == 1
    login = detail(report, TASTYTRADE, "login")
    assert "authentication required (HTTP 401): log in again" in login
    later = [c for c in report.checks if c.area == TASTYTRADE and c.name != "login"]
    assert later and all(c.outcome is Outcome.SKIP and c.detail == "needs a working login" for c in later)
    assert outcomes(report)[(SCHWAB, "dry run: equity market")] is Outcome.PASS  # the other broker still ran
    assert world.tt.fake.calls("POST", DRY_RUN_PATH) == []
    assert "NOT READY" in report.render().splitlines()[-1]


def test_expired_schwab_token_fails_login(world: World) -> None:
    world.schwab_env.seed_token(issued_days_ago=8)  # Schwab refresh tokens die after 7 days

    report = world.run()

    assert report.exit_code == 1
    assert outcomes(report)[(SCHWAB, "login")] is Outcome.FAIL
    assert detail(report, SCHWAB, "login") == "Schwab refresh token expired (7 days); log in again"
    assert world.schwab_env.fake.calls("POST", PREVIEW_PATH) == []


def test_tastytrade_dry_run_rejection_fails_that_check(world: World) -> None:
    refusal = error_body("preflight_check_failure", "One or more preflight checks failed",
                         [{"code": "insufficient_buying_power", "message": "This order exceeds your buying power"}])
    world.tt.fake.on("POST", DRY_RUN_PATH, httpx2.Response(422, json=refusal))

    report = world.run()

    assert report.exit_code == 1
    futures = detail(report, TASTYTRADE, "dry run: futures market")
    assert outcomes(report)[(TASTYTRADE, "dry run: futures market")] is Outcome.FAIL
    assert futures.startswith("BUY 1 /MES MARKET refused:")
    assert "insufficient_buying_power: This order exceeds your buying power" in futures


def test_schwab_preview_rejection_fails_that_check(world: World) -> None:
    world.schwab_env.fake.on("POST", PREVIEW_PATH, schwab_preview(
        ("You do not have enough available cash/buying power for this order.",)))

    report = world.run()

    assert report.exit_code == 1
    assert outcomes(report)[(SCHWAB, "dry run: equity market")] is Outcome.FAIL
    assert detail(report, SCHWAB, "dry run: equity market") == (
        "BUY 1 NVDA MARKET refused: You do not have enough available cash/buying power for this order.")


def test_unreachable_databento_fails(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as s:  # a port nothing listens on: the connection is refused
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    report = world.run(historical=lambda key: db.Historical(key=key, gateway=f"https://127.0.0.1:{port}"))

    assert report.exit_code == 1
    assert outcomes(report)[("databento", "GLBX.MDP3")] is Outcome.FAIL
    assert detail(report, "databento", "GLBX.MDP3") == "Databento unreachable (ConnectionError)"


def test_refused_databento_key_fails(world: World) -> None:
    world.databento.key = "db-SomeOtherKeyAltogether00000"

    report = world.run()

    assert report.exit_code == 1
    assert detail(report, "databento", "EQUS.MINI") == "Databento refused the API key (HTTP 401: Authentication failed.)"


@pytest.mark.parametrize("case", ["healthy", "refused login", "expired token", "dry-run rejection"])
def test_no_secret_or_account_number_in_the_output(world: World, case: str) -> None:
    if case == "refused login":
        world.tt.fake.on("POST", "/oauth/token", httpx2.Response(401, json=error_body("invalid_grant", "revoked")))
        world.schwab_env.seed_token(access_expires_in=-60)
        world.schwab_env.fake.on("POST", "/v1/oauth/token", json_reply({"error": "invalid_grant"}, status=400))
    elif case == "expired token":
        world.schwab_env.seed_token(issued_days_ago=8)
    elif case == "dry-run rejection":
        world.tt.fake.on("POST", DRY_RUN_PATH, httpx2.Response(422, json=error_body("preflight_check_failure", "x")))

    output = world.run().render()  # nothing scrubbed: the adapters' own messages must be clean

    leaked = [s for s in world.secrets() if s and s in output]
    assert leaked == [], output


def test_a_secret_echoed_by_a_service_is_scrubbed(world: World) -> None:
    # Should a service ever echo the key it was given, the table still does not show it.
    world.databento.key = "db-SomeOtherKeyAltogether00000"
    world.databento.refusal_detail = f"API key {DATABENTO_KEY} is not valid"

    report = world.run(secrets=tuple(secret_values(world.settings)))

    output = report.render()
    assert DATABENTO_KEY not in output
    assert "API key *** is not valid" in detail(report, "databento", "GLBX.MDP3")


def test_live_mode_on_synthetic_prices_fails(world: World) -> None:
    world.settings = world.settings.with_overrides(market_data_source=MarketDataSource.SIMULATED)

    report = world.run()

    assert report.exit_code == 1
    assert outcomes(report)[("setup", "market data")] is Outcome.FAIL
    assert detail(report, "setup", "market data") == "MARKET_DATA_SOURCE=simulated: live trading needs databento"


def test_main_stops_on_bad_settings_with_status_2(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no .env here
    monkeypatch.setenv("MARKET_DATA_SOURCE", "databento")
    monkeypatch.delenv("DATABENTO_API_KEY", raising=False)

    assert preflight.main([]) == 2
    assert capsys.readouterr().err.strip() == (
        "preflight: DATABENTO_API_KEY is required when MARKET_DATA_SOURCE=databento")
