"""The service's Redis client: how it is configured, and blocking reads that fit its timeouts."""
from __future__ import annotations

import redis

from store.redis_store import Store, connect


def _store(client: redis.Redis) -> Store:
    return Store(client, "tst-unused", persistent=True, url="redis://")


def test_the_service_client_has_no_socket_timeout_so_a_block_keeps_its_length(real_redis_url: str) -> None:
    client = connect(real_redis_url)
    try:
        assert client.ping()
        assert _store(client).safe_block_ms(30_000) == 30_000
    finally:
        client.close()


def test_a_block_is_cut_to_half_a_socket_timeout() -> None:
    # No connection is made: the timeout is read off the client's settings.
    default = redis.Redis.from_url("redis://127.0.0.1:1/0")  # redis-py 8: 5 s unless told
    assert _store(default).safe_block_ms(30_000) == 2_500
    assert _store(default).safe_block_ms(1_000) == 1_000
    tiny = redis.Redis.from_url("redis://127.0.0.1:1/0", socket_timeout=0.001)
    assert _store(tiny).safe_block_ms(30_000) == 1
