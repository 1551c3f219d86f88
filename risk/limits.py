"""Risk limits: what they are, how they are validated, how they persist in Redis.

Stored as one JSON document at `risk:limits` so an update is a single atomic SET and a reader
never sees half an edit. `None` means "no limit" for every optional field.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal
from typing import Any, Mapping

from config.instruments import UnknownSymbolError, canonical_symbol
from domain.parsing import NumberError, parse_decimal, parse_int

MAX_CONTRACTS = 100_000
MAX_RATE = 10_000
MAX_MONEY = Decimal("100000000")


class LimitsValidationError(ValueError):
    """A PUT /api/risk payload is invalid. `field` names the offending field (dotted for maps)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class RiskLimits:
    # Daily loss limits are positive amounts (USD): the scope halts when realized + unrealized
    # P&L since the session start is <= -limit.
    daily_loss_limit_global: Decimal | None = None
    daily_loss_limit_per_strategy: Decimal | None = None  # default for every strategy
    daily_loss_limit_by_strategy: dict[str, Decimal] = field(default_factory=dict)  # overrides
    max_position: int | None = None  # |position| per (strategy, symbol, broker); default for every symbol
    max_position_by_symbol: dict[str, int] = field(default_factory=dict)
    max_order_quantity: int | None = None
    max_orders_per_minute: int | None = 30  # per (strategy, symbol): the runaway guard
    sizing_mode: str = "fixed"  # "fixed" (ticker quantities) | "risk" (risk amount / stop distance)
    risk_per_trade: Decimal | None = None  # USD risked per trade when sizing_mode == "risk"

    def strategy_loss_limit(self, strategy: str) -> Decimal | None:
        return self.daily_loss_limit_by_strategy.get(strategy, self.daily_loss_limit_per_strategy)

    def position_limit(self, symbol: str) -> int | None:
        return self.max_position_by_symbol.get(symbol, self.max_position)

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for name, value in doc.items():
            if isinstance(value, Decimal):
                doc[name] = str(value)
            elif isinstance(value, dict):
                doc[name] = {k: (str(v) if isinstance(v, Decimal) else v) for k, v in value.items()}
        return doc

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> "RiskLimits":
        return apply_update(RiskLimits(), doc)


_STRATEGIES = ("ema", "supertrend", "zeroday")


def _money(name: str, raw: Any) -> Decimal | None:
    if raw is None:
        return None
    try:
        value = parse_decimal(raw, kind="a positive amount")
    except NumberError:
        raise LimitsValidationError(name, "must be a positive amount or null") from None
    if value <= 0 or value > MAX_MONEY:
        raise LimitsValidationError(name, f"must be greater than 0 and at most {MAX_MONEY}")
    return value


def _count(name: str, raw: Any, maximum: int) -> int | None:
    if raw is None:
        return None
    try:
        return parse_int(raw, 1, maximum)
    except NumberError as exc:
        raise LimitsValidationError(name, f"{exc.message} (or null)") from None


def _mapping(name: str, raw: Any) -> Mapping[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        raise LimitsValidationError(name, "must be an object")
    return raw


_FIELDS = {f for f in RiskLimits.__dataclass_fields__}  # type: ignore[attr-defined]


def apply_update(current: RiskLimits, payload: Mapping[str, Any]) -> RiskLimits:
    """Validate a (partial) update and return the new limits. Unknown fields are rejected so a typo
    ("max_postion") does not silently leave a limit off."""
    if not isinstance(payload, Mapping):
        raise LimitsValidationError("body", "must be a JSON object")
    for name in payload:
        if name not in _FIELDS:
            raise LimitsValidationError(str(name), f"unknown limit; known: {', '.join(sorted(_FIELDS))}")
    changes: dict[str, Any] = {}
    if "daily_loss_limit_global" in payload:
        changes["daily_loss_limit_global"] = _money("daily_loss_limit_global", payload["daily_loss_limit_global"])
    if "daily_loss_limit_per_strategy" in payload:
        changes["daily_loss_limit_per_strategy"] = _money("daily_loss_limit_per_strategy",
                                                          payload["daily_loss_limit_per_strategy"])
    if "daily_loss_limit_by_strategy" in payload:
        by: dict[str, Decimal] = {}
        for strat, raw in _mapping("daily_loss_limit_by_strategy", payload["daily_loss_limit_by_strategy"]).items():
            name = f"daily_loss_limit_by_strategy.{strat}"
            if strat not in _STRATEGIES:
                raise LimitsValidationError(name, f"unknown strategy; one of {', '.join(_STRATEGIES)}")
            value = _money(name, raw)
            if value is not None:
                by[strat] = value
        changes["daily_loss_limit_by_strategy"] = by
    if "max_position" in payload:
        changes["max_position"] = _count("max_position", payload["max_position"], MAX_CONTRACTS)
    if "max_position_by_symbol" in payload:
        pos: dict[str, int] = {}
        for raw_symbol, raw in _mapping("max_position_by_symbol", payload["max_position_by_symbol"]).items():
            try:
                symbol = canonical_symbol(raw_symbol)
            except UnknownSymbolError as exc:
                raise LimitsValidationError(f"max_position_by_symbol.{str(raw_symbol)[:20]}", str(exc)) from None
            value = _count(f"max_position_by_symbol.{symbol}", raw, MAX_CONTRACTS)
            if value is not None:
                pos[symbol] = value
        changes["max_position_by_symbol"] = pos
    if "max_order_quantity" in payload:
        changes["max_order_quantity"] = _count("max_order_quantity", payload["max_order_quantity"], MAX_CONTRACTS)
    if "max_orders_per_minute" in payload:
        changes["max_orders_per_minute"] = _count("max_orders_per_minute", payload["max_orders_per_minute"], MAX_RATE)
    if "sizing_mode" in payload:
        mode = payload["sizing_mode"]
        if mode not in ("fixed", "risk"):
            raise LimitsValidationError("sizing_mode", "must be 'fixed' or 'risk'")
        changes["sizing_mode"] = mode
    if "risk_per_trade" in payload:
        changes["risk_per_trade"] = _money("risk_per_trade", payload["risk_per_trade"])
    updated = replace(current, **changes)
    if updated.sizing_mode == "risk" and updated.risk_per_trade is None:
        raise LimitsValidationError("risk_per_trade", "is required when sizing_mode is 'risk'")
    return updated


def load_limits(redis_client: Any, key: str) -> RiskLimits:
    raw = redis_client.get(key)
    if not raw:
        return RiskLimits()
    return RiskLimits.from_json(json.loads(raw))


def save_limits(redis_client: Any, key: str, limits: RiskLimits) -> None:
    redis_client.set(key, json.dumps(limits.to_json(), sort_keys=True))
