"""GET /api/bars: completed bars from the market data service (Redis bar history).

`/api/bars?symbol=/MES&timeframe=5&limit=50` -> {"success": true, "data": [bar, ...]} oldest first.
Only completed bars are returned (the open bar never appears, so nothing repaints).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint

from api.contract import Answer, endpoint, valid_query
from api.responses import ApiError, ok
from api.schemas import BarsQuery, BarsReply
from api.services import get_services
from auth.decorators import viewer_required

bars_bp = Blueprint("bars", __name__)

DEFAULT_LIMIT = 100


@bars_bp.get("/api/bars")
@viewer_required
@endpoint(query=BarsQuery, answers=[Answer(200, "completed bars, oldest first", BarsReply)],
          errors={503: "the market data service is not running"})
def get_bars() -> Any:
    """Completed bars, oldest first -> `{success, data, symbol, timeframe}`.

    Query: `symbol` (e.g. /MES), `timeframe` (e.g. 5Min, 5 or 512t), `limit` (1-5000, default 100).
    The bar still forming never appears, so nothing repaints.
    """
    args = valid_query(BarsQuery)
    symbol, timeframe = args.symbol, args.timeframe
    limit = DEFAULT_LIMIT if args.limit is None else args.limit
    market_data = get_services().market_data
    if market_data is None:
        raise ApiError(503, "market data service is not running", error="service unavailable")
    bars = market_data.history(symbol, timeframe, limit)
    return ok(data=[bar.to_json() for bar in bars], symbol=symbol, timeframe=timeframe.raw)
