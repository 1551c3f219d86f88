"""The one place that builds the Redis client, and the key namespace every package uses.

Rules (issue: foundation):
- REDIS_URL set -> it must answer PING, else start-up fails with a clear error.
- REDIS_URL unset -> use redis://127.0.0.1:6379/0 when it answers; otherwise, in paper mode only,
  fall back to in-process fakeredis with a loud warning that nothing persists.
- Every key starts with the configured prefix ("tst:" by default) so the service never touches
  data it did not create and can share a Redis with other tools.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import redis

from config.settings import Settings

log = logging.getLogger(__name__)

DEFAULT_LOCAL_URL = "redis://127.0.0.1:6379/0"


class StoreUnavailableError(RuntimeError):
    """Redis cannot be reached and no fallback is allowed."""


@dataclass(frozen=True, slots=True)
class Store:
    """A Redis client plus the key prefix. `store.key("tickers", "ema")` -> "tst:tickers:ema"."""

    redis: redis.Redis
    prefix: str
    persistent: bool  # False when running on in-process fakeredis
    url: str  # with any password removed; safe to show

    def key(self, *parts: object) -> str:
        return ":".join((self.prefix, *map(str, parts)))

    def ping(self) -> bool:
        try:
            return bool(self.redis.ping())
        except redis.RedisError:
            return False

    def safe_block_ms(self, wanted_ms: int) -> int:
        """A blocking read's BLOCK time that ends before the client's socket timeout. redis-py 8
        gives a client 5 s unless told otherwise; a longer XREAD BLOCK on it would end in a
        TimeoutError that looks like Redis being down."""
        timeout = _socket_timeout(self.redis)
        if timeout is None:
            return wanted_ms
        return max(1, min(wanted_ms, int(timeout * 1000 / 2)))  # half: Redis ends a BLOCK late


def _socket_timeout(client: Any) -> float | None:
    """The socket timeout the client's connections get (None: they wait forever). Read off an
    unconnected connection object, so it costs no round trip and works while Redis is down."""
    pool = getattr(client, "connection_pool", None)
    if pool is None:
        return None
    try:
        timeout = getattr(pool.connection_class(**pool.connection_kwargs), "socket_timeout", None)
    except Exception:  # an exotic pool: keep the wanted time
        return None
    return float(timeout) if timeout else None


def is_noscript(reply: Any) -> bool:
    """A script call's reply (or a pipeline's error entry) saying Redis lost the script (restart,
    SCRIPT FLUSH). redis-py 8 raises it as NoScriptError("No matching script..."), without the
    NOSCRIPT prefix older versions kept, so a text match alone misses it."""
    return isinstance(reply, redis.exceptions.NoScriptError) or (
        isinstance(reply, redis.ResponseError) and str(reply).startswith("NOSCRIPT"))


def _redacted(url: str) -> str:
    if "@" not in url:
        return url
    scheme, rest = url.split("://", 1) if "://" in url else ("redis", url)
    return f"{scheme}://***@{rest.split('@', 1)[1]}"


def connect(url: str) -> redis.Redis:
    """A client as the service uses it: decoded replies, no socket timeout (blocking reads wait
    their own BLOCK time), a health check on idle connections, and a ping to prove it answers."""
    client = redis.Redis.from_url(
        url, decode_responses=True, socket_connect_timeout=2, socket_timeout=None,
        health_check_interval=30, retry_on_timeout=True,
    )
    client.ping()
    return client


def fake_store(prefix: str = "tst") -> Store:
    """In-process fakeredis (with Lua, so redis-py locks work). Nothing persists."""
    import fakeredis

    return Store(fakeredis.FakeRedis(decode_responses=True), prefix, persistent=False, url="fakeredis://")


def build_store(settings: Settings) -> Store:
    if settings.redis_url:
        try:
            client = connect(settings.redis_url)
        except (redis.RedisError, ValueError) as exc:
            raise StoreUnavailableError(
                f"REDIS_URL {_redacted(settings.redis_url)} is not reachable: {exc.__class__.__name__}"
            ) from None
        return Store(client, settings.redis_prefix, persistent=True, url=_redacted(settings.redis_url))
    try:
        client = connect(DEFAULT_LOCAL_URL)
        return Store(client, settings.redis_prefix, persistent=True, url=DEFAULT_LOCAL_URL)
    except redis.RedisError:
        if settings.is_live:
            raise StoreUnavailableError("REDIS_URL is unset and no Redis answers on 127.0.0.1:6379") from None
    log.warning(
        "!!! NO REDIS: running on in-process fakeredis. NOTHING PERSISTS - users, tickers, orders and "
        "positions are lost when the process stops. Start redis-server or set REDIS_URL. !!!"
    )
    return fake_store(settings.redis_prefix)
