"""The service: `create_app()` builds the Flask app; `python app.py` serves it with waitress.

One process: the REST API plus (wired in `main()` by later issues) market data, the strategy
engine and brokers. All state lives in Redis (store/). Start-up problems (bad settings, Redis
unreachable) print one line to stderr and exit with status 2.
"""
from __future__ import annotations

import logging
import logging.handlers
import sys

from flask import Flask
from flask_cors import CORS

from api.auth_routes import auth_bp
from api.brokers import brokers_bp
from api.errors import register_error_handlers
from api.meta import meta_bp
from api.services import Services
from api.tickers import tickers_bp
from api.trading import trading_bp
from auth.bootstrap import GeneratedAdmin, ensure_first_admin
from auth.cli import users_cli
from auth.limiter import build_limiter
from auth.tokens import init_jwt
from auth.users import UserStore
from config.settings import Settings, SettingsError, load_settings
from store.redis_store import Store, StoreUnavailableError, build_store
from store.tickers import TickerStore

log = logging.getLogger("app")

EXIT_STARTUP_ERROR = 2
WAITRESS_THREADS = 8
LOG_FILE_NAME = "strategy_consumer.log"
LOG_FILE_BYTES = 10 * 1024 * 1024
LOG_FILE_BACKUPS = 5


# --- logging -------------------------------------------------------------------------------------
class SecretRedactingFilter(logging.Filter):
    """Last line of defence: replaces any configured secret value that reaches a log record."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        # Short values would redact ordinary words; real secrets are long.
        self._secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self._secrets:
            redacted = redacted.replace(secret, "***")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


def secret_values(settings: Settings) -> list[str]:
    return [v for v in (
        settings.jwt_secret, settings.admin_password, settings.databento_api_key, settings.schwab_api_key,
        settings.schwab_app_secret, settings.tastytrade_client_id, settings.tastytrade_client_secret,
        settings.token_encryption_key, settings.metrics_token, settings.alert_webhook_url,
    ) if v]


def configure_logging(settings: Settings) -> None:
    """Root logger -> rotating `<LOG_DIR>/strategy_consumer.log` and stderr, secrets redacted."""
    settings.log_dir.mkdir(parents=True, exist_ok=True)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s [%(threadName)s] %(message)s")
    redactor = SecretRedactingFilter(secret_values(settings))
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
def build_services(settings: Settings, store: Store) -> Services:
    """The service container. Later issues attach market_data, brokers, orders, risk and engine
    here (or in `main()` before serving); endpoints treat a None component as "not available"."""
    return Services(settings=settings, store=store, users=UserStore(store), tickers=TickerStore(store))


def create_app(settings: Settings | None = None, store: Store | None = None) -> Flask:
    """The Flask app. With no arguments it loads settings from the environment/.env and connects to
    Redis (this is what `flask --app app ...` uses)."""
    settings = settings or load_settings()
    store = store or build_store(settings)
    services = build_services(settings, store)

    app = Flask(__name__)
    app.config.update(
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
        PROPAGATE_EXCEPTIONS=False,  # unexpected errors become a JSON 500, never a traceback page
    )
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["services"] = services

    register_error_handlers(app)
    init_jwt(app, settings, services.users)
    CORS(
        app,
        resources={r"/api/*": {"origins": list(settings.cors_origins)}},
        allow_headers=["Authorization", "Content-Type"],
        methods=["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        max_age=600,
    )
    limiter = build_limiter(app, store)
    # Login and update-credentials both check a password: limit the whole auth blueprint.
    limiter.limit(settings.login_rate_limit)(auth_bp)
    for blueprint in (auth_bp, tickers_bp, trading_bp, brokers_bp, meta_bp):
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

    # Later issues: start market data, brokers, order manager, risk and the strategy engine here
    # and attach them to `services` before serving.

    log.info("serving on http://%s:%d (mode=%s, redis=%s, prefix=%s)", settings.host, settings.port,
             settings.trading_mode.value, store.url, settings.redis_prefix)
    from waitress import serve

    serve(app, host=settings.host, port=settings.port, threads=WAITRESS_THREADS)
    return 0


if __name__ == "__main__":
    sys.exit(main())
