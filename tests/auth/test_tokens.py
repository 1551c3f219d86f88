"""Login, token validation (missing, malformed, expired, forged, revoked), roles and rate limiting."""
from __future__ import annotations

import base64
import json
from datetime import timedelta

import jwt as pyjwt
import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_jwt_extended import create_access_token

from config.settings import Settings
from store.redis_store import Store
from tests.api.helpers import ADMIN_EMAIL, ADMIN_PASSWORD, login, snapshot

PROTECTED = "/api/get-ticker?strategy=ema"


def _assert_401(response) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 401
    assert response.json["success"] is False and response.json["error"] and response.json["message"]


def test_login_success_shape_and_token_has_no_password(client: FlaskClient) -> None:
    response = client.post("/api/login", json={"email": "Admin@Example.com ", "password": ADMIN_PASSWORD})
    assert response.status_code == 200
    assert response.json["success"] is True and response.json["role"] == "admin"
    token = response.json["token"]
    payload_part = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload_part + "=" * (-len(payload_part) % 4)))
    assert claims["sub"] == ADMIN_EMAIL and claims["role"] == "admin" and isinstance(claims["ep"], int)
    assert ADMIN_PASSWORD not in json.dumps(claims) and "password" not in json.dumps(claims).lower()


@pytest.mark.parametrize("body", [
    {"email": ADMIN_EMAIL, "password": "wrong password"},
    {"email": "nobody@example.com", "password": ADMIN_PASSWORD},
])
def test_bad_credentials_401(client: FlaskClient, body: dict[str, str]) -> None:
    response = client.post("/api/login", json=body)
    _assert_401(response)
    assert response.json["message"] == "invalid email or password"


@pytest.mark.parametrize(("body", "field"), [
    ({"password": "x"}, "email"), ({"email": ADMIN_EMAIL}, "password"),
    ({"email": 5, "password": "x"}, "email"), ({"email": ADMIN_EMAIL, "password": ["x"]}, "password"),
    ({"email": "a" * 500 + "@x.com", "password": "x"}, "email"),
])
def test_login_bad_input_400(client: FlaskClient, body: dict[str, object], field: str) -> None:
    response = client.post("/api/login", json=body)
    assert response.status_code == 400 and response.json["field"] == field


def test_missing_and_malformed_tokens(client: FlaskClient) -> None:
    _assert_401(client.get(PROTECTED))
    for header in ("Bearer", "Bearer ", "Token abc", "Bearer not.a.jwt", "Bearer abc", "Basic dXNlcjpwYXNz"):
        _assert_401(client.get(PROTECTED, headers={"Authorization": header}))


def test_expired_token(app: Flask, client: FlaskClient) -> None:
    with app.app_context():
        token = create_access_token(identity=ADMIN_EMAIL, additional_claims={"role": "admin", "ep": 0},
                                    expires_delta=timedelta(seconds=-5))
    response = client.get(PROTECTED, headers={"Authorization": f"Bearer {token}"})
    _assert_401(response)
    assert "expired" in response.json["message"]


def test_forged_signature_and_alg_none(client: FlaskClient) -> None:
    real = login(client, ADMIN_EMAIL, ADMIN_PASSWORD)
    claims = pyjwt.decode(real, options={"verify_signature": False})
    forged = pyjwt.encode(claims, "some-other-secret-" + "y" * 40, algorithm="HS256")
    _assert_401(client.get(PROTECTED, headers={"Authorization": f"Bearer {forged}"}))
    header = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    _assert_401(client.get(PROTECTED, headers={"Authorization": f"Bearer {header}.{body}."}))
    # Tampered payload (another identity) under the original signature.
    head, _, sig = real.split(".")
    tampered = base64.urlsafe_b64encode(json.dumps({**claims, "sub": "x@y.z"}).encode()).rstrip(b"=").decode()
    _assert_401(client.get(PROTECTED, headers={"Authorization": f"Bearer {head}.{tampered}.{sig}"}))


def test_token_lifetime_follows_settings(settings: Settings, store: Store) -> None:
    from app import create_app

    app = create_app(settings.with_overrides(jwt_access_minutes=7), store)
    token = login(app.test_client(), ADMIN_EMAIL, ADMIN_PASSWORD)
    claims = pyjwt.decode(token, options={"verify_signature": False})
    assert claims["exp"] - claims["iat"] == 7 * 60


