"""Broker OAuth endpoints (Schwab, Tastytrade) and broker status. Admin only, except the read-only
status list.

The flows live in `services.brokers` (the broker issue); this module validates input, maps broker
errors to clear JSON and makes sure no token or secret ever appears in a response.
"""
from __future__ import annotations

import logging
from typing import Any, Callable
from urllib.parse import urlsplit

from flask import Blueprint, Response

from api.contract import Answer, endpoint, valid_body
from api.responses import ApiError, fail, ok
from api.schemas import (ConnectionReply, ListReply, MessageReply, SchwabLinkBody, SchwabTokenLinkBody,
                         TastyCodeBody)
from api.services import Services, get_services
from api.validation import MAX_TEXT, json_body, text_field
from auth.decorators import admin_required, viewer_required
from brokers.errors import AuthenticationRequired, BrokerConfigError, BrokerError, TemporaryBrokerError
from brokers.registry import BrokerNotConfigured
from brokers.tastytrade.auth import refresh_token_problem

log = logging.getLogger(__name__)

brokers_bp = Blueprint("brokers", __name__, url_prefix="/api")

SCHWAB = "schwab"
TASTYTRADE = "tastytrade"
_DISPLAY = {SCHWAB: "Schwab", TASTYTRADE: "Tastytrade"}
_REQUIRED_SETTINGS = {SCHWAB: ("SCHWAB_API_KEY", "SCHWAB_APP_SECRET"),
                      TASTYTRADE: ("TASTYTRADE_CLIENT_ID", "TASTYTRADE_CLIENT_SECRET")}
MAX_BARE_CODE = 512
# Response keys that may carry credentials; dropped from anything a broker flow returns.
_SECRET_WORDS = ("token", "secret", "password", "code", "key")
_SAFE_SUFFIXES = ("_expires_at",)
# What _call maps the broker errors to.
BROKER_ERRORS = {400: "the broker rejected the login (`code` broker_authentication)",
                 502: "the broker failed or is unreachable (`code` broker_error, broker_unavailable)",
                 503: "the broker is not configured or not running here (`code` service_unavailable, "
                      "broker_configuration)"}
URL_ANSWER = [Answer(200, "the OAuth login URL", None, "text/plain")]
CONNECTED = [Answer(200, "connected; tokens stored encrypted, never returned", MessageReply)]


def _missing_settings(services: Services, broker: str) -> list[str]:
    values = {
        "SCHWAB_API_KEY": services.settings.schwab_api_key,
        "SCHWAB_APP_SECRET": services.settings.schwab_app_secret,
        "TASTYTRADE_CLIENT_ID": services.settings.tastytrade_client_id,
        "TASTYTRADE_CLIENT_SECRET": services.settings.tastytrade_client_secret,
    }
    return [name for name in _REQUIRED_SETTINGS[broker] if not values[name]]


def _brokers(broker: str) -> Any:
    services = get_services()
    if services.brokers is None:
        missing = _missing_settings(services, broker)
        reason = (f"set {' and '.join(missing)}" if missing
                  else "the broker service is not running in this process")
        raise ApiError(503, f"{_DISPLAY[broker]} is not available: {reason}", code="service_unavailable")
    return services.brokers


def safe_result(result: object) -> dict[str, Any]:
    """Copy of a broker flow's answer without any field that could hold a credential."""
    if not isinstance(result, dict):
        return {}
    return {k: v for k, v in result.items()
            if not any(w in k.lower() for w in _SECRET_WORDS) or k.lower().endswith(_SAFE_SUFFIXES)}


def _call(broker: str, action: Callable[[Any], Any]) -> Any:
    registry = _brokers(broker)
    name = _DISPLAY[broker]
    try:
        return action(registry)
    except BrokerNotConfigured:  # paper quick start: no credentials for the real adapter
        missing = _missing_settings(get_services(), broker)
        reason = f"set {' and '.join(missing)}" if missing else "its credentials are not configured"
        raise ApiError(503, f"{name} is not available: {reason}", code="service_unavailable") from None
    except BrokerConfigError as exc:
        raise ApiError(503, f"{name} is misconfigured: {exc.message}", code="broker_configuration") from None
    except AuthenticationRequired as exc:
        raise ApiError(400, f"{name} rejected the login: {exc.message}", code="broker_authentication") from None
    except TemporaryBrokerError as exc:
        raise ApiError(502, f"{name} is temporarily unreachable: {exc.message}; try again",
                       code="broker_unavailable") from None
    except BrokerError as exc:
        raise ApiError(502, f"{name} error: {exc.message}", code="broker_error") from None


def _authorize_url(broker: str) -> Response:
    url = _call(broker, lambda b: b.authorize_url(broker))
    return Response(str(url), status=200, mimetype="text/plain")


def _login_result(broker: str, text: str) -> tuple[Response, int]:
    return _login_answer(broker, lambda b: b.complete_login(broker, text))


def _login_answer(broker: str, login: Callable[[Any], Any]) -> tuple[Response, int]:
    result = safe_result(_call(broker, login))
    log.info("%s login completed", broker)
    message = str(result.pop("message", f"{_DISPLAY[broker]} connected"))
    result.pop("success", None)
    return ok(message=message, **result)


def _refresh(broker: str) -> tuple[Response, int]:
    result = safe_result(_call(broker, lambda b: b.refresh(broker)))
    message = str(result.pop("message", f"{_DISPLAY[broker]} token refreshed"))
    result.pop("success", None)
    return ok(message=message, **result)


def _schwab_login(body: dict[str, Any], name: str) -> tuple[Response, int]:
    """Finish the Schwab login with the redirect URL in `body[name]`."""
    link = text_field(body, name, max_length=MAX_TEXT)
    if not _is_http_url(link):
        raise ApiError(400, f"{name} must be the full https:// URL Schwab redirected to", field=name)
    return _login_result(SCHWAB, link)


