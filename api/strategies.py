"""`GET /api/strategies`: per strategy and ticker, what the engine is doing.

Answers `{success, data}` where `data` is `StrategySupervisor.strategies_status()`:
`{<strategy>: {running, tickers: {<symbol>: {running, alive, timeframe, started_at, last_bar,
indicators, position, positions, last_signal, last_error, restarts, warmed_up, stale_feed,
last_bar_received, last_housekeeping, trade_enabled}}}}` (a ticker whose thread is not running has
only strategy, symbol, timeframe, running, alive, trade_enabled and positions). Any logged-in user
(viewer or admin). 503 when no strategy engine runs in this process.

`GET /api/strategies/chart?strategy=&symbol=&limit=`: one ticker's recent bars with the lines its
strategy computed on them, its fills as markers and the armed stop (engine/chart.py).
"""
from __future__ import annotations

from flask import Blueprint, Response

from api.responses import ApiError, ok
from api.contract import Answer, endpoint, valid_query
from api.schemas import ChartQuery, ChartReply, StrategiesReply
from api.services import get_services
from auth.decorators import viewer_required
from engine.chart import MAX_BARS, ChartUnavailable, strategy_chart

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


@strategies_bp.get("/strategies/chart")
@viewer_required
@endpoint(query=ChartQuery, answers=[Answer(200, "bars, the strategy's lines, fills and the armed stop", ChartReply)],
          errors={404: "the symbol is not one of the strategy's tickers",
                  503: "the market data service is not running in this process"})
def chart() -> tuple[Response, int]:
    """One ticker's price chart -> `{success, data}`: its recent completed bars (oldest first) with
    the values of the strategy's lines after each bar it computed (null for bars it did not see:
    stopped, or older than it keeps), its filled orders as entry/exit markers, and the stop it
    has armed now."""
    args = valid_query(ChartQuery)
    try:
        data = strategy_chart(get_services(), args.strategy, args.symbol, args.limit or MAX_BARS)
    except LookupError as exc:
        raise ApiError(404, str(exc), field="symbol", error="not found") from None
    except ChartUnavailable as exc:
        raise ApiError(503, str(exc), error="unavailable") from None
    return ok(data=data)
