"""Operational endpoints: Prometheus metrics, the status document, the trade journal and P&L.

Reads from the service container: `settings.metrics_token`, `risk`, `orders`, `market_data`,
`brokers`, `engine`, and from `extras`: "metrics" (monitoring.metrics.Metrics), "ledger"
(ledger.trades.Ledger), "status" (monitoring.status.StatusBuilder; built from the services when
absent), "alerter", "mark_price" (callable position_key -> price, else market_data.last_price).
"""
from __future__ import annotations

import hmac
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable

from flask import Blueprint, Response, request

from api.responses import ApiError, ok
from api.services import get_services
from api.validation import int_query
from auth.decorators import viewer_required
from config.instruments import UnknownSymbolError, canonical_symbol
from ledger.pnl import compute_pnl
from ledger.trades import Ledger, TradeFilter
from monitoring.status import default_status_builder

monitoring_bp = Blueprint("monitoring", __name__)

LOCALHOST = {"127.0.0.1", "::1"}
MAX_PAGE = 1000


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
    registry = get_services().extras.get("metrics")
    if registry is None:
        raise ApiError(503, "metrics are not enabled", error="unavailable")
    body, content_type = registry.render()
    return Response(body, status=200, content_type=content_type)


@monitoring_bp.get("/api/status")
@viewer_required
def status() -> Any:
    """One document for the dashboard: mode, trading state, feeds, brokers, strategies, risk, alerts."""
    services = get_services()
    builder = services.extras.get("status") or default_status_builder(services)
    # Sections at the top level of the envelope (ok()'s own `status` parameter is the HTTP code).
    return ok(**builder.build())


def _ledger() -> Ledger:
    ledger = get_services().extras.get("ledger")
    if ledger is None:
        raise ApiError(503, "the trade journal is not available", error="unavailable")
    ledger.sync()  # pick up fills written since the last call (cheap: incremental)
    return ledger


def _time(name: str) -> datetime | None:
    raw = request.args.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ApiError(400, f"{name} must be an ISO date or time, e.g. 2025-06-10 or 2025-06-10T14:30:00Z",
                       field=name) from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _filter() -> TradeFilter:
    symbol = request.args.get("symbol") or None
    if symbol is not None:
        try:
            symbol = canonical_symbol(symbol)
        except UnknownSymbolError as exc:
            raise ApiError(400, str(exc), field="symbol") from None
    strategy = request.args.get("strategy") or None
    if strategy is not None and strategy not in ("ema", "supertrend", "zeroday"):
        raise ApiError(400, "strategy must be ema, supertrend or zeroday", field="strategy")
    broker = request.args.get("broker") or None
    if broker is not None and broker not in ("schwab", "tastytrade"):
        raise ApiError(400, "broker must be schwab or tastytrade", field="broker")
    start, end = _time("from"), _time("to")
    if start and end and start >= end:
        raise ApiError(400, "from must be before to", field="from")
    return TradeFilter(strategy, symbol, broker, start, end)


@monitoring_bp.get("/api/trades")
@viewer_required
def trades() -> Any:
    """Round-trip trades, newest first. Filters: strategy, symbol, broker, from, to (exit time);
    paging: offset, limit (<= 1000); ?format=csv downloads every matching trade as CSV."""
    flt = _filter()
    ledger = _ledger()
    if request.args.get("format") == "csv":
        rows, _ = ledger.trades(flt, limit=None)
        return Response(Ledger.to_csv(rows), mimetype="text/csv",
                        headers={"Content-Disposition": "attachment; filename=trades.csv"})
    if request.args.get("format") not in (None, "", "json"):
        raise ApiError(400, "format must be json or csv", field="format")
    offset, limit = int_query("offset", 0, 0, 10_000_000), int_query("limit", 100, 0, MAX_PAGE)
    rows, total = ledger.trades(flt, offset=offset, limit=limit)
    return ok(trades=[t.to_json() for t in rows], total=total, offset=offset, limit=limit)


def _mark_price() -> Callable[[str], Decimal | float | None] | None:
    services = get_services()
    custom = services.extras.get("mark_price")
    if custom is not None:
        return custom  # type: ignore[no-any-return]
    if services.market_data is not None and hasattr(services.market_data, "last_price"):
        # Options have no trade feed here: their keys get no mark and show as marks_missing.
        return lambda key: services.market_data.last_price(key)
    return None


@monitoring_bp.get("/api/pnl")
@viewer_required
def pnl() -> Any:
    """Realized P&L by strategy, symbol, broker and day; unrealized for open positions; equity curve."""
    report = compute_pnl(_ledger(), _filter(), _mark_price())
    return ok(pnl=report.to_json())
