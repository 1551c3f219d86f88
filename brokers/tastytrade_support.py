"""Plumbing for the Tastytrade adapter: the event-loop thread, HTTP outcome tracking, redaction,
the token endpoint's watch (rotated refresh tokens), and the pure mappings between our domain
types and the tastytrade SDK's models.

Kept apart from `brokers/tastytrade.py` so the mappings can be read (and tested) without the
threading and fault handling around them.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import logging
import re
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any, TypeVar

import httpx2
from tastytrade.account import CurrentPosition
from tastytrade.instruments import NestedOptionChain
from tastytrade.order import (
    AdvancedInstructions,
    BaseOrder,
    InstrumentType,
    Leg,
    LimitOrder,
    MarketOrder,
    OrderAction,
    OrderStatus,
    OrderTimeInForce,
    PlacedOrder,
    StopOrder,
    UnplacedOrder,
)
from tastytrade.session import Session

from brokers.position_effect import CrossesZero, account_position_effect
from config.instruments import CATALOG, AssetClass, UnknownSymbolError, canonical_symbol
from config.symbology import contract_from_key, contract_from_venue, front_month
from domain.orders import (
    BrokerOrderId,
    BrokerPosition,
    ClientOrderId,
    Fill,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    OrderUpdate,
    PositionEffect,
    mask_account,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

# --------------------------------------------------------------------------------------------
# HTTP outcome tracking
# --------------------------------------------------------------------------------------------
# The SDK turns every non-2xx answer into a bare `TastytradeError(message)`: the status code is
# lost, yet the status decides the retry policy (401 refresh, 429/5xx backoff, 4xx rejection).
# httpx2 event hooks see every request/response of the Session's client, so each adapter call
# runs with its own `HttpTrace` in a ContextVar (asyncio tasks copy the context, so concurrent
# calls never see each other's requests) and the hooks append to it.


@dataclass(slots=True)
class HttpEvent:
    method: str
    path: str
    status: int | None = None  # None until the response arrives (or forever, on a transport error)
    retry_after: float | None = None


@dataclass(slots=True)
class HttpTrace:
    events: list[HttpEvent] = field(default_factory=list)

    def last_for(self, method: str, path_suffix: str) -> HttpEvent | None:
        for event in reversed(self.events):
            if event.method == method and event.path.endswith(path_suffix):
                return event
        return None

    def sent(self, method: str, path_suffix: str) -> bool:
        """True when a request for this endpoint was handed to the transport."""
        return self.last_for(method, path_suffix) is not None

    @property
    def last(self) -> HttpEvent | None:
        return self.events[-1] if self.events else None


CURRENT_TRACE: contextvars.ContextVar[HttpTrace | None] = contextvars.ContextVar("tastytrade_trace", default=None)


async def _on_request(request: httpx2.Request) -> None:
    trace = CURRENT_TRACE.get()
    if trace is not None:
        trace.events.append(HttpEvent(request.method, request.url.path))


async def _on_response(response: httpx2.Response) -> None:
    trace = CURRENT_TRACE.get()
    if trace is None:
        return
    for event in reversed(trace.events):
        if event.status is None and event.method == response.request.method and event.path == response.request.url.path:
            event.status = response.status_code
            event.retry_after = _retry_after(response.headers.get("Retry-After"))
            break


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: ignored, our own backoff applies


def event_hooks() -> dict[str, list[Callable[..., Any]]]:
    return {"request": [_on_request], "response": [_on_response]}


# Transport errors raised before any byte of the request can have reached Tastytrade. Anything
# else (read timeout, dropped connection, protocol error) may have happened after the broker got
# the request, so for an order it means "outcome unknown".
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


# --------------------------------------------------------------------------------------------
# The adapter's one event-loop thread
# --------------------------------------------------------------------------------------------
class LoopThread:
    """One asyncio loop on one daemon thread; the synchronous facade submits coroutines to it.

    The SDK's httpx2 client is bound to the loop it first ran on, so every SDK call of one adapter
    must go through the same loop: hence exactly one thread, owned by the adapter.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> bool:
        """Start the loop if it is not running. Returns True when a new loop was started."""
        with self._lock:
            if self.alive:
                return False
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    # Cancel whatever is still pending so nothing runs on a half-dead loop.
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    for task in pending:
                        task.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.close()

            thread = threading.Thread(target=run, name=self._name, daemon=True)
            thread.start()
            ready.wait(timeout=5)
            self._loop, self._thread = loop, thread
            return True

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        loop = self._loop
        if loop is None or not self.alive:
            coro.close()
            raise RuntimeError("tastytrade event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                log.error("tastytrade event-loop thread did not stop within %.1fs", timeout)


# --------------------------------------------------------------------------------------------
# Redaction
# --------------------------------------------------------------------------------------------
class Redactor(logging.Filter):
    """Scrubs secrets from log records of the SDK's loggers and from our exception messages.

    httpx2 logs every request URL at INFO, and Tastytrade URLs carry the full account number
    (`/accounts/5WT12345/orders`). The secrets change at runtime (the access token rotates every
    15 minutes), so they are read through a callable at filter time.
    """

    def __init__(self, secrets: Callable[[], Iterable[str]], account: Callable[[], str | None]) -> None:
        super().__init__("tastytrade-redactor")
        self._secrets = secrets
        self._account = account

    def redact(self, text: str) -> str:
        account = self._account()
        if account:
            text = text.replace(account, mask_account(account) or "****")
        for secret in self._secrets():
            if secret and len(secret) >= 4:
                text = text.replace(secret, "***")
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
            clean = self.redact(message)
        except Exception:  # noqa: BLE001 - a broken record must not break logging
            return True
        if clean != message:
            record.msg, record.args = clean, ()
        return True


# --------------------------------------------------------------------------------------------
# OAuth: the token endpoint
# --------------------------------------------------------------------------------------------
TOKEN_PATH = "/oauth/token"


def oauth_error_text(payload: object, status: int) -> str:
    """The reason in a refused token request, in either error shape seen from Tastytrade: its API
    envelope `{"error": {"code", "message"}}` (developer.tastytrade.com/reference/errors) or
    RFC 6749 §5.2's `{"error": "invalid_grant", "error_description": ...}`."""
    error = payload.get("error") if isinstance(payload, dict) else None
    detail = payload.get("error_description") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error, detail = error.get("code"), error.get("message")
    text = ": ".join(str(part) for part in (error, detail) if part)
    return text or f"HTTP {status}"


def refresh_token_problem(text: str) -> str | None:
    """Why `text` cannot be a refresh token made with "Create Grant", or None. Only what is
    certain is refused: a redirect URL or an authorization code's query belongs to the other login,
    and a token has no spaces or quotes. Whether it is valid only the token endpoint can say."""
    if not text:
        return "no refresh token given"
    if "://" in text or "code=" in text:
        return ("this is the redirect URL of the authorize-URL login, not a refresh token: "
                "send it as authorizationCode")
    if any(ch.isspace() or ch in "<>\"'\\" or not ch.isprintable() for ch in text):
        return "a refresh token has no spaces or quotes: paste it exactly as Create Grant shows it"
    return None


@dataclass(slots=True)
class TokenWatch:
    """Watches one SDK Session's requests to the token endpoint (an httpx2 response hook).

    The SDK's `Session.refresh` reads only `access_token` and `expires_in` from the answer, so a
    refresh token the endpoint rotates (RFC 6749 §6: the server MAY issue a new one, and the
    client MUST then discard the old one) would be dropped, and the next start-up would log in
    with a token that may be revoked. The hook hands the new one to the session at once (its next
    refresh sends it); the adapter stores it. A refusal's reason is kept too, because the SDK's
    error parser understands only Tastytrade's envelope, not the RFC 6749 shape."""

    session: Session
    refusal: str | None = None

    def install(self) -> None:
        self.session._client.event_hooks["response"].append(self.on_response)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        if request.method != "POST" or request.url.path != TOKEN_PATH:
            return
        await response.aread()  # the SDK reads it again: the body is cached
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code // 100 != 2:
            self.refusal = oauth_error_text(payload, response.status_code)
            return
        self.refusal = None
        rotated = payload.get("refresh_token") if isinstance(payload, dict) else None
        if isinstance(rotated, str) and rotated and rotated != self.session.refresh_token:
            self.session.refresh_token = rotated


# --------------------------------------------------------------------------------------------
# Orders: domain -> SDK
# --------------------------------------------------------------------------------------------
_ACTIONS: dict[tuple[OrderSide, PositionEffect], OrderAction] = {
    (OrderSide.BUY, PositionEffect.OPEN): OrderAction.BUY_TO_OPEN,
    (OrderSide.SELL, PositionEffect.CLOSE): OrderAction.SELL_TO_CLOSE,
    (OrderSide.SELL, PositionEffect.OPEN): OrderAction.SELL_TO_OPEN,
    (OrderSide.BUY, PositionEffect.CLOSE): OrderAction.BUY_TO_CLOSE,
}


class UntradeableOrder(ValueError):
    """The order cannot be expressed for Tastytrade (e.g. the SPX index itself)."""


@dataclass(frozen=True, slots=True)
class LegInstrument:
    """What one order trades at Tastytrade: the leg's instrument type and Tastytrade symbol."""

    instrument_type: InstrumentType
    symbol: str


def leg_instrument(order: OrderRequest, today: date) -> LegInstrument:
    if order.option is not None:
        # Tastytrade's equity-option symbol is the OCC OSI symbol (root padded to 6 characters).
        return LegInstrument(InstrumentType.EQUITY_OPTION, order.option.occ_symbol)
    try:
        instrument = CATALOG[canonical_symbol(order.symbol)]
    except UnknownSymbolError as exc:
        raise UntradeableOrder(str(exc)) from None
    if instrument.asset_class is AssetClass.FUTURE:
        # The contract month the book holds (a close goes to the month it was opened in), else
        # the front month today.
        held = contract_from_key(order.contract) if order.contract else None
        return LegInstrument(InstrumentType.FUTURE, (held or front_month(instrument.root, today)).tastytrade)
    if instrument.asset_class is AssetClass.EQUITY:
        return LegInstrument(InstrumentType.EQUITY, instrument.root)
    raise UntradeableOrder(f"{instrument.symbol} is an index and cannot be traded; send an option contract")


def held_quantity(positions: Iterable[CurrentPosition], symbol: str) -> int:
    """The account's signed net position in one Tastytrade symbol (0 when nothing is held)."""
    return sum(broker_position(p).quantity for p in positions if p.symbol == symbol)


def leg_action(order: OrderRequest, instrument: LegInstrument, held: int) -> OrderAction:
    """The leg's action. Futures take Buy/Sell, the actions the SDK's `OrderAction` documents "for
    futures only" (a futures position nets, so the account's position does not matter). Other legs
    take an open/close action whose effect comes from the account's position `held` in the
    instrument (see brokers/position_effect.py), never from the strategy's own position."""
    if instrument.instrument_type is InstrumentType.FUTURE:
        return OrderAction.BUY if order.side is OrderSide.BUY else OrderAction.SELL
    try:
        effect = account_position_effect(instrument.symbol, held, order.signed_quantity)
    except CrossesZero as exc:
        raise UntradeableOrder(str(exc)) from None
    return _ACTIONS[(order.side, effect)]


def tastytrade_leg(order: OrderRequest, instrument: LegInstrument, held: int) -> Leg:
    """The single leg for an order: instrument type, Tastytrade symbol, action and quantity."""
    return Leg(instrument_type=instrument.instrument_type, symbol=instrument.symbol,
               action=leg_action(order, instrument, held), quantity=order.quantity)


def tastytrade_order(order: OrderRequest, instrument: LegInstrument, held: int) -> BaseOrder:
    """Build the SDK order; `held` is the account's signed position in the instrument. Prices
    follow the SDK's sign convention: negative = debit (we pay, i.e. a buy), positive = credit (a
    sell); the SDK turns the sign into `price-effect`."""
    leg = tastytrade_leg(order, instrument, held)
    common: dict[str, Any] = {"time_in_force": OrderTimeInForce.DAY, "legs": [leg],
                              "external_identifier": str(order.client_order_id)}
    if leg.action not in (OrderAction.BUY, OrderAction.SELL):
        # Without this flag Tastytrade turns a close whose position is gone (closed meanwhile by
        # another order, or by another strategy on the account) into an opening order; with it
        # the order is refused and the refusal reaches the order manager as a rejection.
        common["advanced_instructions"] = AdvancedInstructions(strict_position_effect_validation=True)
    if order.order_type is OrderType.MARKET:
        return MarketOrder(**common)
    if order.order_type is OrderType.LIMIT:
        assert order.limit_price is not None  # OrderRequest validates this
        price = Decimal(order.limit_price)
        if price <= 0:
            raise UntradeableOrder("limit price must be positive")
        signed = -price if order.side is OrderSide.BUY else price
        return LimitOrder(price=signed, **common)
    assert order.stop_price is not None
    return StopOrder(stop_trigger=Decimal(order.stop_price), **common)


# --------------------------------------------------------------------------------------------
# Orders: SDK -> domain
# --------------------------------------------------------------------------------------------
_WORKING = {OrderStatus.RECEIVED, OrderStatus.ROUTED, OrderStatus.IN_FLIGHT, OrderStatus.LIVE,
            OrderStatus.CONTINGENT, OrderStatus.CANCEL_REQUESTED, OrderStatus.REPLACE_REQUESTED}
_CANCELLED = {OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REMOVED, OrderStatus.PARTIALLY_REMOVED}


def order_update(order: PlacedOrder | UnplacedOrder, client_order_id: ClientOrderId) -> OrderUpdate:
    """Map a Tastytrade order to our OrderUpdate. Filled quantity comes from the legs' fills (or
    quantity - remaining-quantity when fills are not listed), so partial fills are visible while
    the order is still Live."""
    fills: list[Fill] = []
    filled = Decimal(0)
    notional = Decimal(0)
    broker_id = BrokerOrderId(str(order.id)) if isinstance(order, PlacedOrder) else None
    for leg in order.legs:
        leg_filled = Decimal(0)
        for info in leg.fills or []:
            fills.append(Fill(client_order_id, broker_id, info.fill_id, int(info.quantity), info.fill_price,
                              Decimal(0), info.filled_at))
            leg_filled += info.quantity
            notional += info.fill_price * info.quantity
        if not leg.fills and leg.quantity is not None and leg.remaining_quantity is not None:
            leg_filled = Decimal(leg.quantity) - leg.remaining_quantity
        filled += leg_filled
    avg = (notional / sum((f.quantity for f in fills), Decimal(0))) if fills else None
    status = order.status
    reason: str | None = None
    if status is OrderStatus.FILLED:
        state = OrderState.FILLED
    elif status is OrderStatus.REJECTED:
        state, reason = OrderState.REJECTED, order.reject_reason or "rejected by Tastytrade"
    elif status in _CANCELLED:
        state, reason = OrderState.CANCELLED, status.value
    elif status in _WORKING:
        state = OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.ACCEPTED
    else:  # a status the SDK learns later: keep the order open rather than guessing an end
        state, reason = OrderState.ACCEPTED, f"unmapped Tastytrade status {status}"
    return OrderUpdate(client_order_id, broker_id, state, int(filled), avg, reason, tuple(fills))


# --------------------------------------------------------------------------------------------
# Positions and chains
# --------------------------------------------------------------------------------------------


def position_key(position: CurrentPosition, today: date | None = None) -> str:
    """Our position key: the contract month ("/MESZ25", config.symbology) for a catalog future, so
    positions in two months stay apart; the OCC symbol for options; the ticker for equities."""
    if position.instrument_type is InstrumentType.FUTURE:
        contract = contract_from_venue(position.symbol, today or date.today())
        if contract is not None:
            return contract.key
    return position.symbol


def broker_position(position: CurrentPosition, today: date | None = None) -> BrokerPosition:
    # Tastytrade reports an unsigned quantity plus a direction ("Long" | "Short" | "Zero").
    quantity = int(position.quantity)
    if position.quantity_direction.lower() == "short":
        quantity = -abs(quantity)
    elif position.quantity_direction.lower() == "zero":
        quantity = 0
    return BrokerPosition(position_key(position, today), quantity, position.average_open_price, position.multiplier)


def chain_contracts(chains: list[NestedOptionChain], underlying: str, root: str, expiration: date) -> list[OptionContract]:
    contracts: list[OptionContract] = []
    for chain in chains:
        if chain.root_symbol != root:
            continue
        for exp in chain.expirations:
            if exp.expiration_date != expiration:
                continue
            for strike in exp.strikes:
                contracts.append(OptionContract(underlying, root, expiration, strike.strike_price, OptionRight.CALL,
                                                broker_symbol=strike.call))
                contracts.append(OptionContract(underlying, root, expiration, strike.strike_price, OptionRight.PUT,
                                                broker_symbol=strike.put))
    contracts.sort(key=lambda c: (c.strike, c.right.value))
    return contracts
