"""Login rate limiting (flask-limiter) stored in the service's Redis.

On a persistent store the counters live in the same Redis under `<prefix>:ratelimit:*`, so limits
hold across restarts. On fakeredis (nothing persists anyway) the in-memory backend is used.
"""
from __future__ import annotations

from flask import Flask
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from store.redis_store import Store


def build_limiter(app: Flask, store: Store) -> Limiter:
    if store.persistent:
        # Reuse the store's connection pool: its URL is redacted (no password), the pool is not.
        storage_uri = "redis://"
        storage_options: dict[str, object] = {
            "connection_pool": store.redis.connection_pool,
            "key_prefix": store.key("ratelimit"),
        }
    else:
        storage_uri, storage_options = "memory://", {}
    return Limiter(
        get_remote_address,
        app=app,
        storage_uri=storage_uri,
        storage_options=storage_options,  # type: ignore[arg-type]
        headers_enabled=True,
        strategy="fixed-window",
        # A Redis outage must not lock everyone out of login; the limiter falls back to memory.
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
