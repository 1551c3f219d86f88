"""OAuth: authorize URL, code exchange (pasted redirect URL or bare code), a personal app's pasted
refresh token ("Create Grant"), refresh, rotated refresh tokens, encrypted storage."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures"))
from tt_fake import (  # noqa: E402,F401
    API,
    CLIENT_ID,
    CLIENT_SECRET,
    REFRESH_TOKEN,
    Harness,
    error_body,
    tt,
    tt_any_store,
)

from tt_token_endpoint import Shape, TokenEndpoint  # noqa: E402

from brokers.errors import AuthenticationRequired, BrokerConfigError, TemporaryBrokerError  # noqa: E402
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


# ------------------------------------------------------------------ a personal app's refresh token
GRANT = "rtoken-from-create-grant-5k2m9q"  # what OAuth Applications > Manage > Create Grant shows


def _token_endpoint(tt: Harness, valid: set[str], **kwargs: Any) -> TokenEndpoint:
    endpoint = TokenEndpoint(CLIENT_SECRET, valid, **kwargs)
    tt.fake.on("POST", "/oauth/token", endpoint)
    return endpoint


def test_pasted_refresh_token_logs_in_and_is_stored_encrypted(tt: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    endpoint = _token_endpoint(tt, {GRANT})
    status = tt.adapter().login_with_refresh_token(f"  {GRANT}\n")
    assert status.connected and status.account == "****0001", status.message
    (minted,) = tt.fake.calls("POST", "/oauth/token")
    assert minted.json() == {"grant_type": "refresh_token", "client_secret": CLIENT_SECRET, "refresh_token": GRANT}
    assert "authorization" not in minted.headers
    assert tt.fake.calls("GET", "/customers/me/accounts")[-1].headers["authorization"] == "Bearer atoken-minted-001-kk4"
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == GRANT
    assert GRANT not in (tt.tokens.raw_blob(TASTYTRADE) or "")
    assert GRANT not in caplog.text and "atoken-minted" not in caplog.text
    # a restart logs in from the store
    assert tt.adapter().connect().connected
    assert endpoint.used == [GRANT, GRANT]


def test_refresh_token_rotated_on_first_use_is_the_one_stored(tt: Harness) -> None:
    endpoint = _token_endpoint(tt, {GRANT}, rotate=True)
    assert tt.adapter().login_with_refresh_token(GRANT).connected
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == "rtoken-rotated-001-p9x2w"
    assert tt.adapter().connect().connected  # the pasted one is revoked by now
    assert endpoint.used == [GRANT, "rtoken-rotated-001-p9x2w"]


def test_rotated_refresh_token_is_kept_and_used_after_a_restart(tt_any_store: Harness,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    tt = tt_any_store
    caplog.set_level(logging.DEBUG)
    tt.login(REFRESH_TOKEN)
    endpoint = _token_endpoint(tt, {REFRESH_TOKEN}, rotate=True)
    first = tt.adapter()
    assert first.connect().connected  # start-up refresh: rotated once
    assert first.refresh().connected  # a later refresh: rotated again, and sent with the first rotation
    assert endpoint.used == [REFRESH_TOKEN, "rtoken-rotated-001-p9x2w"]
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == "rtoken-rotated-002-p9x2w"
    first.close()
    restarted = tt.adapter()  # a new process on the same store
    status = restarted.connect()
    assert status.connected, status.message
    assert endpoint.used[-1] == "rtoken-rotated-002-p9x2w"
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == "rtoken-rotated-003-p9x2w"
    blob = tt.tokens.raw_blob(TASTYTRADE) or ""
    for token in (REFRESH_TOKEN, *(f"rtoken-rotated-00{n}-p9x2w" for n in (1, 2, 3))):
        assert token not in blob and token not in caplog.text


def test_rotated_refresh_token_that_could_not_be_stored_is_stored_after_the_next_call(
        tt: Harness, monkeypatch: pytest.MonkeyPatch) -> None:
    import redis

    tt.login(REFRESH_TOKEN)
    _token_endpoint(tt, {REFRESH_TOKEN}, rotate=True)
    adapter = tt.adapter()
    save = tt.tokens.save
    failures = iter([redis.ConnectionError("down")])

    def flaky_save(broker: str, token: dict[str, Any]) -> None:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        save(broker, token)

    monkeypatch.setattr(tt.tokens, "save", flaky_save)
    assert adapter.connect().connected  # rotated; the save failed; the session uses the new token
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == REFRESH_TOKEN
    adapter.positions()
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == "rtoken-rotated-001-p9x2w"


@pytest.mark.parametrize("shape", ["tastytrade", "rfc6749"])
def test_wrong_refresh_token_is_a_clear_error_and_keeps_the_existing_login(tt: Harness, shape: Shape) -> None:
    tt.login(REFRESH_TOKEN)
    endpoint = _token_endpoint(tt, {REFRESH_TOKEN}, shape=shape)
    adapter = tt.adapter()
    wrong = "rtoken-expired-or-other-client-3z8"
    with pytest.raises(AuthenticationRequired) as refused:
        adapter.login_with_refresh_token(wrong)
    message = refused.value.message
    status = 401 if shape == "tastytrade" else 400
    assert (f"tastytrade refused the refresh token (HTTP {status}: invalid_grant: Grant revoked or not issued "
            f"to this client)") in message
    assert "Create Grant" in message and "authorizationCode" in message
    assert wrong not in message
    assert endpoint.used == [wrong]
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == REFRESH_TOKEN
    assert adapter.connect().connected


def test_redirect_url_pasted_as_refresh_token_is_refused_before_any_request(tt: Harness) -> None:
    with pytest.raises(AuthenticationRequired, match="send it as authorizationCode"):
        tt.adapter().login_with_refresh_token(f"{REDIRECT}?code=authcode-abc123&state=xyz")
    assert tt.fake.requests == [] and tt.tokens.load(TASTYTRADE) is None


def test_refresh_token_login_with_the_token_endpoint_down_stores_nothing(tt: Harness) -> None:
    tt.fake.on("POST", "/oauth/token", httpx2.Response(503, json=error_body("unavailable", "maintenance")))
    with pytest.raises(TemporaryBrokerError, match="token endpoint unavailable"):
        tt.adapter().login_with_refresh_token(GRANT)
    assert tt.tokens.load(TASTYTRADE) is None


def test_refused_bare_code_points_to_the_refresh_token_login(tt: Harness) -> None:
    tt.fake.on("POST", "/oauth/token", httpx2.Response(400, json={"error": "invalid_grant",
                                                                 "error_description": "Invalid authorization code"}))
    with pytest.raises(AuthenticationRequired, match="Create Grant is sent as refreshToken"):
        tt.adapter().complete_login(GRANT)
