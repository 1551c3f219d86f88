"""A scripted Tastytrade API behind an httpx2 MockTransport, plus shared pytest fixtures.

The adapter under test runs the real tastytrade SDK; only the socket is replaced. Responses are
realistic API bodies (dasherized keys, `data` envelope) from the JSON files next to this module
or built below. Test modules do `from tt_fake import *` after putting this directory on sys.path
(the name `tests` is shadowed by a site-packages package, so a package import is not possible).
"""
from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest

from brokers.tastytrade import TastytradeAdapter
from brokers.token_store import TokenStore
from config.settings import Settings, TradingMode
from domain.orders import TASTYTRADE
from store.redis_store import Store

HERE = Path(__file__).parent
API = "https://api.tastyworks.com"
ACCOUNT = "5WT00001"
OTHER_ACCOUNT = "5WT00002"
CLIENT_ID = "cid-7f3a2b"
CLIENT_SECRET = "csecret-9d8c7b6a5f4e3d2c1b0a"
REFRESH_TOKEN = "rtoken-0a1b2c3d4e5f6a7b8c9d"
NOW = datetime(2025, 11, 20, 15, 0, tzinfo=UTC)  # Thursday 10:00 New York; front month MESZ5

Reply = httpx2.Response | Exception | Callable[[httpx2.Request], httpx2.Response]


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((HERE / name).read_text()))


