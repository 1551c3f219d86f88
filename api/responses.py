"""The JSON envelope every endpoint answers with.

Success: `{"success": true, ...}`. Failure: `{"success": false, "error": ..., "message": ...}`
(the dashboard reads either field, and shows `error` to the trader: so `error` is a sentence, the
message itself unless a view names a short one); where a program needs to tell failures apart
without parsing text, `code` holds a stable word (e.g. `risk_denied`, `market_closed`). Views raise `ApiError`; the error handlers registered in
`api/errors.py` render it and every werkzeug HTTP error in this shape.
"""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None, error: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.error = error or message
        self.code = code


def ok(status: int = 200, **body: Any) -> tuple[Response, int]:
    return jsonify({"success": True, **body}), status


def fail(status: int, message: str, *, field: str | None = None, error: str | None = None,
         code: str | None = None, **extra: Any) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": False, "error": error or message, "message": message}
    if code:
        body["code"] = code
    if field:
        body["field"] = field
    body.update(extra)
    return jsonify(body), status
