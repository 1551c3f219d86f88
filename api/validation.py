"""Request parsing helpers shared by the blueprints. Each raises ApiError naming the field."""
from __future__ import annotations

from typing import Any

from flask import request

from api.responses import ApiError
from config.instruments import Symbol, UnknownSymbolError, canonical_symbol
from domain.parsing import NumberError, parse_int
from domain.tickers import StrategyName, TickerValidationError, parse_strategy

MAX_TEXT = 2048
# Deeper than any request this API takes (risk limits nest two levels). Python's json recurses once
# per level, so a 64 KB body of "[" raises RecursionError, which get_json(silent=True) does not
# catch: the depth is checked on the raw bytes before anything parses them.
MAX_JSON_DEPTH = 32
_OPENERS = frozenset(b"[{")
_CLOSERS = frozenset(b"]}")
_QUOTE, _BACKSLASH = ord('"'), ord("\\")


def json_too_deep(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether the arrays/objects in `raw` nest deeper than `limit` (brackets inside strings do not
    count). Linear in the body, stops at the first level past the limit."""
    depth = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == _BACKSLASH:
                escaped = True
            elif byte == _QUOTE:
                in_string = False
        elif byte == _QUOTE:
            in_string = True
        elif byte in _OPENERS:
            depth += 1
            if depth > limit:
                return True
        elif byte in _CLOSERS:
            depth -= 1
    return False


def json_body(*, required: bool = True) -> dict[str, Any]:
    """The request's JSON object. Non-JSON -> 415, malformed or nested deeper than MAX_JSON_DEPTH
    -> 400, not an object -> 400. Every view reads its body through here."""
    if not request.content_length and not request.data:
        if required:
            raise ApiError(400, "request body is empty; send a JSON object", field="body")
        return {}
    if not request.is_json:
        raise ApiError(415, "request body must be JSON (Content-Type: application/json)", field="body",
                       error="unsupported media type")
    if json_too_deep(request.get_data(cache=True)):
        raise ApiError(400, f"request body nests arrays/objects deeper than {MAX_JSON_DEPTH} levels", field="body")
    payload = request.get_json(silent=True)
    if payload is None:
        literal_null = request.get_data(cache=True).strip() == b"null"  # valid JSON, just not an object
        raise ApiError(400, "request body must be a JSON object" if literal_null else "request body is not valid JSON",
                       field="body")
    if not isinstance(payload, dict):
        raise ApiError(400, "request body must be a JSON object", field="body")
    return payload


def strategy_arg(raw: object) -> StrategyName:
    if raw is None or raw == "":
        raise ApiError(400, "strategy is required (ema, supertrend or zeroday)", field="strategy")
    try:
        return parse_strategy(raw)
    except TickerValidationError as exc:
        raise ApiError(400, f"strategy: {exc.message}", field="strategy") from None


def symbol_arg(raw: object, field: str = "symbol") -> Symbol:
    if raw is None or raw == "":
        raise ApiError(400, f"{field} is required", field=field)
    try:
        return canonical_symbol(raw)
    except UnknownSymbolError as exc:
        raise ApiError(400, f"{field}: {exc}", field=field) from None


def text_field(payload: dict[str, Any], name: str, *, max_length: int = MAX_TEXT) -> str:
    raw = payload.get(name)
    if not isinstance(raw, str) or not raw.strip():
        raise ApiError(400, f"{name} must be a non-empty string", field=name)
    if len(raw) > max_length:
        raise ApiError(400, f"{name} is too long (at most {max_length} characters)", field=name)
    return raw.strip()


def int_query(name: str, default: int, minimum: int, maximum: int) -> int:
    """Query parameter `name` as a whole number in [minimum, maximum]; absent or empty -> default."""
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return parse_int(raw, minimum, maximum)
    except NumberError as exc:
        raise ApiError(400, f"{name} {exc.message}", field=name) from None
