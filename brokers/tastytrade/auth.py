"""Tastytrade login: the OAuth endpoints, what a refused token request says, what cannot be a
refresh token, the watch that keeps a rotated refresh token.

The adapter (brokers/tastytrade/adapter.py) owns the state (session, stored token, OAuth state in
Redis); what is here needs none of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx2
from tastytrade import API_URL
from tastytrade.session import Session

from brokers.tastytrade.http_trace import event_hooks

AUTHORIZE_URL = "https://my.tastytrade.com/auth.html"
OAUTH_SCOPES = "read trade"
TOKEN_PATH = "/oauth/token"


def oauth_error_text(payload: object, status: int) -> str:
    """The reason in a refused token request, in either error shape seen from Tastytrade: its API
    envelope `{"error": {"code", "message"}}` (developer.tastytrade.com/reference/errors) or
    RFC 6749 §5.2's `{"error": "invalid_grant", "error_description": ...}`."""
    error = payload.get("error") if isinstance(payload, dict) else None
    detail = payload.get("error_description") if isinstance(payload, dict) else None
    if isinstance(error, dict):
        error, detail = error.get("code"), error.get("message")
    text = ": ".join(str(part) for part in (error, detail) if part)
    return text or f"HTTP {status}"


def refresh_token_problem(text: str) -> str | None:
    """Why `text` cannot be a refresh token made with "Create Grant", or None. Only what is
    certain is refused: a redirect URL or an authorization code's query belongs to the other login,
    and a token has no spaces or quotes. Whether it is valid only the token endpoint can say."""
    if not text:
        return "no refresh token given"
    if "://" in text or "code=" in text:
        return ("this is the redirect URL of the authorize-URL login, not a refresh token: "
                "send it as authorizationCode")
    if any(ch.isspace() or ch in "<>\"'\\" or not ch.isprintable() for ch in text):
        return "a refresh token has no spaces or quotes: paste it exactly as Create Grant shows it"
    return None


@dataclass(slots=True)
class TokenWatch:
    """Watches one SDK Session's requests to the token endpoint (an httpx2 response hook).

    The SDK's `Session.refresh` reads only `access_token` and `expires_in` from the answer, so a
    refresh token the endpoint rotates (RFC 6749 §6: the server MAY issue a new one, and the
    client MUST then discard the old one) would be dropped, and the next start-up would log in
    with a token that may be revoked. The hook hands the new one to the session at once (its next
    refresh sends it); the adapter stores it. A refusal's reason is kept too, because the SDK's
    error parser understands only Tastytrade's envelope, not the RFC 6749 shape."""

    session: Session
    refusal: str | None = None

    def install(self) -> None:
        self.session._client.event_hooks["response"].append(self.on_response)

    async def on_response(self, response: httpx2.Response) -> None:
        request = response.request
        if request.method != "POST" or request.url.path != TOKEN_PATH:
            return
        await response.aread()  # the SDK reads it again: the body is cached
        try:
            payload = response.json()
        except ValueError:
            payload = None
        if response.status_code // 100 != 2:
            self.refusal = oauth_error_text(payload, response.status_code)
            return
        self.refusal = None
        rotated = payload.get("refresh_token") if isinstance(payload, dict) else None
        if isinstance(rotated, str) and rotated and rotated != self.session.refresh_token:
            self.session.refresh_token = rotated


async def exchange_code(body: dict[str, str], *, timeout: float,
                        transport: httpx2.AsyncBaseTransport | None) -> dict[str, Any]:
    """POST an authorization-code grant to the token endpoint; its JSON answer. The SDK has no
    authorization-code helper, so this one request uses httpx2 directly, with the same transport,
    base URL and headers the SDK uses. A refusal raises RuntimeError with Tastytrade's reason."""
    kwargs: dict[str, Any] = {"base_url": API_URL, "timeout": timeout, "event_hooks": event_hooks()}
    if transport is not None:
        kwargs["transport"] = transport
    async with httpx2.AsyncClient(**kwargs) as client:
        response = await client.post(TOKEN_PATH, json=body, headers={"Accept": "application/json"})
    if response.status_code // 100 != 2:
        try:
            payload = response.json()
        except ValueError:
            payload = {}
        raise RuntimeError(oauth_error_text(payload, response.status_code))
    data = response.json()
    return dict(data) if isinstance(data, dict) else {}
