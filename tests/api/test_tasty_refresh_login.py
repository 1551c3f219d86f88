"""POST /api/tasty/access-token with a personal app's refresh token ("Create Grant"), end to end:
the real registry and Tastytrade adapter, the real SDK, the fake API behind its transport."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient

sys.path.insert(0, str(Path(__file__).parents[1] / "brokers" / "tastytrade" / "fixtures"))
from tt_fake import CLIENT_SECRET, REFRESH_TOKEN, Harness  # noqa: E402
from tt_token_endpoint import TokenEndpoint  # noqa: E402

from brokers.registry import BrokerRegistry  # noqa: E402
from config.settings import Settings  # noqa: E402
from domain.orders import TASTYTRADE, BrokerName  # noqa: E402
from store.redis_store import Store  # noqa: E402

GRANT = "rtoken-from-create-grant-5k2m9q"
PATH = "/api/tasty/access-token"


@pytest.fixture
def tt(app: Flask, settings: Settings, store: Store) -> Iterator[Harness]:
    harness = Harness(settings, store)
    registry = BrokerRegistry(settings, live={BrokerName(TASTYTRADE): harness.adapter()}, paper={})
    app.extensions["services"].brokers = registry
    yield harness
    harness.close()


def _endpoint(tt: Harness, valid: set[str]) -> TokenEndpoint:
    endpoint = TokenEndpoint(CLIENT_SECRET, valid)
    tt.fake.on("POST", "/oauth/token", endpoint)
    return endpoint


@pytest.mark.parametrize("field", ["refreshToken", "refresh_token"])
def test_refresh_token_login_connects_and_returns_no_token(client: FlaskClient, admin_headers: dict[str, str],
                                                           tt: Harness, field: str) -> None:
    _endpoint(tt, {GRANT})
    response = client.post(PATH, json={field: GRANT}, headers=admin_headers)
    assert response.status_code == 200, response.json
    assert response.json["success"] is True and response.json["connected"] is True
    assert GRANT not in response.get_data(as_text=True) and "atoken" not in response.get_data(as_text=True)
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == GRANT


def test_wrong_refresh_token_is_a_400_naming_the_reason(client: FlaskClient, admin_headers: dict[str, str],
                                                       tt: Harness) -> None:
    tt.login(REFRESH_TOKEN)
    _endpoint(tt, {REFRESH_TOKEN})
    response = client.post(PATH, json={"refreshToken": "rtoken-revoked-77"}, headers=admin_headers)
    assert response.status_code == 400 and response.json["code"] == "broker_authentication"
    assert "refused the refresh token (HTTP 401: invalid_grant" in response.json["message"]
    assert "rtoken-revoked-77" not in response.get_data(as_text=True)
    assert tt.tokens.load(TASTYTRADE)["refresh_token"] == REFRESH_TOKEN  # the working login is kept


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"refreshToken": 42}, "refreshToken", "string"),
    ({"refreshToken": ""}, "refreshToken", "at least 1"),
    ({"refreshToken": "   "}, "refreshToken", "no refresh token given"),
    ({"refreshToken": "two words"}, "refreshToken", "no spaces or quotes"),
    ({"refreshToken": '"rtoken-quoted"'}, "refreshToken", "no spaces or quotes"),
    ({"refreshToken": "x" * 3000}, "refreshToken", "2048"),
    ({"refreshToken": "https://127.0.0.1:8183/callback?code=abc&state=s"}, "refreshToken",
     "send it as authorizationCode"),
    ({"refresh_token": "code=abc"}, "refreshToken", "send it as authorizationCode"),
    ({"refreshToken": GRANT, "authorizationCode": "abc"}, "refreshToken", "not both"),
    ({}, "authorizationCode", "refreshToken"),
    ({"authorizationCode": "  "}, "authorizationCode", "refreshToken"),
    ({"authorizationCode": "c" * 600}, "authorizationCode", "sent as refreshToken"),
])
def test_bad_bodies_are_400_json_and_reach_no_broker(client: FlaskClient, admin_headers: dict[str, str], tt: Harness,
                                                     body: dict[str, Any], field: str, words: str) -> None:
    response = client.post(PATH, json=body, headers=admin_headers)
    assert response.status_code == 400 and response.is_json
    assert response.json["success"] is False and response.json["field"] == field
    assert words in response.json["message"], response.json["message"]
    assert tt.fake.requests == [] and tt.tokens.load(TASTYTRADE) is None
