"""Tastytrade adapter: a synchronous `BrokerAdapter` over the async-only tastytrade SDK.

Shape:
- The adapter owns exactly one asyncio event loop on one daemon thread (`connect()` starts it,
  `close()` stops it; a dead loop is restarted on the next call). Every SDK coroutine runs there
  via `run_coroutine_threadsafe` with a timeout, so engine threads stay synchronous.
- OAuth, two ways in: `authorize_url()` -> Tastytrade's consent page, then
  `complete_login(url_or_code)` exchanges the code at `/oauth/token`; or, for a personal
  application, `login_with_refresh_token(token)` takes a refresh token made on Tastytrade's site
  ("Create Grant"), the route the SDK documents. Only the refresh token is stored,
  Fernet-encrypted (`TokenStore`), and only once the token endpoint accepted it. The SDK
  `Session` is built from it + the client secret and refreshes its 15-minute access token itself;
  access tokens are never persisted. Should the token endpoint answer a refresh with a new
  refresh token (rotation), the session uses it at once and it replaces the stored one
  (`TokenWatch`), so the next start-up logs in with the token that is still valid.
- Orders: one SDK order per `place_order`, exactly one POST. `dry_run` is True unless
  TRADING_MODE=live (the dry-run endpoint validates but never routes). Our client order id goes in
  `external-identifier`, and a Redis map coid -> Tastytrade id is kept so `get_order(coid, None)`
  works after a restart; without it (an order whose POST timed out) the account's orders since
  yesterday are searched in every status by external identifier. `get_order` answers None only
  when Tastytrade answered without the order; an unanswered lookup raises TemporaryBrokerError.
  Future legs are "Buy"/"Sell" (the SDK's futures-only actions: no open/close effect). An equity
  or option leg's open/close effect comes from the account's position in the instrument, read
  just before the POST (brokers/position_effect.py), never from the strategy's, and is sent with
  strict position-effect validation, so a close whose position is gone is refused, not opened.
- Faults -> `brokers.errors` (`_read_error`, `_order_error`): 401 refresh + one retry, then
  AuthenticationRequired; 429/5xx/transport errors on reads are TemporaryBrokerError, retried
  with bounded backoff by brokers/retry.py (3 calls, 0.5 s doubling, Retry-After honoured up to
  30 s); an order whose outcome cannot be known -> OrderOutcomeUnknown, never resent; 4xx ->
  OrderRejected.
- Tests inject an httpx2 transport (`transport=httpx2.MockTransport(...)`); it is passed through
  the SDK Session's client kwargs, so requests are built by the real SDK.

Never logs or returns tokens, the client secret or the full account number.
"""
from __future__ import annotations

import concurrent.futures
import logging
import secrets as _secrets
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from datetime import UTC, date, datetime, timedelta
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlencode, urlsplit
from zoneinfo import ZoneInfo

import httpx2
import redis
from pydantic import ValidationError
from tastytrade import Account, Session
from tastytrade.instruments import NestedOptionChain
from tastytrade.market_data import get_market_data_by_type
from tastytrade.order import InstrumentType, OrderStatus, PlacedOrder

from brokers.base import BrokerAdapter
from brokers.errors import (
    AuthenticationRequired,
    BrokerConfigError,
    BrokerError,
    OrderOutcomeUnknown,
    OrderRejected,
    TemporaryBrokerError,
)
from brokers.preview import OrderPreview, tastytrade_preview
from brokers.retry import ReadRetry, retry_reads
from brokers.tastytrade.auth import (
    AUTHORIZE_URL,
    OAUTH_SCOPES,
    TOKEN_PATH,
    TokenWatch,
    exchange_code,
    refresh_token_problem,
)
from brokers.tastytrade.http_trace import CURRENT_TRACE, NOT_SENT_ERRORS, HttpFailure, HttpTrace, event_hooks
from brokers.tastytrade.loop import LoopThread
from brokers.tastytrade.parsing import (
    UntradeableOrder,
    account_balances,
    broker_position,
    chain_contracts,
    held_quantity,
    leg_instrument,
    market_data_request,
    order_update,
    quote_from,
    tastytrade_order,
)
from brokers.timing import LatencyHook, timed
from brokers.token_store import TokenDecryptError, TokenStore
from config.settings import Settings
from domain.orders import (
    TASTYTRADE,
    Balances,
    BrokerOrderId,
    BrokerPosition,
    BrokerStatus,
    ClientOrderId,
    OptionContract,
    OrderRequest,
    OrderUpdate,
    Quote,
    mask_account,
)
from domain.redaction import Redactor
from store.redis_store import Store

log = logging.getLogger(__name__)

T = TypeVar("T")
NEW_YORK = ZoneInfo("America/New_York")

OAUTH_STATE_TTL_SECONDS = 600
ORDER_SEARCH_DAYS_BACK = 1  # New York days before today searched for an order by client id
# Reads, dry runs and cancels: three calls, 0.5 s then 1 s apart; a Retry-After is honoured up to 30 s.
READ_RETRY = ReadRetry(attempts=3, base=0.5, cap=30.0)
_SDK_LOGGERS = ("httpx2", "tastytrade")


