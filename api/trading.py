"""Strategy start/stop, manual triggers and positions.

Without a strategy engine in the process (services.engine is None) start/stop record the desired
running set in Redis (`engine:running`) for the engine to pick up, and the manual triggers answer
503: they never pretend an order was placed.
"""
from __future__ import annotations

import logging

from flask import Blueprint, Response, request

from api.responses import ApiError, ok
from api.services import Services, get_services
from api.validation import json_body, strategy_arg, symbol_arg
from auth.decorators import admin_required, viewer_required
from domain.tickers import StrategyName

log = logging.getLogger(__name__)

trading_bp = Blueprint("trading", __name__, url_prefix="/api")

ZERODAY_ACTIONS = ("call", "put", "close")
EMA_ACTIONS = ("LONG", "SHORT", "CLOSE")


def _running_key(services: Services) -> str:
    return services.store.key("engine", "running")


@trading_bp.get("/start-trading")
@admin_required
def start_trading() -> tuple[Response, int]:
    """Start a strategy for its trade-enabled tickers.

    Query: `strategy=ema|supertrend|zeroday`. Answers `{success, message}`; nothing enabled -> 400;
    a second start answers "already running".
    """
    strategy = strategy_arg(request.args.get("strategy"))
    services = get_services()
    enabled = [c.symbol for c in services.tickers.enabled(strategy)]
    if not enabled:
        raise ApiError(400, f"no {strategy.value} tickers have trade_enabled=true; enable one with add-ticker first",
                       field="strategy")
    if services.engine is None:
        added = services.store.redis.sadd(_running_key(services), strategy.value)
        if not added:
            return ok(message=f"{strategy.value} is already running")
        log.info("start requested for %s (%s); no engine in this process", strategy.value, ", ".join(enabled))
        return ok(message=f"{strategy.value} marked as running for {', '.join(enabled)}; the strategy engine is "
                          "not active in this process, so nothing trades until it starts")
    result = services.engine.start_strategy(strategy.value)
    started, already = list(result.started), list(result.already_running)
    if not started and already:
        return ok(message=f"{strategy.value} is already running for {', '.join(already)}")
    parts = [f"{strategy.value} started for {', '.join(started) or 'no tickers'}"]
    if already:
        parts.append(f"already running for {', '.join(already)}")
    log.info("start %s: started=%s already=%s", strategy.value, started, already)
    return ok(message="; ".join(parts))


@trading_bp.get("/stop-trading")
@admin_required
def stop_trading() -> tuple[Response, int]:
    """Stop every ticker of a strategy. Query: `strategy=...`. Answers `{success, message}`."""
    strategy = strategy_arg(request.args.get("strategy"))
    services = get_services()
    if services.engine is None:
        removed = services.store.redis.srem(_running_key(services), strategy.value)
        log.info("stop requested for %s; no engine in this process", strategy.value)
        return ok(message=f"{strategy.value} stopped" if removed else f"{strategy.value} was not running")
    stopped = list(services.engine.stop_strategy(strategy.value))
    log.info("stop %s: %s", strategy.value, stopped)
    if not stopped:
        return ok(message=f"{strategy.value} was not running")
    return ok(message=f"{strategy.value} stopped for {', '.join(stopped)}")


def _manual(strategy: StrategyName, allowed: tuple[str, ...], normalize: str) -> tuple[Response, int]:
    payload = json_body()
    ticker = symbol_arg(payload.get("ticker"), "ticker")
    if strategy is StrategyName.ZERODAY and ticker != "SPX":
        raise ApiError(400, "ticker: the 0DTE manual trigger trades SPX options only", field="ticker")
    if strategy is StrategyName.EMA and ticker == "SPX":
        raise ApiError(400, "ticker: SPX is an index; use manual-trigger for 0DTE options", field="ticker")
    raw_action = payload.get("action")
    action = raw_action.strip().upper() if isinstance(raw_action, str) else None
    if action is None or action not in (a.upper() for a in allowed):
        raise ApiError(400, f"action must be one of {', '.join(allowed)}", field="action")
    action = action.lower() if normalize == "lower" else action
    services = get_services()
    if services.engine is None:
        raise ApiError(503, "order path not available: the strategy engine and brokers are not running in this "
                            "process", error="service unavailable")
    log.info("manual trigger %s %s %s", strategy.value, ticker, action)
    try:
        message = services.engine.manual_trigger(strategy.value, ticker, action)
    except (ValueError, LookupError) as exc:
        raise ApiError(400, str(exc), field="ticker") from None
    return ok(message=str(message))


@trading_bp.post("/manual-trigger")
@admin_required
def manual_trigger() -> tuple[Response, int]:
    """Manual 0DTE trade. Body: `{"ticker": "SPX", "action": "call"|"put"|"close"}` -> `{success, message}`.
    503 while no order path is running."""
    return _manual(StrategyName.ZERODAY, ZERODAY_ACTIONS, "lower")


@trading_bp.post("/ema-manual-trigger")
@admin_required
def ema_manual_trigger() -> tuple[Response, int]:
    """Manual EMA position. Body: `{"ticker": "/MES", "action": "LONG"|"SHORT"|"CLOSE"}` (any case)
    -> `{success, message}`. 503 while no order path is running."""
    return _manual(StrategyName.EMA, EMA_ACTIONS, "upper")


@trading_bp.get("/current-position")
@viewer_required
def current_position() -> tuple[Response, int]:
    """The strategy's position in a ticker. Query: `ticker=SPX&strategy=zeroday` -> `{success, data}`
    where data is the position object or null (also null while no order manager runs)."""
    strategy = strategy_arg(request.args.get("strategy"))
    ticker = symbol_arg(request.args.get("ticker"), "ticker")
    services = get_services()
    if services.orders is None or services.engine is None:
        return ok(data=None)
    return ok(data=services.engine.current_position(strategy.value, ticker))
