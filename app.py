"""The service: `create_app()` builds the Flask app; `python app.py` serves it with waitress.

One process: the REST API plus (wired in `main()` by later issues) market data, the strategy
engine and brokers. All state lives in Redis (store/). Start-up problems (bad settings, Redis
unreachable) print one line to stderr and exit with status 2.
"""
from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import sys
from datetime import datetime
from decimal import Decimal

from flask import Flask
from flask_cors import CORS

from api.auth_routes import auth_bp
from api.backtest import backtest_bp
from api.bars import bars_bp
from api.brokers import brokers_bp
from api.console import console_bp
from api.errors import register_error_handlers
from api.meta import meta_bp
from api.monitoring import monitoring_bp
from api.orders import orders_bp
from api.risk import risk_bp
from api.strategies import strategies_bp
from api.tickers import tickers_bp
from api.trading import trading_bp
from auth.bootstrap import GeneratedAdmin, ensure_first_admin
from auth.cli import users_cli
from auth.limiter import install_login_limits, trust_proxies
from auth.tokens import init_jwt
from auth.users import UserStore
from backtest.jobs import BacktestJobs
from config.settings import Settings, SettingsError, load_settings
from config.symbology import contract_from_key, contract_key_at
from domain.redaction import Redactor
from engine.services import Services
from ledger.trades import Ledger
from ledger.pnl import session_pnl
from market_data import calendars
from monitoring.alerts import Alerter
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from risk.engine import RiskEngine
from store.redis_store import Store, StoreUnavailableError, build_store
from store.persistence import warn_if_not_persistent
from store.instance_lock import InstanceLockError, PrefixModeError, acquire_instance_lock
from store.tickers import TickerStore
from runtime import TradingRuntime

log = logging.getLogger("app")

EXIT_STARTUP_ERROR = 2
EXIT_LOCK_LOST = 3  # the instance lock expired or was taken over while running
WAITRESS_THREADS = 8
LOG_FILE_NAME = "strategy_consumer.log"
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


# --- logging -------------------------------------------------------------------------------------
def secret_values(settings: Settings) -> list[str]:
    return [v for v in (
        settings.jwt_secret, settings.admin_password, settings.databento_api_key, settings.schwab_api_key,
        settings.schwab_app_secret, settings.tastytrade_client_id, settings.tastytrade_client_secret,
        settings.token_encryption_key, settings.metrics_token, settings.alert_webhook_url,
    ) if v]