class TastytradeAdapter(BrokerAdapter):
    name = TASTYTRADE
    is_paper = False
    supports_stop_orders = True  # futures and equity stops rest at Tastytrade (StopOrder; options are not protected this way)

    def __init__(
        self,
        settings: Settings,
        store: Store,
        token_store: TokenStore,
        *,
        transport: httpx2.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        sleep: Callable[[float], None] = time.sleep,
        on_latency: LatencyHook | None = None,
        http_timeout: float = 10.0,
        call_timeout: float = 20.0,
        read_retry: ReadRetry = READ_RETRY,
    ) -> None:
        self._settings = settings
        self._store = store
        self._tokens = token_store
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self.on_latency = on_latency
        self._http_timeout = http_timeout
        self._call_timeout = call_timeout
        self._read_retry = read_retry
        self._loop = LoopThread("tastytrade-loop")
        self._session: Session | None = None
        self._account: Account | None = None
        self._connected = False
        self._message = "not connected"
        self._refresh_token: str | None = None  # the one in the token store (a rotation differs from it)
        # Serialises writes of the stored refresh token (a rotation kept vs. a new login).
        self._token_lock = threading.Lock()
        # Refresh tokens seen (pasted, stored, rotated): all stay redacted, like old access tokens.
        self._old_refresh_tokens: tuple[str, ...] = ()
        # Recent access tokens, so an error echoing a just-rotated token is still redacted.
        # A tuple swapped whole: the log filter may read it from another thread at any time.
        self._old_access_tokens: tuple[str, ...] = ()
        # httpx2 logs every request URL at INFO, and Tastytrade URLs carry the full account number
        # (`/accounts/5WT12345/orders`); the tokens rotate, so both are read at redaction time.
        self._redactor = Redactor(live_secrets=self._secrets,
                                  live_accounts=lambda: (self._settings.tastytrade_account_id,))
        self._filters_installed = False

    # ---------------------------------------------------------------- properties / status
    @property
    def dry_run(self) -> bool:
        """Orders go to Tastytrade's dry-run endpoint unless TRADING_MODE=live."""
        return not self._settings.is_live

    @property
    def loop_thread(self) -> Any:
        """The event-loop thread (tests check it stops on close())."""
        return self._loop.thread

    def status(self) -> BrokerStatus:
        expires: datetime | None = None
        session = self._session
        if session is not None and session.session_expiration > 0:
            expires = datetime.fromtimestamp(session.session_expiration, UTC)
        warnings: tuple[str, ...] = ()
        if self.dry_run:
            warnings = ("paper mode: orders go to Tastytrade's dry-run endpoint and are never routed",)
        return BrokerStatus(
            broker=self.name, mode=self._settings.trading_mode.value, connected=self._connected,
            account=mask_account(self._settings.tastytrade_account_id),
            access_token_expires_at=expires,
            refresh_token_expires_at=None,  # Tastytrade refresh tokens do not expire; revocation shows as a 401
            message=self._message, warnings=warnings,
        )

    def connection(self) -> dict[str, Any]:
        data = self.status().to_json()
        data.update({
            "configured": bool(self._settings.tastytrade_client_id and self._settings.tastytrade_client_secret),
            "logged_in": self._has_token(),
            "dry_run": self.dry_run,
        })
        return data

    # ---------------------------------------------------------------- OAuth
    def authorize_url(self) -> str:
        client_id = self._settings.tastytrade_client_id
        if not client_id:
            raise BrokerConfigError("TASTYTRADE_CLIENT_ID is not set", broker=self.name)
        state = _secrets.token_urlsafe(24)
        # The state is remembered so a pasted redirect URL can be checked against it (CSRF).
        self._store.redis.set(self._state_key(state), "1", ex=OAUTH_STATE_TTL_SECONDS)
        query = urlencode({"response_type": "code", "client_id": client_id,
                           "redirect_uri": self._settings.tastytrade_redirect_uri,
                           "scope": OAUTH_SCOPES, "state": state})
        return f"{AUTHORIZE_URL}?{query}"

    def complete_login(self, code_or_redirect_url: str) -> BrokerStatus:
        """Exchange an authorization code (bare, or inside the pasted redirect URL) for a refresh
        token, store it encrypted and connect."""
        client_id, secret = self._settings.tastytrade_client_id, self._settings.tastytrade_client_secret
        if not client_id or not secret:
            raise BrokerConfigError("TASTYTRADE_CLIENT_ID and TASTYTRADE_CLIENT_SECRET must be set", broker=self.name)
        pasted = code_or_redirect_url.strip()
        code = self._extract_code(pasted)
        self._ensure_loop()
        body = {"grant_type": "authorization_code", "code": code, "client_id": client_id,
                "client_secret": secret, "redirect_uri": self._settings.tastytrade_redirect_uri}
        try:
            data = self._run("oauth.token", lambda: exchange_code(body, timeout=self._http_timeout,
                                                                 transport=self._transport))
        except HttpFailure as exc:
            if exc.transport_error is not None or exc.status is None or exc.status == 429 or exc.status >= 500:
                raise TemporaryBrokerError(f"tastytrade token endpoint unavailable: {self._redact(exc.message)}",
                                           broker=self.name, retry_after=exc.retry_after) from None
            # A bare value may be the other kind of credential pasted into the wrong field.
            hint = "" if "://" in pasted else " (a refresh token made with Create Grant is sent as refreshToken)"
            raise AuthenticationRequired(f"tastytrade rejected the authorization code: {self._redact(exc.message)}"
                                         f"{hint}", broker=self.name) from None
        refresh_token = data.get("refresh_token")
        if not isinstance(refresh_token, str) or not refresh_token:
            raise AuthenticationRequired("tastytrade token response had no refresh token", broker=self.name)
        with self._token_lock:
            self._drop_session()
            self._save_refresh_token(refresh_token, source="authorization_code", scope=data.get("scope"))
        log.info("tastytrade login completed; refresh token stored encrypted")
        access = data.get("access_token")
        seed = (access, float(data.get("expires_in", 900))) if isinstance(access, str) and access else None
        return self._connect(seed)

    def login_with_refresh_token(self, refresh_token: str) -> BrokerStatus:
        """Log in with a refresh token made on Tastytrade's site (OAuth Applications > Manage >
        Create Grant), a personal application's route: no redirect, no authorization code. The
        token is tried at the token endpoint (through the SDK's own refresh) before anything is
        stored, so a wrong or revoked paste leaves an existing login as it was."""
        if not self._settings.tastytrade_client_secret:
            raise BrokerConfigError("TASTYTRADE_CLIENT_SECRET must be set", broker=self.name)
        token = refresh_token.strip()
        problem = refresh_token_problem(token)
        if problem is not None:
            raise AuthenticationRequired(problem, broker=self.name)
        self._install_filters()
        self._ensure_loop()
        self._note_refresh_token(token)  # redacted from here on, even if Tastytrade refuses it
        session, watch = self._run("session.create", lambda: self._new_session(token, None))
        try:
            self._run("oauth.token", lambda: session.refresh(force=True))
        except HttpFailure as exc:
            self._close_client(session)
            if exc.transport_error is not None or exc.status is None or exc.status == 429 or exc.status >= 500:
                raise TemporaryBrokerError(f"tastytrade token endpoint unavailable: {self._redact(exc.message)}",
                                           broker=self.name, retry_after=exc.retry_after) from None
            reason = self._redact(watch.refusal or exc.message)
            raise AuthenticationRequired(
                f"tastytrade refused the refresh token (HTTP {exc.status}: {reason}): make a new one with "
                f"Create Grant (OAuth Applications > Manage) for the OAuth client of TASTYTRADE_CLIENT_ID and "
                f"TASTYTRADE_CLIENT_SECRET, on production (a sandbox grant works only in the sandbox); the code "
                f"from the authorize-URL login is sent as authorizationCode", broker=self.name) from None
        with self._token_lock:
            self._drop_session()
            # The first refresh may already have rotated it: store what the session now holds.
            self._save_refresh_token(session.refresh_token, source="create_grant")
            self._session = session
        log.info("tastytrade login with a refresh token completed; refresh token stored encrypted")
        return self._connect(None)

    def refresh(self) -> BrokerStatus:
        """Force an access-token refresh now (connecting first if needed)."""
        if self._session is None:
            return self.connect()
        try:
            self._run("oauth.refresh", lambda: self._session_refresh(force=True))
        except HttpFailure as exc:
            if exc.transport_error is not None or exc.status == 429 or (exc.status or 0) >= 500:
                # Tastytrade unreachable: the current access token may still be valid.
                self._message = f"token refresh failed temporarily: {self._redact(exc.message)}"
                return self.status()
            self._set_disconnected_for(exc)
            return self.status()
        self._connected = self._account is not None
        self._message = "connected" if self._connected else self._message
        return self.status()

    # ---------------------------------------------------------------- connect / close
    def connect(self) -> BrokerStatus:
        return self._connect(None)

    def _connect(self, seed: tuple[str, float] | None) -> BrokerStatus:
        self._install_filters()
        self._ensure_loop()
        if not self._settings.tastytrade_client_secret:
            self._connected, self._message = False, "TASTYTRADE_CLIENT_SECRET is not set"
            return self.status()
        try:
            token = self._tokens.load(self.name)
        except TokenDecryptError as exc:
            self._connected, self._message = False, str(exc)
            return self.status()
        refresh_token = (token or {}).get("refresh_token")
        if not refresh_token:
            self._connected, self._message = False, "not logged in: open the Tastytrade authorize URL"
            return self.status()
        self._refresh_token = str(refresh_token)
        account_id = self._settings.tastytrade_account_id
        if not account_id:
            self._connected, self._message = False, "TASTYTRADE_ACCOUNT_ID is not set"
            raise BrokerConfigError("TASTYTRADE_ACCOUNT_ID is not set: name the account to trade", broker=self.name)
        if self._session is None:
            self._session, _ = self._run("session.create", lambda: self._new_session(str(refresh_token), seed))
        try:
            accounts = self._read("accounts", lambda s: Account.get(s))
        except AuthenticationRequired:
            return self.status()
        except TemporaryBrokerError as exc:
            self._connected, self._message = False, f"tastytrade unreachable: {exc.message}"
            return self.status()
        match = next((a for a in accounts if a.account_number == account_id), None)
        if match is None:
            self._connected = False
            self._message = f"account {mask_account(account_id)} is not on this Tastytrade login"
            available = ", ".join(sorted(filter(None, (mask_account(a.account_number) for a in accounts)))) or "none"
            raise BrokerConfigError(
                f"TASTYTRADE_ACCOUNT_ID {mask_account(account_id)} is not on this Tastytrade login "
                f"(accounts on the login: {available})", broker=self.name)
        self._account = match
        self._connected, self._message = True, "connected"
        log.info("tastytrade connected to account %s (dry_run=%s)", mask_account(account_id), self.dry_run)
        return self.status()

    def close(self) -> None:
        session = self._session
        if session is not None and self._loop.alive:
            try:
                self._loop.submit(session._client.aclose()).result(timeout=5)
            except Exception as exc:  # noqa: BLE001 - closing must not raise
                log.debug("tastytrade client close failed: %s", type(exc).__name__)
        self._session = None
        self._account = None
        self._connected = False
        self._message = "closed"
        self._loop.stop()
        self._remove_filters()

    # ---------------------------------------------------------------- orders
    def _sdk_order(self, account: Any, order: OrderRequest) -> Any:
        """The SDK order for `order` (its action from the account's position, except futures, which
        net), as place_order and preview_order send it; OrderRejected before anything is sent
        for an order this adapter cannot express."""
        try:
            instrument = leg_instrument(order, self._today())
            held = 0 if instrument.instrument_type is InstrumentType.FUTURE else self._held(account, instrument.symbol)
            return tastytrade_order(order, instrument, held)
        except UntradeableOrder as exc:
            raise OrderRejected(str(exc), broker=self.name) from None

    def place_order(self, order: OrderRequest) -> OrderUpdate:
        account = self._require_account()
        sdk_order = self._sdk_order(account, order)
        dry_run = self.dry_run
        url_suffix = "/orders/dry-run" if dry_run else "/orders"

        async def place(session: Session) -> Any:
            # Refresh first, as its own request, so that a failure here provably precedes the
            # order POST (and the SDK's refresh inside _post is then a no-op).
            await session.refresh()
            return await account.place_order(session, sdk_order, dry_run=dry_run)

        for attempt in (1, 2):
            try:
                response = self._run("orders.place", lambda: self._with_session(place), order_call=True)
            except HttpFailure as exc:
                if exc.status == 401 and attempt == 1 and exc.path is not None and exc.path.endswith(url_suffix):
                    # A 401 is decided by the auth layer before the order handler, so the order was
                    # not accepted. Refresh, make sure (by external id) it really is absent, retry once.
                    self._force_refresh_or_raise()
                    existing = None if dry_run else self._find(order.client_order_id)
                    if existing is not None:
                        self._remember(order.client_order_id, existing.broker_order_id)
                        return existing
                    continue
                raise self._order_error(exc, url_suffix, order.client_order_id) from None
            break
        placed = response.order
        for warning in response.warnings or []:
            log.warning("tastytrade order %s warning: %s", order.client_order_id, self._redact(str(warning)))
        update = order_update(placed, order.client_order_id)
        if dry_run:
            log.info("tastytrade dry-run order %s validated (not routed)", order.client_order_id)
            return OrderUpdate(update.client_order_id, None, update.state, 0, None,
                               "dry run: validated by Tastytrade, not routed")
        self._remember(order.client_order_id, update.broker_order_id)
        log.info("tastytrade order %s placed as %s (%s)", order.client_order_id, update.broker_order_id, placed.status)
        return update

    def preview_order(self, order: OrderRequest) -> OrderPreview:
        """Tastytrade's dry run of `order` (the SDK's `place_order(dry_run=True)`), built as
        place_order builds it. Never routed, so it runs in any TRADING_MODE. Tastytrade's refusal
        is the answer (accepted=False); an order this adapter cannot express raises OrderRejected
        before anything is sent."""
        account = self._require_account()
        sdk_order = self._sdk_order(account, order)
        try:
            # Read policy (refresh on 401, backoff on 429/5xx): a dry run changes nothing.
            response = self._read("orders.dry-run", lambda s: account.place_order(s, sdk_order, dry_run=True))
        except (AuthenticationRequired, TemporaryBrokerError):
            raise
        except BrokerError as exc:  # a 4xx: Tastytrade refused the order
            return OrderPreview(False, exc.message)
        preview = tastytrade_preview(response)
        return OrderPreview(preview.accepted, self._redact(preview.detail),
                            tuple(self._redact(w) for w in preview.warnings))

    def _held(self, account: Account, symbol: str) -> int:
        """The account's signed position in `symbol`, read just before an order is built from it.
        Nothing has been sent yet, so any failure here is reported as "not sent"."""
        try:
            rows = self._read("positions", lambda s: account.get_positions(s, symbol=symbol))
        except (AuthenticationRequired, TemporaryBrokerError):
            raise
        except BrokerError as exc:
            raise TemporaryBrokerError(f"tastytrade position in {symbol} unreadable, order not sent: {exc.message}",
                                       broker=self.name) from None
        return held_quantity(rows, symbol)

    def cancel_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate:
        account = self._require_account()
        broker_id = broker_order_id or self._lookup_id(client_order_id)
        if broker_id is None:
            current = self._find(client_order_id)
            if current is None:
                raise OrderRejected(f"no Tastytrade order for {client_order_id}", broker=self.name)
            broker_id = current.broker_order_id
        order_id = int(str(broker_id))
        # Deleting an order twice is harmless, so cancel may use the read retry policy.
        self._read("orders.cancel", lambda s: account.delete_order(s, order_id))
        placed = self._read("orders.get", lambda s: account.get_order(s, order_id))
        return order_update(placed, client_order_id)

    def get_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate | None:
        account = self._require_account()
        broker_id = broker_order_id or self._lookup_id(client_order_id)
        if broker_id is not None:
            order_id = int(str(broker_id))
            try:
                placed = self._read("orders.get", lambda s: account.get_order(s, order_id))
            except OrderRejected:  # 404: no such order
                placed = None
            if placed is not None:
                if placed.external_identifier not in (None, str(client_order_id)):
                    # Never attribute someone else's order to this client id.
                    log.warning("tastytrade order %s carries a different external identifier than %s",
                                order_id, client_order_id)
                else:
                    return order_update(placed, client_order_id)
        found = self._find(client_order_id)
        if found is not None and found.broker_order_id is not None:
            self._remember(client_order_id, found.broker_order_id)
        return found

    def open_orders(self) -> list[OrderUpdate]:
        account = self._require_account()
        orders = self._read("orders.live", lambda s: account.get_live_orders(s))
        updates = [order_update(o, ClientOrderId(o.external_identifier or f"tt-{o.id}")) for o in orders]
        return [u for u in updates if not u.state.is_terminal]

    # ---------------------------------------------------------------- account data
    def positions(self) -> list[BrokerPosition]:
        account = self._require_account()
        rows = self._read("positions", lambda s: account.get_positions(s))
        today = self._today()
        return [broker_position(p, today) for p in rows if p.quantity != 0]

    def balances(self) -> Balances:
        account = self._require_account()
        return account_balances(self._read("balances", lambda s: account.get_balances(s)))

    def quote(self, symbol: str) -> Quote:
        self._require_account()
        kwargs = market_data_request(symbol, self._today())
        rows = self._read("market-data", lambda s: get_market_data_by_type(s, **kwargs))
        if not rows:
            raise TemporaryBrokerError(f"tastytrade has no quote for {symbol}", broker=self.name)
        return quote_from(rows[0], symbol)

    def option_chain(self, underlying: str, expiration: date) -> list[OptionContract]:
        self._require_account()
        root = "SPXW" if underlying.upper() == "SPX" else underlying.upper()
        chains = self._read("option-chain", lambda s: NestedOptionChain.get(s, underlying.upper()))
        return chain_contracts(chains, underlying.upper(), root, expiration)

    def start_on_session(self, make: Callable[[Session], Coroutine[Any, Any, None]]) -> concurrent.futures.Future[None]:
        """Start `make(session)` on the adapter's event loop and return at once, for a long-lived
        SDK stream (the DXLink index stream, brokers/tastytrade/stream.py): it shares this login
        (no second session), and the session's httpx2 client is bound to this loop. Connects first
        when needed; raises BrokerError (AuthenticationRequired, ...) while that is not possible."""
        self._require_account()
        session = self._session
        if session is None:
            raise AuthenticationRequired("tastytrade is not connected", broker=self.name)
        return self._loop.submit(make(session))

    # ---------------------------------------------------------------- internals: running calls
    def _ensure_loop(self) -> None:
        if self._loop.start() and self._session is not None:
            # The old httpx2 client belonged to the dead loop: rebuild the session lazily.
            log.warning("tastytrade event loop restarted; session will be rebuilt")
            self._session = None
            self._account = None
            self._connected = False

    def _run(self, label: str, make: Callable[[], Awaitable[T]], *, order_call: bool = False) -> T:
        """Run one coroutine on the loop thread with an HTTP trace; failures -> HttpFailure."""
        self._ensure_loop()
        trace = HttpTrace()

        async def traced() -> T:
            CURRENT_TRACE.set(trace)
            return await make()

        try:
            with timed(label, self.on_latency):
                return self._await(traced(), trace)
        finally:
            self._note_access_token()
            self._keep_rotated_token()

    def _await(self, coro: Coroutine[Any, Any, T], trace: HttpTrace) -> T:
        """Run `coro` on the loop thread within the call timeout; failures -> HttpFailure."""
        future = self._loop.submit(coro)
        try:
            return future.result(timeout=self._call_timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            # The cancellation lands asynchronously: the request may still go out after this
            # point, so a timed-out call can never be proven unsent.
            raise HttpFailure(f"no answer within {self._call_timeout:.0f}s", status=None,
                               path=trace.last.path if trace.last else None, retry_after=None,
                               transport_error=TimeoutError("call timeout"), sent=True, call_timeout=True) from None
        except httpx2.TransportError as exc:
            last = trace.last
            raise HttpFailure(f"{type(exc).__name__}", status=None, path=last.path if last else None,
                               retry_after=None, transport_error=exc,
                               sent=not isinstance(exc, NOT_SENT_ERRORS)) from None
        except BrokerError:
            raise
        except ValidationError as exc:
            # A 2xx body we could not parse. For an order this means it WAS accepted.
            last = trace.last
            raise HttpFailure(f"unexpected response shape ({exc.error_count()} errors)", status=last.status if last else None,
                               path=last.path if last else None, retry_after=None) from None
        except Exception as exc:  # noqa: BLE001 - the SDK raises TastytradeError / parse errors
            failed = next((e for e in reversed(trace.events) if e.status is not None and e.status // 100 != 2), None)
            last = failed or trace.last
            raise HttpFailure(str(exc).strip() or type(exc).__name__, status=last.status if last else None,
                               path=last.path if last else None,
                               retry_after=last.retry_after if last else None) from None

    def _with_session(self, fn: Callable[[Session], Awaitable[T]]) -> Awaitable[T]:
        session = self._session
        if session is None:
            raise AuthenticationRequired("tastytrade is not connected", broker=self.name)
        return fn(session)

    def _read(self, label: str, fn: Callable[[Session], Awaitable[T]]) -> T:
        """A read (or idempotent) call: 401 -> refresh + one retry (once per read); 429/5xx/
        transport errors -> TemporaryBrokerError, which brokers/retry.py retries with bounded
        backoff and the injectable sleep."""
        refreshed = False

        def attempt() -> T:
            nonlocal refreshed
            while True:
                try:
                    return self._run(label, lambda: self._with_session(fn))
                except HttpFailure as exc:
                    if exc.status == 401 and exc.path != TOKEN_PATH and not refreshed:
                        self._force_refresh_or_raise()
                        refreshed = True
                        continue
                    raise self._read_error(label, exc) from None

        return retry_reads(attempt, self._read_retry, sleep=self._sleep)

    def _read_error(self, label: str, exc: HttpFailure) -> BrokerError:
        """Map a failed read: a refused login, a temporary failure, a 404, or anything else."""
        if exc.status == 401 or (exc.path == TOKEN_PATH and exc.status in (400, 403)):
            self._set_disconnected_for(exc)
            return AuthenticationRequired(self._message, broker=self.name)
        if exc.transport_error is not None or exc.status == 429 or (exc.status or 0) >= 500:
            status = f"HTTP {exc.status}: " if exc.status else ""
            return TemporaryBrokerError(f"tastytrade {label} failed: {status}{self._redact(exc.message)}",
                                        broker=self.name, retry_after=exc.retry_after)
        if exc.status == 404:
            return OrderRejected(f"tastytrade: not found ({self._redact(exc.message)})", broker=self.name)
        return BrokerError(f"tastytrade {label} failed: {self._redact(exc.message)}", broker=self.name)

    def _force_refresh_or_raise(self) -> None:
        try:
            self._run("oauth.refresh", lambda: self._session_refresh(force=True))
        except HttpFailure as exc:
            if exc.transport_error is not None or exc.status == 429 or (exc.status or 0) >= 500:
                raise TemporaryBrokerError(f"tastytrade token refresh unavailable: {self._redact(exc.message)}",
                                           broker=self.name) from None
            self._set_disconnected_for(exc)
            raise AuthenticationRequired(self._message, broker=self.name) from None

    def _set_disconnected_for(self, exc: HttpFailure) -> None:
        self._connected = False
        self._message = (f"tastytrade authentication required (HTTP {exc.status or '-'}): log in again "
                         f"(the authorize URL, or a new refresh token made with Create Grant)")
        log.error("tastytrade disconnected: authentication failed (HTTP %s)", exc.status)

    def _order_error(self, exc: HttpFailure, url_suffix: str, coid: ClientOrderId) -> BrokerError:
        """Map a failed order call. The question is always: could the order have reached Tastytrade?"""
        order_sent = exc.path is not None and exc.path.endswith(url_suffix)
        message = self._redact(exc.message)
        if exc.transport_error is not None:
            if exc.call_timeout or (order_sent and exc.sent):
                log.error("tastytrade order %s outcome unknown: %s", coid, message)
                return OrderOutcomeUnknown(f"order {coid} sent to tastytrade, no answer ({message}); not resent",
                                           broker=self.name)
            # A connect error on the order request, or any transport error on the token refresh
            # that precedes it: the order provably never left.
            return TemporaryBrokerError(f"tastytrade not reached, order {coid} not sent: {message}", broker=self.name)
        if not order_sent:
            # Failed before the order POST (e.g. the token refresh): nothing was sent.
            if exc.status == 401 or (exc.path == TOKEN_PATH and exc.status in (400, 403)):
                self._set_disconnected_for(exc)
                return AuthenticationRequired(self._message, broker=self.name)
            return TemporaryBrokerError(f"tastytrade order {coid} not sent: {message}", broker=self.name,
                                        retry_after=exc.retry_after)
        status = exc.status
        if status is not None and 200 <= status < 300:
            log.error("tastytrade order %s accepted but the answer was unreadable: %s", coid, message)
            return OrderOutcomeUnknown(f"order {coid} accepted by tastytrade but the answer was unreadable; "
                                       f"resolve with get_order", broker=self.name)
        if status == 401:
            self._set_disconnected_for(exc)
            return AuthenticationRequired(self._message, broker=self.name)
        if status == 429:
            # A rate-limit refusal happens before the order is processed: nothing was placed.
            return TemporaryBrokerError(f"tastytrade rate limit, order {coid} not placed", broker=self.name,
                                        retry_after=exc.retry_after)
        if status is None or status >= 500:
            # A gateway error may come after the order reached the order service.
            log.error("tastytrade order %s outcome unknown: HTTP %s %s", coid, status, message)
            return OrderOutcomeUnknown(f"order {coid}: tastytrade answered HTTP {status} ({message}); not resent",
                                       broker=self.name)
        return OrderRejected(f"tastytrade rejected order {coid}: {message}", broker=self.name, reason=message)

    # ---------------------------------------------------------------- internals: coroutines
    async def _new_session(self, refresh_token: str, seed: tuple[str, float] | None) -> tuple[Session, TokenWatch]:
        kwargs: dict[str, Any] = {"timeout": self._http_timeout, "event_hooks": event_hooks()}
        if self._transport is not None:
            kwargs["transport"] = self._transport
        session = Session(provider_secret=self._settings.tastytrade_client_secret, refresh_token=refresh_token,
                          **kwargs)
        if seed is not None:
            # The code exchange already returned an access token: use it instead of refreshing.
            access, lifetime = seed
            session.session_token = access
            session.session_expiration = time.time() + lifetime
            session._client.headers["Authorization"] = f"Bearer {access}"
        watch = TokenWatch(session)
        watch.install()
        return session, watch

    async def _session_refresh(self, *, force: bool) -> None:
        session = self._session
        if session is None:
            raise AuthenticationRequired("tastytrade is not connected", broker=self.name)
        await session.refresh(force=force)

    # ---------------------------------------------------------------- internals: misc
    def _require_account(self) -> Account:
        self._ensure_loop()  # supervision: a dead loop is restarted here, before the session is used
        if self._account is None or self._session is None:
            if self._session is None and self._has_token():
                self.connect()
            if self._account is None or self._session is None:
                raise AuthenticationRequired(f"tastytrade is not connected: {self._message}", broker=self.name)
        if not self._connected:
            raise AuthenticationRequired(f"tastytrade is not connected: {self._message}", broker=self.name)
        return self._account

    def _find(self, client_order_id: ClientOrderId) -> OrderUpdate | None:
        """Find our order by its external identifier among the account's orders in every status
        (filled, cancelled and rejected included), from yesterday's New York date on: a CME session
        opens at 18:00 ET the evening before its trading day, so an order that timed out last
        evening is found this morning. The SDK pages through the search (`page_offset=None`).
        None means Tastytrade answered and holds no such order; when it could not answer, the
        read raises (TemporaryBrokerError after the retries), never None."""
        account = self._require_account()
        since = self._today() - timedelta(days=ORDER_SEARCH_DAYS_BACK)
        orders: list[PlacedOrder] = self._read(
            "orders.search", lambda s: account.get_order_history(s, start_date=since, page_offset=None))
        matches = [o for o in orders if o.external_identifier == str(client_order_id)]
        if not matches:
            return None
        # We send a client id once; should the history still hold it twice, a rejected order
        # changed nothing, so the other one is the order.
        placed = next((o for o in matches if o.status is not OrderStatus.REJECTED), matches[0])
        return order_update(placed, client_order_id)

    def _ids_key(self) -> str:
        return self._store.key("broker", "tastytrade", "order_ids")

    def _state_key(self, state: str) -> str:
        return self._store.key("broker", "tastytrade", "oauth_state", state)

    def _remember(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> None:
        if broker_order_id is None:
            return
        try:
            self._store.redis.hset(self._ids_key(), str(client_order_id), str(broker_order_id))
        except redis.RedisError as exc:
            # The order is placed; the external identifier still finds it after a restart.
            log.error("could not record tastytrade order id for %s: %s", client_order_id, type(exc).__name__)

    def _lookup_id(self, client_order_id: ClientOrderId) -> BrokerOrderId | None:
        value = self._store.redis.hget(self._ids_key(), str(client_order_id))
        return BrokerOrderId(str(value)) if value else None

    def _extract_code(self, text: str) -> str:
        if not text:
            raise AuthenticationRequired("no authorization code given", broker=self.name)
        if "://" not in text and "code=" not in text:
            return text  # a bare code
        query = parse_qs(urlsplit(text).query if "://" in text else text.lstrip("?"))
        if "error" in query:
            raise AuthenticationRequired(f"tastytrade authorization failed: {query['error'][0]}", broker=self.name)
        code = (query.get("code") or [""])[0]
        if not code:
            raise AuthenticationRequired("the pasted URL has no authorization code", broker=self.name)
        state = (query.get("state") or [None])[0]
        if state is not None:
            # A state we did not issue (or one already used) means the URL is not from our flow.
            if not self._store.redis.delete(self._state_key(state)):
                raise AuthenticationRequired("OAuth state does not match: start the login again", broker=self.name)
        return code

    def _has_token(self) -> bool:
        try:
            return bool((self._tokens.load(self.name) or {}).get("refresh_token"))
        except TokenDecryptError:
            return False

    def _drop_session(self) -> None:
        session, self._session, self._account = self._session, None, None
        if session is not None:
            self._close_client(session)

    def _close_client(self, session: Session) -> None:
        if self._loop.alive:
            try:
                self._loop.submit(session._client.aclose()).result(timeout=5)
            except Exception:  # noqa: BLE001
                pass

    def _save_refresh_token(self, token: str, *, source: str, scope: object = None) -> None:
        """Store a new login's refresh token (under `_token_lock`). `source` says which login made it."""
        self._tokens.save(self.name, {"refresh_token": token, "obtained_at": self._clock().isoformat(),
                                      "scope": scope, "source": source})
        self._refresh_token = token
        self._note_refresh_token(token)

    def _keep_rotated_token(self) -> None:
        """Store the refresh token the token endpoint rotated (see TokenWatch) in place of the old
        one, so the next start-up logs in with it. Runs after every call (cheap when nothing
        changed); a save that fails is retried after the next call, and the session keeps using
        the new token meanwhile."""
        session = self._session
        if session is None or session.refresh_token == self._refresh_token:
            return
        with self._token_lock:
            session = self._session  # a login may have replaced the session meanwhile
            if session is None or not session.refresh_token or session.refresh_token == self._refresh_token:
                return
            rotated = session.refresh_token
            self._note_refresh_token(rotated)
            try:
                try:
                    kept = self._tokens.load(self.name) or {}
                except TokenDecryptError:
                    kept = {}
                self._tokens.save(self.name, {**kept, "refresh_token": rotated,
                                              "rotated_at": self._clock().isoformat()})
            except redis.RedisError as exc:
                log.error("tastytrade rotated the refresh token but it could not be stored (%s); "
                          "retried after the next call", type(exc).__name__)
                return
            self._refresh_token = rotated
        log.info("tastytrade rotated the refresh token; the new one is stored encrypted")

    def _note_refresh_token(self, token: str) -> None:
        if token and token not in self._old_refresh_tokens:
            self._old_refresh_tokens = (*self._old_refresh_tokens, token)[-4:]

    def _today(self) -> date:
        return self._clock().astimezone(NEW_YORK).date()

    def _note_access_token(self) -> None:
        session = self._session
        if session is not None and session.session_token not in self._old_access_tokens:
            self._old_access_tokens = (*self._old_access_tokens, session.session_token)[-4:]

    def _secrets(self) -> list[str]:
        out = [self._settings.tastytrade_client_secret or "", self._refresh_token or "", *self._old_refresh_tokens,
               *self._old_access_tokens]
        session = self._session
        if session is not None:
            out += [session.session_token, session.refresh_token]
        return out

    def _redact(self, text: str) -> str:
        return self._redactor.redact(text)

    def _install_filters(self) -> None:
        if self._filters_installed:
            return
        for name in _SDK_LOGGERS:
            logging.getLogger(name).addFilter(self._redactor)
        log.addFilter(self._redactor)
        self._filters_installed = True

    def _remove_filters(self) -> None:
        if not self._filters_installed:
            return
        for name in _SDK_LOGGERS:
            logging.getLogger(name).removeFilter(self._redactor)
        log.removeFilter(self._redactor)
        self._filters_installed = False

