"""Helpers shared by the API tests (imported as tests.api.helpers)."""
from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from store.redis_store import Store

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "correct horse battery staple"
VIEWER_EMAIL = "viewer@example.com"
VIEWER_PASSWORD = "viewer password 1"
# What tests/api/test_fuzz_contract.py ran, for the session summary (tests/api/conftest.py).
FUZZ_STATS: dict[str, int] = {"cases": 0, "operations": 0}


def login(client: FlaskClient, email: str, password: str) -> str:
    response = client.post("/api/login", json={"email": email, "password": password})
    assert response.status_code == 200, response.json
    return str(response.json["token"])


def snapshot(store: Store) -> dict[str, Any]:
    """Type and full value of every key under the test prefix (rate-limit counters excluded:
    they count requests, not state)."""
    dump: dict[str, Any] = {}
    for key in sorted(store.redis.scan_iter(match=f"{store.prefix}:*", count=1000)):
        if key.startswith(store.key("ratelimit")):
            continue
        kind = store.redis.type(key)
        if kind == "hash":
            dump[key] = ("hash", store.redis.hgetall(key))
        elif kind == "set":
            dump[key] = ("set", sorted(store.redis.smembers(key)))
        elif kind == "string":
            dump[key] = ("string", store.redis.get(key))
        else:
            dump[key] = (kind, None)
    return dump


def ema_payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "strategy": "ema", "symbol": "MES", "timeframe": "5Min", "trade_enabled": True,
        "schwab_quantity": 0, "tastytrade_quantity": 1,
        "trend_line_1": "EMA", "period_1": 9, "trend_line_2": "EMA", "period_2": 21,
    }
    body.update(overrides)
    return body


def supertrend_payload(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "strategy": "supertrend", "symbol": "NVDA", "timeframe": "1Hour", "trade_enabled": False,
        "schwab_quantity": 2, "tastytrade_quantity": 3,
    }
    body.update(overrides)
    return body
