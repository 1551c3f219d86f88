"""Health, the OpenAPI document (generated from the registered routes and their docstrings) and a
self-contained HTML page rendering it (no CDN assets: the service may run offline)."""
from __future__ import annotations

import html
import inspect
import re
from typing import Any

from apispec import APISpec
from flask import Blueprint, Flask, Response, current_app, jsonify

from api.responses import ok
from api.services import get_services
from store.persistence import UNKNOWN, redis_persistence

VERSION = "0.1.0"
_RULE_ARGUMENT = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")  # Flask's <int:job_id> -> OpenAPI's {job_id}

meta_bp = Blueprint("meta", __name__, url_prefix="/api")

_ERROR_SCHEMA = {
    "type": "object",
    "required": ["success", "error", "message"],
    "properties": {"success": {"type": "boolean", "enum": [False]}, "error": {"type": "string"},
                   "message": {"type": "string"}, "field": {"type": "string"}},
}


@meta_bp.get("/health")
def health() -> tuple[Response, int]:
    """Liveness and Redis reachability (no auth) -> 200 `{success, redis, mode, version}`; 503 when
    Redis does not answer. `redis.persistent` is what Redis reports (AOF or RDB snapshots on: true;
    neither, or in-process: false; CONFIG refused: null), with its `appendonly` and `save` values."""
    services = get_services()
    reachable = services.store.ping()
    persistence = redis_persistence(services.store) if reachable else UNKNOWN
    body: dict[str, Any] = {
        "redis": {"reachable": reachable, **persistence.to_json(), "url": services.store.url},
        "mode": services.settings.trading_mode.value,
        "version": VERSION,
    }
    if reachable:
        return ok(**body)
    payload = {"success": False, "error": "service unavailable", "message": "Redis is not reachable", **body}
    return jsonify(payload), 503


def build_openapi(app: Flask) -> dict[str, Any]:
    spec = APISpec(
        title="Trading backend API", version=VERSION, openapi_version="3.0.3",
        info={"description": "Every response is JSON with `success`; failures carry `error` and `message`. "
                             "All endpoints except login, health and these docs need `Authorization: Bearer <token>`."},
    )
    spec.components.security_scheme("bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"})
    spec.components.schema("Error", _ERROR_SCHEMA)
    paths: dict[str, dict[str, Any]] = {}
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        if not rule.rule.startswith("/api/") or rule.endpoint == "static":
            continue
        view = app.view_functions[rule.endpoint]
        doc = inspect.getdoc(view) or ""
        summary, _, description = doc.partition("\n")
        role = getattr(view, "required_role", None)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            operation: dict[str, Any] = {
                "summary": summary.strip() or rule.endpoint,
                "description": description.strip() + (f"\n\nRequires role: {role}." if role else ""),
                "operationId": rule.endpoint.replace(".", "_"),
                "tags": [rule.endpoint.split(".")[0]],
                "responses": {
                    "200": {"description": "success"},
                    "default": {"description": "error",
                                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
                },
            }
            if rule.arguments:
                operation["parameters"] = [{"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
                                           for name in sorted(rule.arguments)]
            if role:
                operation["security"] = [{"bearerAuth": []}]
                operation["x-required-role"] = role
            paths.setdefault(_RULE_ARGUMENT.sub(r"{\1}", rule.rule), {})[method.lower()] = operation
    for path, operations in paths.items():
        spec.path(path=path, operations=operations)
    return spec.to_dict()


@meta_bp.get("/openapi.json")
def openapi_json() -> Response:
    """This API's OpenAPI 3 document, generated from the routes and their docstrings."""
    return jsonify(build_openapi(current_app))


@meta_bp.get("/docs")
def docs_page() -> Response:
    """A browsable HTML page of the API, rendered from the OpenAPI document."""
    spec = build_openapi(current_app)
    rows: list[str] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            role = op.get("x-required-role", "none")
            rows.append(
                "<section><h2><span class='m m-{m}'>{M}</span> <code>{p}</code> <small>auth: {r}</small></h2>"
                "<p><b>{s}</b></p><pre>{d}</pre></section>".format(
                    m=html.escape(method), M=html.escape(method.upper()), p=html.escape(path),
                    r=html.escape(role), s=html.escape(op["summary"]), d=html.escape(op["description"]))
            )
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>{t}</title><style>"
        "body{{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}}"
        "section{{border-top:1px solid #ddd;padding:.5rem 0}}h2{{font-size:1.05rem}}"
        "pre{{white-space:pre-wrap;background:#f6f6f6;padding:.5rem}}small{{color:#666;font-weight:normal}}"
        ".m{{display:inline-block;min-width:4.5rem;text-align:center;border-radius:3px;color:#fff;background:#555}}"
        ".m-get{{background:#2a7ab0}}.m-post{{background:#2f8f46}}.m-delete{{background:#b03a2a}}"
        "</style></head><body><h1>{t} <small>v{v}</small></h1><p>{i}</p>"
        "<p>Machine-readable: <a href='/api/openapi.json'>/api/openapi.json</a></p>{rows}</body></html>"
    ).format(t=html.escape(spec["info"]["title"]), v=html.escape(spec["info"]["version"]),
             i=html.escape(spec["info"].get("description", "")), rows="".join(rows))
    return Response(page, mimetype="text/html")
