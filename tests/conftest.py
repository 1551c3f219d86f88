"""Shared fixtures: Redis backends and settings.

Redis, in order of preference (DEVELOPERS.md):
1. a private `redis-server` started on a free port for this test session (when the binary exists);
2. the server named by REDIS_URL;
3. in-process fakeredis.
Tests never flush or overwrite data they did not create: every test gets its own key prefix and
its keys are deleted afterwards. With REQUIRE_REAL_REDIS=1 (set by .ci/run) falling back to
fakeredis is an error, and the backend in use is printed in the pytest header.

Fixtures:
- `store`: parametrised over [real, fake] -> the same test runs on real Redis and on fakeredis.
- `real_store`: real Redis only (fails under REQUIRE_REAL_REDIS=1 if none, else skips).
- `fake_store`: fakeredis only.
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Iterator

import fakeredis
import pytest
import redis

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from config.settings import Settings  # noqa: E402
from store.redis_store import Store, connect  # noqa: E402

SHARED_DATA = ROOT.parent / "shared" / "data"

_real_url: str | None = None
_real_kind = "none"
_server: subprocess.Popen[bytes] | None = None
_server_dir: str | None = None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start_private_server() -> str | None:
    global _server, _server_dir
    binary = shutil.which("redis-server")
    if not binary:
        return None
    port = _free_port()
    _server_dir = tempfile.mkdtemp(prefix="pytest-redis-")
    _server = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", _server_dir, "--daemonize", "no", "--loglevel", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis.from_url(url).ping()
            return url
        except redis.ConnectionError:
            time.sleep(0.05)
    _server.kill()
    _server = None
    return None


def pytest_configure(config: pytest.Config) -> None:
    global _real_url, _real_kind
    _real_url = _start_private_server()
    if _real_url:
        _real_kind = "private redis-server"
    elif os.environ.get("REDIS_URL"):
        try:
            redis.Redis.from_url(os.environ["REDIS_URL"]).ping()
            _real_url, _real_kind = os.environ["REDIS_URL"], "REDIS_URL"
        except redis.RedisError:
            _real_url = None
    if os.environ.get("REQUIRE_REAL_REDIS") == "1" and not _real_url:
        raise pytest.UsageError("REQUIRE_REAL_REDIS=1 but no redis-server binary and no reachable REDIS_URL")
    config.addinivalue_line("markers", "real_redis: needs a real Redis server")


def pytest_report_header(config: pytest.Config) -> str:
    where = _real_url.rsplit("@", 1)[-1] if _real_url else "-"
    return f"redis backend: {_real_kind} ({where}); fakeredis also used for [fake] variants"


def pytest_unconfigure(config: pytest.Config) -> None:
    if _server is not None:
        _server.terminate()
        try:
            _server.wait(timeout=5)
        except subprocess.TimeoutExpired:
            _server.kill()
    if _server_dir:
        shutil.rmtree(_server_dir, ignore_errors=True)


def _cleanup(client: redis.Redis, prefix: str) -> None:
    keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
    if keys:
        client.delete(*keys)


def _real(prefix: str) -> Iterator[Store]:
    if not _real_url:
        if os.environ.get("REQUIRE_REAL_REDIS") == "1":
            pytest.fail("real Redis required but unavailable")
        pytest.skip("no real Redis available")
    client = connect(_real_url)  # configured as the service configures it
    yield Store(client, prefix, persistent=True, url=_real_url)
    _cleanup(client, prefix)
    client.close()


def _fake(prefix: str) -> Iterator[Store]:
    client = fakeredis.FakeRedis(decode_responses=True)
    yield Store(client, prefix, persistent=False, url="fakeredis://")
    _cleanup(client, prefix)


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["real", "fake"])
def store(request: pytest.FixtureRequest, prefix: str) -> Iterator[Store]:
    yield from (_real(prefix) if request.param == "real" else _fake(prefix))


@pytest.fixture
def real_store(prefix: str) -> Iterator[Store]:
    yield from _real(prefix)


@pytest.fixture
def fake_store(prefix: str) -> Iterator[Store]:
    yield from _fake(prefix)


@pytest.fixture
def real_redis_url() -> str:
    if not _real_url:
        pytest.skip("no real Redis available")
    return _real_url


@pytest.fixture
def settings(tmp_path: Path, prefix: str) -> Settings:
    """Paper-mode settings with a known admin, logs in a temp dir, and no external credentials."""
    return Settings(
        jwt_secret="test-secret-" + "x" * 40,
        admin_email="admin@example.com",
        admin_password="correct horse battery staple",
        log_dir=tmp_path / "logs",
        redis_prefix=prefix,
        token_encryption_key=None,
    )


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real market data not present at {SHARED_DATA} (a plain clone has no ../shared)")
    return SHARED_DATA