def configure_logging(settings: Settings) -> None:
    """Root logger -> rotating `<LOG_DIR>/strategy_consumer.log` and stderr, secrets redacted (the
    configured ones, the account numbers, and anything shaped like a token)."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    redactor = Redactor(secret_values(settings), accounts=(settings.schwab_account_id, settings.tastytrade_account_id))
    file_handler = logging.handlers.RotatingFileHandler(
        settings.log_dir / LOG_FILE_NAME, maxBytes=LOG_FILE_BYTES, backupCount=LOG_FILE_BACKUPS, encoding="utf-8",
    )
    stderr_handler = logging.StreamHandler(sys.stderr)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in (file_handler, stderr_handler):
        handler.setFormatter(formatter)
        handler.addFilter(redactor)
        root.addHandler(handler)
    root.setLevel(logging.INFO)


# --- wiring --------------------------------------------------------------------------------------
def _session_start(symbol: str, now: datetime) -> datetime:
    """Start of the trading session containing `now` (or the last one): loss limits reset here."""
    calendar = calendars.calendar_for(symbol)
    session = calendar.session_at(now) or calendar.previous_session(now)
    return session.open if session else now


def build_services(settings: Settings, store: Store) -> Services:
    """The service container with everything that needs no background thread: auth, tickers,
    risk, ledger, metrics, audit and backtest jobs. `main()` adds the trading runtime (market
    data, brokers, order manager, strategy engine) and the alerter, which own threads."""
    metrics = Metrics()
    audit = AuditLog(settings, store)
    ledger = Ledger(store)
    services = Services(settings=settings, store=store, users=UserStore(store), tickers=TickerStore(store),
                        metrics=metrics, audit=audit, ledger=ledger)
    services.mark_price = lambda key: _mark_price(services, key)
    services.risk = RiskEngine(
        store, settings, calendar_session_start=_session_start, audit=audit, metrics=metrics,
        pnl_source=lambda start: session_pnl(ledger, start, services.mark_price),
    )
    services.backtests = BacktestJobs(store)
    return services


def _mark_price(services: Services, key: str) -> Decimal | None:
    """Latest trade price for a position key: a catalog symbol, or a futures contract month while it
    is the front month the feed streams (another month's position would be marked at the wrong
    contract's price: reported missing instead, as options are, which have no live mark here)."""
    if services.market_data is None:
        return None
    contract = contract_from_key(key)
    if contract is not None:
        root = f"/{contract.root}"
        if contract_key_at(root, services.time_ns()) != key:
            return None
        key = root
    try:
        price = services.market_data.last_price(key)
    except ValueError:  # an OCC option symbol is not a catalog symbol
        return None
    return None if price is None else Decimal(str(price))


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """The Flask app. With no arguments it loads settings from the environment/.env and connects to
    Redis (this is what `flask --app app ...` uses)."""
    settings = settings or load_settings()
    store = store or build_store(settings)
    services = build_services(settings, store)

    app = Flask(__name__)
    # No "//" -> "/" redirect: werkzeug answers it with an HTML 308 page (routing redirects bypass
    # the error handlers); a mistyped path gets the JSON 404 instead.
    app.url_map.merge_slashes = False
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,  # unexpected errors become a JSON 500, never a traceback page
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["services"] = services

    register_error_handlers(app)
    warn_if_not_persistent(store, live=settings.is_live)
    init_jwt(app, settings, services.users, store)
    CORS(
        app,
        resources={r"/api/*": {"origins": list(settings.cors_origins)}},
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        max_age=600,
    )
    # Behind nginx the TCP peer is the proxy: the rate limits and the audit log need the client.
    trust_proxies(app, settings.trusted_proxies)
    install_login_limits(app, store, auth_bp, per_address=settings.login_rate_limit,
                         per_account_address=settings.login_account_rate_limit)
    for blueprint in (auth_bp, tickers_bp, trading_bp, brokers_bp, meta_bp, bars_bp, risk_bp, monitoring_bp,
                      backtest_bp, orders_bp, strategies_bp, console_bp):
        app.register_blueprint(blueprint)
    app.cli.add_command(users_cli)

    ensure_first_admin(services.users, settings, allow_generated=False)
    return app


def announce_generated_admin(admin: GeneratedAdmin) -> None:
    """Printed to stderr once, deliberately not through logging: the log file must never hold it."""
    print(
        f"\n*** paper mode: created admin {admin.email} with password {admin.password}\n"
        f"*** set ADMIN_EMAIL/ADMIN_PASSWORD or use 'flask --app app users reset-password' to change it\n",
        file=sys.stderr, flush=True,
    )


def main() -> int:
    try:
        settings = load_settings()
        configure_logging(settings)
        store = build_store(settings)
    except (SettingsError, StoreUnavailableError) as exc:
        print(f"startup error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    except OSError as exc:  # e.g. LOG_DIR not writable
        print(f"startup error: LOG_DIR {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR

    app = create_app(settings, store)
    services: Services = app.extensions["services"]
    generated = ensure_first_admin(services.users, settings, allow_generated=True)
    if generated is not None:
        announce_generated_admin(generated)

    def on_lock_lost(message: str) -> None:
        # Another process may now trade the same accounts: stop this one through the SIGTERM path.
        log.critical("%s: stopping this instance", message)
        os.kill(os.getpid(), signal.SIGTERM)

    try:  # one prefix is one account book: one process, in the one mode the prefix has recorded
        lock = acquire_instance_lock(store, settings.trading_mode, on_lost=on_lock_lost)
    except (InstanceLockError, PrefixModeError) as exc:
        print(f"startup error: {exc}", file=sys.stderr)
        return EXIT_STARTUP_ERROR
    services.instance_lock = lock

    alerter = Alerter(settings, store)
    alerter.start()
    services.alerter = alerter
    if services.risk is not None:
        services.risk.alerter = alerter
    runtime = TradingRuntime.build(services)
    attach_monitoring(services, runtime)

    def on_sigterm(signum: int, frame: object) -> None:
        # Unwinds waitress's serve loop in the main thread; `finally` below stops everything.
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_sigterm)
    try:
        runtime.start()
        log.info("serving on http://%s:%d (mode=%s, data=%s, redis=%s, prefix=%s)", settings.host, settings.port,
                 settings.trading_mode.value, settings.market_data_source.value, store.url, settings.redis_prefix)
        log.info("operations console: http://%s:%d/console/", settings.host, settings.port)
        from waitress import serve

        serve(app, host=settings.host, port=settings.port, threads=WAITRESS_THREADS)
    except (SystemExit, KeyboardInterrupt):
        pass  # raised before serving; once serving, waitress swallows both and serve() just returns
    finally:
        log.info("stopping: strategy threads, market data and brokers (positions and state are kept)")
        runtime.stop()
        alerter.stop()
        lock.release()
        log.info("stopped")
    return EXIT_LOCK_LOST if lock.lost else 0


def attach_monitoring(services: Services, runtime: TradingRuntime) -> None:
    """Connect the order path, brokers and engine to metrics, audit and alerts (all three are in
    the services by then: build_services and main() made them)."""
    metrics, audit, alerter = services.metrics, services.audit, services.alerter
    if metrics is None or audit is None or alerter is None:
        raise RuntimeError("attach_monitoring needs the services' metrics, audit log and alerter")

    def connection_changed(broker: str, status: dict[str, object]) -> None:
        connected = bool(status.get("connected"))
        audit.broker_connection(broker, connected, str(status.get("message") or ""))
        metrics.set_broker(broker, connected)
        if not connected:
            alerter.alert("broker_disconnected", f"{broker}: {status.get('message') or 'not connected'}", "warning",
                          dedupe_key=f"broker:{broker}")

    def order_event(kind: str, entry: dict[str, str]) -> None:
        # Called inside the order path: cheap, never raises back into it (the OMS catches anyway).
        if kind == "transition":
            metrics.order_transition(entry.get("broker", ""), entry.get("state", ""))
            audit.order_transition(entry)
        elif kind == "fill":
            metrics.fill(entry.get("broker", ""), entry.get("strategy", ""), entry.get("symbol", ""),
                         int(entry.get("qty") or entry.get("quantity") or 0))
        elif kind == "event":
            audit.record("order_event", **entry)

    runtime.orders.add_listener(order_event)
    runtime.registry.on_connection_change = connection_changed
    for name, adapter in runtime.registry.live.items():
        adapter.on_latency = metrics.latency_hook(name)  # both real adapters expose this hook
    runtime.on_reconciliation = lambda report: None if report.ok else alerter.alert(
        "reconciliation_mismatch", f"reconciliation found mismatches: {report.affected}", "critical",
        dedupe_key="reconcile")


if __name__ == "__main__":
    sys.exit(main())
