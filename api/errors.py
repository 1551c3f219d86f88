"""Error handlers: every failure leaves the API as `{"success": false, "error", "message"}`.

Covers ApiError, every werkzeug HTTPException (400/401/403/404/405/413/415/429 ...), and any
unexpected exception (500, logged with its traceback, never shown to the client). JWT errors are
rendered by the callbacks in auth/tokens.py in the same shape.
"""
from __future__ import annotations

import logging

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from api.responses import ApiError, fail

log = logging.getLogger(__name__)

_MESSAGES: dict[int, str] = {
    400: "bad request",
    401: "authentication required",
    403: "forbidden",
    404: "no such endpoint",
    405: "method not allowed for this endpoint",
    413: "request body too large",
    415: "request body must be JSON (Content-Type: application/json)",
    429: "too many requests; slow down and retry later",
}


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        return fail(exc.status, exc.message, field=exc.field, error=exc.error, code=exc.code)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response | tuple[Response, int]:
        status = exc.code or 500
        message = _MESSAGES.get(status, exc.name.lower())
        if status == 405:
            message = f"method {request.method} not allowed for {request.path}"
        elif status == 404:
            message = f"no such endpoint: {request.path[:200]}"
        elif status == 413:
            limit = app.config.get("MAX_CONTENT_LENGTH")
            message = f"request body too large (limit {limit} bytes)" if limit else message
        elif status == 429:
            message = f"too many requests ({exc.description}); retry later"
        response, code = fail(status, message, error=exc.name)
        # Keep headers werkzeug set for a reason (Allow on 405, Retry-After on 429).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response, code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return fail(500, "internal server error; the details are in the service log", error="internal error")