def error_body(code: str, message: str, errors: list[dict[str, str]] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": {"code": code, "message": message}}
    if errors:
        body["error"]["errors"] = errors
    return body


def bp_effect() -> dict[str, Any]:
    return {"change-in-margin-requirement": "1500.0", "change-in-margin-requirement-effect": "Debit",
            "change-in-buying-power": "1500.0", "change-in-buying-power-effect": "Debit",
            "current-buying-power": "21450.12", "current-buying-power-effect": "Credit",
            "new-buying-power": "19950.12", "new-buying-power-effect": "Credit",
            "isolated-order-margin-requirement": "1500.0", "isolated-order-margin-requirement-effect": "Debit",
            "is-spread": False, "impact": "1500.0", "effect": "Debit"}


def order_body(*, order_id: int | None, coid: str, symbol: str, instrument_type: str, action: str,
               quantity: int = 1, status: str = "Routed", order_type: str = "Market",
               price: str | None = None, price_effect: str | None = None, remaining: int | None = None,
               fills: list[dict[str, Any]] | None = None, reject_reason: str | None = None,
               underlying: str | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "account-number": ACCOUNT, "time-in-force": "Day", "order-type": order_type, "size": quantity,
        "underlying-symbol": underlying or symbol, "underlying-instrument-type": "Equity" if instrument_type != "Future" else "Future",
        "status": status, "cancellable": status in ("Received", "Routed", "Live"), "editable": True, "edited": False,
        "external-identifier": coid, "received-at": "2025-11-20T15:00:00.101+00:00",
        "updated-at": "2025-11-20T15:00:00.205+00:00", "source": "tastyware/tastytrade:v13.2.3",
        "legs": [{"instrument-type": instrument_type, "symbol": symbol, "quantity": quantity,
                  "remaining-quantity": quantity if remaining is None else remaining, "action": action,
                  "fills": fills or []}],
    }
    if order_id is not None:
        body["id"] = order_id
    if price is not None:
        body["price"], body["price-effect"] = price, price_effect or "Debit"
    if reject_reason:
        body["reject-reason"] = reject_reason
    if status in ("Filled", "Cancelled", "Rejected", "Expired"):
        body["terminal-at"] = "2025-11-20T15:00:01.000+00:00"
    return body


def fill(fill_id: str, quantity: int, price: str) -> dict[str, Any]:
    return {"fill-id": fill_id, "quantity": quantity, "fill-price": price, "filled-at": "2025-11-20T15:00:00.300+00:00",
            "destination-venue": "CME", "ext-exec-id": "x" + fill_id}


def placed_response(order: dict[str, Any]) -> dict[str, Any]:
    return {"data": {"order": order, "buying-power-effect": bp_effect(),
                     "fee-calculation": {"regulatory-fees": "0.02", "regulatory-fees-effect": "Debit",
                                         "clearing-fees": "0.1", "clearing-fees-effect": "Debit",
                                         "commission": "0.75", "commission-effect": "Debit",
                                         "proprietary-index-option-fees": "0.0",
                                         "proprietary-index-option-fees-effect": "None",
                                         "total-fees": "0.87", "total-fees-effect": "Debit"},
                     "warnings": []}, "context": f"/accounts/{ACCOUNT}/orders"}


@dataclass
class Seen:
    method: str
    url: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class FakeTastytrade:
    """Routes (method, path) to queued replies; the last reply of a queue repeats."""

    def __init__(self) -> None:
        self.requests: list[Seen] = []
        self._routes: dict[tuple[str, str], list[Reply]] = {}
        self._lock = threading.Lock()
        self.access_tokens = 0
        self.on("POST", "/oauth/token", self._refresh_reply)
        self.on("GET", "/customers/me/accounts", httpx2.Response(200, json=load("accounts.json")))
        self.transport = httpx2.MockTransport(self.handler)

    def _refresh_reply(self, request: httpx2.Request) -> httpx2.Response:
        self.access_tokens += 1
        return httpx2.Response(200, json={"access_token": f"atoken-{self.access_tokens:04d}-zz9",
                                          "token_type": "Bearer", "expires_in": 900})

    def on(self, method: str, path: str, *replies: Reply) -> None:
        with self._lock:
            self._routes[(method, path)] = list(replies)

    def handler(self, request: httpx2.Request) -> httpx2.Response:
        seen = Seen(request.method, str(request.url), request.url.path, dict(request.headers), request.content)
        with self._lock:
            self.requests.append(seen)
            queue = self._routes.get((request.method, request.url.path))
            if not queue:
                reply: Reply = httpx2.Response(404, json=error_body("not_found", f"no route {request.url.path}"))
            else:
                reply = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(reply, Exception):
            raise reply
        if callable(reply) and not isinstance(reply, httpx2.Response):
            return reply(request)
        # A fresh Response per request: httpx2 responses are single-use streams.
        return httpx2.Response(reply.status_code, headers=reply.headers, content=reply.content)

    def calls(self, method: str, path: str) -> list[Seen]:
        return [r for r in self.requests if r.method == method and r.path == path]


def make_settings(base: Settings, *, live: bool = False, account: str | None = ACCOUNT) -> Settings:
    return base.with_overrides(
        trading_mode=TradingMode.LIVE if live else TradingMode.PAPER,
        tastytrade_client_id=CLIENT_ID, tastytrade_client_secret=CLIENT_SECRET,
        tastytrade_redirect_uri="https://127.0.0.1:8183/callback", tastytrade_account_id=account,
    )


class Harness:
    """Builds adapters over one fake API and one store, closing them all at teardown."""

    def __init__(self, base: Settings, store: Store) -> None:
        self.base = base
        self.store = store
        self.fake = FakeTastytrade()
        self.tokens = TokenStore(store, None)
        self.sleeps: list[float] = []
        self.latencies: list[tuple[str, float]] = []
        self._adapters: list[TastytradeAdapter] = []

    def login(self, refresh_token: str = REFRESH_TOKEN) -> None:
        self.tokens.save(TASTYTRADE, {"refresh_token": refresh_token})

    def adapter(self, *, live: bool = False, account: str | None = ACCOUNT, **kwargs: Any) -> TastytradeAdapter:
        kwargs.setdefault("sleep", self.sleeps.append)
        kwargs.setdefault("on_latency", lambda e, s: self.latencies.append((e, s)))
        adapter = TastytradeAdapter(make_settings(self.base, live=live, account=account), self.store, self.tokens,
                                    transport=self.fake.transport, clock=lambda: NOW, **kwargs)
        self._adapters.append(adapter)
        return adapter

    def connected(self, *, live: bool = False, **kwargs: Any) -> TastytradeAdapter:
        self.login()
        adapter = self.adapter(live=live, **kwargs)
        status = adapter.connect()
        assert status.connected, status.message
        return adapter

    def close(self) -> None:
        for adapter in self._adapters:
            adapter.close()


@pytest.fixture
def tt(settings: Settings, fake_store: Store) -> Iterator[Harness]:
    harness = Harness(settings, fake_store)
    yield harness
    harness.close()


@pytest.fixture
def tt_any_store(settings: Settings, store: Store) -> Iterator[Harness]:
    """Same harness on both real Redis and fakeredis."""
    harness = Harness(settings, store)
    yield harness
    harness.close()


__all__ = ["ACCOUNT", "API", "CLIENT_ID", "CLIENT_SECRET", "FakeTastytrade", "Harness", "NOW", "OTHER_ACCOUNT",
           "REFRESH_TOKEN", "error_body", "fill", "load", "order_body", "placed_response", "tt", "tt_any_store"]
