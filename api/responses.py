"""The JSON envelope every endpoint answers with.

Success: `{"success": true, ...}`. Failure: `{"success": false, "error": ..., "message": ...}`
(the dashboard reads either field). Views raise `ApiError`; the error handlers registered in
`api/errors.py` render it and every werkzeug HTTP error in this shape.
"""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, field: str | None = None, error: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.error = error or message


def ok(status: int = 200, **body: Any) -> tuple[Response, int]:
    return jsonify({"success": True, **body}), status


def fail(status: int, message: str, *, field: str | None = None, error: str | None = None) -> tuple[Response, int]:
    body: dict[str, Any] = {"success": False, "error": error or message, "message": message}
    if field:
        body["field"] = field
    return jsonify(body), status
