"""Login and credential changes. Both endpoints check a password, so both are brute-force targets:
the whole blueprint is rate limited per client address (see app.create_app), and failed password
checks are limited per (account, client address) here (auth/limiter.py says why not per account)."""
from __future__ import annotations

import logging

from flask import request, Blueprint, Response

from api.contract import Answer, endpoint
from api.responses import ApiError, fail, ok
from api.schemas import LoginBody, LoginReply, TokenReply, UpdateCredentialsBody
from api.services import get_services
from api.validation import json_body
from auth.decorators import admin_required, current_user_email
from auth.limiter import account_limits, client_address
from auth.tokens import issue_token
from auth.users import MAX_EMAIL_LENGTH, MAX_PASSWORD_LENGTH, UserError

log = logging.getLogger(__name__)

auth_bp = Blueprint("auth", __name__, url_prefix="/api")


def _string(payload: dict[str, object], name: str, max_length: int) -> str:
    raw = payload.get(name)
    if not isinstance(raw, str) or not raw:
        raise ApiError(400, f"{name} must be a non-empty string", field=name)
    if len(raw) > max_length:
        raise ApiError(400, f"{name} is too long (at most {max_length} characters)", field=name)
    return raw


def _too_many_failures(retry_after: int) -> tuple[Response, int]:
    message = f"too many failed logins for this account from your address; retry in {retry_after} s"
    response, status = fail(429, message, code="login_rate_limited")
    response.headers["Retry-After"] = str(retry_after)
    return response, status


@auth_bp.post("/login")
@endpoint(body=LoginBody, answers=[Answer(200, "logged in", LoginReply)], errors={401: "wrong email or password"})
def login() -> tuple[Response, int]:
    """Log in and receive a bearer token.

    Body: `{"email": str, "password": str}`. Answers 200 `{success, token}`; wrong email or
    password -> 401; rate limited per client address (LOGIN_RATE_LIMIT) and, for failed logins,
    per account and client address (LOGIN_ACCOUNT_RATE_LIMIT) -> 429 with Retry-After.
    """
    payload = json_body()
    email = _string(payload, "email", MAX_EMAIL_LENGTH)
    password = _string(payload, "password", MAX_PASSWORD_LENGTH)
    account, address = email.strip().lower()[:MAX_EMAIL_LENGTH], client_address()
    limits = account_limits()
    retry_after = limits.retry_after(account, address)
    if retry_after is not None:
        return _too_many_failures(retry_after)
    services = get_services()
    user = services.users.authenticate(email, password)
    audit = services.audit
    if user is None:
        limits.record_failure(account, address)
        log.warning("failed login for %r", email.strip().lower()[:MAX_EMAIL_LENGTH])
        if audit is not None:
            audit.login(email.strip().lower()[:MAX_EMAIL_LENGTH], False, request.remote_addr)
        raise ApiError(401, "invalid email or password", error="invalid credentials", code="invalid_credentials")
    log.info("login %s (%s)", user.email, user.role.value)
    if audit is not None:
        audit.login(user.email, True, request.remote_addr)
    return ok(token=issue_token(user, services.users), role=user.role.value)


@auth_bp.post("/update-credentials")
@admin_required
@endpoint(body=UpdateCredentialsBody, answers=[Answer(200, "changed; earlier tokens are revoked", TokenReply)],
          errors={401: "no valid bearer token, or the current password is wrong"})
def update_credentials() -> tuple[Response, int]:
    """Change the logged-in user's email and/or password.

    Body: `{"currentPassword": str, "newEmail"?: str, "newPassword"?: str}`. Every earlier token of
    the user is revoked; the answer carries a new token: `{success, message, token}`. Wrong
    current password -> 401.
    """
    payload = json_body()
    current_password = _string(payload, "currentPassword", MAX_PASSWORD_LENGTH)
    new_email = payload.get("newEmail")
    new_password = payload.get("newPassword")
    if new_email in (None, ""):
        new_email = None
    if new_password in (None, ""):
        new_password = None
    if new_email is None and new_password is None:
        raise ApiError(400, "send newEmail and/or newPassword", field="newPassword")
    if new_email is not None and not isinstance(new_email, str):
        raise ApiError(400, "newEmail must be a string", field="newEmail")
    if new_password is not None and not isinstance(new_password, str):
        raise ApiError(400, "newPassword must be a string", field="newPassword")
    services = get_services()
    email = current_user_email()
    limits = account_limits()
    retry_after = limits.retry_after(email, client_address())
    if retry_after is not None:
        return _too_many_failures(retry_after)
    if services.users.authenticate(email, current_password) is None:
        limits.record_failure(email, client_address())
        # `error` is what the dashboard shows; `code` is the stable word programs compare.
        raise ApiError(401, "Current password is incorrect", field="currentPassword", code="invalid_credentials")
    try:
        user = services.users.change_credentials(email, new_email, new_password)
    except UserError as exc:
        raise ApiError(400, exc.message, field=exc.field) from None
    log.info("credentials changed for %s (now %s); earlier tokens revoked", email, user.email)
    if services.audit is not None:
        changed = ", ".join(n for n, v in (("email", new_email), ("password", new_password)) if v is not None)
        services.audit.credential_change(user.email, f"changed {changed}", actor=email)
    return ok(message="credentials updated; earlier tokens are revoked", token=issue_token(user, services.users))
