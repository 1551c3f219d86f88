"""Broker OAuth endpoints: input validation, 503 without a broker service, no tokens in responses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from brokers.errors import AuthenticationRequired, TemporaryBrokerError
from brokers.registry import BrokerNotConfigured

SECRET_TOKEN = "sekrit-access-token-value"


@dataclass
class FakeBrokers:
    calls: list[tuple[str, ...]] = field(default_factory=list)
    fail_with: Exception | None = None
    connected: bool = True

    def authorize_url(self, broker: str) -> str:
        self.calls.append(("authorize_url", broker))
        if self.fail_with:
            raise self.fail_with
        return f"https://{broker}.example/oauth?client_id=abc"

    def complete_login(self, broker: str, text: str) -> dict[str, Any]:
        self.calls.append(("complete_login", broker, text))
        if self.fail_with:
            raise self.fail_with
        return {"message": f"{broker} connected", "connected": True, "access_token": SECRET_TOKEN,
                "refresh_token": SECRET_TOKEN, "access_token_expires_at": "2030-01-01T00:00:00+00:00"}

    def refresh(self, broker: str) -> dict[str, Any]:
        self.calls.append(("refresh", broker))
        if self.fail_with:
            raise self.fail_with
        return {"message": "refreshed", "token": SECRET_TOKEN}

    def connection(self, broker: str) -> dict[str, Any]:
        return {"connected": self.connected, "message": "connected as ****1234" if self.connected else "log in"}

    def statuses(self) -> list[dict[str, Any]]:
        return [{"broker": "schwab", "connected": False, "account": None, "access_token": SECRET_TOKEN}]


@pytest.fixture
def brokers(app: Flask) -> FakeBrokers:
    fake = FakeBrokers()
    app.extensions["services"].brokers = fake
    return fake


# (method, path, body, a setting the 503 names): the login flows of both brokers.
LOGIN_ENDPOINTS = [
    ("get", "/api/schwab/authorize-url", None, "SCHWAB_API_KEY"),
    ("get", "/api/tasty/authorize-url", None, "TASTYTRADE_CLIENT_ID"),
    ("post", "/api/schwab/access-token", {"authorizationLink": "https://127.0.0.1:8182/?code=abc"}, "SCHWAB_API_KEY"),
    ("post", "/api/tasty/access-token", {"authorizationCode": "abc"}, "TASTYTRADE_CLIENT_ID"),
    ("post", "/api/schwab/refresh-token", None, "SCHWAB_APP_SECRET"),
    ("post", "/api/tasty/refresh-token", None, "TASTYTRADE_CLIENT_SECRET"),
]


@pytest.mark.parametrize(("method", "path", "body", "names"), [
    *LOGIN_ENDPOINTS, ("get", "/api/get-tasty-connection", None, "TASTYTRADE_CLIENT_ID")])
def test_without_broker_service_is_503_naming_config(client: FlaskClient, admin_headers: dict[str, str],
                                                     method: str, path: str, body: Any, names: str) -> None:
    response = getattr(client, method)(path, json=body, headers=admin_headers)
    assert response.status_code == 503
    assert response.json["success"] is False and names in response.json["message"]


def test_authorize_url_is_text_plain(client: FlaskClient, admin_headers: dict[str, str], brokers: FakeBrokers) -> None:
    response = client.get("/api/schwab/authorize-url", headers=admin_headers)
    assert response.status_code == 200 and response.mimetype == "text/plain"
    assert response.get_data(as_text=True) == "https://schwab.example/oauth?client_id=abc"
    assert client.get("/api/tasty/authorize-url", headers=admin_headers).get_data(as_text=True).startswith(
        "https://tastytrade.example")


def test_access_token_never_returns_tokens(client: FlaskClient, admin_headers: dict[str, str],
                                           brokers: FakeBrokers) -> None:
    link = "https://127.0.0.1:8182/?code=C0DE%40&session=x"
    response = client.post("/api/schwab/access-token", json={"authorizationLink": link}, headers=admin_headers)
    assert response.status_code == 200
    assert response.json == {"success": True, "message": "schwab connected", "connected": True,
                             "access_token_expires_at": "2030-01-01T00:00:00+00:00"}
    assert SECRET_TOKEN not in response.get_data(as_text=True)
    assert brokers.calls[-1] == ("complete_login", "schwab", link)
    for path in ("/api/tasty/access-token",):
        response = client.post(path, json={"authorizationCode": "bare-code_123"}, headers=admin_headers)
        assert response.status_code == 200 and SECRET_TOKEN not in response.get_data(as_text=True)
    response = client.post("/api/schwab/refresh-token", headers=admin_headers)
    assert response.json == {"success": True, "message": "refreshed"}
    statuses = client.get("/api/brokers", headers=admin_headers)
    assert statuses.status_code == 200 and SECRET_TOKEN not in statuses.get_data(as_text=True)
    assert statuses.json["data"] == [{"broker": "schwab", "connected": False, "account": None}]


@pytest.mark.parametrize(("path", "body", "field"), [
    ("/api/schwab/access-token", {"authorizationLink": 42}, "authorizationLink"),
    ("/api/schwab/access-token", {"authorizationLink": ""}, "authorizationLink"),
    ("/api/schwab/access-token", {"authorizationLink": "not a url"}, "authorizationLink"),
    ("/api/schwab/access-token", {"authorizationLink": "file:///etc/passwd"}, "authorizationLink"),
    ("/api/schwab/access-token", {"authorizationLink": "https://x/?code=" + "a" * 5000}, "authorizationLink"),
    ("/api/tasty/access-token", {"authorizationCode": None}, "authorizationCode"),
    ("/api/tasty/access-token", {"authorizationCode": "has spaces in it"}, "authorizationCode"),
    ("/api/tasty/access-token", {"authorizationCode": "c" * 600}, "authorizationCode"),
])
def test_access_token_input_validation(client: FlaskClient, admin_headers: dict[str, str], brokers: FakeBrokers,
                                       path: str, body: dict[str, Any], field: str) -> None:
    response = client.post(path, json=body, headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == field
    assert brokers.calls == []


def test_broker_errors_are_clear_json(client: FlaskClient, admin_headers: dict[str, str],
                                      brokers: FakeBrokers) -> None:
    brokers.fail_with = AuthenticationRequired("authorization code expired", broker="schwab")
    response = client.post("/api/schwab/access-token", json={"authorizationLink": "https://a/?code=x"},
                           headers=admin_headers)
    assert response.status_code == 400 and "authorization code expired" in response.json["message"]
    brokers.fail_with = TemporaryBrokerError("timeout", broker="schwab")
    response = client.post("/api/schwab/access-token", json={"authorizationLink": "https://a/?code=x"},
                           headers=admin_headers)
    assert response.status_code == 502 and response.json["success"] is False


def test_tasty_connection(client: FlaskClient, admin_headers: dict[str, str], brokers: FakeBrokers) -> None:
    assert client.get("/api/get-tasty-connection", headers=admin_headers).json == {
        "success": True, "message": "connected as ****1234", "connected": True}
    brokers.connected = False
    response = client.get("/api/get-tasty-connection", headers=admin_headers)
    assert response.status_code == 200
    assert response.json == {"success": False, "error": "not connected", "message": "log in"}


def test_broker_endpoints_are_admin_only(client: FlaskClient, viewer_headers: dict[str, str],
                                         brokers: FakeBrokers) -> None:
    assert client.get("/api/schwab/authorize-url", headers=viewer_headers).status_code == 403
    assert client.post("/api/tasty/access-token", json={"authorizationCode": "abc"},
                       headers=viewer_headers).status_code == 403
    assert client.post("/api/schwab/refresh-token", headers=viewer_headers).status_code == 403
    assert client.get("/api/get-tasty-connection", headers=viewer_headers).status_code == 403
    assert client.get("/api/brokers", headers=viewer_headers).status_code == 200
    assert brokers.calls == []


@pytest.mark.parametrize(("method", "path", "body", "names"), LOGIN_ENDPOINTS)
def test_broker_service_without_credentials_is_503_naming_them(client: FlaskClient, admin_headers: dict[str, str],
                                                              brokers: FakeBrokers, method: str, path: str,
                                                              body: Any, names: str) -> None:
    # The paper quick start: the broker service runs, but the real adapter has no credentials.
    brokers.fail_with = BrokerNotConfigured("no credentials")
    response = getattr(client, method)(path, json=body, headers=admin_headers)
    assert response.status_code == 503
    assert response.json["success"] is False and names in response.json["message"]
    assert response.json["code"] == "service_unavailable" and response.json["error"] == response.json["message"]


@pytest.mark.parametrize("field", ["refresh_token_link", "token"])
def test_dashboards_token_link_dialog_completes_the_schwab_login(client: FlaskClient, admin_headers: dict[str, str],
                                                                 brokers: FakeBrokers, field: str) -> None:
    link = "https://127.0.0.1:8182/?code=C0DE%40&session=x"
    response = client.post("/api/refresh-token-link", json={field: link}, headers=admin_headers)
    assert response.status_code == 200 and response.json["success"] is True
    assert SECRET_TOKEN not in response.get_data(as_text=True)
    assert brokers.calls[-1] == ("complete_login", "schwab", link)


def test_token_link_dialog_rejects_what_is_not_the_redirect_url(client: FlaskClient, admin_headers: dict[str, str],
                                                                brokers: FakeBrokers) -> None:
    response = client.post("/api/refresh-token-link", json={"refresh_token_link": "abc"}, headers=admin_headers)
    assert response.status_code == 400 and response.json["field"] == "refresh_token_link"
    assert brokers.calls == []


def test_broker_failure_shows_the_reason_in_error(client: FlaskClient, admin_headers: dict[str, str],
                                                  brokers: FakeBrokers) -> None:
    # The dashboard toasts `error`: it carries the reason; `code` the short word.
    brokers.fail_with = AuthenticationRequired("code expired")
    response = client.post("/api/schwab/access-token", json={"authorizationLink": "https://127.0.0.1:8182/?code=x"},
                           headers=admin_headers)
    assert response.status_code == 400 and response.json["code"] == "broker_authentication"
    assert "code expired" in response.json["error"] and response.json["error"] == response.json["message"]
