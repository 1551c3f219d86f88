"""Pre-flight: the read-only checks a trader runs before the first live day, with the real
credentials, against the real services. `./preflight.sh` (or `.venv/bin/python preflight.py`).

It loads the service's settings (.env and the environment) and its Redis token store, builds the
live adapters as the service does (`runtime.build_live_adapters`) and, per configured broker, checks
in order: login, account, positions, quotes ($SPX, the equity, the future), the SPXW chain for the
next SPX session and one order of each kind the product sends through the broker's own dry run
(Tastytrade `place_order(dry_run=True)`, Schwab previewOrder), which validates an order and never
places it. Then Databento: the API key's range for each dataset the catalog uses (a metadata call).

Nothing is placed, cancelled or changed at any broker. The only writes are the service's own token
bookkeeping in Redis (an access token refreshed on the way is stored, as the service would). It
takes no instance lock, so it may run next to the service.

The output is a table of PASS / FAIL / SKIP rows with a reason each, scrubbed of every configured
secret and stored token and with account numbers masked. Exit status: 0 when no check failed,
1 when one did, 2 when the settings or Redis stop it from starting (like the service).
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any, Protocol

import pandas as pd

from brokers.errors import BrokerError, OrderRejected
from brokers.preview import OrderPreview
from config.instruments import CATALOG, get_instrument
from config.settings import MarketDataSource, Settings
from config.symbology import venue_symbols
from domain.orders import (
    BROKERS,
    SCHWAB,
    TASTYTRADE,
    Balances,
    BrokerName,
    BrokerPosition,
    BrokerStatus,
    ClientOrderId,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderType,
    PositionEffect,
    Quote,
)
from domain.redaction import Redactor
from engine.executor import nearest_strike
from market_data import calendars

log = logging.getLogger("preflight")

EXIT_OK, EXIT_FAILED, EXIT_STARTUP_ERROR = 0, 1, 2
DATABENTO_TIMEOUT_SECONDS = 15  # the SDK waits 100 s by default; a pre-flight should answer sooner
STOP_DISTANCE = Decimal("0.95")  # the dry-run stop rests 5 % below the last price: never near a fill
DEFAULT_EQUITY, DEFAULT_FUTURE = "NVDA", "/MES"
_LINE_BREAKS = re.compile(r"\s*[\r\n\t]+\s*")


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAIL"
    SKIP = "SKIP"


@dataclass(frozen=True, slots=True)
class Check:
    area: str  # "schwab", "tastytrade", "databento", "setup"
    name: str
    outcome: Outcome
    detail: str


@dataclass(frozen=True, slots=True)
class Targets:
    """The instruments the checks use: an equity and a future the product trades."""

    equity: str = DEFAULT_EQUITY
    future: str = DEFAULT_FUTURE


@dataclass
class Report:
    header: str
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.outcome is Outcome.FAIL]

    @property
    def exit_code(self) -> int:
        return EXIT_FAILED if self.failed else EXIT_OK

    def render(self) -> str:
        rows = [("AREA", "CHECK", "RESULT", "DETAIL")] + [(c.area, c.name, c.outcome.value, c.detail)
                                                          for c in self.checks]
        widths = [max(len(r[i]) for r in rows) for i in range(3)]
        lines = [self.header, ""]
        lines += ["  ".join(r[i].ljust(widths[i]) for i in range(3)) + "  " + r[3] for r in rows]
        counts = {o: sum(c.outcome is o for c in self.checks) for o in Outcome}
        verdict = "NOT READY: fix the FAIL rows" if self.failed else "ready"
        lines += ["", f"{counts[Outcome.PASS]} passed, {counts[Outcome.FAIL]} failed, "
                      f"{counts[Outcome.SKIP]} skipped: {verdict}"]
        return "\n".join(lines)


class PreviewingAdapter(Protocol):
    """What the checks need from a live adapter (both real adapters have it)."""

    name: BrokerName

    def connect(self) -> BrokerStatus: ...
    def balances(self) -> Balances: ...
    def positions(self) -> list[BrokerPosition]: ...
    def quote(self, symbol: str) -> Quote: ...
    def option_chain(self, underlying: str, expiration: date) -> list[OptionContract]: ...
    def preview_order(self, order: OrderRequest) -> OrderPreview: ...


class _Skip(Exception):
    """A step that cannot run, and why (not a failure)."""


# --- broker checks ---------------------------------------------------------------------------------
# The kinds of order each broker gets from the product. Schwab's trading API does not trade futures.
_DRY_RUNS: dict[BrokerName, tuple[str, ...]] = {
    TASTYTRADE: ("futures market", "equity market", "SPXW option market", "futures stop"),
    SCHWAB: ("equity market", "SPXW option market", "equity stop"),
}


class BrokerChecks:
    """The checks of one broker, in order; each later step needs a working login."""

    def __init__(self, adapter: PreviewingAdapter, targets: Targets, expiration: date) -> None:
        self.adapter = adapter
        self.name = adapter.name
        self.targets = targets
        self.expiration = expiration
        self.checks: list[Check] = []
        self.quotes: dict[str, Quote] = {}
        self.chain: list[OptionContract] = []

    def run(self) -> list[Check]:
        if not self._step("login", self._login):
            for step in ["account", "positions", *self._quote_labels(), self._chain_label(),
                         *(f"dry run: {k}" for k in _DRY_RUNS[self.name])]:
                self.checks.append(Check(self.name, step, Outcome.SKIP, "needs a working login"))
            return self.checks
        self._step("account", self._account)
        self._step("positions", self._positions)
        for symbol, label in zip(self._quote_symbols(), self._quote_labels()):
            self._step(label, lambda s=symbol: self._quote(s))
        self._step(self._chain_label(), self._spxw_chain)
        for kind in _DRY_RUNS[self.name]:
            self._step(f"dry run: {kind}", lambda k=kind: self._dry_run(k))
        return self.checks

    def _step(self, name: str, run: Callable[[], str]) -> bool:
        try:
            self.checks.append(Check(self.name, name, Outcome.PASS, run()))
        except _Skip as skip:
            self.checks.append(Check(self.name, name, Outcome.SKIP, str(skip)))
        except BrokerError as exc:
            self.checks.append(Check(self.name, name, Outcome.FAIL, exc.message))
        except Exception as exc:  # noqa: BLE001 - an unexpected error is a failed check, not a crash
            self.checks.append(Check(self.name, name, Outcome.FAIL, f"{type(exc).__name__}: {exc}"))
        return self.checks[-1].outcome is Outcome.PASS

    # --- steps ---
    def _login(self) -> str:
        status = self.adapter.connect()  # a real request: the token is used to resolve the account
        if not status.connected:
            raise BrokerError(status.message or "not connected")
        expiry = f"; refresh token expires {status.refresh_token_expires_at:%Y-%m-%d %H:%M} UTC" \
            if status.refresh_token_expires_at else ""
        warnings = f" ({'; '.join(status.warnings)})" if status.warnings else ""
        return f"logged in, account {status.account} found on the login{expiry}{warnings}"

    def _account(self) -> str:
        b = self.adapter.balances()
        return f"readable: equity {b.equity:,.2f}, buying power {b.buying_power:,.2f}"

    def _positions(self) -> str:
        held = self.adapter.positions()
        if not held:
            return "readable: no open positions"
        shown = ", ".join(f"{p.key} {p.quantity:+d}" for p in held[:6])
        return f"readable: {len(held)} open ({shown}{', ...' if len(held) > 6 else ''})"

    def _quote_symbols(self) -> list[str]:
        symbols = ["SPX", self.targets.equity]
        if TASTYTRADE == self.name:  # the future is traded (and its stop priced) at Tastytrade only
            symbols.append(self.targets.future)
        return symbols

    def _quote_labels(self) -> list[str]:
        return [f"quote {'$SPX' if s == 'SPX' else s}" for s in self._quote_symbols()]

    def _quote(self, symbol: str) -> str:
        quote = self.adapter.quote(symbol)
        if _price(quote) is None:
            raise BrokerError(f"the quote for {symbol} has no price (no last, bid or ask)")
        self.quotes[symbol] = quote
        at = f" at {quote.ts:%Y-%m-%d %H:%M:%S} UTC" if quote.ts else ""
        return f"last {quote.last or '-'}, bid {quote.bid or '-'}, ask {quote.ask or '-'}{at}"

    def _chain_label(self) -> str:
        return f"SPXW chain {self.expiration}"

    def _spxw_chain(self) -> str:
        chain = [c for c in self.adapter.option_chain("SPX", self.expiration) if c.expiration == self.expiration]
        if not chain:
            raise BrokerError(f"no SPXW contracts expiring {self.expiration} in the chain")
        self.chain = chain
        strikes = sorted({c.strike for c in chain})
        return f"{len(chain)} contracts, strikes {strikes[0]}-{strikes[-1]}"

    def _dry_run(self, kind: str) -> str:
        order = self._order(kind)
        try:
            preview = self.adapter.preview_order(order)
        except OrderRejected as exc:
            if order.order_type is OrderType.STOP:  # refused before sending: the adapter sends no stops
                raise _Skip(f"this adapter sends no stop orders ({exc.message})") from None
            raise
        what = _describe(order)
        notes = f" (warnings: {'; '.join(preview.warnings)})" if preview.warnings else ""
        if not preview.accepted:
            raise BrokerError(f"{what} refused: {preview.detail}{notes}")
        return f"{what}: {preview.detail}{notes}"

    def _order(self, kind: str) -> OrderRequest:
        coid = ClientOrderId("preflight-" + kind.replace(" ", "-").lower())
        if kind == "futures market":
            return _market(coid, self.targets.future)
        if kind == "equity market":
            return _market(coid, self.targets.equity)
        if kind == "SPXW option market":
            if not self.chain:
                raise _Skip("no SPXW contract to try: the chain check did not pass")
            level = _price(self.quotes["SPX"]) if "SPX" in self.quotes else None
            if level is None:  # no index level: the chain's middle strike is as good as any
                strikes = sorted({c.strike for c in self.chain})
                level = strikes[len(strikes) // 2]
            contract = nearest_strike(self.chain, float(level), OptionRight.CALL, self.expiration)
            return OrderRequest(coid, "SPX", OrderSide.BUY, 1, PositionEffect.OPEN, option=contract)
        symbol = self.targets.future if kind == "futures stop" else self.targets.equity
        price = _price(self.quotes[symbol]) if symbol in self.quotes else None
        if price is None:
            raise _Skip(f"no {symbol} price to place the stop from: its quote check did not pass")
        stop = get_instrument(symbol).round_price(price * STOP_DISTANCE)
        # A protective sell stop below the market, as a long position would carry.
        return OrderRequest(coid, symbol, OrderSide.SELL, 1, PositionEffect.CLOSE, order_type=OrderType.STOP,
                            stop_price=stop)


def _market(coid: ClientOrderId, symbol: str) -> OrderRequest:
    return OrderRequest(coid, str(get_instrument(symbol).symbol), OrderSide.BUY, 1, PositionEffect.OPEN)


def _price(quote: Quote) -> Decimal | None:
    if quote.last is not None:
        return quote.last
    if quote.bid is not None and quote.ask is not None:
        return (quote.bid + quote.ask) / 2
    return quote.bid or quote.ask


def _describe(order: OrderRequest) -> str:
    what = order.option.occ_symbol if order.option is not None else order.symbol
    stop = f" @ {order.stop_price}" if order.stop_price is not None else ""
    return f"{order.side.value} {order.quantity} {what} {order.order_type.value}{stop}"


# --- Databento ---------------------------------------------------------------------------------------
HistoricalFactory = Callable[[str], Any]  # api key -> databento.Historical


def _default_historical(key: str) -> Any:
    import databento as db

    client = db.Historical(key=key)
    client.metadata.TIMEOUT = DATABENTO_TIMEOUT_SECONDS  # the SDK reads it per request (self.TIMEOUT)
    return client


def catalog_datasets(on: date) -> list[str]:
    """The Databento datasets the catalog's instruments come from."""
    return sorted({d for s in CATALOG if (d := venue_symbols(s, on).databento_dataset) is not None})


