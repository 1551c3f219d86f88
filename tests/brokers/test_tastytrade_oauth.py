"""OAuth: authorize URL, code exchange (pasted redirect URL or bare code), refresh, encrypted storage."""
from __future__ import annotations

import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures_tastytrade"))
from tt_fake import (  # noqa: E402,F401
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    Harness,
    error_body,
    tt,
    tt_any_store,
)

from brokers.errors import AuthenticationRequired, BrokerConfigError  # noqa: E402
from domain.orders import TASTYTRADE  # noqa: E402

REDIRECT = "https://127.0.0.1:8183/callback"
NEW_REFRESH = "rtoken-issued-by-code-exchange-42"


def _token_reply(request: httpx2.Request) -> httpx2.Response:
    import json

    body = json.loads(request.content)
    if body["grant_type"] == "authorization_code":
        return httpx2.Response(200, json={"access_token": "atoken-from-code-1", "token_type": "Bearer",
                                          "expires_in": 900, "refresh_token": NEW_REFRESH, "scope": "read trade"})
    return httpx2.Response(200, json={"access_token": "atoken-refreshed-2", "token_type": "Bearer", "expires_in": 900})


def _state(url: str) -> str:
    return parse_qs(urlsplit(url).query)["state"][0]


def test_authorize_url(tt: Harness) -> None:
    adapter = tt.adapter()
    url = adapter.authorize_url()
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://my.tastytrade.com/auth.html"
    query = parse_qs(parts.query)
    assert query["client_id"] == [CLIENT_ID]
    assert query["redirect_uri"] == [REDIRECT]
    assert query["response_type"] == ["code"]
    assert query["scope"] == ["read trade"]
    assert tt.store.redis.exists(tt.store.key("broker", "tastytrade", "oauth_state", _state(url)))
    assert CLIENT_SECRET not in url


def test_authorize_url_needs_client_id(tt: Harness) -> None:
    adapter = tt.adapter()
    adapter._settings = adapter._settings.with_overrides(tastytrade_client_id=None)
    with pytest.raises(BrokerConfigError, match="TASTYTRADE_CLIENT_ID"):
        adapter.authorize_url()


def test_complete_login_from_pasted_redirect_url(tt: Harness) -> None:
    tt.fake.on("POST", "/oauth/token", _token_reply)
    adapter = tt.adapter()
    state = _state(adapter.authorize_url())
    status = adapter.complete_login(f"{REDIRECT}?code=authcode-abc123&state={state}")
    assert status.connected and status.account == "****0001"
    (exchange,) = tt.fake.calls("POST", "/oauth/token")  # the seeded access token needs no refresh
    assert exchange.url == f"{API}/oauth/token"
    assert exchange.json() == {"grant_type": "authorization_code", "code": "authcode-abc123", "client_id": CLIENT_ID,
                               "client_secret": CLIENT_SECRET, "redirect_uri": REDIRECT}
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == NEW_REFRESH
    # the state is single-use
    with pytest.raises(AuthenticationRequired, match="state"):
        adapter.complete_login(f"{REDIRECT}?code=authcode-abc123&state={state}")
    # later API calls use the access token from the exchange
    accounts_call = tt.fake.calls("GET", "/customers/me/accounts")[-1]
    assert accounts_call.headers["authorization"] == "Bearer atoken-from-code-1"


def test_complete_login_from_bare_code(tt: Harness) -> None:
    tt.fake.on("POST", "/oauth/token", _token_reply)
    adapter = tt.adapter()
    status = adapter.complete_login("  authcode-bare-789 ")
    assert status.connected
    assert tt.fake.calls("POST", "/oauth/token")[0].json()["code"] == "authcode-bare-789"
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == NEW_REFRESH


def test_complete_login_rejects_unknown_state_and_denial(tt: Harness) -> None:
    adapter = tt.adapter()
    with pytest.raises(AuthenticationRequired, match="state"):
        adapter.complete_login(f"{REDIRECT}?code=abc&state=forged")
    with pytest.raises(AuthenticationRequired, match="access_denied"):
        adapter.complete_login(f"{REDIRECT}?error=access_denied")
    assert tt.fake.calls("POST", "/oauth/token") == []


def test_bad_code_is_authentication_required_with_reason(tt: Harness) -> None:
    tt.fake.on("POST", "/oauth/token", httpx2.Response(400, json={"error": "invalid_grant",
                                                                 "error_description": "Authorization code expired"}))
    adapter = tt.adapter()
    with pytest.raises(AuthenticationRequired, match="Authorization code expired"):
        adapter.complete_login("authcode-old")
    assert tt.tokens.load(TASTYTRADE) is None


def test_refresh_forces_new_access_token(tt: Harness) -> None:
    adapter = tt.connected()
    before = len(tt.fake.calls("POST", "/oauth/token"))
    status = adapter.refresh()
    refreshes = tt.fake.calls("POST", "/oauth/token")
    assert len(refreshes) == before + 1 and status.connected
    assert refreshes[-1].json() == {"grant_type": "refresh_token", "client_secret": CLIENT_SECRET,
                                    "refresh_token": "rtoken-0a1b2c3d4e5f6a7b8c9d"}
    assert "authorization" not in refreshes[-1].headers
    assert status.access_token_expires_at is not None


def test_refresh_with_revoked_grant_reports_disconnected(tt: Harness) -> None:
    adapter = tt.connected()
    tt.fake.on("POST", "/oauth/token", httpx2.Response(401, json=error_body("invalid_grant", "revoked")))
    status = adapter.refresh()
    assert status.connected is False and "authentication required" in status.message


def test_connect_without_login_reports_it(tt: Harness) -> None:
    adapter = tt.adapter()
    status = adapter.connect()
    assert status.connected is False and "not logged in" in status.message
    assert adapter.connection()["logged_in"] is False
    assert tt.fake.requests == []


def test_tokens_are_encrypted_at_rest(tt_any_store: Harness) -> None:
    tt = tt_any_store
    tt.fake.on("POST", "/oauth/token", _token_reply)
    tt.adapter().complete_login("authcode-enc")
    blob = tt.tokens.raw_blob(TASTYTRADE)
    assert blob is not None
    for plain in (NEW_REFRESH, "atoken-from-code-1", CLIENT_SECRET, "refresh_token"):
        assert plain not in blob
    # nothing else in this test's keyspace holds a token in plaintext either
    for key in tt.store.redis.scan_iter(match=f"{tt.store.prefix}:*"):
        kind = tt.store.redis.type(key)
        if kind == "string":
            value = str(tt.store.redis.get(key))
            assert NEW_REFRESH not in value and "atoken-from-code-1" not in value
