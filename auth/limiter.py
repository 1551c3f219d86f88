"""Login rate limiting (flask-limiter) stored in the service's Redis, and the client address it is
keyed on.

Two limits, both keyed on the client's address, so that nobody can lock another person out:
- per address (LOGIN_RATE_LIMIT), on every request to the auth endpoints: caps what one address
  can try against all accounts;
- per (account, address) (LOGIN_ACCOUNT_RATE_LIMIT), on failed password checks only: caps what one
  address can try against one account, over a longer window, while that account stays open to
  every other address. There is deliberately no per-account limit alone: any address could then
  lock the real admin out with ten wrong passwords.

The client address is the TCP peer unless TRUSTED_PROXIES says how many reverse proxies (nginx in
the README) sit in front; then Werkzeug's ProxyFix takes it from that many X-Forwarded-For
entries, counted from the right (the ones those proxies appended). Without it every client
behind nginx is 127.0.0.1 and one address's limit is everyone's; trusting X-Forwarded-For with no
proxy in front would let a client pick a fresh address per request.

On a persistent store the counters live in the same Redis under `<prefix>:ratelimit:*`, so limits
hold across restarts. On fakeredis (nothing persists anyway) the in-memory backend is used.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from werkzeug.middleware.proxy_fix import ProxyFix

from store.redis_store import Store

log = logging.getLogger(__name__)

_EXTENSION = "login_limits"
_ACCOUNT_SCOPE = "login-account"


def trust_proxies(app: Flask, count: int) -> None:
    """Take the client address from the last `count` X-Forwarded-For entries (0: ignore the header)."""
    if count > 0:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=count)  # type: ignore[method-assign]


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


@dataclass(frozen=True, slots=True)
class AccountLimits:
    """Failed password checks per (account, client address), counted in the limiter's storage."""

    limiter: Limiter
    limits: tuple[RateLimitItem, ...]

    def retry_after(self, account: str, address: str) -> int | None:
        """Seconds until `address` may try `account` again, or None when it may now."""
        try:
            strategy = self.limiter.limiter
            blocked = [item for item in self.limits if not strategy.test(item, _ACCOUNT_SCOPE, account, address)]
            if not blocked:
                return None
            reset = max(strategy.get_window_stats(item, _ACCOUNT_SCOPE, account, address).reset_time
                        for item in blocked)
        except Exception:  # storage down: the per-address limit (with its memory fallback) still holds
            log.warning("per-account login limit unavailable (rate-limit storage error); not applied")
            return None
        return max(1, math.ceil(reset - time.time()))

    def record_failure(self, account: str, address: str) -> None:
        try:
            strategy = self.limiter.limiter
            for item in self.limits:
                strategy.hit(item, _ACCOUNT_SCOPE, account, address)
        except Exception:
            log.warning("per-account login limit unavailable (rate-limit storage error); failure not counted")


def install_login_limits(app: Flask, store: Store, auth_blueprint: object, per_address: str,
                         per_account_address: str) -> Limiter:
    """The limiter with the per-address limit on the whole auth blueprint (both endpoints check a
    password) and the per-(account, address) failure limits the views consult."""
    limiter = build_limiter(app, store)
    limiter.limit(per_address)(auth_blueprint)  # type: ignore[arg-type]
    app.extensions[_EXTENSION] = AccountLimits(limiter, tuple(parse_many(per_account_address)))
    return limiter


def account_limits() -> AccountLimits:
    return current_app.extensions[_EXTENSION]  # type: ignore[no-any-return]


def client_address() -> str:
    """The address the limits are keyed on (after ProxyFix, when proxies are trusted)."""
    return request.remote_addr or "127.0.0.1"