def databento_checks(settings: Settings, factory: HistoricalFactory, now: datetime) -> list[Check]:
    datasets = catalog_datasets(now.date())
    if not settings.databento_api_key:
        why = f"DATABENTO_API_KEY is not set (MARKET_DATA_SOURCE={settings.market_data_source.value})"
        return [Check("databento", d, Outcome.SKIP, why) for d in datasets]
    try:
        client = factory(settings.databento_api_key)
    except ValueError as exc:  # the SDK refuses a blank key before any request
        return [Check("databento", d, Outcome.FAIL, f"DATABENTO_API_KEY unusable: {exc}") for d in datasets]
    return [_dataset_check(client, d, now) for d in datasets]


def _dataset_check(client: Any, dataset: str, now: datetime) -> Check:
    import requests
    from databento.common.error import BentoClientError, BentoError, BentoServerError

    try:
        available = client.metadata.get_dataset_range(dataset=dataset)
    except BentoClientError as exc:
        who = "refused the API key" if exc.http_status in (401, 403) else "refused the request"
        return Check("databento", dataset, Outcome.FAIL, f"Databento {who} (HTTP {exc.http_status}: {exc.message})")
    except BentoServerError as exc:
        return Check("databento", dataset, Outcome.FAIL, f"Databento server error (HTTP {exc.http_status}); try later")
    except requests.RequestException as exc:
        return Check("databento", dataset, Outcome.FAIL, f"Databento unreachable ({type(exc).__name__})")
    except BentoError as exc:
        return Check("databento", dataset, Outcome.FAIL, f"Databento error: {exc}")
    try:
        end = pd.Timestamp(available["end"]).tz_convert(UTC)
    except (KeyError, TypeError, ValueError):
        return Check("databento", dataset, Outcome.FAIL, f"Databento answered without an available end: {available!r}")
    behind = max(0.0, (pd.Timestamp(now).tz_convert(UTC) - end).total_seconds() / 60)
    return Check("databento", dataset, Outcome.PASS,
                 f"key entitled; history available up to {end:%Y-%m-%d %H:%M} UTC ({behind:.0f} min behind now)")


