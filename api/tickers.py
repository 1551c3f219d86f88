"""Ticker configuration endpoints: get-ticker, add-ticker, delete-ticker."""
from __future__ import annotations

import logging

from flask import Blueprint, Response

from api.contract import Answer, endpoint, valid_body, valid_query
from api.responses import ApiError, ok
from api.schemas import AddTickerBody, DeleteTickerArgs, StrategyQuery, TickerMap
from api.services import Services, get_services
from api.validation import json_body
from auth.decorators import admin_required, viewer_required
from domain.tickers import StrategyName, TickerConfig, TickerValidationError

log = logging.getLogger(__name__)

tickers_bp = Blueprint("tickers", __name__, url_prefix="/api")


def ticker_map_body(services: Services, strategy: StrategyName) -> dict[str, object]:
    """`data`: symbol -> positional string array (the dashboard's contract); `params`: symbol ->
    strategy parameters beyond the row (an extra key old dashboards ignore)."""
    configs = services.tickers.get_map(strategy)
    return {
        "data": {symbol: config.to_row() for symbol, config in configs.items()},
        "params": {symbol: config.optional_fields() for symbol, config in configs.items()},
    }


@tickers_bp.get("/get-ticker")
@viewer_required
@endpoint(query=StrategyQuery, answers=[Answer(200, "the strategy's tickers", TickerMap)])
def get_ticker() -> tuple[Response, int]:
    """The configured tickers of one strategy.

    Query: `strategy=ema|supertrend|zeroday`. Answers `{success, data: {"/MES": [...]}, params}`;
    each row is strings: ema/zeroday `[timeframe, schwab_qty, "TRUE"|"FALSE", tastytrade_qty,
    trend_line_1, period_1, trend_line_2, period_2]` (zeroday then `call_enabled, put_enabled` as
    "TRUE"|"FALSE"), supertrend the first four.
    """
    return ok(**ticker_map_body(get_services(), valid_query(StrategyQuery).strategy))


@tickers_bp.post("/add-ticker")
@admin_required
@endpoint(body=AddTickerBody, answers=[Answer(201, "saved; the strategy's whole map", TickerMap)])
def add_ticker() -> tuple[Response, int]:
    """Add or replace (by symbol) a ticker of a strategy.

    Body: `{strategy, symbol, timeframe, trade_enabled, schwab_quantity, tastytrade_quantity}` and
    for ema/zeroday `trend_line_1, period_1, trend_line_2, period_2`; supertrend optionally
    `atr_period, multiplier, trailing_stop_atr, take_profit_atr`; ema optionally `stop_loss_ticks` or
    `stop_loss_atr` and `atr_period`; zeroday optionally `call_enabled`, `put_enabled` (default true:
    the dashboard's Call / Put switches). Replacing a ticker keeps the optional parameters the body
    leaves out (the dashboard posts only the row fields). Timeframes as "5Min", "1Hour",
    "1Day", "512t", "5m" or raw "5". Answers 201 with the strategy's whole map.
    """
    payload = json_body()  # as sent: the domain applies the rules across fields and keeps what is left out
    strategy = valid_body(AddTickerBody).strategy
    services = get_services()
    try:
        config = TickerConfig.from_payload(payload, strategy)
        existing = services.tickers.get(strategy, config.symbol)
        kept = existing.kept_by_update(payload) if existing is not None else {}
        if kept:  # an update that leaves parameters out keeps them (the dashboard posts the row only)
            config = TickerConfig.from_payload({**payload, **kept}, strategy)
    except TickerValidationError as exc:
        raise ApiError(400, f"{exc.field}: {exc.message}", field=exc.field) from None
    services.tickers.upsert(config)
    log.info("ticker saved: %s %s %s enabled=%s", config.strategy.value, config.symbol, config.timeframe,
             config.trade_enabled)
    if services.engine is not None:
        services.engine.ticker_changed(config)
    return ok(201, **ticker_map_body(services, strategy))


@tickers_bp.delete("/delete-ticker")
@admin_required
@endpoint(query=DeleteTickerArgs, body=DeleteTickerArgs, body_required=False,
          answers=[Answer(200, "deleted; the strategy's remaining map", TickerMap)],
          errors={404: "the strategy has no such ticker"})
def delete_ticker() -> tuple[Response, int]:
    """Remove a ticker from a strategy.

    Body: `{strategy, symbol}` (query parameters are accepted too). Answers `{success, data:
    <remaining map>}`; a symbol the strategy does not have -> 404.
    """
    args = valid_body(DeleteTickerArgs) if json_body(required=False) else valid_query(DeleteTickerArgs)
    if args.strategy is None:
        raise ApiError(400, "strategy is required (ema, supertrend or zeroday)", field="strategy")
    if args.symbol is None:
        raise ApiError(400, "symbol is required", field="symbol")
    strategy, symbol = args.strategy, args.symbol
    services = get_services()
    config = services.tickers.get(strategy, symbol)  # its position is closed even with the strategy stopped
    if not services.tickers.delete(strategy, symbol):
        raise ApiError(404, f"{symbol} is not configured for {strategy.value}", field="symbol", error="not found")
    log.info("ticker deleted: %s %s", strategy.value, symbol)
    if services.engine is not None:
        services.engine.ticker_removed(strategy.value, symbol, config)
    return ok(**ticker_map_body(services, strategy))
