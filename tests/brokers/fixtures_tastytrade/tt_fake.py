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
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

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
        self.on("GET", f"/accounts/{ACCOUNT}/positions", positions_reply({}))  # holds nothing until told
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


def positions_reply(held: dict[str, tuple[str, int]]) -> Callable[[httpx2.Request], httpx2.Response]:
    """GET /accounts/{n}/positions answering with `held` (symbol -> (instrument type, signed
    quantity)) as Tastytrade reports positions: unsigned `quantity` plus `quantity-direction`,
    filtered by the `symbol` query parameter when given."""
    def reply(request: httpx2.Request) -> httpx2.Response:
        only = request.url.params.get("symbol")
        template = load("positions.json")["data"]["items"][0]
        items = []
        for symbol, (kind, quantity) in held.items():
            if quantity == 0 or (only is not None and symbol != only):
                continue
            items.append(dict(template, **{
                "symbol": symbol, "instrument-type": kind, "underlying-symbol": symbol,
                "quantity": abs(quantity), "quantity-direction": "Long" if quantity > 0 else "Short",
                "multiplier": 5 if kind == "Future" else 100 if kind == "Equity Option" else 1}))
        return httpx2.Response(200, json={"data": {"items": items}, "context": request.url.path})
    return reply


ORDERS_PATH = f"/accounts/{ACCOUNT}/orders"
DRY_RUN_PATH = f"{ORDERS_PATH}/dry-run"
LIVE_PATH = f"{ORDERS_PATH}/live"
POSITIONS_PATH = f"/accounts/{ACCOUNT}/positions"
NEW_YORK = ZoneInfo("America/New_York")
_CLOSING = {"Sell to Close": "Long", "Buy to Close": "Short"}  # a closing action needs this side held
_OPENING = {"Buy to Open": "Short", "Sell to Open": "Long"}  # an opening action must not face this side


def _stamp(at: datetime) -> str:
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


