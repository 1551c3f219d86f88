"""Operational endpoints: Prometheus metrics, the status document, the trade journal and P&L.

Reads from the service container: `settings.metrics_token`, `risk`, `orders`, `market_data`,
`brokers`, `engine`, `metrics`, `ledger`, `status` (built from the services when absent),
`alerter` and `mark_price` (position_key -> price; else market_data.last_price).
"""
from __future__ import annotations

import hmac
from decimal import Decimal
from typing import Any, Callable

from flask import Blueprint, Response, request

from api.responses import ApiError, ok
from api.contract import Answer, endpoint, valid_query
from api.schemas import IntradayEquityReply, PnlReply, StatusReply, TradeFilterQuery, TradesQuery, TradesReply
from api.services import get_services
from auth.decorators import viewer_required
from ledger.pnl import compute_pnl
from ledger.trades import Ledger, TradeFilter
from monitoring.status import default_status_builder

monitoring_bp = Blueprint("monitoring", __name__)

LOCALHOST = {"127.0.0.1", "::1"}
DEFAULT_PAGE = 100
NO_LEDGER = {503: "the trade journal is not available"}


def _metrics_allowed() -> bool:
    token = get_services().settings.metrics_token
    if token:
        header = request.headers.get("Authorization", "")
        supplied = header[7:] if header.startswith("Bearer ") else ""
        return hmac.compare_digest(supplied.encode(), token.encode())  # constant time
    # No token: loopback only (Prometheus on the same host, or through an SSH tunnel). Behind a
    # local nginx every request is from 127.0.0.1, so set METRICS_TOKEN in that deployment.
    return request.remote_addr in LOCALHOST


@monitoring_bp.get("/metrics")
def metrics() -> Any:
    """Prometheus metrics. Bearer METRICS_TOKEN when set, else only from localhost."""
    if not _metrics_allowed():
        raise ApiError(401 if get_services().settings.metrics_token else 403,
                       "metrics need the bearer METRICS_TOKEN" if get_services().settings.metrics_token
                       else "metrics are only served to localhost unless METRICS_TOKEN is set", error="forbidden")
    registry = get_services().metrics
    if registry is None:
        raise ApiError(503, "metrics are not enabled", error="unavailable")
    body, content_type = registry.render()
    return Response(body, status=200, content_type=content_type)


@monitoring_bp.get("/api/status")
@viewer_required
@endpoint(answers=[Answer(200, "mode, trading state, feeds, brokers, strategies, risk, alerts", StatusReply)])
def status() -> Any:
    """One document for the dashboard: mode, trading state, feeds, brokers, strategies, risk, alerts."""
    services = get_services()
    builder = services.status or default_status_builder(services)
    # Sections at the top level of the envelope (ok()'s own `status` parameter is the HTTP code).
    return ok(**builder.build())


def _ledger() -> Ledger:
    ledger = get_services().ledger
    if ledger is None:
        raise ApiError(503, "the trade journal is not available", error="unavailable")
    ledger.sync()  # pick up fills written since the last call (cheap: incremental)
    return ledger


def _filter() -> TradeFilter:
    args = valid_query(TradeFilterQuery)
    if args.from_ and args.to and args.from_ >= args.to:
        raise ApiError(400, "from must be before to", field="from")
    strategy = args.strategy.value if args.strategy is not None else None
    return TradeFilter(strategy, args.symbol, args.broker, args.from_, args.to)


@monitoring_bp.get("/api/trades")
@viewer_required
@endpoint(query=TradesQuery, answers=[Answer(200, "a page of trades", TradesReply),
                                      Answer(200, "every matching trade (format=csv)", None, "text/csv")],
          errors=NO_LEDGER)
def trades() -> Any:
    """Round-trip trades, newest first. Filters: strategy, symbol, broker, from, to (exit time);
    paging: offset, limit (<= 1000); ?format=csv downloads every matching trade as CSV."""
    flt = _filter()
    args = valid_query(TradesQuery)
    ledger = _ledger()
    if args.format == "csv":
        rows, _ = ledger.trades(flt, limit=None)
        return Response(Ledger.to_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=trades.csv"})
    offset = 0 if args.offset is None else args.offset
    limit = DEFAULT_PAGE if args.limit is None else args.limit
    rows, total = ledger.trades(flt, offset=offset, limit=limit)
    return ok(trades=[t.to_json() for t in rows], total=total, offset=offset, limit=limit)


def _mark_price() -> Callable[[str], Decimal | float | None] | None:
    services = get_services()
    if services.mark_price is not None:
        return services.mark_price
    if services.market_data is not None and hasattr(services.market_data, "last_price"):
        # Options have no trade feed here: their keys get no mark and show as marks_missing.
        return lambda key: services.market_data.last_price(key)
    return None


@monitoring_bp.get("/api/pnl")
@viewer_required
@endpoint(query=TradeFilterQuery, answers=[Answer(200, "the P&L report", PnlReply)], errors=NO_LEDGER)
def pnl() -> Any:
    """Realized P&L by strategy, symbol, broker and day; unrealized for open positions; equity curve."""
    report = compute_pnl(_ledger(), _filter(), _mark_price())
    return ok(pnl=report.to_json())


@monitoring_bp.get("/api/pnl/intraday")
@viewer_required
@endpoint(answers=[Answer(200, "this session's equity curve", IntradayEquityReply)],
          errors={503: "the risk engine is not running"})
def intraday_equity() -> Any:
    """The current session's P&L over time, as the loss limits see it (all strategies, realized
    since the session start plus unrealized), one point per P&L refresh (every few seconds, at
    most one per 10 s) -> `{success, session_start, points: [{ts, realized, unrealized, total}]}`."""
    risk = get_services().risk
    if risk is None:
        raise ApiError(503, "the risk engine is not running", error="unavailable")
    return ok(**risk.intraday_equity())