def test_update_credentials_revokes_earlier_tokens(client: FlaskClient) -> None:
    old = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    other_old = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    response = client.post("/api/update-credentials", headers=old,
                           json={"currentPassword": ADMIN_PASSWORD, "newPassword": "a brand new password"})
    assert response.status_code == 200
    assert response.json["success"] is True and response.json["message"] and response.json["token"]
    new = {"Authorization": f"Bearer {response.json['token']}"}
    for headers in (old, other_old):
        revoked = client.get(PROTECTED, headers=headers)
        _assert_401(revoked)
        assert "revoked" in revoked.json["message"]
    assert client.get(PROTECTED, headers=new).status_code == 200
    _assert_401(client.post("/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}))
    assert login(client, ADMIN_EMAIL, "a brand new password")


def test_update_credentials_change_email(client: FlaskClient, store: Store) -> None:
    old = {"Authorization": f"Bearer {login(client, ADMIN_EMAIL, ADMIN_PASSWORD)}"}
    response = client.post("/api/update-credentials", headers=old,
                           json={"currentPassword": ADMIN_PASSWORD, "newEmail": "Boss@Example.com"})
    assert response.status_code == 200
    _assert_401(client.get(PROTECTED, headers=old))
    assert client.get(PROTECTED, headers={"Authorization": f"Bearer {response.json['token']}"}).status_code == 200
    assert login(client, "boss@example.com", ADMIN_PASSWORD)
    assert store.redis.smembers(store.key("users", "index")) == {"boss@example.com"}
    assert not store.redis.exists(store.key("users", ADMIN_EMAIL))


@pytest.mark.parametrize(("body", "status", "field"), [
    ({"currentPassword": "wrong password", "newPassword": "a brand new password"}, 401, "currentPassword"),
    ({"currentPassword": ADMIN_PASSWORD}, 400, "newPassword"),
    ({"currentPassword": ADMIN_PASSWORD, "newPassword": "short"}, 400, "newPassword"),
    ({"currentPassword": ADMIN_PASSWORD, "newPassword": 12345678}, 400, "newPassword"),
    ({"currentPassword": ADMIN_PASSWORD, "newEmail": "not-an-email"}, 400, "newEmail"),
    ({"currentPassword": ADMIN_PASSWORD, "newEmail": "../../etc@x"}, 400, "newEmail"),
    ({"newPassword": "a brand new password"}, 400, "currentPassword"),
])
def test_update_credentials_bad_input_changes_nothing(client: FlaskClient, admin_headers: dict[str, str],
                                                      store: Store, body: dict[str, object], status: int,
                                                      field: str) -> None:
    before = snapshot(store)
    response = client.post("/api/update-credentials", headers=admin_headers, json=body)
    assert response.status_code == status and response.json["field"] == field
    assert snapshot(store) == before
    assert client.get(PROTECTED, headers=admin_headers).status_code == 200


def test_viewer_is_read_only(client: FlaskClient, viewer_headers: dict[str, str]) -> None:
    assert client.get(PROTECTED, headers=viewer_headers).status_code == 200
    assert client.get("/api/current-position?ticker=SPX&strategy=zeroday", headers=viewer_headers).status_code == 200
    response = client.post("/api/update-credentials", headers=viewer_headers,
                           json={"currentPassword": "viewer password 1", "newPassword": "whatever123"})
    assert response.status_code == 403 and response.json["success"] is False and response.json["error"]


def test_removed_user_token_rejected(app: Flask, client: FlaskClient, viewer_headers: dict[str, str]) -> None:
    app.extensions["services"].users.remove("viewer@example.com")
    _assert_401(client.get(PROTECTED, headers=viewer_headers))


def test_login_rate_limit_429_json(settings: Settings, store: Store) -> None:
    from app import create_app

    app = create_app(settings.with_overrides(login_rate_limit="3 per minute"), store)
    client = app.test_client()
    statuses = [client.post("/api/login", json={"email": ADMIN_EMAIL, "password": "wrong"}).status_code
                for _ in range(3)]
    assert statuses == [401, 401, 401]
    response = client.post("/api/login", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
    assert response.status_code == 429
    assert response.json["success"] is False and "too many requests" in response.json["message"]
    assert response.json["error"]
    if store.persistent:  # counters live in the service's Redis under its prefix
        assert list(store.redis.scan_iter(match=store.key("ratelimit") + "*"))


def test_a_wrong_current_password_says_so_in_the_error_the_dashboard_shows(client: FlaskClient,
                                                                           admin_headers: dict[str, str]) -> None:
    response = client.post("/api/update-credentials", headers=admin_headers,
                           json={"currentPassword": "wrong password", "newPassword": "a brand new password"})
    assert response.status_code == 401
    assert response.json["error"] == "Current password is incorrect"
    assert response.json["code"] == "invalid_credentials" and response.json["field"] == "currentPassword"


def test_a_failed_login_carries_the_same_stable_code(client: FlaskClient) -> None:
    response = client.post("/api/login", json={"email": ADMIN_EMAIL, "password": "wrong password"})
    assert response.status_code == 401 and response.json["code"] == "invalid_credentials"
