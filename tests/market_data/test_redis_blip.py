"""Redis briefly unavailable: the service retries, never crashes, never duplicates a bar."""
from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest
import redis

from config.timeframes import Timeframe
from domain.market import Trade
from market_data.redis_buffer import WriteBatch, WriteResult
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import ManualFeed, wait_until

S = 1_000_000_000
BASE = 1_732_633_200 * S  # 2024-11-26 15:00 UTC


def minute_trades(minutes: int, per_minute: int = 5) -> list[Trade]:
    return [Trade("/ES", BASE + m * 60 * S + i * S, 6000.0 + m + i * 0.25, 1, sequence=m * 100 + i)
            for m in range(minutes) for i in range(per_minute)]


def test_reply_lost_after_write_is_retried_without_duplicates(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store)
    tf, tick = Timeframe.parse("1Min"), Timeframe.parse("2t")
    svc.ensure("/ES", tf)
    svc.ensure("/ES", tick)
    real_write = svc.buffer.write
    failures = {"left": 3}

    def flaky(batch: WriteBatch) -> WriteResult:
        result = real_write(batch)  # Redis applied it ...
        if failures["left"] > 0:
            failures["left"] -= 1
            raise redis.ConnectionError("connection reset by peer")  # ... but the reply was lost
        return result

    svc.buffer.write = flaky  # type: ignore[method-assign]
    svc.process_now(minute_trades(6))
    bars = svc.history("/ES", tf, 100)
    assert [b.start_ns for b in bars] == [BASE + m * 60 * S for m in range(5)]
    assert len({b.start_ns for b in svc.history("/ES", tick, 100)}) == len(svc.history("/ES", tick, 100)) == 15
    assert store.redis.xlen(svc.trades_key("/ES")) == 30  # trades not duplicated either
    assert svc.counters.redis_errors == 3
    assert svc.counters.bars_rejected_duplicate >= 1


@pytest.fixture
def private_redis() -> Iterator[tuple[str, int, Path]]:
    binary = shutil.which("redis-server")
    if not binary:
        pytest.skip("redis-server binary not available")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    workdir = Path(tempfile.mkdtemp(prefix="md-blip-"))
    yield binary, port, workdir
    subprocess.run(["redis-cli", "-p", str(port), "shutdown", "nosave"], capture_output=True, timeout=5)
    shutil.rmtree(workdir, ignore_errors=True)


def _start(binary: str, port: int, workdir: Path) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                             "--dir", str(workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    assert wait_until(lambda: _pings(client), 5)
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def test_real_redis_restart_while_running(private_redis: tuple[str, int, Path], make_service: ServiceFactory) -> None:
    binary, port, workdir = private_redis
    proc = _start(binary, port, workdir)
    client = redis.Redis(port=port, decode_responses=True, socket_connect_timeout=0.5)
    store = Store(client, "blip", persistent=True, url=f"redis://127.0.0.1:{port}")
    feed = ManualFeed(realtime=False)
    svc = make_service(store, feed)
    tf = Timeframe.parse("1Min")
    svc.ensure("/ES", tf)
    svc.start()
    trades = minute_trades(8)
    for t in trades[:10]:  # minutes 0-1
        feed.push(t)
    assert wait_until(lambda: len(svc.history("/ES", tf, 10)) == 1)
    proc.terminate()
    proc.wait(5)
    for t in trades[10:25]:  # minutes 2-4 arrive while Redis is down
        feed.push(t)
    assert wait_until(lambda: svc.counters.redis_errors >= 2, 10)  # retrying with back-off
    assert svc._writer is not None and svc._writer.is_alive()
    proc = _start(binary, port, workdir)  # back (empty: no persistence in this test server)
    for t in trades[25:]:
        feed.push(t)
    assert wait_until(lambda: len(svc.history("/ES", tf, 10)) >= 6, 10)
    starts = [b.start_ns for b in svc.history("/ES", tf, 10)]
    assert starts == sorted(set(starts))  # no duplicates
    assert starts[-6:] == [BASE + m * 60 * S for m in range(1, 7)]
    svc.stop()
    proc.terminate()
    proc.wait(5)
