"""Schwab login and tokens: the OAuth web flow's checks, the stored token's age, the injected
transport, and the redactor that keeps tokens and account numbers out of every SDK log line.

The adapter (brokers/schwab/adapter.py) owns the state (the SDK client, the OAuth state in Redis);
what is here needs none of it.

Why the redactor: schwab-py logs every response body at DEBUG (`schwab.client.base`), and
GET /accounts/accountNumbers returns *every* account number on the login with its hash. Turning
on DEBUG in production must not put account numbers or tokens into log files, so a filter sits on
each SDK logger and rewrites the message before any handler sees it.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlparse

import httpx
import httpx2
import schwab.auth

from brokers.errors import AuthenticationRequired
from domain.orders import SCHWAB
from domain.redaction import Redactor

TOKEN_ENDPOINT: str = schwab.auth.TOKEN_ENDPOINT
REFRESH_TOKEN_LIFETIME = timedelta(days=7)  # Schwab's documented refresh-token life
REFRESH_TOKEN_WARN_AGE = timedelta(days=6)
OAUTH_STATE_TTL_SECONDS = 15 * 60  # a login page left open longer than this must start again
MAX_REDIRECT_URL_LENGTH = 4096

# Errors that prove the request never reached Schwab (no connection was made / no slot in pool).
NOT_SENT_ERRORS: tuple[type[BaseException], ...] = (
    httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout,
    httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout,
)
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx2.TransportError, httpx.TransportError)
HTTP_STATUS_ERRORS: tuple[type[BaseException], ...] = (httpx2.HTTPStatusError, httpx.HTTPStatusError)

# schwab.auth builds its OAuth2Client from a module global; swapping it is process-wide, so it is
# serialised. Only taken when a transport is injected (tests); production never patches anything.
_SDK_PATCH_LOCK = threading.Lock()


class LoginFlowError(AuthenticationRequired):
    """The pasted redirect URL / OAuth state is unusable. Still logged out; message says why."""


def validate_redirect_url(redirect_url: str, expected_state: str, callback_url: str) -> str:
    """The pasted redirect URL, stripped, once it is shown to be the answer to our own login:
    the configured callback URL, one code, and the OAuth state we issued (CSRF)."""
    if not isinstance(redirect_url, str) or not redirect_url.strip():
        raise LoginFlowError("paste the full URL your browser was redirected to", broker=SCHWAB)
    url = redirect_url.strip()
    if len(url) > MAX_REDIRECT_URL_LENGTH:
        raise LoginFlowError("the pasted URL is too long to be a Schwab redirect", broker=SCHWAB)
    parsed, expected = urlparse(url), urlparse(callback_url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise LoginFlowError("the pasted text is not a URL; paste the whole address from the browser bar", broker=SCHWAB)
    if (parsed.scheme, parsed.netloc, parsed.path.rstrip("/")) != (
        expected.scheme, expected.netloc, expected.path.rstrip("/")
    ):
        raise LoginFlowError(
            f"the pasted URL does not start with the configured callback URL {callback_url}", broker=SCHWAB
        )
    query = parse_qs(parsed.query)
    if len(query.get("code", [])) != 1 or len(query.get("state", [])) != 1:
        raise LoginFlowError("the pasted URL has no authorization code and state; log in again", broker=SCHWAB)
    if query["state"][0] != expected_state:
        # CSRF protection: this redirect belongs to a different (or forged) login attempt.
        raise LoginFlowError("the login state does not match; start the login again", broker=SCHWAB)
    return url


def refresh_expires_at(wrapped: dict[str, Any] | None) -> datetime | None:
    """When the stored login's refresh token dies. schwab-py's `creation_timestamp` is when the
    *refresh* token was issued; Schwab refresh tokens live 7 days."""
    if not wrapped or "creation_timestamp" not in wrapped:
        return None
    issued = datetime.fromtimestamp(int(wrapped["creation_timestamp"]), tz=timezone.utc)
    return issued + REFRESH_TOKEN_LIFETIME


def token_secrets(wrapped: dict[str, Any]) -> tuple[Any, ...]:
    """The secret values in a stored token blob ({"creation_timestamp", "token": {...}} or the
    bare token), for the redactor."""
    token = wrapped.get("token") if isinstance(wrapped.get("token"), dict) else wrapped
    assert isinstance(token, dict)
    return tuple(token.get(k) for k in ("access_token", "refresh_token", "id_token"))


@contextmanager
def sdk_transport(transport: httpx2.BaseTransport | None) -> Iterator[None]:
    """Make the OAuth2Client that schwab.auth builds use the injected transport (tests only)."""
    if transport is None:
        yield
        return
    with _SDK_PATCH_LOCK:
        original = schwab.auth.OAuth2Client

        class _TransportBoundOAuth2Client(original):  # type: ignore[valid-type, misc]
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                kwargs.setdefault("transport", transport)
                super().__init__(*args, **kwargs)

        schwab.auth.OAuth2Client = _TransportBoundOAuth2Client  # type: ignore[misc]
        try:
            yield
        finally:
            schwab.auth.OAuth2Client = original  # type: ignore[misc]


# --------------------------------------------------------------------------------------------
# Redaction of the SDK's log records
# --------------------------------------------------------------------------------------------
# Loggers whose records can carry response bodies, URLs with account hashes, or token requests.
SDK_LOGGERS = (
    "schwab", "schwab.client.base", "schwab.auth", "schwab.debug", "schwab.streaming",
    "authlib", "httpx2", "httpx", "httpcore", "httpcore2",
)

# The one process-wide redactor on those loggers: the adapter registers every token, app secret,
# account number and account hash it learns, and the SDK loggers are process-wide too.
REDACTOR = Redactor()
_installed = False
_install_lock = threading.Lock()


def install() -> Redactor:
    """Attach the one process-wide redactor to every SDK logger (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            for name in SDK_LOGGERS:
                logging.getLogger(name).addFilter(REDACTOR)
            _installed = True
    return REDACTOR
