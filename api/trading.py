"""Strategy start/stop, manual triggers and positions.

Without a strategy engine in the process (services.engine is None) start/stop record the desired
running set in Redis (`engine:running`) for the engine to pick up, and the manual triggers answer
503: they never pretend an order was placed.

Manual triggers answer `success: true` only when at least one broker acknowledged the order (or
already holds the target); a partial refusal says so (`partial: true`, per-broker `results`).
Time rules (engine/manual.py) are checked first with the API clock, `services.time_ns`
(a zero-argument callable returning ns; default `time.time_ns`).
"""
from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request

from api.contract import Answer, endpoint
from api.responses import ApiError, fail, ok
from api.schemas import (EmaTriggerBody, ManualRefusal, ManualReply, MessageReply, PositionQuery, PositionReply,
                         SpxButtonBody, StrategyQuery, ZerodayTriggerBody)
from api.services import Services, get_services
from api.validation import json_body, strategy_arg, symbol_arg
from auth.decorators import admin_required, viewer_required
from domain.tickers import StrategyName
from engine.manual import NEW_YORK, ManualOutcome, Refusal, session_refusal, zeroday_entry_refusal
from engine.supervisor import NoRealPriceSource

log = logging.getLogger(__name__)

trading_bp = Blueprint("trading", __name__, url_prefix="/api")

ZERODAY_ACTIONS = ("call", "put", "close")
# A dashboard build labels the 0DTE buttons Long/Short and sends "long"/"short": the strategy holds
# long premium only, so a long view is the call and a short view the put.
ZERODAY_ALIASES = {"long": "call", "short": "put"}
EMA_ACTIONS = ("LONG", "SHORT", "CLOSE")
MANUAL_ANSWERS = [
    Answer(200, "at least one broker acknowledged the order (or already holds the target)", ManualReply),
    Answer(409, "refused, nothing sent: a time rule (`code` market_closed, outside_entry_window, ...), no real "
                "price source in live mode (no_real_price_source) or every broker refused (risk denial, paused, "
                "rejected)", ManualRefusal),
    Answer(502, "sent, outcome unknown (`code` order_outcome_unknown): check /api/orders", ManualRefusal),
]
MANUAL_ERRORS = {503: "no order path runs in this process (the strategy engine and brokers are not running)"}
NO_REAL_PRICES = ("live mode and a ticker has no real price source (`code` no_real_price_source: SPX without a "
                  "broker stream)")


def _running_key(services: Services) -> str:
    return services.store.key("engine", "running")


@trading_bp.get("/start-trading")
@admin_required
@endpoint(query=StrategyQuery, answers=[Answer(200, "started, or already running", MessageReply)],
          errors={409: NO_REAL_PRICES})
