"""Schwab adapter over the real schwab-py SDK (synchronous client).

Auth: schwab-py's web-app flow. `authorize_url()` builds the auth context (the OAuth `state` is
kept in Redis, never a secret), `complete_login(url)` exchanges the pasted redirect URL through
`client_from_received_url`, and from then on the client is built with
`client_from_access_functions` whose read/write hooks go through the encrypted `TokenStore`. The
SDK (authlib) refreshes the access token by itself; the stored blob keeps schwab-py's
`creation_timestamp`, which is when the *refresh* token was issued (Schwab refresh tokens die
after 7 days), so status() can warn from day 6 and report disconnected from day 7.

Faults -> brokers.errors (the class decides retry policy):
- 401: one forced token refresh, then one retry; still 401 -> AuthenticationRequired.
- reads: 429/5xx/network errors are TemporaryBrokerError, retried with bounded exponential
  backoff by brokers/retry.py (4 calls, 0.5 s doubling, Retry-After honoured, 8 s cap).
- place_order: never retried internally once bytes may have left. A timeout / dropped connection
  after sending -> OrderOutcomeUnknown and a "pending" record so get_order() can find the order
  later by its fingerprint; 400/403/404/422 -> OrderRejected with Schwab's message; 5xx ->
  OrderOutcomeUnknown (a gateway error does not prove the order was not placed).

Instructions (BUY/SELL/SELL_SHORT/BUY_TO_COVER, *_TO_OPEN/*_TO_CLOSE) follow the account's position
in the instrument, read just before the POST (brokers/position_effect.py), not the strategy's own.
Protective stops are equity STOP orders, GOOD_TILL_CANCEL so they rest across days; options get none.

Schwab orders carry no client id, so `client_order_id -> schwab order id` is kept in Redis
(`broker:schwab:coid:<coid>`) and survives restarts.

Test seam: `http_transport` (an httpx2 transport, e.g. `httpx2.MockTransport`) is handed to the
OAuth2Client that schwab-py constructs, so tests run the real SDK and authlib end to end offline.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone
from typing import Any

import httpx2
import schwab.auth
from authlib.common.errors import AuthlibBaseError
from schwab.client import Client
from schwab.utils import AccountHashMismatchException, UnsuccessfulOrderException, Utils

from brokers.base import BrokerAdapter
from brokers.errors import (
    AuthenticationRequired,
    BrokerConfigError,
    BrokerError,
    OrderOutcomeUnknown,
    OrderRejected,
    TemporaryBrokerError,
)
from brokers.position_effect import CrossesZero, account_position_effect
from brokers.preview import OrderPreview, schwab_preview
from brokers.retry import ReadRetry, retry_reads
from brokers.schwab import auth
from brokers.schwab import parsing as mapping
from brokers.schwab.auth import (
    HTTP_STATUS_ERRORS,
    NOT_SENT_ERRORS,
    OAUTH_STATE_TTL_SECONDS,
    REFRESH_TOKEN_LIFETIME,
    REFRESH_TOKEN_WARN_AGE,
    TOKEN_ENDPOINT,
    TRANSPORT_ERRORS,
    LoginFlowError,
    refresh_expires_at,
    sdk_transport,
    token_secrets,
    validate_redirect_url,
)
from brokers.schwab.parsing import retry_after, schwab_message
from brokers.timing import LatencyHook, timed
from brokers.token_store import TokenDecryptError, TokenStore
from config.instruments import AssetClass, UnknownSymbolError, canonical_symbol, get_instrument
from config.settings import Settings
from config.symbology import venue_symbols
from domain.orders import (
    SCHWAB,
    Balances,
    BrokerOrderId,
    BrokerPosition,
    BrokerStatus,
    ClientOrderId,
    OptionContract,
    OrderRequest,
    OrderState,
    OrderUpdate,
    Quote,
    mask_account,
)
from store.redis_store import Store

log = logging.getLogger(__name__)

ORDER_MAP_TTL_SECONDS = 90 * 24 * 3600  # Schwab's order history only goes back 60 days
PENDING_LOOKBACK = timedelta(minutes=2)  # Schwab's enteredTime vs our clock when resolving UNKNOWN
# Protective stops are GOOD_TILL_CANCEL, so a working order may be weeks old. Schwab's order search
# only reaches 60 days back (schwab-py's own default window); a day less keeps a clock that runs
# behind Schwab's inside it.
OPEN_ORDERS_LOOKBACK = timedelta(days=59)

# Reads, previews and cancels: the first call and three more, 0.5 s doubling to a 8 s cap.
READ_RETRY = ReadRetry(attempts=4, base=0.5, cap=8.0)

Clock = Callable[[], datetime]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


class SchwabAdapter(BrokerAdapter):
    name = SCHWAB
    is_paper = False
    # Equity stops rest at Schwab (orderType STOP, GOOD_TILL_CANCEL); a STOP on an option is
    # refused before sending (brokers/schwab/parsing.py `check_supported`).
    supports_stop_orders = True

    def __init__(
        self,
        settings: Settings,
        store: Store,
        token_store: TokenStore,
        *,
        http_transport: httpx2.BaseTransport | None = None,
        clock: Clock = _utcnow,
        sleep: Callable[[float], None] = time.sleep,
        on_latency: LatencyHook | None = None,
        read_retry: ReadRetry = READ_RETRY,
        timeout: float = 10.0,
    ) -> None:
        self._settings = settings
        self._store = store
        self._tokens = token_store
        self._transport = http_transport
        self._clock = clock
        self._sleep = sleep
        self.on_latency = on_latency
        self._read_retry = read_retry
        self._timeout = timeout
        self._lock = threading.RLock()  # guards client/account state
        self._refresh_lock = threading.Lock()  # one token refresh at a time
        self._client: Client | None = None
        self._refresh_expires: datetime | None = None
        self._account_hash: str | None = None
        self._auth_error: str | None = None  # set when Schwab refused our tokens
        self._config_error: str | None = None
        self._last_error: str | None = None
        self._redactor = auth.install()
        log.addFilter(self._redactor)
        self._redactor.register(settings.schwab_app_secret, settings.schwab_account_id)

    # ------------------------------------------------------------------ keys

    def _state_key(self) -> str:
        return self._store.key("broker", "schwab", "oauth_state")

    def _coid_key(self, coid: str) -> str:
        return self._store.key("broker", "schwab", "coid", coid)

    def _oid_key(self, order_id: str) -> str:
        return self._store.key("broker", "schwab", "oid", order_id)

    def _pending_key(self, coid: str) -> str:
        return self._store.key("broker", "schwab", "pending", coid)

    # ------------------------------------------------------------------ OAuth web flow

    def _require_app_credentials(self) -> tuple[str, str]:
        key, secret = self._settings.schwab_api_key, self._settings.schwab_app_secret
        if not key or not secret:
            raise BrokerConfigError("SCHWAB_API_KEY and SCHWAB_APP_SECRET must be set to log in to Schwab", broker=SCHWAB)
        return key, secret

    def authorize_url(self) -> str:
        """The Schwab login URL; its OAuth state is kept in Redis for `complete_login`."""
        api_key, _ = self._require_app_credentials()
        ctx = schwab.auth.get_auth_context(api_key, self._settings.schwab_callback_url)
        # AuthContext is (callback_url, authorization_url, state): no secret in it.
        self._store.redis.set(
            self._state_key(),
            json.dumps({"callback_url": ctx.callback_url, "authorization_url": ctx.authorization_url, "state": ctx.state}),
            ex=OAUTH_STATE_TTL_SECONDS,
        )
        return str(ctx.authorization_url)

    def complete_login(self, redirect_url: str) -> BrokerStatus:
        """Exchange the code in the pasted redirect URL for tokens, store them encrypted, connect."""
        api_key, secret = self._require_app_credentials()
        raw_state = self._store.redis.get(self._state_key())
        if raw_state is None:
            raise LoginFlowError("no Schwab login in progress (or it expired); request a new authorization URL", broker=SCHWAB)
        saved = json.loads(str(raw_state))
        url = validate_redirect_url(redirect_url, saved["state"], saved["callback_url"])
        ctx = schwab.auth.AuthContext(saved["callback_url"], saved["authorization_url"], saved["state"])
        try:
            with timed("oauth_token", self.on_latency), sdk_transport(self._transport):
                login_client = schwab.auth.client_from_received_url(
                    api_key, secret, ctx, url, self._write_token, asyncio=False, enforce_enums=True,
                )
        except AuthlibBaseError as exc:
            raise LoginFlowError(
                f"Schwab refused the authorization code ({getattr(exc, 'error', None) or type(exc).__name__}); log in again",
                broker=SCHWAB,
            ) from None
        except HTTP_STATUS_ERRORS as exc:
            code = exc.response.status_code  # type: ignore[attr-defined]
            if code >= 500:
                raise TemporaryBrokerError(f"Schwab token endpoint error HTTP {code}; try again", broker=SCHWAB) from None
            raise LoginFlowError(f"Schwab refused the authorization code (HTTP {code}); log in again", broker=SCHWAB) from None
        except TRANSPORT_ERRORS as exc:
            raise TemporaryBrokerError(f"Schwab token endpoint unreachable ({type(exc).__name__})", broker=SCHWAB) from None
        # The code is single-use: forget the state so the same URL cannot be replayed.
        self._store.redis.delete(self._state_key())
        # client_from_received_url's session has no token_endpoint, so it could not refresh on its
        # own; drop it and build the long-lived client from the stored token like every restart does.
        login_client.session.close()
        with self._lock:
            self._reset_client()
            self._auth_error = None
            self._config_error = None
        log.info("Schwab login completed; resolving account %s", mask_account(self._settings.schwab_account_id))
        self._ensure_client()
        self._ensure_account()
        return self.status()

    def refresh(self) -> BrokerStatus:
        """Force an access-token refresh now (the SDK also refreshes on its own before expiry)."""
        client = self._ensure_client()
        self._force_refresh(client)
        with self._lock:
            self._auth_error = None
        return self.status()

    def streaming_client(self) -> Client:
        """The logged-in SDK client, for schwab-py's StreamClient (brokers/schwab/stream.py), which
        logs in with its user preferences and access token. Raises AuthenticationRequired while
        Schwab is not logged in."""
        return self._ensure_client()

    # ------------------------------------------------------------------ token hooks

    def _read_token(self) -> dict[str, Any]:
        try:
            wrapped = self._tokens.load(SCHWAB)
        except TokenDecryptError as exc:
            raise AuthenticationRequired(str(exc), broker=SCHWAB) from None
        if wrapped is None:
            raise AuthenticationRequired("Schwab is not logged in", broker=SCHWAB)
        self._register_token_secrets(wrapped)
        return wrapped

    def _write_token(self, wrapped: dict[str, Any], *args: Any, **kwargs: Any) -> None:
        """schwab-py's token_write_func: receives {"creation_timestamp", "token"}; stored encrypted."""
        self._register_token_secrets(wrapped)
        self._tokens.save(SCHWAB, dict(wrapped))
        log.info("Schwab token saved (encrypted)")

    def _register_token_secrets(self, wrapped: dict[str, Any]) -> None:
        self._redactor.register(*token_secrets(wrapped))

    # ------------------------------------------------------------------ client / account

    def _reset_client(self) -> None:
        if self._client is not None:
            try:
                self._client.session.close()
            except Exception:  # closing a dead socket must not block a re-login
                pass
        self._client = None
        self._account_hash = None

    def _ensure_client(self) -> Client:
        with self._lock:
            if self._client is not None:
                if self._refresh_expires is not None and self._clock() >= self._refresh_expires:
                    # Past day 7 every refresh would fail; say so before sending anything.
                    raise self._mark_auth_failed("Schwab refresh token expired (7 days); log in again")
                return self._client
            api_key, secret = self._require_app_credentials()
            wrapped = self._read_token()
            expires = refresh_expires_at(wrapped)
            if expires is not None and self._clock() >= expires:
                raise AuthenticationRequired("Schwab refresh token expired (7 days); log in again", broker=SCHWAB)
            try:
                with sdk_transport(self._transport):
                    client = schwab.auth.client_from_access_functions(
                        api_key, secret, token_read_func=self._read_token, token_write_func=self._write_token,
                        asyncio=False, enforce_enums=True,
                    )
            except ValueError:  # schwab-py: token without creation_timestamp (legacy format)
                raise AuthenticationRequired("stored Schwab token has an old format; log in again", broker=SCHWAB) from None
            client.set_timeout(self._timeout)
            self._client = client
            self._refresh_expires = expires
            return client

    def _ensure_account(self) -> str:
        with self._lock:
            if self._account_hash is not None:
                return self._account_hash
        wanted = (self._settings.schwab_account_id or "").strip()
        if not wanted:
            self._config_error = "SCHWAB_ACCOUNT_ID is not set"
            raise BrokerConfigError(self._config_error, broker=SCHWAB)
        resp = self._read("get_account_numbers", lambda c: c.get_account_numbers())
        entries = resp.json()
        found: str | None = None
        others: list[str] = []
        for entry in entries if isinstance(entries, list) else []:
            number = str(entry.get("accountNumber", "")).strip()
            hash_value = entry.get("hashValue")
            self._redactor.register(number, hash_value)
            if number == wanted and hash_value:
                found = str(hash_value)
            else:
                others.append(mask_account(number) or "?")
        if found is None:
            # Never fall back to "the first account": trading the wrong account is the worst bug.
            self._config_error = (
                f"SCHWAB_ACCOUNT_ID {mask_account(wanted)} is not an account on this Schwab login "
                f"(login has: {', '.join(others) or 'no accounts'})"
            )
            raise BrokerConfigError(self._config_error, broker=SCHWAB)
        with self._lock:
            self._account_hash = found
            self._config_error = None
        log.info("Schwab account %s resolved", mask_account(wanted))
        return found

    # ------------------------------------------------------------------ status

    def connect(self) -> BrokerStatus:
        try:
            self._ensure_client()
            self._ensure_account()
        except (AuthenticationRequired, TemporaryBrokerError) as exc:
            self._last_error = exc.message  # status() reports it; a missing login is not an exception here
        return self.status()

    def status(self) -> BrokerStatus:
        """Cheap: no network. Token ages come from the stored blob, connection from the last calls."""
        mode = self._settings.trading_mode.value
        account = mask_account(self._settings.schwab_account_id)
        base = {"broker": SCHWAB, "mode": mode, "account": account}
        if not self._settings.schwab_api_key or not self._settings.schwab_app_secret:
            return BrokerStatus(connected=False, message="SCHWAB_API_KEY / SCHWAB_APP_SECRET not set", **base)  # type: ignore[arg-type]
        try:
            wrapped = self._tokens.load(SCHWAB)
        except TokenDecryptError as exc:
            return BrokerStatus(connected=False, message=str(exc), **base)  # type: ignore[arg-type]
        if wrapped is None:
            return BrokerStatus(connected=False, message="not logged in", **base)  # type: ignore[arg-type]
        now = self._clock()
        refresh_expires = refresh_expires_at(wrapped)
        token = wrapped.get("token") or {}
        access_expires = (
            datetime.fromtimestamp(int(token["expires_at"]), tz=timezone.utc) if token.get("expires_at") else None
        )
        warnings: list[str] = []
        expired = refresh_expires is not None and now >= refresh_expires
        if refresh_expires is not None and not expired and now >= refresh_expires - (REFRESH_TOKEN_LIFETIME - REFRESH_TOKEN_WARN_AGE):
            warnings.append(
                f"Schwab refresh token expires at {refresh_expires.isoformat()}; log in again before then"
            )
        with self._lock:
            auth_error, config_error, resolved = self._auth_error, self._config_error, self._account_hash is not None
        if expired:
            message, connected = "Schwab refresh token expired (7 days); log in again", False
        elif auth_error:
            message, connected = auth_error, False
        elif config_error:
            message, connected = config_error, False
        elif not resolved:
            message, connected = self._last_error or "logged in; account not resolved yet (connect)", False
        else:
            message, connected = "connected", True
        return BrokerStatus(
            connected=connected, access_token_expires_at=access_expires, refresh_token_expires_at=refresh_expires,
            message=message, warnings=tuple(warnings), **base,  # type: ignore[arg-type]
        )

    def close(self) -> None:
        with self._lock:
            self._reset_client()

    # ------------------------------------------------------------------ HTTP plumbing

    def _mark_auth_failed(self, message: str) -> AuthenticationRequired:
        with self._lock:
            self._auth_error = message
        log.warning("Schwab authentication required: %s", message)
        return AuthenticationRequired(message, broker=SCHWAB)

    def _token_failure(self, exc: BaseException) -> BrokerError:
        """Classify an error raised by authlib while refreshing the token."""
        if isinstance(exc, HTTP_STATUS_ERRORS):
            code = exc.response.status_code  # type: ignore[attr-defined]
            if code >= 500 or code == 429:
                return TemporaryBrokerError(f"Schwab token refresh failed: HTTP {code}", broker=SCHWAB)
            return self._mark_auth_failed(f"Schwab refused the token refresh (HTTP {code}); log in again")
        if isinstance(exc, TRANSPORT_ERRORS):
            return TemporaryBrokerError(f"Schwab token refresh failed: {type(exc).__name__}", broker=SCHWAB)
        error = getattr(exc, "error", None) or type(exc).__name__
        return self._mark_auth_failed(f"Schwab refused the token refresh ({error}); log in again")

    def _force_refresh(self, client: Client) -> None:
        with self._refresh_lock:
            refresh_token = (client.session.token or {}).get("refresh_token")
            if not refresh_token:
                raise self._mark_auth_failed("no Schwab refresh token; log in again")
            try:
                with timed("token_refresh", self.on_latency):
                    # update_token (schwab-py's wrapped writer) persists the new token via _write_token.
                    client.session.refresh_token(TOKEN_ENDPOINT, refresh_token=refresh_token)
            except (AuthlibBaseError, *HTTP_STATUS_ERRORS, *TRANSPORT_ERRORS) as exc:
                raise self._token_failure(exc) from None
        log.info("Schwab access token refreshed")

    def _ensure_fresh_token(self, client: Client) -> None:
        """Refresh *before* an order POST if due, so the POST itself never triggers a refresh whose
        failure would be indistinguishable from a failed send."""
        with self._refresh_lock:
            try:
                if not client.session.ensure_active_token(client.session.token):
                    raise self._mark_auth_failed("Schwab access token expired and cannot be refreshed; log in again")
            except (AuthlibBaseError, *HTTP_STATUS_ERRORS, *TRANSPORT_ERRORS) as exc:
                raise self._token_failure(exc) from None

    def _read(
        self, endpoint: str, call: Callable[[Client], Any], *, ok_404: bool = False, reject_4xx: bool = False,
    ) -> Any:
        """A retry-safe call: 401 -> one refresh + retry (once per read); 429/5xx/network ->
        TemporaryBrokerError, which brokers/retry.py retries with bounded backoff."""
        refreshed = False

        def attempt() -> Any:
            nonlocal refreshed
            while True:
                client = self._ensure_client()
                try:
                    with timed(endpoint, self.on_latency):
                        resp = call(client)
                except (AuthlibBaseError, *HTTP_STATUS_ERRORS) as exc:  # the SDK's automatic refresh failed
                    raise self._token_failure(exc) from None
                except TRANSPORT_ERRORS as exc:
                    raise TemporaryBrokerError(f"Schwab {endpoint}: {type(exc).__name__}", broker=SCHWAB) from None
                code = resp.status_code
                if code == 401:
                    if refreshed:
                        raise self._mark_auth_failed(
                            f"Schwab rejected the refreshed token on {endpoint} (HTTP 401); log in again")
                    self._force_refresh(client)
                    refreshed = True
                    continue
                if code == 429 or code >= 500:
                    raise TemporaryBrokerError(f"Schwab {endpoint}: HTTP {code}", broker=SCHWAB,
                                               retry_after=retry_after(resp))
                if code == 404 and ok_404:
                    return resp
                if code >= 400:
                    message = schwab_message(resp)
                    if reject_4xx:
                        raise OrderRejected(f"Schwab refused {endpoint}: {message}", broker=SCHWAB, reason=message)
                    raise BrokerError(f"Schwab {endpoint} failed: HTTP {code}: {message}", broker=SCHWAB)
                with self._lock:
                    self._auth_error = None
                    self._last_error = None
                return resp

        return retry_reads(attempt, self._read_retry, sleep=self._sleep)

    # ------------------------------------------------------------------ orders

    def _equity_symbol(self, order: OrderRequest) -> str:
        """Validate the instrument is tradeable at Schwab; return the Schwab equity symbol."""
        try:
            instrument = get_instrument(order.option.underlying if order.option else order.symbol)
        except UnknownSymbolError as exc:
            raise OrderRejected(str(exc), broker=SCHWAB) from None
        if instrument.asset_class is AssetClass.FUTURE:
            raise OrderRejected(
                f"Schwab's trading API cannot trade futures ({instrument.symbol}); use Tastytrade for futures",
                broker=SCHWAB,
            )
        if order.option is None and instrument.asset_class is AssetClass.INDEX:
            raise OrderRejected(f"{instrument.symbol} is an index: only its options can be traded", broker=SCHWAB)
        return instrument.root

    def place_order(self, order: OrderRequest) -> OrderUpdate:
        if not self._settings.is_live:
            # Defence in depth: in paper mode the OMS routes orders to the paper broker and real
            # brokers only supply quotes/chains. A wiring mistake must not reach a real account.
            raise OrderRejected("TRADING_MODE=paper: real Schwab orders are disabled", broker=SCHWAB)
        equity_symbol = self._equity_symbol(order)
        try:
            mapping.check_supported(order)
        except mapping.UnsupportedOrder as exc:
            raise OrderRejected(str(exc), broker=SCHWAB) from None
        coid = order.client_order_id

        known = self._store.redis.get(self._coid_key(coid))
        if known is not None:
            # Already placed (e.g. a retry after a restart): report it, never send it twice.
            log.info("Schwab order %s already placed as %s; not resending", coid, known)
            existing = self.get_order(coid, BrokerOrderId(str(known)))
            return existing or OrderUpdate(coid, BrokerOrderId(str(known)), OrderState.ACCEPTED)

        if self._store.redis.exists(self._pending_key(coid)):
            # Checked before the position read too: once that order fills, the account's position
            # no longer matches the one its instruction was chosen from.
            raise OrderOutcomeUnknown(
                f"Schwab order {coid} was already sent and its outcome is unknown; not resending", broker=SCHWAB,
            )
        client = self._ensure_client()
        account_hash = self._ensure_account()
        spec = self._order_spec(order, equity_symbol)
        refreshed = False
        while True:
            self._ensure_fresh_token(client)
            pending = json.dumps({"fingerprint": mapping.order_fingerprint(spec), "sent_at": self._clock().isoformat()})
            # NX: a second sender of the same client order id (thread, process, retry after an
            # unknown outcome) must not POST again.
            if not self._store.redis.set(self._pending_key(coid), pending, nx=True, ex=ORDER_MAP_TTL_SECONDS):
                raise OrderOutcomeUnknown(
                    f"Schwab order {coid} was already sent and its outcome is unknown; not resending", broker=SCHWAB,
                )
            # Re-check under the pending claim: a concurrent sender may have finished (it writes the
            # coid map before releasing its claim) between our first check and the claim.
            known = self._store.redis.get(self._coid_key(coid))
            if known is not None:
                self._store.redis.delete(self._pending_key(coid))
                return OrderUpdate(coid, BrokerOrderId(str(known)), OrderState.ACCEPTED)
            log.info("Schwab place_order %s: %s %s x%s %s", coid, spec["orderLegCollection"][0]["instruction"],
                     spec["orderLegCollection"][0]["instrument"]["symbol"], order.quantity, spec["orderType"])
            try:
                with timed("place_order", self.on_latency):
                    resp = client.place_order(account_hash, spec)
            except NOT_SENT_ERRORS as exc:
                self._store.redis.delete(self._pending_key(coid))
                raise TemporaryBrokerError(
                    f"Schwab place_order not sent ({type(exc).__name__}); safe to retry", broker=SCHWAB,
                ) from None
            except (AuthlibBaseError, *HTTP_STATUS_ERRORS) as exc:
                # Token refresh inside the request failed: the order itself was not sent.
                self._store.redis.delete(self._pending_key(coid))
                raise self._token_failure(exc) from None
            except Exception as exc:  # timeout / dropped connection after sending: outcome unknown
                log.warning("Schwab place_order %s outcome unknown: %s", coid, type(exc).__name__)
                raise OrderOutcomeUnknown(
                    f"Schwab place_order {coid}: {type(exc).__name__} after sending; not resent, query the order",
                    broker=SCHWAB,
                ) from None
            code = resp.status_code
            if code == 401 and not refreshed:
                # 401 means Schwab did not process the order: refresh once and send again.
                self._store.redis.delete(self._pending_key(coid))
                self._force_refresh(client)
                refreshed = True
                continue
            break

        if code == 401:
            self._store.redis.delete(self._pending_key(coid))
            raise self._mark_auth_failed("Schwab rejected the refreshed token on place_order (HTTP 401); log in again")
        if code in (400, 403, 404, 422):
            self._store.redis.delete(self._pending_key(coid))
            message = schwab_message(resp)
            log.warning("Schwab rejected order %s: %s", coid, message)
            raise OrderRejected(f"Schwab rejected the order: {message}", broker=SCHWAB, reason=message)
        if code == 429:
            self._store.redis.delete(self._pending_key(coid))
            raise TemporaryBrokerError("Schwab place_order rate limited (HTTP 429); not placed", broker=SCHWAB,
                                       retry_after=self._read_retry.delay(1, retry_after(resp)))
        if code >= 300:
            raise OrderOutcomeUnknown(f"Schwab place_order {coid}: HTTP {code}; outcome unknown", broker=SCHWAB)
        try:
            order_id = Utils(client, account_hash).extract_order_id(resp)
        except (AccountHashMismatchException, UnsuccessfulOrderException):
            order_id = None
        if order_id is None:
            # Accepted but no usable Location: keep the pending record; get_order() finds it.
            raise OrderOutcomeUnknown(f"Schwab accepted {coid} without an order id; query the order", broker=SCHWAB)
        broker_id = BrokerOrderId(str(order_id))
        self._remember(coid, broker_id)
        self._store.redis.delete(self._pending_key(coid))
        log.info("Schwab order %s placed as %s", coid, broker_id)
        return OrderUpdate(coid, broker_id, OrderState.ACCEPTED)

    def _order_spec(self, order: OrderRequest, equity_symbol: str) -> dict[str, Any]:
        """Schwab's order JSON for `order`, its instruction from the account's position (as
        place_order and preview_order send it); OrderRejected for an order through zero."""
        key = order.option.occ_symbol if order.option is not None else _catalog_or_raw(order.symbol)
        try:
            effect = account_position_effect(key, self._held(key), order.signed_quantity)
        except CrossesZero as exc:
            raise OrderRejected(str(exc), broker=SCHWAB) from None
        return mapping.build_order_spec(order, equity_symbol, effect)

    def preview_order(self, order: OrderRequest) -> OrderPreview:
        """Schwab's own check of `order` without placing it (previewOrder): the JSON place_order
        would send, its instruction chosen from the account's position the same way. Places
        nothing, so it runs in any TRADING_MODE. Schwab's refusal is the answer (accepted=False);
        an order this adapter cannot express raises OrderRejected before anything is sent."""
        equity_symbol = self._equity_symbol(order)
        try:
            mapping.check_supported(order)
        except mapping.UnsupportedOrder as exc:
            raise OrderRejected(str(exc), broker=SCHWAB) from None
        account_hash = self._ensure_account()
        spec = self._order_spec(order, equity_symbol)
        try:
            # Read policy (refresh on 401, backoff on 429/5xx): a preview changes nothing.
            resp = self._read("preview_order", lambda c: c.preview_order(account_hash, spec), reject_4xx=True)
        except OrderRejected as exc:
            return OrderPreview(False, f"Schwab refused the preview: {exc.reason}")
        try:
            payload = resp.json()
        except ValueError:
            payload = None
        return schwab_preview(payload)

    def _held(self, key: str) -> int:
        """The account's signed position in `key` (catalog symbol or OCC option symbol), read just
        before the order's instruction is chosen from it. Nothing is sent yet, so a failure here
        is reported as "not sent"."""
        try:
            held = self.positions()
        except (AuthenticationRequired, TemporaryBrokerError):
            raise
        except BrokerError as exc:
            raise TemporaryBrokerError(f"Schwab position in {key} unreadable, order not sent: {exc.message}",
                                       broker=SCHWAB) from None
        return sum(p.quantity for p in held if p.key == key)

    def _remember(self, coid: ClientOrderId, broker_id: BrokerOrderId) -> None:
        pipe = self._store.redis.pipeline()
        pipe.set(self._coid_key(coid), broker_id, ex=ORDER_MAP_TTL_SECONDS)
        pipe.set(self._oid_key(broker_id), coid, ex=ORDER_MAP_TTL_SECONDS)
        pipe.execute()

    def _coid_for(self, order_id: str) -> ClientOrderId:
        known = self._store.redis.get(self._oid_key(order_id))
        # Orders we did not place (entered on schwab.com) get a stable synthetic id.
        return ClientOrderId(str(known)) if known else ClientOrderId(f"schwab-{order_id}")

    def get_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate | None:
        order_id = broker_order_id or self._store.redis.get(self._coid_key(client_order_id))
        account_hash = self._ensure_account()
        if order_id is None:
            return self._find_pending(client_order_id, account_hash)
        oid = str(order_id)
        resp = self._read("get_order", lambda c: c.get_order(oid, account_hash), ok_404=True)
        if resp.status_code == 404:
            return None
        if broker_order_id is not None and self._store.redis.get(self._coid_key(client_order_id)) is None:
            self._remember(client_order_id, BrokerOrderId(oid))
        return mapping.map_order(resp.json(), client_order_id)

    def _find_pending(self, coid: ClientOrderId, account_hash: str) -> OrderUpdate | None:
        """Resolve an order whose POST timed out: look for it among recent orders by fingerprint."""
        raw = self._store.redis.get(self._pending_key(coid))
        if raw is None:
            return None
        pending = json.loads(str(raw))
        sent_at = datetime.fromisoformat(pending["sent_at"]).astimezone(timezone.utc)
        start, end = sent_at - PENDING_LOOKBACK, self._clock().astimezone(timezone.utc) + PENDING_LOOKBACK
        resp = self._read("get_orders", lambda c: c.get_orders_for_account(
            account_hash, from_entered_datetime=start, to_entered_datetime=end))
        candidates = [
            o for o in resp.json() or []
            if mapping.matches_fingerprint(o, pending["fingerprint"])
            and self._store.redis.get(self._oid_key(str(o.get("orderId")))) is None
        ]
        if not candidates:
            return None
        if len(candidates) > 1:
            ids = ", ".join(str(o.get("orderId")) for o in candidates)
            return OrderUpdate(coid, None, OrderState.UNKNOWN,
                               reason=f"{len(candidates)} Schwab orders match ({ids}); resolve manually")
        found = candidates[0]
        broker_id = BrokerOrderId(str(found.get("orderId")))
        # NX on the reverse map: two pending orders with the same shape must not claim one order.
        if not self._store.redis.set(self._oid_key(broker_id), coid, nx=True, ex=ORDER_MAP_TTL_SECONDS):
            return None
        self._store.redis.set(self._coid_key(coid), broker_id, ex=ORDER_MAP_TTL_SECONDS)
        self._store.redis.delete(self._pending_key(coid))
        log.info("Schwab order %s with unknown outcome found as %s", coid, broker_id)
        return mapping.map_order(found, coid)

    def cancel_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate:
        order_id = broker_order_id or self._store.redis.get(self._coid_key(client_order_id))
        if order_id is None:
            found = self.get_order(client_order_id, None)
            if found is None or found.broker_order_id is None:
                raise OrderRejected(f"no Schwab order known for {client_order_id}", broker=SCHWAB)
            order_id = found.broker_order_id
        oid = str(order_id)
        account_hash = self._ensure_account()
        # Cancelling twice is harmless, so cancel may use the read retry policy.
        self._read("cancel_order", lambda c: c.cancel_order(oid, account_hash), reject_4xx=True)
        current = self.get_order(client_order_id, BrokerOrderId(oid))
        return current or OrderUpdate(client_order_id, BrokerOrderId(oid), OrderState.CANCELLED)

    def open_orders(self) -> list[OrderUpdate]:
        account_hash = self._ensure_account()
        now = self._clock().astimezone(timezone.utc)
        resp = self._read("get_orders", lambda c: c.get_orders_for_account(
            account_hash, from_entered_datetime=now - OPEN_ORDERS_LOOKBACK, to_entered_datetime=now + timedelta(minutes=1)))
        updates: list[OrderUpdate] = []
        for raw in resp.json() or []:
            update = mapping.map_order(raw, self._coid_for(str(raw.get("orderId"))))
            if not update.state.is_terminal:
                updates.append(update)
        return updates

    # ------------------------------------------------------------------ account & market data

    def positions(self) -> list[BrokerPosition]:
        account_hash = self._ensure_account()
        resp = self._read("get_account", lambda c: c.get_account(account_hash, fields=[Client.Account.Fields.POSITIONS]))
        return mapping.map_positions(resp.json(), _catalog_or_raw)

    def balances(self) -> Balances:
        account_hash = self._ensure_account()
        resp = self._read("get_account", lambda c: c.get_account(account_hash))
        return mapping.map_balances(resp.json())

    def quote(self, symbol: str) -> Quote:
        canonical = canonical_symbol(symbol)
        venue = venue_symbols(canonical, self._clock().date()).schwab  # SPX -> "$SPX", /MES -> "/MESZ25"
        # get_quotes (not get_quote) because "$SPX" and "/MESZ25" do not belong in a URL path.
        resp = self._read("get_quotes", lambda c: c.get_quotes([venue]))
        quote = mapping.map_quote(resp.json(), venue, canonical)
        if quote is None:
            raise BrokerError(f"Schwab returned no quote for {venue}", broker=SCHWAB)
        return quote

    def option_chain(self, underlying: str, expiration: date) -> list[OptionContract]:
        instrument = get_instrument(underlying)
        venue = venue_symbols(instrument.symbol, expiration).schwab
        # SPX dailies/weeklies (PM-settled) trade under the SPXW root; the monthly SPX root is AM-settled.
        root = "SPXW" if instrument.root == "SPX" else instrument.root
        resp = self._read("get_option_chain", lambda c: c.get_option_chain(venue, from_date=expiration, to_date=expiration))
        payload = resp.json()
        if payload.get("status") not in (None, "SUCCESS"):
            raise BrokerError(f"Schwab option chain for {venue} {expiration}: {payload.get('status')}", broker=SCHWAB)
        return mapping.map_chain(payload, str(instrument.symbol), root, expiration)


def _catalog_or_raw(symbol: str) -> str:
    try:
        return str(canonical_symbol(symbol))
    except UnknownSymbolError:
        return symbol
