"""Offline Schwab: an httpx2 MockTransport that plays Schwab's API and token endpoint.

The adapter hands this transport to the OAuth2Client schwab-py builds, so every request goes
through the real schwab-py client and authlib (bearer header, token refresh, Basic auth on the
token endpoint) and is recorded here for exact assertions.

Import the fixtures into a test module with
`from tests.brokers.fixtures_schwab.harness import schwab_env  # noqa: F401`.
"""
from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx2
import pytest
from cryptography.fernet import Fernet

from brokers.schwab import SchwabAdapter
from brokers.token_store import TokenStore
from config.settings import Settings, TradingMode
from store.redis_store import Store

FIXTURES = Path(__file__).resolve().parent
API = "https://api.schwabapi.com"
TOKEN_URL = f"{API}/v1/oauth/token"
ACCOUNT_ID = "87654321"
OTHER_ACCOUNT_ID = "11112222"
ACCOUNT_HASH = "E3B0C44298FC1C149AFBF4C8996FB92427AE41E4649B934CA495991B7852B855"
API_KEY = "AppKeyX7kq2Lm9Pz4Rt6Vw8Yb1Cd3Ef5Gh"
APP_SECRET = "AppSecretQ1w2E3r4T5y6U7i8"
CALLBACK = "https://127.0.0.1:8182"
ORDERS_URL = f"{API}/trader/v1/accounts/{ACCOUNT_HASH}/orders"
ACCOUNT_PATH = f"/trader/v1/accounts/{ACCOUNT_HASH}"


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


Reply = httpx2.Response | Exception | Callable[[httpx2.Request], httpx2.Response]


@dataclass
class Recorded:
    method: str
    url: str
    path: str
    params: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


@dataclass
class FakeSchwab:
    """Routes by (method, path). Each route holds a queue of replies; the last one repeats."""

    routes: dict[tuple[str, str], list[Reply]] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.on("POST", "/v1/oauth/token", json_reply(load("token_response.json")))
        self.on("GET", "/trader/v1/accounts/accountNumbers", json_reply(load("account_numbers.json")))
        self.hold({})  # an account that holds nothing until a test says otherwise

    def hold(self, held: dict[str, int]) -> None:
        """Answer GET /trader/v1/accounts/{hash} (fields=positions) with these signed positions."""
        self.on("GET", ACCOUNT_PATH, json_reply(account_holding(held)))

    def on(self, method: str, path: str, *replies: Reply) -> None:
        self.routes[(method, path)] = list(replies)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        body = request.read()
        self.requests.append(Recorded(
            method=request.method, url=str(request.url), path=request.url.path,
            params=parse_qs(request.url.query.decode() if isinstance(request.url.query, bytes) else request.url.query),
            headers={k.lower(): v for k, v in request.headers.items()}, body=body,
        ))
        queue = self.routes.get((request.method, request.url.path))
        if not queue:
            return httpx2.Response(404, json={"message": f"no fake route for {request.method} {request.url.path}"})
        reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx2.Response):
            return reply(request)
        return reply

    @property
    def transport(self) -> httpx2.MockTransport:
        return httpx2.MockTransport(self.handler)

    def calls(self, method: str, path: str) -> list[Recorded]:
        return [r for r in self.requests if r.method == method and r.path == path]

    def token_calls(self, grant_type: str | None = None) -> list[Recorded]:
        return [r for r in self.calls("POST", "/v1/oauth/token")
                if grant_type is None or r.form().get("grant_type") == grant_type]


def account_holding(held: dict[str, int]) -> dict[str, Any]:
    """Schwab's account body (account_positions.json) holding exactly `held`: symbol -> signed
    quantity. As in Schwab's Account schema, a position reports `longQuantity` and `shortQuantity`
    separately (both non-negative); an OCC symbol (it has a space) is an OPTION, anything else an
    EQUITY. Schwab leaves `positions` out of an account that holds nothing."""
    account = load("account_positions.json")
    positions = []
    for symbol, quantity in held.items():
        option = " " in symbol
        positions.append({
            "shortQuantity": float(max(-quantity, 0)), "longQuantity": float(max(quantity, 0)),
            "averagePrice": 10.0 if option else 180.0, "currentDayProfitLoss": 0.0,
            "instrument": {"assetType": "OPTION", "symbol": symbol, "putCall": "CALL" if "C" in symbol[12:13] else "PUT",
                           "underlyingSymbol": "$SPX"} if option else {"assetType": "EQUITY", "symbol": symbol},
            "marketValue": 0.0,
        })
    if positions:
        account["securitiesAccount"]["positions"] = positions
    else:
        account["securitiesAccount"].pop("positions")
    return dict(account)


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Callable[[httpx2.Request], httpx2.Response]:
    """A fresh Response per call (httpx2 responses are single-use once read)."""
    def reply(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json=payload, headers=headers or {})
    return reply