def _is_http_url(text: str) -> bool:
    parts = urlsplit(text)
    return parts.scheme in ("http", "https") and bool(parts.netloc)


@brokers_bp.get("/schwab/authorize-url")
@admin_required
@endpoint(answers=URL_ANSWER, errors=BROKER_ERRORS)
def schwab_authorize_url() -> Response:
    """The Schwab OAuth login URL, as a text/plain body."""
    return _authorize_url(SCHWAB)


@brokers_bp.get("/tasty/authorize-url")
@admin_required
@endpoint(answers=URL_ANSWER, errors=BROKER_ERRORS)
def tasty_authorize_url() -> Response:
    """The Tastytrade OAuth login URL, as a text/plain body."""
    return _authorize_url(TASTYTRADE)


@brokers_bp.post("/schwab/access-token")
@admin_required
@endpoint(body=SchwabLinkBody, answers=CONNECTED, errors=BROKER_ERRORS)
def schwab_access_token() -> tuple[Response, int]:
    """Finish the Schwab login. Body: `{"authorizationLink": "<the full redirect URL>"}` ->
    `{success, message}`. The tokens are stored encrypted and never returned."""
    return _schwab_login(json_body(), "authorizationLink")


@brokers_bp.post("/refresh-token-link")
@admin_required
@endpoint(body=SchwabTokenLinkBody, answers=CONNECTED, errors=BROKER_ERRORS)
def schwab_token_link() -> tuple[Response, int]:
    """The Schwab login as the dashboard's token dialog sends it. Body: `{"refresh_token_link":
    "<the full redirect URL>"}` (or `{"token": ...}`) -> the same as `/api/schwab/access-token`."""
    body = json_body()
    return _schwab_login(body, "refresh_token_link" if "refresh_token_link" in body or "token" not in body else "token")


@brokers_bp.post("/tasty/access-token")
@admin_required
@endpoint(body=TastyCodeBody, answers=CONNECTED, errors=BROKER_ERRORS)
def tasty_access_token() -> tuple[Response, int]:
    """Finish the Tastytrade login, one of two ways, named by the field sent:
    `{"authorizationCode": "<redirect URL or bare code>"}` after the authorize URL, or
    `{"refreshToken": "<token>"}` with a refresh token made under OAuth Applications > Manage >
    Create Grant (a personal application) -> `{success, message}`. The tokens are stored encrypted
    and never returned."""
    body = valid_body(TastyCodeBody)
    if body.refreshToken is not None:
        if body.authorizationCode is not None:
            raise ApiError(400, "send either authorizationCode or refreshToken, not both", field="refreshToken")
        token = body.refreshToken.strip()
        problem = refresh_token_problem(token)
        if problem is not None:
            raise ApiError(400, f"refreshToken: {problem}", field="refreshToken")
        return _login_answer(TASTYTRADE, lambda b: b.login_with_refresh_token(TASTYTRADE, token))
    code = (body.authorizationCode or "").strip()
    if not code:
        raise ApiError(400, "send authorizationCode (the redirect URL or code of the authorize-URL login) or "
                       "refreshToken (a refresh token made with Create Grant)", field="authorizationCode")
    if not _is_http_url(code):
        if len(code) > MAX_BARE_CODE or any(ch.isspace() or ch in "<>\"'\\" for ch in code):
            raise ApiError(400, "authorizationCode must be the redirect URL or the bare code (a refresh token "
                           "made with Create Grant is sent as refreshToken)", field="authorizationCode")
    return _login_result(TASTYTRADE, code)


@brokers_bp.post("/schwab/refresh-token")
@admin_required
@endpoint(answers=[Answer(200, "refreshed", MessageReply)], errors=BROKER_ERRORS)
def schwab_refresh_token() -> tuple[Response, int]:
    """Refresh the Schwab access token now -> `{success, message}`."""
    return _refresh(SCHWAB)


@brokers_bp.post("/tasty/refresh-token")
@admin_required
@endpoint(answers=[Answer(200, "refreshed", MessageReply)], errors=BROKER_ERRORS)
def tasty_refresh_token() -> tuple[Response, int]:
    """Refresh the Tastytrade access token now -> `{success, message}`."""
    return _refresh(TASTYTRADE)


@brokers_bp.get("/get-tasty-connection")
@admin_required
@endpoint(answers=[Answer(200, "`success` says whether Tastytrade is connected", ConnectionReply)],
          errors=BROKER_ERRORS)
def get_tasty_connection() -> tuple[Response, int]:
    """Whether Tastytrade is connected -> `{success: <connected>, message}` (200 either way)."""
    result = safe_result(_call(TASTYTRADE, lambda b: b.connection(TASTYTRADE)))
    connected = bool(result.get("connected"))
    message = str(result.get("message") or ("Tastytrade connected" if connected else "Tastytrade not connected"))
    if connected:
        return ok(message=message, connected=True)
    response, _ = fail(200, message, error="not connected")
    return response, 200


@brokers_bp.get("/brokers")
@viewer_required
@endpoint(answers=[Answer(200, "one status per broker", ListReply)],
          errors={502: "a broker's status failed", 503: "the broker service is not running here"})
def broker_statuses() -> tuple[Response, int]:
    """Status of every broker (connected, masked account, token expiry) -> `{success, data: [...]}`."""
    services = get_services()
    if services.brokers is None:
        raise ApiError(503, "broker service is not running in this process", error="service unavailable")
    try:
        statuses = services.brokers.statuses()
    except BrokerError as exc:
        raise ApiError(502, f"broker status failed: {exc.message}", error="broker error") from None
    return ok(data=[safe_result(s) for s in statuses])
