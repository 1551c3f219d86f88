"""Health, the OpenAPI document (built from the endpoints' contracts, api/openapi.py) and a
self-contained HTML page rendering it (no CDN assets: the service may run offline)."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify

from api.contract import Answer, endpoint
from api.openapi import build_document, render_docs
from api.responses import ok
from api.schemas import HealthReply, OpenApiReply
from api.services import get_services
from store.persistence import UNKNOWN, redis_persistence

VERSION = "0.1.0"

meta_bp = Blueprint("meta", __name__, url_prefix="/api")


@meta_bp.get("/health")
@endpoint(answers=[Answer(200, "the service and Redis answer", HealthReply),
                   Answer(503, "Redis does not answer: the envelope plus the health fields", HealthReply)])
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
    return build_document(
        app, title="Trading backend API", version=VERSION,
        description="Every response is JSON with `success`; failures carry `error` and `message` (and `code`, "
                    "`field` where they apply). All endpoints except login, health and these docs need "
                    "`Authorization: Bearer <token>` from `POST /api/login`.")


@meta_bp.get("/openapi.json")
@endpoint(answers=[Answer(200, "the OpenAPI 3.1 document", OpenApiReply)])
def openapi_json() -> Response:
    """This API's OpenAPI 3.1 document, generated from the models the endpoints validate with."""
    return jsonify(build_openapi(current_app))


@meta_bp.get("/docs")
@endpoint(answers=[Answer(200, "an HTML page", None, "text/html")])
def docs_page() -> Response:
    """A browsable HTML page of the API, rendered from the OpenAPI document (no script, no CDN)."""
    return Response(render_docs(build_openapi(current_app)), mimetype="text/html")