class TastytradeAccount:
    """One Tastytrade account with state, answering the order, position and order-search
    endpoints the way Tastytrade documents them. Installs its routes on a `FakeTastytrade`.

    Sources, per behaviour:
    - Leg actions: the order schema (developer.tastytrade.com/schemas/orders/postAccountsAccountNumberOrders,
      `legs[].action`): "`Buy` and `Sell` are only applicable to Futures orders" -> refused on any
      other instrument type. The docs do not say "Buy to Open" is refused on a Future leg, so it
      is accepted and validated like any open/close action.
    - `advanced-instructions.strict-position-effect-validation`: the SDK's `AdvancedInstructions`
      docstring (tastytrade/order.py: "By default, if a position meant to be closed by a closing
      order is no longer open, the API will turn it into an opening order. With this flag, the API
      would instead discard the closing order") and the schema ("If the order should be rejected
      the open/close position effect is not valid"). With the flag, a close of more than the
      account holds on that side, or an open against a held opposite side, is refused (422, the
      preflight-failure envelope the API uses); without it a short close becomes an opening order.
    - Positions: GET /accounts/{n}/positions, unsigned `quantity` + `quantity-direction`, filtered by
      the `symbol` query parameter (SDK `Account.get_positions(symbol=...)`).
    - Order search: GET /accounts/{n}/orders (developer.tastytrade.com/order-management, "Search
      Orders": `start-date`, `end-date`, `per-page` default 10, `page-offset`, `sort` default Desc)
      with the `pagination` object the SDK's `Session._paginate` pages by.
    - Live orders: GET /accounts/{n}/orders/live returns "all orders that were created or updated
      today" (same page), whatever their status. "Today" is taken in New York (not documented).
    Market orders fill at once at `price`; limit and stop orders rest ("Live").
    """

    def __init__(self, fake: FakeTastytrade, *, now: datetime = NOW, price: str = "100.0") -> None:
        self.fake = fake
        self.now = now
        self.price = price
        self.positions: dict[str, tuple[str, int]] = {}  # symbol -> (instrument type, signed quantity)
        self.orders: list[dict[str, Any]] = []
        self.refusals: list[str] = []
        self._next_id = 7000
        fake.on("POST", ORDERS_PATH, lambda r: self._place(r, dry_run=False))
        fake.on("POST", DRY_RUN_PATH, lambda r: self._place(r, dry_run=True))
        fake.on("GET", POSITIONS_PATH, self._positions)
        fake.on("GET", ORDERS_PATH, self.search)
        fake.on("GET", LIVE_PATH, self._live)

    # ------------------------------------------------------------------ seeding
    def hold(self, symbol: str, instrument_type: str, quantity: int) -> None:
        self.positions[symbol] = (instrument_type, quantity)

    def held(self, symbol: str) -> int:
        return self.positions.get(symbol, ("", 0))[1]

    def add_order(self, body: dict[str, Any], *, at: datetime) -> dict[str, Any]:
        """An order already at Tastytrade (placed `at`), e.g. one whose POST timed out."""
        body = dict(body, **{"received-at": _stamp(at), "updated-at": _stamp(at)})
        if body.get("id") is None:
            body["id"] = self._new_id()
        self._store(body)
        return body

    # ------------------------------------------------------------------ endpoints
    def _place(self, request: httpx2.Request, *, dry_run: bool) -> httpx2.Response:
        sent = json.loads(request.content)
        strict = bool((sent.get("advanced-instructions") or {}).get("strict-position-effect-validation"))
        (leg,) = sent["legs"]
        action, kind, symbol, quantity = leg["action"], leg["instrument-type"], leg["symbol"], int(leg["quantity"])
        refusal = self._refusal(action, kind, symbol, quantity, strict)
        if refusal is not None:
            # The inner codes are this fake's own: the docs name the rule, not the code.
            code, message = refusal
            self.refusals.append(message)
            return httpx2.Response(422, json=error_body(
                "preflight_check_failure", "One or more preflight checks failed", [{"code": code, "message": message}]))
        market = sent["order-type"] == "Market"
        status = "Received" if dry_run else ("Filled" if market else "Live")
        body = order_body(order_id=None if dry_run else self._new_id(), coid=sent.get("external-identifier", ""),
                          symbol=symbol, instrument_type=kind, action=action, quantity=quantity, status=status,
                          order_type=sent["order-type"], price=sent.get("price"), price_effect=sent.get("price-effect"),
                          remaining=0 if status == "Filled" else quantity,
                          fills=[fill(f"f{self._next_id}", quantity, self.price)] if status == "Filled" else None,
                          underlying=symbol)
        body["received-at"] = body["updated-at"] = _stamp(self.now)
        if not dry_run:
            self._store(body)
            if status == "Filled":
                signed = quantity if action.startswith("Buy") else -quantity
                self.positions[symbol] = (kind, self.held(symbol) + signed)
        return httpx2.Response(200 if dry_run else 201, json=placed_response(body))

    def _refusal(self, action: str, kind: str, symbol: str, quantity: int, strict: bool) -> tuple[str, str] | None:
        if action in ("Buy", "Sell") and kind != "Future":
            return "invalid_action", f"{action} is only applicable to Futures orders, not {kind}"
        if not strict:
            return None
        held = self.held(symbol)
        side_held = "Long" if held > 0 else "Short" if held < 0 else "Zero"
        if action in _CLOSING and (side_held != _CLOSING[action] or quantity > abs(held)):
            return "invalid_position_effect", (f"{action} {quantity} {symbol}: the position to close is not open "
                                               f"({side_held} {abs(held)})")
        if action in _OPENING and side_held == _OPENING[action]:
            return "invalid_position_effect", (f"{action} {quantity} {symbol}: the account holds the opposite "
                                               f"position ({side_held} {abs(held)})")
        return None

    def _positions(self, request: httpx2.Request) -> httpx2.Response:
        return positions_reply(self.positions)(request)

    def search(self, request: httpx2.Request) -> httpx2.Response:
        """GET /accounts/{n}/orders: the order search, one page."""
        params = request.url.params
        start, end = params.get("start-date"), params.get("end-date")
        per_page, page = int(params.get("per-page", "10")), int(params.get("page-offset", "0"))
        chosen = [o for o in self.orders
                  if (start is None or self._day(o) >= date.fromisoformat(start))
                  and (end is None or self._day(o) <= date.fromisoformat(end))]
        chosen.sort(key=lambda o: o["received-at"], reverse=params.get("sort", "Desc") == "Desc")
        total_pages = -(-len(chosen) // per_page)
        items = chosen[page * per_page:(page + 1) * per_page]
        return httpx2.Response(200, json={
            "data": {"items": items}, "api-version": "v1", "context": request.url.path,
            "pagination": {"per-page": per_page, "page-offset": page, "item-offset": page * per_page,
                           "total-items": len(chosen), "total-pages": total_pages,
                           "current-item-count": len(items), "previous-link": None, "next-link": None,
                           "paging-link-template": None}})

    def _live(self, request: httpx2.Request) -> httpx2.Response:
        today = self.now.astimezone(NEW_YORK).date()
        items = [o for o in self.orders
                 if datetime.fromisoformat(o["updated-at"]).astimezone(NEW_YORK).date() == today]
        return httpx2.Response(200, json={"data": {"items": items}, "context": request.url.path})

    # ------------------------------------------------------------------ internals
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _store(self, body: dict[str, Any]) -> None:
        self.orders.append(body)
        self.fake.on("GET", f"{ORDERS_PATH}/{body['id']}",
                     lambda r, b=body: httpx2.Response(200, json={"data": b}))

    @staticmethod
    def _day(order: dict[str, Any]) -> date:
        return datetime.fromisoformat(order["received-at"]).astimezone(NEW_YORK).date()


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


__all__ = ["ACCOUNT", "API", "CLIENT_ID", "CLIENT_SECRET", "DRY_RUN_PATH", "LIVE_PATH", "NOW", "ORDERS_PATH",
           "OTHER_ACCOUNT", "POSITIONS_PATH", "REFRESH_TOKEN", "FakeTastytrade", "Harness", "TastytradeAccount",
           "error_body", "fill", "load", "order_body", "placed_response", "positions_reply", "tt", "tt_any_store"]
