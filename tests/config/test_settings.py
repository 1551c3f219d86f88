"""Settings validation: one clear error naming the setting."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from config.settings import MarketDataSource, SettingsError, TradingMode, settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]
STRONG = "k" * 48
LIVE_OK = {"TRADING_MODE": "live", "JWT_SECRET": STRONG, "REDIS_URL": "redis://127.0.0.1:6379/0",
           "ADMIN_EMAIL": "ops@example.com", "ADMIN_PASSWORD": "a long admin password",
           "TOKEN_ENCRYPTION_KEY": "x" * 44, "MARKET_DATA_SOURCE": "databento", "DATABENTO_API_KEY": "db-key"}


def test_defaults() -> None:
    settings = settings_from_mapping({})
    assert settings.trading_mode is TradingMode.PAPER and settings.host == "127.0.0.1" and settings.port == 5000
    assert settings.market_data_source is MarketDataSource.SIMULATED and settings.redis_prefix == "tst"


def test_default_cors_origins_name_both_addresses_of_the_local_dashboard() -> None:
    expected = ("http://localhost:3000", "http://127.0.0.1:3000")
    assert settings_from_mapping({}).cors_origins == expected
    assert settings_from_mapping({"CORS_ORIGINS": " , "}).cors_origins == expected
    assert settings_from_mapping({"CORS_ORIGINS": "https://dash.example.com"}).cors_origins == ("https://dash.example.com",)


@pytest.mark.parametrize(("env", "name"), [
    ({"PORT": "abc"}, "PORT"), ({"PORT": "0"}, "PORT"), ({"PORT": "70000"}, "PORT"),
    ({"TRADING_MODE": "yolo"}, "TRADING_MODE"), ({"JWT_ACCESS_MINUTES": "-5"}, "JWT_ACCESS_MINUTES"),
    ({"REDIS_PREFIX": "a:b"}, "REDIS_PREFIX"), ({"MARKET_DATA_SOURCE": "replay"}, "REPLAY_FILES"),
    ({"MARKET_DATA_SOURCE": "databento"}, "DATABENTO_API_KEY"),
    ({"PAPER_STARTING_CASH": "lots"}, "PAPER_STARTING_CASH"),
])
def test_invalid_settings_name_the_setting(env: dict[str, str], name: str) -> None:
    with pytest.raises(SettingsError, match=name) as info:
        settings_from_mapping(env)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(("drop_or_change", "name"), [
    ({"JWT_SECRET": None}, "JWT_SECRET"), ({"JWT_SECRET": "short"}, "JWT_SECRET"),
    ({"REDIS_URL": None}, "REDIS_URL"), ({"ADMIN_EMAIL": None}, "ADMIN_EMAIL"),
    ({"ADMIN_PASSWORD": None}, "ADMIN_PASSWORD"), ({"TOKEN_ENCRYPTION_KEY": None}, "TOKEN_ENCRYPTION_KEY"),
])
def test_live_mode_refuses_weak_or_missing_security(drop_or_change: dict[str, str | None], name: str) -> None:
    env = {k: v for k, v in {**LIVE_OK, **drop_or_change}.items() if v is not None}
    with pytest.raises(SettingsError, match=name):
        settings_from_mapping(env)


def test_live_mode_with_everything_set() -> None:
    assert settings_from_mapping(LIVE_OK).is_live


@pytest.mark.parametrize("source", [None, "simulated", "replay"])
def test_live_mode_refuses_made_up_or_old_prices(source: str | None, tmp_path: Path) -> None:
    # The simulated walk invents prices and a replay's are history: no real order may follow them.
    replay = tmp_path / "trades.csv"
    replay.write_text("Datetime,Open,High,Low,Close,Volume\n2025-12-03T15:00:00,1,1,1,1,1\n")
    env = {k: v for k, v in LIVE_OK.items() if k not in ("MARKET_DATA_SOURCE", "DATABENTO_API_KEY")}
    if source is not None:  # None: the default, simulated
        env["MARKET_DATA_SOURCE"] = source
    if source == "replay":
        env["REPLAY_FILES"] = str(replay)
    with pytest.raises(SettingsError, match="^MARKET_DATA_SOURCE must be databento when TRADING_MODE=live") as info:
        settings_from_mapping(env)
    assert "\n" not in str(info.value) and f"got {source or 'simulated'}" in str(info.value)
    assert settings_from_mapping({k: v for k, v in env.items() if k != "TRADING_MODE"}).market_data_source.value == (
        source or "simulated")  # paper takes the same source


def test_python_app_exits_2_naming_the_source_when_live_would_trade_simulated_prices(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "LOG_DIR": str(tmp_path), **LIVE_OK, "MARKET_DATA_SOURCE": "simulated"}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "MARKET_DATA_SOURCE" in lines[0] and "Traceback" not in result.stderr


def test_python_app_exits_2_with_one_line_on_bad_setting(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PORT": "not-a-port", "LOG_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "PORT" in lines[0] and "Traceback" not in result.stderr


def test_python_app_exits_2_when_redis_url_unreachable(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0", "LOG_DIR": str(tmp_path)}
    result = subprocess.run([sys.executable, str(ROOT / "app.py")], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "REDIS_URL" in result.stderr and "Traceback" not in result.stderr
