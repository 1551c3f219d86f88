"""GET /api/bars: completed bars from the market data service (Redis bar history).

`/api/bars?symbol=/MES&timeframe=5&limit=50` -> {"success": true, "data": [bar, ...]} oldest first.
Only completed bars are returned (the open bar never appears, so nothing repaints).
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from api.responses import ApiError, ok
from api.services import get_services
from api.validation import int_query
from auth.decorators import viewer_required
from config.instruments import UnknownSymbolError, canonical_symbol
from config.timeframes import Timeframe, TimeframeError

bars_bp = Blueprint("bars", __name__)

DEFAULT_LIMIT = 100
MAX_LIMIT = 5000


@bars_bp.get("/api/bars")
@viewer_required
def get_bars() -> Any:
    """Completed bars, oldest first -> `{success, data, symbol, timeframe}`.

    Query: `symbol` (e.g. /MES), `timeframe` (e.g. 5Min, 5 or 512t), `limit` (1-5000, default 100).
    The bar still forming never appears, so nothing repaints.
    """
    raw_symbol = request.args.get("symbol")
    if not raw_symbol:
        raise ApiError(400, "symbol is required, e.g. /MES", field="symbol")
    try:
        symbol = canonical_symbol(raw_symbol)
    except UnknownSymbolError as exc:
        raise ApiError(400, f"symbol: {exc}", field="symbol") from None
    raw_tf = request.args.get("timeframe")
    if not raw_tf:
        raise ApiError(400, "timeframe is required, e.g. 5Min or 512t", field="timeframe")
    try:
        timeframe = Timeframe.parse(raw_tf)
    except TimeframeError as exc:
        raise ApiError(400, f"timeframe: {exc}", field="timeframe") from None
    limit = int_query("limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
    market_data = get_services().market_data
    if market_data is None:
        raise ApiError(503, "market data service is not running", error="service unavailable")
    bars = market_data.history(symbol, timeframe, limit)
    return ok(data=[bar.to_json() for bar in bars], symbol=symbol, timeframe=timeframe.raw)