# --- the whole run -----------------------------------------------------------------------------------
def spxw_expiration(now: datetime) -> date:
    """The SPX session in progress, else the next one: the 0DTE contracts the strategy would trade."""
    calendar = calendars.calendar_for("SPX")
    return (calendar.session_at(now) or calendar.next_session(now)).session_date


_NOT_CONFIGURED = {
    SCHWAB: "not configured (SCHWAB_API_KEY / SCHWAB_APP_SECRET unset)",
    TASTYTRADE: "not configured (TASTYTRADE_CLIENT_ID / TASTYTRADE_CLIENT_SECRET unset)",
}


def run_preflight(settings: Settings, adapters: Mapping[BrokerName, PreviewingAdapter], *,
                  historical_factory: HistoricalFactory = _default_historical, now: datetime | None = None,
                  targets: Targets = Targets(), secrets: Iterable[str | None] = ()) -> Report:
    now = now or datetime.now(UTC)
    expiration = spxw_expiration(now)
    header = (f"Pre-flight: TRADING_MODE={settings.trading_mode.value}, "
              f"MARKET_DATA_SOURCE={settings.market_data_source.value}, REDIS_PREFIX={settings.redis_prefix}, "
              f"{now:%Y-%m-%d %H:%M} UTC; 0DTE expiration {expiration}. Nothing is placed.")
    checks: list[Check] = []
    if not adapters:
        checks.append(Check("setup", "brokers", Outcome.FAIL,
                            "no broker configured: set the Schwab and/or Tastytrade settings in .env"))
    for name in BROKERS:
        adapter = adapters.get(name)
        if adapter is None:
            checks.append(Check(name, "login", Outcome.SKIP, _NOT_CONFIGURED[name]))
            continue
        checks += BrokerChecks(adapter, targets, expiration).run()
    if settings.market_data_source is not MarketDataSource.DATABENTO:
        # Live orders on simulated or replayed prices would be real trades on synthetic signals.
        checks.append(Check("setup", "market data", Outcome.FAIL if settings.is_live else Outcome.SKIP,
                            f"MARKET_DATA_SOURCE={settings.market_data_source.value}: live trading needs databento"))
    checks += databento_checks(settings, historical_factory, now)
    scrub = Scrubber(secrets, (settings.schwab_account_id, settings.tastytrade_account_id))
    return Report(scrub(header), [Check(c.area, c.name, c.outcome, scrub(c.detail)) for c in checks])


