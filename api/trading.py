"""Strategy start/stop, manual triggers and positions: each view validates the request, makes one
call to engine/control.py (which decides what happens, with or without an engine in the process)
and answers.

Manual triggers answer `success: true` only when at least one broker acknowledged the order (or
already holds the target); a partial refusal says so (`partial: true`, per-broker `results`). The
words each trigger takes are the engine's (`engine.manual.manual_actions`).
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from flask import Blueprint, Response, request

from api.contract import Answer, endpoint
from api.responses import ApiError, fail, ok
from api.schemas import (EmaTriggerBody, ManualRefusal, ManualReply, MessageReply, PositionQuery, PositionReply,
                         SpxButtonBody, StrategyQuery, ZerodayTriggerBody)
from api.services import get_services
from api.validation import json_body, strategy_arg, symbol_arg
from auth.decorators import admin_required, viewer_required
from domain.tickers import StrategyName
from engine import control
from engine.manual import NEW_YORK, ManualOutcome, ManualTrade, manual_actions
from engine.supervisor import NothingEnabledError, NoRealPriceSource

trading_bp = Blueprint("trading", __name__, url_prefix="/api")

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


@trading_bp.get("/start-trading")
@admin_required
@endpoint(query=StrategyQuery, answers=[Answer(200, "started, or already running", MessageReply)],
          errors={409: NO_REAL_PRICES})
def start_trading() -> tuple[Response, int]:
    """Start a strategy for its trade-enabled tickers.

    Query: `strategy=ema|supertrend|zeroday`. Answers `{success, message}`; nothing enabled -> 400;
    a second start answers "already running"; in live mode zeroday without a broker streaming SPX
    -> 409 `no_real_price_source` (nothing starts). Without an engine in the process the start is
    recorded for the engine to pick up, and the message says so.
    """
    strategy = strategy_arg(request.args.get("strategy"))
    try:
        return ok(message=control.start(get_services(), strategy))
    except NothingEnabledError as exc:
        raise ApiError(400, str(exc), field="strategy") from None
    except NoRealPriceSource as exc:
        return _refused(409, exc.code, str(exc))


@trading_bp.get("/stop-trading")
@admin_required
@endpoint(query=StrategyQuery, answers=[Answer(200, "stopped, or was not running", MessageReply)])
def stop_trading() -> tuple[Response, int]:
    """Stop every ticker of a strategy. Query: `strategy=...`. Answers `{success, message}`."""
    strategy = strategy_arg(request.args.get("strategy"))
    return ok(message=control.stop(get_services(), strategy))


def _refused(status: int, code: str, message: str, **extra: Any) -> tuple[Response, int]:
    # `error` is the sentence (the dashboard toasts it); `code` the word for programs.
    return fail(status, message, code=code, **extra)


def _answer(trade: ManualTrade) -> tuple[Response, int]:
    """200 only when at least one broker acknowledged the order (or already holds the target);
    409 when every broker refused it (nothing was sent); 502 when the outcome is unknown."""
    message, outcome = trade.message, trade.outcome()
    results = outcome.to_json()
    if outcome.acknowledged:
        return ok(message=_acknowledged(message, outcome), partial=bool(outcome.refused or outcome.unknown),
                  results=results)
    code = outcome.error_code()
    if code == "order_outcome_unknown":
        return _refused(502, code, f"{message} (sent, outcome unknown: check /api/orders)", results=results)
    return _refused(409, code, f"not executed, nothing was sent: {message}", results=results)


def _acknowledged(message: str, outcome: ManualOutcome) -> str:
    if outcome.already_at_target:
        return f"{message} (already at target: nothing sent)"
    if outcome.refused or outcome.unknown:
        others = ", ".join(f"{r.broker} {r.status}" for r in (*outcome.refused, *outcome.unknown))
        return f"{message} (partial: not done at {others})"
    return message


def _manual(strategy: StrategyName, payload: dict[str, Any]) -> tuple[Response, int]:
    ticker = symbol_arg(payload.get("ticker"), "ticker")
    if strategy is StrategyName.ZERODAY and ticker != "SPX":
        raise ApiError(400, "ticker: the 0DTE manual trigger trades SPX options only", field="ticker")
    if strategy is StrategyName.EMA and ticker == "SPX":
        raise ApiError(400, "ticker: SPX is an index; use manual-trigger for 0DTE options", field="ticker")
    actions = manual_actions(strategy)
    action = actions.word(payload.get("action"))
    if action is None:
        raise ApiError(400, f"action must be one of {actions.describe()}", field="action")
    try:
        done = control.manual_trade(get_services(), strategy, ticker, action)
    except control.EngineUnavailable as exc:
        raise ApiError(503, str(exc), code=exc.code) from None
    except (ValueError, LookupError) as exc:
        raise ApiError(400, str(exc), field="ticker") from None
    if isinstance(done, ManualTrade):
        return _answer(done)
    return _refused(409, done.code, done.message)


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
    return _manual(StrategyName.ZERODAY, json_body())


@trading_bp.post("/ema-manual-trigger")
@admin_required
@endpoint(body=EmaTriggerBody, answers=MANUAL_ANSWERS, errors=MANUAL_ERRORS)
def ema_manual_trigger() -> tuple[Response, int]:
    """Manual EMA position. Body: `{"ticker": "/MES", "action": "LONG"|"SHORT"|"CLOSE"}` (any case)
    -> `{success, message, partial, results}`. 409 `market_closed` (every action) while the
    instrument's session is closed; 409 when every broker refused the order; 503 while no order
    path is running."""
    return _manual(StrategyName.EMA, json_body())


@trading_bp.get("/current-position")
@viewer_required
@endpoint(query=PositionQuery, answers=[Answer(200, "the position, or null", PositionReply)])
def current_position() -> tuple[Response, int]:
    """The strategy's position in a ticker. Query: `ticker=SPX&strategy=zeroday` -> `{success, data}`
    where data is the position object or null (also null while no order manager runs)."""
    strategy = strategy_arg(request.args.get("strategy"))
    ticker = symbol_arg(request.args.get("ticker"), "ticker")
    return ok(data=control.current_position(get_services(), strategy, ticker))


# The dashboard build whose 0DTE card posts {action: buy_call|buy_put|close_position, symbol}: its
# button names, as the 0DTE trigger's words.
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
        today = datetime.fromtimestamp(get_services().time_ns() / 1e9, NEW_YORK).date().isoformat()
        if expiration != today:
            raise ApiError(400, f"expiration: only today's SPXW ({today}) is traded", field="expiration")
    return _manual(StrategyName.ZERODAY, {"ticker": payload.get("symbol") or "SPX", "action": action})
