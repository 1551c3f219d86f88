"""The JSON envelope every endpoint answers with (its shape: `domain/envelope.py`).

Views raise `ApiError`; the error handlers registered in `api/errors.py` render it and every
werkzeug HTTP error in this shape.
"""
from __future__ import annotations

from typing import Any

from flask import Response, jsonify

from domain.envelope import ApiError, error_body

__all__ = ["ApiError", "fail", "ok"]


def ok(status: int = 200, **body: Any) -> tuple[Response, int]:
    return jsonify({"success": True, **body}), status


def fail(status: int, message: str, *, field: str | None = None, error: str | None = None,
         code: str | None = None, **extra: Any) -> tuple[Response, int]:
    return jsonify(error_body(message, field=field, error=error, code=code, **extra)), status
