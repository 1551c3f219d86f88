"""Every error is JSON (never HTML or a traceback); CORS preflight for the dashboard."""
from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient

from api.responses import ApiError

ORIGIN = "http://localhost:3000"


def _assert_error_shape(response, status: int) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == status
    assert response.is_json, response.get_data(as_text=True)[:200]
    assert response.json["success"] is False
    assert isinstance(response.json["error"], str) and response.json["error"]
    assert isinstance(response.json["message"], str) and response.json["message"]
    assert "Traceback" not in response.get_data(as_text=True) and "<html" not in response.get_data(as_text=True)


def test_404_405_are_json(client: FlaskClient) -> None:
    _assert_error_shape(client.get("/api/does-not-exist"), 404)
    _assert_error_shape(client.get("/no-such-page"), 404)  # "/" itself redirects to the console
    response = client.get("/api/login")
    _assert_error_shape(response, 405)
    assert "POST" in response.headers["Allow"]


@pytest.mark.parametrize("path", ["/api//get-ticker?strategy=ema", "//api/get-ticker?strategy=ema", "/api/get-ticker/"])
def test_a_mistyped_path_is_a_json_404_not_an_html_redirect(client: FlaskClient, admin_headers: dict[str, str],
                                                            path: str) -> None:
    _assert_error_shape(client.get(path, headers=admin_headers), 404)


def test_unexpected_exception_is_500_json_without_details(app: Flask, client: FlaskClient,
                                                          admin_headers: dict[str, str]) -> None:
    class ExplodingEngine:
        def manual_trigger(self, strategy: str, symbol: str, action: str) -> str:
            raise RuntimeError("secret internal detail")

    app.extensions["services"].engine = ExplodingEngine()
    response = client.post("/api/manual-trigger", json={"ticker": "SPX", "action": "call"}, headers=admin_headers)
    _assert_error_shape(response, 500)
    assert "secret internal detail" not in response.get_data(as_text=True)


def test_api_error_carries_field(app: Flask) -> None:
    @app.get("/api/_test_raise")
    def _raise() -> None:
        raise ApiError(409, "conflict here", field="thing")

    response = app.test_client().get("/api/_test_raise")
    assert response.status_code == 409
    assert response.json == {"success": False, "error": "conflict here", "message": "conflict here", "field": "thing"}


def test_cors_preflight_for_dashboard(client: FlaskClient) -> None:
    for path, method in (("/api/get-ticker", "GET"), ("/api/add-ticker", "POST"),
                         ("/api/delete-ticker", "DELETE"), ("/api/login", "POST")):
        response = client.options(path, headers={
            "Origin": ORIGIN, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "Authorization, Content-Type"})
        assert response.status_code == 200
        assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
        allowed_headers = response.headers["Access-Control-Allow-Headers"].lower()
        assert "authorization" in allowed_headers and "content-type" in allowed_headers
        methods = response.headers["Access-Control-Allow-Methods"]
        assert all(m in methods for m in ("GET", "POST", "PUT", "DELETE", "OPTIONS"))


@pytest.mark.parametrize("origin", ["http://localhost:3000", "http://127.0.0.1:3000"])
def test_cors_default_origins_accept_the_dashboard_by_either_loopback_name(client: FlaskClient,
                                                                          origin: str) -> None:
    # The `settings` fixture keeps the default CORS_ORIGINS.
    response = client.options("/api/login", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert response.headers.get("Access-Control-Allow-Origin") == origin


def test_cors_rejects_other_origins(client: FlaskClient) -> None:
    response = client.options("/api/get-ticker", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert "Access-Control-Allow-Origin" not in response.headers


def test_cors_header_on_error_responses(client: FlaskClient) -> None:
    response = client.get("/api/get-ticker?strategy=ema", headers={"Origin": ORIGIN})
    assert response.status_code == 401
    assert response.headers["Access-Control-Allow-Origin"] == ORIGIN
