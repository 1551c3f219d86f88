"""Paper mode without JWT_SECRET / TOKEN_ENCRYPTION_KEY: the generated secrets are kept in Redis, so
logins and stored broker tokens survive a restart; the secrets never reach a log."""
from __future__ import annotations

import logging

import pytest

from app import create_app
from auth.tokens import signing_secret
from brokers.token_store import TokenStore
from config.settings import MIN_LIVE_JWT_SECRET_LENGTH, Settings, TradingMode
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login

PROTECTED = "/api/get-ticker?strategy=ema"


def test_a_paper_login_survives_a_restart_without_jwt_secret(settings: Settings, store: Store) -> None:
    paper = settings.with_overrides(jwt_secret=None)
    token = login(create_app(paper, store).test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    restarted = create_app(paper, store).test_client()  # a new process: a new app on the same Redis
    response = restarted.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.json


def test_the_kept_secret_is_strong_and_never_logged(settings: Settings, store: Store,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    create_app(settings.with_overrides(jwt_secret=None), store)
    kept = store.redis.get(store.key("auth", "jwt_secret"))
    assert isinstance(kept, str) and len(kept) >= MIN_LIVE_JWT_SECRET_LENGTH
    assert caplog.records and kept not in caplog.text


def test_an_explicit_jwt_secret_is_used_and_nothing_is_kept(settings: Settings, store: Store) -> None:
    assert signing_secret(settings, store) == settings.jwt_secret
    assert not store.redis.exists(store.key("auth", "jwt_secret"))


def test_a_weak_kept_secret_is_replaced(settings: Settings, store: Store) -> None:
    store.redis.set(store.key("auth", "jwt_secret"), "short")
    secret = signing_secret(settings.with_overrides(jwt_secret=None), store)
    assert len(secret) >= MIN_LIVE_JWT_SECRET_LENGTH and store.redis.get(store.key("auth", "jwt_secret")) == secret


def test_live_mode_never_signs_with_a_kept_secret(settings: Settings, store: Store) -> None:
    live = settings.with_overrides(trading_mode=TradingMode.LIVE, jwt_secret=None)
    with pytest.raises(RuntimeError, match="JWT_SECRET"):
        signing_secret(live, store)
    assert not store.redis.exists(store.key("auth", "jwt_secret"))


def test_broker_tokens_stay_readable_after_a_restart_without_token_encryption_key(store: Store) -> None:
    TokenStore(store, None).save("schwab", {"access_token": "a", "refresh_token": "r"})
    assert TokenStore(store, None).load("schwab") == {"access_token": "a", "refresh_token": "r"}
