"""`/api/health` reports Redis persistence as Redis reports it (CONFIG GET appendonly / save), and
live mode warns at start-up on a Redis that keeps nothing. Each case runs a real redis-server
started with the configuration under test (skipped when the binary is absent)."""
from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Callable, Iterator

import pytest
import redis

from app import create_app
from config.settings import Settings, TradingMode
from store.persistence import redis_persistence
from store.redis_store import Store, connect

ServerFactory = Callable[..., Store]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def redis_with(tmp_path: Path, prefix: str) -> Iterator[ServerFactory]:
    """Start a private redis-server with the given extra arguments; returns a Store on it."""
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server is not installed")
    servers: list[subprocess.Popen[bytes]] = []

    def start(*args: str) -> Store:
        port = _free_port()
        data_dir = tmp_path / f"redis-{port}"
        data_dir.mkdir()
        servers.append(subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(data_dir), "--daemonize", "no",
             "--loglevel", "warning", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        url = f"redis://127.0.0.1:{port}/0"
        deadline = time.monotonic() + 10
        while True:
            try:
                return Store(connect(url), prefix, persistent=True, url=url)
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    yield start
    for server in servers:
        server.terminate()
        server.wait(timeout=10)


def _health_redis(settings: Settings, store: Store) -> dict[str, object]:
    response = create_app(settings, store).test_client().get("/api/health")
    assert response.status_code == 200
    return dict(response.json["redis"])


def test_health_says_not_persistent_on_a_redis_that_keeps_nothing(settings: Settings,
                                                                 redis_with: ServerFactory) -> None:
    store = redis_with("--save", "", "--appendonly", "no")
    assert _health_redis(settings, store) == {"reachable": True, "persistent": False, "appendonly": "no",
                                              "save": "", "url": store.url}


def test_health_says_persistent_with_aof(settings: Settings, redis_with: ServerFactory) -> None:
    store = redis_with("--save", "", "--appendonly", "yes")
    body = _health_redis(settings, store)
    assert body["persistent"] is True and body["appendonly"] == "yes"


def test_health_says_persistent_with_rdb_snapshots_only(settings: Settings, redis_with: ServerFactory) -> None:
    store = redis_with("--save", "900 1", "--appendonly", "no")
    body = _health_redis(settings, store)
    assert body["persistent"] is True and body["save"] == "900 1"


def test_health_says_unknown_when_config_is_disabled(settings: Settings, redis_with: ServerFactory) -> None:
    store = redis_with("--save", "", "--appendonly", "no", "--rename-command", "CONFIG", "")
    body = _health_redis(settings, store)
    assert body["reachable"] is True and body["persistent"] is None
    assert body["appendonly"] is None and body["save"] is None


def test_health_says_not_persistent_on_fakeredis(settings: Settings, fake_store: Store) -> None:
    assert _health_redis(settings, fake_store)["persistent"] is False


def test_live_mode_warns_at_start_on_a_redis_that_keeps_nothing(settings: Settings, redis_with: ServerFactory,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    store = redis_with("--save", "", "--appendonly", "no")
    live = settings.with_overrides(trading_mode=TradingMode.LIVE, redis_url=store.url,
                                   token_encryption_key="x" * 44)
    with caplog.at_level(logging.INFO):
        create_app(live, store)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "persists nothing" in r.getMessage()]
    assert len(warnings) == 1


def test_live_mode_does_not_warn_on_a_persistent_redis(settings: Settings, redis_with: ServerFactory,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    store = redis_with("--appendonly", "yes")
    assert redis_persistence(store).persistent is True
    with caplog.at_level(logging.INFO):
        create_app(settings.with_overrides(trading_mode=TradingMode.LIVE), store)
    assert not [r for r in caplog.records if "persist" in r.getMessage()]
