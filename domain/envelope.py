"""The JSON envelope every HTTP answer uses, without Flask.

Success: `{"success": true, ...}`. Failure: `{"success": false, "error": ..., "message": ...}`
(the dashboard reads either field, and shows `error` to the trader: so `error` is a sentence, the
message itself unless a view names a short one); where a program needs to tell failures apart
without parsing text, `code` holds a stable word (e.g. `risk_denied`, `market_closed`), and `field`
names the request field at fault.

It lives here, below the web layer, because two layers answer in it: the API (`api/responses.py`
renders it, `api/errors.py` turns an `ApiError` into it) and auth's Flask glue (the role guards
raise `ApiError`; the JWT failure callbacks answer `error_body(...)`), which must not import api/.
"""
from __future__ import annotations

from typing import Any


class ApiError(Exception):
    """A request refused with `status`; rendered as the failure envelope by api/errors.py."""

    def __init__(self, status: int, message: str, *, field: str | None = None, error: str | None = None,
                 code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field
        self.error = error or message
        self.code = code


def error_body(message: str, *, field: str | None = None, error: str | None = None, code: str | None = None,
               **extra: Any) -> dict[str, Any]:
    """The failure envelope: `error` defaults to the message; `code` and `field` only when given."""
    body: dict[str, Any] = {"success": False, "error": error or message, "message": message}
    if code:
        body["code"] = code
    if field:
        body["field"] = field
    body.update(extra)
    return body
