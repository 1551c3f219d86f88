"""JWT set-up (flask-jwt-extended): identity = email; claims = role and token epoch; no password.

Every JWT failure (missing, malformed, expired, forged, revoked) answers 401 with the API's JSON
error shape. The signing secret is Settings.jwt_secret; in paper mode without one a random
per-process secret is used (tokens then stop working at restart, which is logged).
"""
from __future__ import annotations

import logging
import secrets
from datetime import timedelta
from typing import Any

from flask import Flask, Response
from flask_jwt_extended import JWTManager, create_access_token

from api.responses import fail
from auth.users import User, UserStore
from config.settings import Settings

log = logging.getLogger(__name__)

EPOCH_CLAIM = "ep"
ROLE_CLAIM = "role"


def init_jwt(app: Flask, settings: Settings, users: UserStore) -> JWTManager:
    secret = settings.jwt_secret
    if not secret:
        # Live mode refuses to start without JWT_SECRET (config/settings.py), so only paper gets here.
        secret = secrets.token_urlsafe(48)
        log.warning("JWT_SECRET is not set: using a random secret; tokens become invalid when the service restarts")
    app.config.update(
        JWT_SECRET_KEY=secret,
        JWT_ALGORITHM="HS256",
        JWT_DECODE_ALGORITHMS=["HS256"],  # never accept "none" or an asymmetric algorithm swap
        JWT_TOKEN_LOCATION=["headers"],
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.jwt_access_minutes),
        JWT_ERROR_MESSAGE_KEY="message",
    )
    jwt = JWTManager(app)

    def unauthorized(message: str) -> tuple[Response, int]:
        return fail(401, message, error="unauthorized")

    @jwt.unauthorized_loader
    def _missing(reason: str) -> tuple[Response, int]:
        return unauthorized("missing or malformed Authorization header; send 'Authorization: Bearer <token>'")

    @jwt.invalid_token_loader
    def _invalid(reason: str) -> tuple[Response, int]:
        return unauthorized("invalid token; log in again")

    @jwt.expired_token_loader
    def _expired(header: dict[str, Any], payload: dict[str, Any]) -> tuple[Response, int]:
        return unauthorized("token has expired; log in again")

    @jwt.revoked_token_loader
    def _revoked(header: dict[str, Any], payload: dict[str, Any]) -> tuple[Response, int]:
        return unauthorized("token has been revoked (credentials changed or user removed); log in again")

    @jwt.needs_fresh_token_loader
    def _not_fresh(header: dict[str, Any], payload: dict[str, Any]) -> tuple[Response, int]:
        return unauthorized("a fresh login is required")

    @jwt.user_lookup_error_loader
    def _unknown_user(header: dict[str, Any], payload: dict[str, Any]) -> tuple[Response, int]:
        return unauthorized("the user of this token no longer exists; log in again")

    @jwt.token_in_blocklist_loader
    def _is_revoked(header: dict[str, Any], payload: dict[str, Any]) -> bool:
        email = payload.get("sub")
        if not isinstance(email, str):
            return True
        epoch = payload.get(EPOCH_CLAIM)
        # Constant-time compare is not needed here: the epoch is a public counter, not a secret.
        return not isinstance(epoch, int) or epoch != users.token_epoch(email) or users.get(email) is None

    @jwt.user_lookup_loader
    def _load_user(header: dict[str, Any], payload: dict[str, Any]) -> User | None:
        return users.get(str(payload.get("sub")))

    return jwt


def issue_token(user: User, users: UserStore) -> str:
    """An access token for `user` bound to its current token epoch."""
    return create_access_token(
        identity=user.email,
        additional_claims={ROLE_CLAIM: user.role.value, EPOCH_CLAIM: users.token_epoch(user.email)},
    )