class Scrubber:
    """The last line of defence for the printed table: the app's one redactor (secrets -> ***, full
    account numbers masked, token-shaped text hidden), and one line per row."""

    def __init__(self, secrets: Iterable[str | None], accounts: Iterable[str | None]) -> None:
        self._redactor = Redactor(secrets, accounts=accounts)

    def __call__(self, text: str) -> str:
        # One line per row, whatever a broker's message held.
        return _LINE_BREAKS.sub(" ", self._redactor.redact(text)).strip()


def stored_token_values(token_store: Any) -> list[str]:
    """The broker tokens kept in Redis, so that an error echoing one is scrubbed as well."""
    values: list[str] = []
    for broker in BROKERS:
        try:
            blob = token_store.load(broker) or {}
        except Exception:  # noqa: BLE001 - unreadable tokens: the login check will say so
            continue
        token = blob.get("token") if isinstance(blob.get("token"), dict) else blob
        values += [str(token[k]) for k in ("access_token", "refresh_token", "id_token") if token.get(k)]
    return values


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Read-only checks of the live brokers and Databento "
                                                 "before the first live day. Nothing is placed.")
    parser.add_argument("--equity", default=DEFAULT_EQUITY, help=f"equity for the quote and dry runs (default {DEFAULT_EQUITY})")
    parser.add_argument("--future", default=DEFAULT_FUTURE, help=f"future for the quote and dry runs (default {DEFAULT_FUTURE})")
    parser.add_argument("--verbose", action="store_true", help="also print the adapters' log lines (redacted)")
    args = parser.parse_args(argv)

    # The service's own wiring, imported here: the checks above need none of it.
    from app import secret_values
    from brokers.token_store import TokenStore
    from config.settings import SettingsError, load_settings
    from runtime import build_live_adapters
    from store.redis_store import StoreUnavailableError, build_store

    try:
        settings = load_settings()
        targets = Targets(str(get_instrument(args.equity).symbol), str(get_instrument(args.future).symbol))
        store = build_store(settings)
        token_store = TokenStore(store, settings.token_encryption_key)
    except (SettingsError, StoreUnavailableError, ValueError) as exc:
        print(f"preflight: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    secrets = [*secret_values(settings), *stored_token_values(token_store)]
    _configure_logging(args.verbose, Redactor(secrets, accounts=(settings.schwab_account_id,
                                                                 settings.tastytrade_account_id)))
    adapters = build_live_adapters(settings, store, token_store)
    try:
        report = run_preflight(settings, adapters, targets=targets, secrets=secrets)  # type: ignore[arg-type]
    finally:
        for adapter in adapters.values():
            adapter.close()
    print(report.render())
    return report.exit_code


def _configure_logging(verbose: bool, redactor: logging.Filter) -> None:
    """Quiet by default: the table says what failed. --verbose adds the log lines, redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(redactor)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.CRITICAL + 1)


if __name__ == "__main__":
    sys.exit(main())
