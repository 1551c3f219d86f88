"""`GET /api/strategies`: per strategy and ticker, what the engine is doing.

Answers `{success, data}` where `data` is `StrategySupervisor.strategies_status()`:
`{<strategy>: {running, tickers: {<symbol>: {running, alive, timeframe, started_at, last_bar,
indicators, position, positions, last_signal, last_error, restarts, warmed_up, stale_feed,
last_bar_received, last_housekeeping, trade_enabled}}}}` (a ticker whose thread is not running has
only strategy, symbol, timeframe, running, alive, trade_enabled and positions). Any logged-in user
(viewer or admin). 503 when no strategy engine runs in this process.
"""
from __future__ import annotations

from flask import Blueprint, Response

from api.responses import ApiError, ok
from api.contract import Answer, endpoint
from api.schemas import StrategiesReply
from api.services import get_services
from auth.decorators import viewer_required

strategies_bp = Blueprint("strategies", __name__, url_prefix="/api")


@strategies_bp.get("/strategies")
@viewer_required
@endpoint(answers=[Answer(200, "per strategy and ticker", StrategiesReply)],
          errors={503: "no strategy engine runs in this process"})
def strategies() -> tuple[Response, int]:
    """What the engine is doing, per strategy and ticker -> `{success, data}`.

    Per ticker: running, last bar, indicator values, position, last signal and reason, last error,
    restarts, warm-up and stale-feed state. 503 when no strategy engine runs in this process.
    """
    engine = get_services().engine
    if engine is None:
        raise ApiError(503, "the strategy engine is not running in this process", error="unavailable")
    return ok(data=engine.strategies_status())
