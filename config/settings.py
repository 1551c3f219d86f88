"""Typed service settings read from the environment and `.env`.

Every setting is documented in `.env.example` and the README. `load_settings()` is the only
place that reads the environment; everything else receives a `Settings` instance, so tests build
one directly without touching os.environ.

An invalid or missing setting raises `SettingsError` whose message is one line naming the
setting; `app.py` prints it and exits non-zero.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Mapping

from dotenv import dotenv_values
from limits import parse_many


class SettingsError(ValueError):
    """A setting is invalid or missing. The message names the setting."""


class TradingMode(StrEnum):
    PAPER = "paper"
    LIVE = "live"


class FuturesRoll(StrEnum):
    REOPEN = "reopen"
    CLOSE = "close"


class MarketDataSource(StrEnum):
    SIMULATED = "simulated"
    REPLAY = "replay"
    DATABENTO = "databento"


# The dashboard's development server answers on both names of the loopback address; a browser sends
# whichever the trader typed as the Origin.
DEFAULT_CORS_ORIGINS = ("http://localhost:3000", "http://127.0.0.1:3000")

# JWT secrets shorter than this are rejected in live mode (HS256 wants >= 256 bits of key).
MIN_LIVE_JWT_SECRET_LENGTH = 32
_WEAK_SECRETS = {"changeme", "secret", "your_secure_jwt_secret", "password", "jwt_secret"}


@dataclass(frozen=True, slots=True)
class Settings:
    trading_mode: TradingMode = TradingMode.PAPER
    host: str = "127.0.0.1"
    port: int = 5000
    redis_url: str | None = None
    redis_prefix: str = "tst"
    jwt_secret: str | None = None
    jwt_access_minutes: int = 24 * 60
    admin_email: str | None = None
    admin_password: str | None = None
    cors_origins: tuple[str, ...] = DEFAULT_CORS_ORIGINS
    log_dir: Path = Path("logs")
    login_rate_limit: str = "10 per minute"  # per client address, every auth request
    # Failed password checks per (account, client address); never per account alone (lockout).
    login_account_rate_limit: str = "5 per minute; 20 per hour"
    trusted_proxies: int = 0  # reverse proxies in front that append to X-Forwarded-For (0: ignore it)
    max_request_bytes: int = 64 * 1024

    market_data_source: MarketDataSource = MarketDataSource.SIMULATED
    replay_files: tuple[Path, ...] = ()
    replay_speed: float = 0.0  # 0 = as fast as possible, N = N x real time
    simulated_trades_per_second: float = 20.0
    stale_feed_seconds: float = 30.0
    # At a future's roll date (config/symbology.py) a held position is closed in the expiring month
    # and, with "reopen", reopened on the same side in the new front month; "close" only closes it.
    futures_roll: FuturesRoll = FuturesRoll.REOPEN
    # Keep a ticker's stop resting at the broker as a real stop order (where the broker API takes
    # one), so the position stays protected if this process, its feed or its strategy thread stop.
    broker_stops: bool = True

    databento_api_key: str | None = None
    schwab_api_key: str | None = None
    schwab_app_secret: str | None = None
    schwab_callback_url: str = "https://127.0.0.1:8182"
    schwab_account_id: str | None = None
    tastytrade_client_id: str | None = None
    tastytrade_client_secret: str | None = None
    tastytrade_redirect_uri: str = "https://127.0.0.1:8183"
    tastytrade_account_id: str | None = None
    token_encryption_key: str | None = None

    paper_slippage_ticks: int = 0
    paper_commission_per_contract: str = "0"  # Decimal as text; parsed by the paper broker
    paper_starting_cash: str = "100000"

    metrics_token: str | None = None
    alert_webhook_url: str | None = None
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def is_live(self) -> bool:
        return self.trading_mode is TradingMode.LIVE

    def with_overrides(self, **changes: object) -> "Settings":
        return replace(self, **changes)  # type: ignore[arg-type]


def _int(env: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a whole number, got {raw!r}") from None
    if not minimum <= value <= maximum:
        raise SettingsError(f"{name} must be between {minimum} and {maximum}, got {value}")
    return value


def _float(env: Mapping[str, str], name: str, default: float, minimum: float) -> float:
    raw = env.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw.strip())
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {raw!r}") from None
    if value < minimum:
        raise SettingsError(f"{name} must be >= {minimum}, got {value}")
    return value


def _rate_limit(env: Mapping[str, str], name: str, default: str) -> str:
    raw = _opt(env, name) or default
    try:
        items = parse_many(raw)
    except ValueError:
        items = []
    if not items or any(item.amount < 1 for item in items):
        raise SettingsError(f"{name} must be like '10 per minute' or '5 per minute; 20 per hour', got {raw!r}")
    return raw


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = _opt(env, name)
    if raw is None:
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise SettingsError(f"{name} must be on or off (true/false), got {raw!r}")


def _opt(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name)
    if raw is None:
        return None
    raw = raw.strip()
    return raw or None


def _enum(env: Mapping[str, str], name: str, enum: type[StrEnum], default: StrEnum) -> StrEnum:
    raw = _opt(env, name)
    if raw is None:
        return default
    try:
        return enum(raw.lower())
    except ValueError:
        allowed = ", ".join(m.value for m in enum)
        raise SettingsError(f"{name} must be one of: {allowed}; got {raw!r}") from None


def settings_from_mapping(env: Mapping[str, str]) -> Settings:
    """Build and validate settings from a plain mapping (environment + .env merged)."""
    mode = _enum(env, "TRADING_MODE", TradingMode, TradingMode.PAPER)
    source = _enum(env, "MARKET_DATA_SOURCE", MarketDataSource, MarketDataSource.SIMULATED)
    replay_files = tuple(Path(p) for p in (_opt(env, "REPLAY_FILES") or "").split(",") if p.strip())
    if source is MarketDataSource.REPLAY:
        if not replay_files:
            raise SettingsError("REPLAY_FILES must list at least one DBN or CSV file when MARKET_DATA_SOURCE=replay")
        for path in replay_files:
            if not path.is_file():
                raise SettingsError(f"REPLAY_FILES names a file that does not exist: {path}")
    if source is MarketDataSource.DATABENTO and not _opt(env, "DATABENTO_API_KEY"):
        raise SettingsError("DATABENTO_API_KEY is required when MARKET_DATA_SOURCE=databento")

    cors = tuple(o.strip() for o in (env.get("CORS_ORIGINS") or "").split(",") if o.strip()) or DEFAULT_CORS_ORIGINS
    prefix = _opt(env, "REDIS_PREFIX") or "tst"
    if not prefix.replace("_", "").replace("-", "").isalnum():
        raise SettingsError(f"REDIS_PREFIX must be letters, digits, '-' or '_', got {prefix!r}")

    settings = Settings(
        trading_mode=mode,  # type: ignore[arg-type]
        host=_opt(env, "HOST") or "127.0.0.1",
        port=_int(env, "PORT", 5000, 1, 65535),
        redis_url=_opt(env, "REDIS_URL"),
        redis_prefix=prefix,
        jwt_secret=_opt(env, "JWT_SECRET"),
        jwt_access_minutes=_int(env, "JWT_ACCESS_MINUTES", 24 * 60, 1, 60 * 24 * 31),
        admin_email=_opt(env, "ADMIN_EMAIL"),
        admin_password=_opt(env, "ADMIN_PASSWORD"),
        cors_origins=cors,
        log_dir=Path(_opt(env, "LOG_DIR") or "logs"),
        login_rate_limit=_rate_limit(env, "LOGIN_RATE_LIMIT", "10 per minute"),
        login_account_rate_limit=_rate_limit(env, "LOGIN_ACCOUNT_RATE_LIMIT", "5 per minute; 20 per hour"),
        trusted_proxies=_int(env, "TRUSTED_PROXIES", 0, 0, 10),
        market_data_source=source,  # type: ignore[arg-type]
        replay_files=replay_files,
        replay_speed=_float(env, "REPLAY_SPEED", 0.0, 0.0),
        simulated_trades_per_second=_float(env, "SIMULATED_TRADES_PER_SECOND", 20.0, 0.1),
        stale_feed_seconds=_float(env, "STALE_FEED_SECONDS", 30.0, 1.0),
        futures_roll=_enum(env, "FUTURES_ROLL", FuturesRoll, FuturesRoll.REOPEN),  # type: ignore[arg-type]
        broker_stops=_bool(env, "BROKER_STOPS", True),
        databento_api_key=_opt(env, "DATABENTO_API_KEY"),
        schwab_api_key=_opt(env, "SCHWAB_API_KEY"),
        schwab_app_secret=_opt(env, "SCHWAB_APP_SECRET"),
        schwab_callback_url=_opt(env, "SCHWAB_CALLBACK_URL") or "https://127.0.0.1:8182",
        schwab_account_id=_opt(env, "SCHWAB_ACCOUNT_ID"),
        tastytrade_client_id=_opt(env, "TASTYTRADE_CLIENT_ID"),
        tastytrade_client_secret=_opt(env, "TASTYTRADE_CLIENT_SECRET"),
        tastytrade_redirect_uri=_opt(env, "TASTYTRADE_REDIRECT_URI") or "https://127.0.0.1:8183",
        tastytrade_account_id=_opt(env, "TASTYTRADE_ACCOUNT_ID"),
        token_encryption_key=_opt(env, "TOKEN_ENCRYPTION_KEY"),
        paper_slippage_ticks=_int(env, "PAPER_SLIPPAGE_TICKS", 0, 0, 1000),
        paper_commission_per_contract=_opt(env, "PAPER_COMMISSION_PER_CONTRACT") or "0",
        paper_starting_cash=_opt(env, "PAPER_STARTING_CASH") or "100000",
        metrics_token=_opt(env, "METRICS_TOKEN"),
        alert_webhook_url=_opt(env, "ALERT_WEBHOOK_URL"),
    )
    _check_decimal("PAPER_COMMISSION_PER_CONTRACT", settings.paper_commission_per_contract)
    _check_decimal("PAPER_STARTING_CASH", settings.paper_starting_cash)
    if settings.is_live:
        _check_live(settings)
    return settings


def _check_decimal(name: str, raw: str) -> None:
    from decimal import Decimal, InvalidOperation

    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise SettingsError(f"{name} must be a decimal number, got {raw!r}") from None
    if not value.is_finite() or value < 0:
        raise SettingsError(f"{name} must be a finite number >= 0, got {raw!r}")


def _check_live(settings: Settings) -> None:
    """Live mode trades real money: refuse made-up prices and weak or implicit security settings."""
    if settings.market_data_source is not MarketDataSource.DATABENTO:
        # The simulated feed invents prices and a replay's are old: real orders must never follow them.
        raise SettingsError(
            f"MARKET_DATA_SOURCE must be databento when TRADING_MODE=live (got {settings.market_data_source.value}: "
            "simulated and replay prices are not the market's)"
        )
    secret = settings.jwt_secret or ""
    if len(secret) < MIN_LIVE_JWT_SECRET_LENGTH or secret.lower() in _WEAK_SECRETS:
        raise SettingsError(
            f"JWT_SECRET must be at least {MIN_LIVE_JWT_SECRET_LENGTH} random characters in live mode"
        )
    if not settings.redis_url:
        raise SettingsError("REDIS_URL must point at a real Redis server in live mode")
    if not settings.admin_email or not settings.admin_password:
        raise SettingsError("ADMIN_EMAIL and ADMIN_PASSWORD must be set explicitly in live mode")
    if not settings.token_encryption_key:
        raise SettingsError("TOKEN_ENCRYPTION_KEY must be set in live mode (Fernet key for broker tokens)")


def load_settings(env_file: str | os.PathLike[str] | None = ".env") -> Settings:
    """Read `.env` (if present) under the real environment, which wins, and validate."""
    merged: dict[str, str] = {}
    if env_file is not None and Path(env_file).is_file():
        merged.update({k: v for k, v in dotenv_values(env_file).items() if v is not None})
    merged.update(os.environ)
    return settings_from_mapping(merged)
