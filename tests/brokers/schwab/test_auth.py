"""Schwab OAuth web flow, token storage, refresh and the refresh-token age in status()."""
from __future__ import annotations

import base64
import json
from datetime import timedelta

import pytest

from brokers.errors import AuthenticationRequired
from brokers.schwab.auth import LoginFlowError
from tests.brokers.schwab.fixtures.harness import (  # noqa: F401 - fixtures
    ACCOUNT_HASH,
    API_KEY,
    APP_SECRET,
    CALLBACK,
    SchwabEnv,
    json_reply,
    load,
    redirect_url_for,
    schwab_env,
    schwab_env_any_redis,
)


def test_authorize_url_keeps_state_in_redis_without_secrets(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.adapter()
    url = adapter.authorize_url()
    assert url.startswith("https://api.schwabapi.com/v1/oauth/authorize?")
    assert f"client_id={API_KEY}" in url and "redirect_uri=https%3A%2F%2F127.0.0.1%3A8182" in url
    saved = schwab_env.store.redis.get(schwab_env.store.key("broker", "schwab", "oauth_state"))
    assert saved is not None and APP_SECRET not in saved
    assert json.loads(saved)["state"] in url
    assert schwab_env.fake.requests == []  # building the URL talks to nobody


def test_complete_login_exchanges_code_and_stores_encrypted_token(schwab_env_any_redis: SchwabEnv) -> None:
    env = schwab_env_any_redis
    adapter = env.adapter()
    url = adapter.authorize_url()
    status = adapter.complete_login(redirect_url_for(url))

    [exchange] = env.fake.token_calls()
    assert exchange.url == "https://api.schwabapi.com/v1/oauth/token"
    form = exchange.form()
    assert form["grant_type"] == "authorization_code"
    assert form["code"] == "C0.b2F1dGgyLmNkYy5zY2h3YWIuY29t.AUTHCODE@"
    assert form["redirect_uri"] == CALLBACK
    expected_basic = base64.b64encode(f"{API_KEY}:{APP_SECRET}".encode()).decode()
    assert exchange.headers["authorization"] == f"Basic {expected_basic}"

    # Then the account is resolved with the new bearer token.
    [numbers] = env.fake.calls("GET", "/trader/v1/accounts/accountNumbers")
    assert numbers.headers["authorization"] == f"Bearer {load('token_response.json')['access_token']}"
    assert status.connected and status.account == "****4321"
    assert status.refresh_token_expires_at is not None and status.warnings == ()

    blob = env.tokens.raw_blob("schwab")
    assert blob is not None
    token = load("token_response.json")
    for secret in (token["access_token"], token["refresh_token"], token["id_token"], "refresh_token", "access_token"):
        assert secret not in blob
    stored = env.tokens.load("schwab")
    assert stored is not None and stored["token"]["refresh_token"] == token["refresh_token"]
    assert "creation_timestamp" in stored
    # The one-time OAuth state is gone: the same URL cannot be replayed.
    assert env.store.redis.get(env.store.key("broker", "schwab", "oauth_state")) is None


@pytest.mark.parametrize("pasted, needle", [
    ("", "paste"),
    ("not a url", "not a URL"),
    ("https://evil.example.com/?code=abc&state=STATE", "callback URL"),
    ("https://127.0.0.1:8182/?state=STATE", "authorization code"),
    ("https://127.0.0.1:8182/?code=abc&state=WRONG", "state does not match"),
])
def test_complete_login_rejects_bad_redirect_urls(schwab_env: SchwabEnv, pasted: str, needle: str) -> None:
    adapter = schwab_env.adapter()
    adapter.authorize_url()
    with pytest.raises(LoginFlowError, match=needle):
        adapter.complete_login(pasted)
    assert schwab_env.fake.requests == []  # nothing was sent to Schwab
    assert schwab_env.tokens.raw_blob("schwab") is None


def test_complete_login_without_authorize_url_is_refused(schwab_env: SchwabEnv) -> None:
    with pytest.raises(LoginFlowError, match="no Schwab login in progress"):
        schwab_env.adapter().complete_login("https://127.0.0.1:8182/?code=abc&state=xyz")


def test_complete_login_with_refused_code(schwab_env: SchwabEnv) -> None:
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(
        {"error": "invalid_grant", "error_description": "Authorization code expired"}, status=400))
    adapter = schwab_env.adapter()
    url = adapter.authorize_url()
    with pytest.raises(LoginFlowError, match="invalid_grant"):
        adapter.complete_login(redirect_url_for(url))
    assert schwab_env.tokens.raw_blob("schwab") is None
    assert not adapter.status().connected