def status_reply(status: int, headers: dict[str, str] | None = None, payload: Any = None) -> Callable[[httpx2.Request], httpx2.Response]:
    def reply(request: httpx2.Request) -> httpx2.Response:
        if payload is None:
            return httpx2.Response(status, headers=headers or {})
        return httpx2.Response(status, json=payload, headers=headers or {})
    return reply


def created(order_id: int, account_hash: str = ACCOUNT_HASH) -> Callable[[httpx2.Request], httpx2.Response]:
    """Schwab's answer to a placed order: 201, empty body, Location header with the order id."""
    return status_reply(201, {"Location": f"{API}/trader/v1/accounts/{account_hash}/orders/{order_id}"})


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(timezone.utc)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, delta: timedelta) -> None:
        self.now += delta


@dataclass
class SchwabEnv:
    settings: Settings
    store: Store
    tokens: TokenStore
    fake: FakeSchwab
    clock: FakeClock
    sleeps: list[float]
    latencies: list[tuple[str, float]]

    def adapter(self, **overrides: Any) -> SchwabAdapter:
        kwargs: dict[str, Any] = {
            "http_transport": self.fake.transport, "clock": self.clock, "sleep": self.sleeps.append,
            "on_latency": lambda endpoint, seconds: self.latencies.append((endpoint, seconds)),
        }
        kwargs.update(overrides)
        return SchwabAdapter(self.settings, self.store, self.tokens, **kwargs)

    def seed_token(self, *, issued_days_ago: float = 0.0, access_expires_in: int = 1800) -> dict[str, Any]:
        """Write a token exactly as schwab-py's writer would (creation_timestamp + token)."""
        token = dict(load("token_response.json"))
        token["expires_at"] = int(time.time()) + access_expires_in
        wrapped = {"creation_timestamp": int(self.clock.now.timestamp() - issued_days_ago * 86400), "token": token}
        self.tokens.save("schwab", wrapped)
        return wrapped

    def logged_in(self, *, access_expires_in: int = 1800, **overrides: Any) -> SchwabAdapter:
        self.seed_token(access_expires_in=access_expires_in)
        adapter = self.adapter(**overrides)
        status = adapter.connect()
        assert status.connected, status.message
        return adapter


def _settings(prefix: str, **changes: Any) -> Settings:
    return Settings(
        redis_prefix=prefix, schwab_api_key=API_KEY, schwab_app_secret=APP_SECRET, schwab_callback_url=CALLBACK,
        schwab_account_id=ACCOUNT_ID, token_encryption_key=Fernet.generate_key().decode(),
        trading_mode=TradingMode.LIVE, **changes,
    )


@pytest.fixture
def schwab_env(fake_store: Store) -> Iterator[SchwabEnv]:
    settings = _settings(fake_store.prefix)
    env = SchwabEnv(
        settings=settings, store=fake_store, tokens=TokenStore(fake_store, settings.token_encryption_key),
        fake=FakeSchwab(), clock=FakeClock(), sleeps=[], latencies=[],
    )
    yield env


@pytest.fixture
def schwab_env_any_redis(store: Store) -> Iterator[SchwabEnv]:
    """Same as schwab_env but parametrised over real Redis and fakeredis."""
    settings = _settings(store.prefix)
    yield SchwabEnv(
        settings=settings, store=store, tokens=TokenStore(store, settings.token_encryption_key),
        fake=FakeSchwab(), clock=FakeClock(), sleeps=[], latencies=[],
    )


def redirect_url_for(authorize_url: str, code: str = "C0.b2F1dGgyLmNkYy5zY2h3YWIuY29t.AUTHCODE%40") -> str:
    state = parse_qs(urlparse(authorize_url).query)["state"][0]
    return f"{CALLBACK}/?code={code}&session=4f1c7a2e-6f0e-4a86-9a4d-1b2c3d4e5f60&state={state}"
