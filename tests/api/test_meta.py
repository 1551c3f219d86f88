"""Health, OpenAPI document and docs page."""
from __future__ import annotations

import redis
from flask import Flask
from flask.testing import FlaskClient

from api.meta import VERSION


def test_health_ok_without_auth(client: FlaskClient, app: Flask) -> None:
    response = client.get("/api/health")
    assert response.status_code == 200
    store = app.extensions["services"].store
    if store.persistent:  # a real Redis: as its own CONFIG says
        appendonly, save = store.redis.config_get("appendonly")["appendonly"], store.redis.config_get("save")["save"]
        redis_fields = {"persistent": appendonly == "yes" or bool(save), "appendonly": appendonly, "save": save}
    else:  # in-process fakeredis keeps nothing
        redis_fields = {"persistent": False, "appendonly": None, "save": None}
    assert response.json == {"success": True, "mode": "paper", "version": VERSION,
                             "redis": {"reachable": True, **redis_fields, "url": store.url}}


def test_health_503_when_redis_is_down(app: Flask, client: FlaskClient) -> None:
    services = app.extensions["services"]

    class DeadRedis:
        def ping(self) -> bool:
            raise redis.ConnectionError("down")

    services.store = type(services.store)(DeadRedis(), services.store.prefix, services.store.persistent,  # type: ignore[arg-type]
                                          services.store.url)
    response = client.get("/api/health")
    assert response.status_code == 503
    assert response.json["success"] is False and response.json["redis"]["reachable"] is False
    assert response.json["message"] and response.json["error"]


def test_openapi_lists_every_endpoint_with_auth(client: FlaskClient) -> None:
    spec = client.get("/api/openapi.json").json
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    expected = {
        "/api/login": "post", "/api/update-credentials": "post", "/api/get-ticker": "get",
        "/api/add-ticker": "post", "/api/delete-ticker": "delete", "/api/start-trading": "get",
        "/api/stop-trading": "get", "/api/manual-trigger": "post", "/api/ema-manual-trigger": "post",
        "/api/current-position": "get", "/api/schwab/authorize-url": "get", "/api/tasty/authorize-url": "get",
        "/api/schwab/access-token": "post", "/api/tasty/access-token": "post", "/api/schwab/refresh-token": "post",
        "/api/tasty/refresh-token": "post", "/api/get-tasty-connection": "get", "/api/brokers": "get",
        "/api/health": "get", "/api/openapi.json": "get", "/api/docs": "get",
    }
    for path, method in expected.items():
        assert method in paths[path], path
        assert paths[path][method]["summary"]
    assert paths["/api/add-ticker"]["post"]["x-required-role"] == "admin"
    assert paths["/api/get-ticker"]["get"]["x-required-role"] == "viewer"
    assert "security" not in paths["/api/login"]["post"]
    assert "bearerAuth" in spec["components"]["securitySchemes"]


def test_docs_page_is_self_contained_html(client: FlaskClient) -> None:
    response = client.get("/api/docs")
    assert response.status_code == 200 and response.mimetype == "text/html"
    page = response.get_data(as_text=True)
    assert "/api/add-ticker" in page and "<script" not in page and "http://cdn" not in page
    assert "https://" not in page.replace("https://127.0.0.1", "")


def test_openapi_paths_use_openapi_parameters_not_flask_rules(client: FlaskClient) -> None:
    paths = client.get("/api/openapi.json").json["paths"]
    assert not [p for p in paths if "<" in p or ">" in p]
    job = paths["/api/backtest/{job_id}"]["get"]
    assert job["parameters"] == [{"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}]