def test_login_survives_restart_via_token_store(schwab_env: SchwabEnv) -> None:
    first = schwab_env.adapter()
    first.complete_login(redirect_url_for(first.authorize_url()))
    first.close()
    second = schwab_env.adapter()  # a new process: only Redis remains
    assert second.connect().connected
    assert len(schwab_env.fake.token_calls()) == 1  # no new login needed


def test_refresh_forces_refresh_grant_and_stores_new_token(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    before = schwab_env.tokens.load("schwab")
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(load("token_refreshed.json")))
    status = adapter.refresh()
    [call] = schwab_env.fake.token_calls("refresh_token")
    assert call.form()["refresh_token"] == load("token_response.json")["refresh_token"]
    after = schwab_env.tokens.load("schwab")
    assert after is not None and before is not None
    assert after["token"]["access_token"] == load("token_refreshed.json")["access_token"]
    # The refresh token's issue time is kept: refreshing the access token does not extend 7 days.
    assert after["creation_timestamp"] == before["creation_timestamp"]
    assert status.connected
    # Subsequent calls use the refreshed bearer token.
    schwab_env.fake.on("GET", f"/trader/v1/accounts/{ACCOUNT_HASH}", json_reply(load("account_positions.json")))
    adapter.balances()
    last = schwab_env.fake.calls("GET", f"/trader/v1/accounts/{ACCOUNT_HASH}")[-1]
    assert last.headers["authorization"] == f"Bearer {load('token_refreshed.json')['access_token']}"


def test_sdk_refreshes_an_expired_access_token_automatically(schwab_env: SchwabEnv) -> None:
    schwab_env.seed_token(access_expires_in=-60)
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(load("token_refreshed.json")))
    adapter = schwab_env.adapter()
    assert adapter.connect().connected
    assert len(schwab_env.fake.token_calls("refresh_token")) == 1
    [numbers] = schwab_env.fake.calls("GET", "/trader/v1/accounts/accountNumbers")
    assert numbers.headers["authorization"].endswith(load("token_refreshed.json")["access_token"])


def test_refresh_refused_means_login_required(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    schwab_env.fake.on("POST", "/v1/oauth/token", json_reply(
        {"error": "invalid_client", "error_description": "refresh token invalid"}, status=400))
    with pytest.raises(AuthenticationRequired):
        adapter.refresh()
    assert not adapter.status().connected


def test_status_warns_from_day_6_and_disconnects_at_day_7(schwab_env: SchwabEnv) -> None:
    adapter = schwab_env.logged_in()
    status = adapter.status()
    assert status.connected and status.warnings == ()
    assert status.refresh_token_expires_at is not None
    assert status.access_token_expires_at is not None

    schwab_env.clock.advance(timedelta(days=5, hours=23))
    assert adapter.status().warnings == ()

    schwab_env.clock.advance(timedelta(hours=1, minutes=1))  # day 6
    status = adapter.status()
    assert status.connected
    assert len(status.warnings) == 1 and "expires" in status.warnings[0]

    schwab_env.clock.advance(timedelta(days=1))  # day 7+
    status = adapter.status()
    assert not status.connected and "expired" in status.message
    # And nothing is sent with a dead refresh token.
    sent = len(schwab_env.fake.requests)
    with pytest.raises(AuthenticationRequired):
        adapter.balances()
    assert len(schwab_env.fake.requests) == sent


def test_expired_token_on_startup_shows_disconnected(schwab_env: SchwabEnv) -> None:
    schwab_env.seed_token(issued_days_ago=7.5)
    adapter = schwab_env.adapter()
    status = adapter.connect()
    assert not status.connected and "expired" in status.message
    assert schwab_env.fake.requests == []
    assert status.to_json()["connected"] is False


def test_status_without_login(schwab_env: SchwabEnv) -> None:
    status = schwab_env.adapter().connect()
    assert not status.connected and status.message == "not logged in"
    assert status.account == "****4321"