def start_trading() -> tuple[Response, int]:
    """Start a strategy for its trade-enabled tickers.

    Query: `strategy=ema|supertrend|zeroday`. Answers `{success, message}`; nothing enabled -> 400;
    a second start answers "already running"; in live mode zeroday without a broker streaming SPX
    -> 409 `no_real_price_source` (nothing starts).
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
    try:
        result = services.engine.start_strategy(strategy.value)
    except NoRealPriceSource as exc:
        log.warning("start %s refused: %s", strategy.value, exc)
        return _refused(409, exc.code, str(exc))
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
@endpoint(query=StrategyQuery, answers=[Answer(200, "stopped, or was not running", MessageReply)])
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


def _now_ns(services: Services) -> int:
    """The API's wall clock (ns since the epoch). Injectable: `services.time_ns` is a
    zero-argument callable (tests pin the time); by default the system clock."""
    return int(services.time_ns())


def _time_rule(services: Services, strategy: StrategyName, ticker: str, action: str) -> Refusal | None:
    """Session/0DTE time rules (engine/manual.py) checked before anything is sent."""
    now_ns = _now_ns(services)
    if strategy is StrategyName.ZERODAY:
        if action == "close":  # closing is always allowed (a held 0DTE option must be closable)
            return None
        config = services.tickers.get(StrategyName.ZERODAY, ticker)
        if config is None:  # the engine answers "not configured" (400)
            return None
        return zeroday_entry_refusal(config, action, now_ns)
    return session_refusal(ticker, action, now_ns)


def _refused(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    # `error` is the sentence (the dashboard toasts it); `code` the word for programs.
    return fail(status, message, code=code, **extra)


def _answer(message: str, outcome: ManualOutcome) -> tuple[Response, int]:
    """200 only when at least one broker acknowledged the order (or already holds the target);
    409 when every broker refused it (nothing was sent); 502 when the outcome is unknown."""
    results = outcome.to_json()
    if outcome.acknowledged:
        partial = bool(outcome.refused or outcome.unknown)
        if outcome.already_at_target:
            message = f"{message} (already at target: nothing sent)"
        elif partial:
            others = ", ".join(f"{r.broker} {r.status}" for r in (*outcome.refused, *outcome.unknown))
            message = f"{message} (partial: not done at {others})"
        return ok(message=message, partial=partial, results=results)
    code = outcome.error_code()
    if code == "order_outcome_unknown":
        return _refused(502, code, f"{message} (sent, outcome unknown: check /api/orders)", results=results)
    return _refused(409, code, f"not executed, nothing was sent: {message}", results=results)


def _manual(strategy: StrategyName, allowed: tuple[str, ...], normalize: str,
            payload: dict[str, Any] | None = None) -> tuple[Response, int]:
    payload = json_body() if payload is None else payload
    ticker = symbol_arg(payload.get("ticker"), "ticker")
    if strategy is StrategyName.ZERODAY and ticker != "SPX":
        raise ApiError(400, "ticker: the 0DTE manual trigger trades SPX options only", field="ticker")
    if strategy is StrategyName.EMA and ticker == "SPX":
        raise ApiError(400, "ticker: SPX is an index; use manual-trigger for 0DTE options", field="ticker")
    raw_action = payload.get("action")
    action = raw_action.strip().upper() if isinstance(raw_action, str) else None
    if strategy is StrategyName.ZERODAY and action is not None:
        action = ZERODAY_ALIASES.get(action.lower(), action.lower()).upper()
    if action is None or action not in (a.upper() for a in allowed):
        also = " (or long, short for call, put)" if strategy is StrategyName.ZERODAY else ""
        raise ApiError(400, f"action must be one of {', '.join(allowed)}{also}", field="action")
    action = action.lower() if normalize == "lower" else action
    services = get_services()
    if services.engine is None:
        raise ApiError(503, "order path not available: the strategy engine and brokers are not running in this "
                            "process", code="service_unavailable")
    refusal = _time_rule(services, strategy, ticker, action.lower())
    if refusal is not None:
        log.info("manual trigger %s %s %s refused: %s", strategy.value, ticker, action, refusal.message)
        return _refused(409, refusal.code, refusal.message)
    log.info("manual trigger %s %s %s", strategy.value, ticker, action)
    try:
        answer = services.engine.manual_trigger(strategy.value, ticker, action)
    except NoRealPriceSource as exc:
        return _refused(409, exc.code, str(exc))
    except (ValueError, LookupError) as exc:
        raise ApiError(400, str(exc), field="ticker") from None
    return _answer(answer.message, answer.outcome())


@trading_bp.post("/manual-trigger")
@admin_required
@endpoint(body=ZerodayTriggerBody, answers=MANUAL_ANSWERS, errors=MANUAL_ERRORS)
def manual_trigger() -> tuple[Response, int]:
    """Manual 0DTE trade. Body: `{"ticker": "SPX", "action": "call"|"put"|"close"}` ("long"/"short"
    are taken as call/put) ->
    `{success, message, partial, results}` (results: one entry per broker with status and reason).
    call/put: 409 (`outside_entry_window`, `no_session`, `no_same_day_expiration`) outside the 0DTE
    entry window (09:35-15:30 ET, before the 15:45 ET forced close) or on a day without a same-day
    SPXW expiration; close is always allowed. 409 `{success: false, error, message, results}` when
    every broker refused the order (risk denial, paused, rejected, ...); 503 while no order path runs."""
    return _manual(StrategyName.ZERODAY, ZERODAY_ACTIONS, "lower")


@trading_bp.post("/ema-manual-trigger")
@admin_required
@endpoint(body=EmaTriggerBody, answers=MANUAL_ANSWERS, errors=MANUAL_ERRORS)
def ema_manual_trigger() -> tuple[Response, int]:
    """Manual EMA position. Body: `{"ticker": "/MES", "action": "LONG"|"SHORT"|"CLOSE"}` (any case)
    -> `{success, message, partial, results}`. 409 `market_closed` (every action) while the
    instrument's session is closed; 409 when every broker refused the order; 503 while no order
    path is running."""
    return _manual(StrategyName.EMA, EMA_ACTIONS, "upper")


@trading_bp.get("/current-position")
@viewer_required
@endpoint(query=PositionQuery, answers=[Answer(200, "the position, or null", PositionReply)])
def current_position() -> tuple[Response, int]:
    """The strategy's position in a ticker. Query: `ticker=SPX&strategy=zeroday` -> `{success, data}`
    where data is the position object or null (also null while no order manager runs)."""
    strategy = strategy_arg(request.args.get("strategy"))
    ticker = symbol_arg(request.args.get("ticker"), "ticker")
    services = get_services()
    if services.orders is None or services.engine is None:
        return ok(data=None)
    return ok(data=services.engine.current_position(strategy.value, ticker))


# The dashboard build whose 0DTE card posts {action: buy_call|buy_put|close_position, symbol}.
_SPX_BUTTONS = {"buy_call": "call", "buy_put": "put", "close_position": "close"}


@trading_bp.post("/manual-spx-trigger")
@admin_required
@endpoint(body=SpxButtonBody, answers=MANUAL_ANSWERS, errors=MANUAL_ERRORS)
def manual_spx_trigger() -> tuple[Response, int]:
    """The 0DTE manual trigger as one dashboard build calls it. Body: `{"action": "buy_call"|"buy_put"|
    "close_position", "symbol": "SPX"}` -> the same answer as `/api/manual-trigger`. The contract
    is always the ATM SPXW expiring today: a `strike` or an `expiration` other than today is refused
    (400) rather than trading another contract than the one asked for."""
    payload = json_body()
    raw = payload.get("action")
    action = _SPX_BUTTONS.get(raw.strip().lower()) if isinstance(raw, str) else None
    if action is None:
        raise ApiError(400, f"action must be one of {', '.join(_SPX_BUTTONS)}", field="action")
    if payload.get("strike") not in (None, ""):
        raise ApiError(400, "strike: choosing a strike is not supported; the 0DTE trigger trades the ATM SPXW "
                            "contract expiring today", field="strike")
    expiration = payload.get("expiration")
    if expiration not in (None, ""):
        today = datetime.fromtimestamp(_now_ns(get_services()) / 1e9, NEW_YORK).date().isoformat()
        if expiration != today:
            raise ApiError(400, f"expiration: only today's SPXW ({today}) is traded", field="expiration")
    return _manual(StrategyName.ZERODAY, ZERODAY_ACTIONS, "lower",
                   {"ticker": payload.get("symbol") or "SPX", "action": action})
