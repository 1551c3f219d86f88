"""Orders, positions, the OMS journal and reconciliation (blueprint `orders_bp`, prefix /api).

GET  /api/orders              viewer  ?strategy=&symbol=&broker=&state=&offset=0&limit=50 (newest first)
GET  /api/positions           viewer  the OMS book per (strategy, symbol, broker) + each broker's own positions
GET  /api/journal             viewer  ?limit=100&stream=journal|fills (newest first)
GET  /api/reconcile           viewer  the last reconciliation report, halted tickers, paused brokers
POST /api/reconcile           admin   run reconciliation now
POST /api/reconcile/adopt     admin   {broker, key, strategy, symbol?}: the OMS book takes the broker's position
POST /api/reconcile/flatten   admin   {broker, key}: close the broker's whole position at key
POST /api/orders/resolve      admin   {client_order_id, state: FILLED|CANCELLED|REJECTED, filled_quantity?,
                                      avg_fill_price?, note?}: the outcome of an UNKNOWN order, by hand

Reads `services.orders` (oms.order_manager.OrderManager; 503 when absent), `services.runtime`
(runtime.TradingRuntime: reconcile_now(), adopt(), flatten(), last_reconciliation) and
`services.halts` (runtime.Halts). Which halts an adopt or flatten lifts is the
runtime's decision (those waiting only on the resolved key). No trading logic here. Broker
errors are reported by exception type only (never a broker message that could carry an account
number).
"""
from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, jsonify, request

from api.validation import int_query, json_body
from api.contract import Answer, endpoint
from api.responses import ApiError, ok
from api.schemas import (AdoptBody, ErrorReply, FlattenBody, JournalQuery, JournalReply, OrderReply, OrdersQuery,
                         OrdersReply, PositionsQuery, PositionsReply, ReconcileReply, ResolvedReply, ResolveOrderBody)
from api.services import get_services
from auth.decorators import admin_required, current_user_email, viewer_required
from config.instruments import canonical_symbol
from domain.orders import BROKERS, OrderState
from domain.parsing import ParseError, parse_decimal, parse_int
from domain.tickers import StrategyName
from oms.journal import read_fills, read_journal
from oms.reconcile import RECONCILE_STRATEGY, NothingAtKey

log = logging.getLogger(__name__)

orders_bp = Blueprint("orders", __name__, url_prefix="/api")

MAX_LIMIT = 1000
MAX_OFFSET = 100_000
STRATEGIES = tuple(s.value for s in StrategyName) + (RECONCILE_STRATEGY,)
NO_OMS = {503: "the order manager (or the trading runtime) is not running"}
_KEY_RE = re.compile(r"^[A-Za-z0-9/ .\-]{1,40}$")


# ---------------------------------------------------------------------------- helpers
def _orders() -> Any:
    om = get_services().orders
    if om is None:
        raise ApiError(503, "the order manager is not running", error="unavailable")
    return om


def _runtime(required: bool) -> Any:
    runtime = get_services().runtime
    if runtime is None and required:
        raise ApiError(503, "the trading runtime is not running", error="unavailable")
    return runtime


def _strategy(value: Any, field: str = "strategy") -> str:
    if not isinstance(value, str) or value not in STRATEGIES:
        raise ApiError(400, f"{field} must be one of {', '.join(STRATEGIES)}", field=field)
    return value


def _symbol(value: Any, field: str = "symbol") -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 20:
        raise ApiError(400, f"{field} must be a catalog symbol", field=field)
    try:
        return canonical_symbol(value.strip())
    except ValueError:
        raise ApiError(400, f"unknown symbol {value.strip()[:20]!r}", field=field) from None


def _broker(value: Any, om: Any | None = None) -> str:
    names = tuple(om.adapters) if om is not None else BROKERS
    if not isinstance(value, str) or value not in names:
        raise ApiError(400, f"broker must be one of {', '.join(names) or '(none configured)'}", field="broker")
    return value


def _state(value: str) -> OrderState:
    try:
        return OrderState(value.strip().upper())
    except ValueError:
        raise ApiError(400, f"state must be one of {', '.join(s.value for s in OrderState)}", field="state") from None


def _key(value: Any) -> str:
    if not isinstance(value, str) or not _KEY_RE.match(value):
        raise ApiError(400, "key must be the broker's position key (symbol or OCC option symbol)", field="key")
    return value


def _halts_json() -> list[dict[str, str]]:
    halts = get_services().halts
    if halts is None:
        return []
    out = []
    for pair, reason in sorted(halts.all().items()):
        strategy, _, symbol = pair.partition("|")
        out.append({"strategy": strategy, "symbol": symbol, "reason": reason})
    return out


def _last_report() -> Any:
    runtime = _runtime(required=False)
    return getattr(runtime, "last_reconciliation", None) if runtime is not None else None


# ---------------------------------------------------------------------------- reads
@orders_bp.get("/orders")
@viewer_required
@endpoint(query=OrdersQuery, answers=[Answer(200, "a page of orders, newest first", OrdersReply)], errors=NO_OMS)
def list_orders() -> Any:
    """Orders newest first. Filters: strategy, symbol, broker, state; paging: offset, limit (1..1000)."""
    om = _orders()
    filters: dict[str, str] = {}
    if request.args.get("strategy"):
        filters["strategy"] = _strategy(request.args["strategy"])
    if request.args.get("symbol"):
        filters["symbol"] = _symbol(request.args["symbol"])
    if request.args.get("broker"):
        filters["broker"] = _broker(request.args["broker"])
    if request.args.get("state"):
        filters["state"] = _state(request.args["state"]).value
    offset = int_query("offset", 0, 0, MAX_OFFSET)
    limit = int_query("limit", 50, 1, MAX_LIMIT)
    rows = om.orders(offset=offset, limit=limit + 1, **filters)  # one extra row tells has_more (< limit 1000)
    has_more = len(rows) > limit
    rows = rows[:limit]
    return ok(orders=[o.to_json() for o in rows], count=len(rows), offset=offset, limit=limit,
              has_more=has_more, filters=filters)


@orders_bp.get("/positions")
@viewer_required
@endpoint(query=PositionsQuery, answers=[Answer(200, "the book and each broker's positions", PositionsReply)],
          errors=NO_OMS)
def positions() -> Any:
    """The OMS book (non-flat lanes; ?include_flat=true for all) and each trading broker's own
    positions; a broker that cannot be read is reported as such, per broker."""
    om = _orders()
    include_flat = request.args.get("include_flat", "").lower() in ("1", "true", "yes")
    book = [p.to_json() for p in om.positions(include_flat=include_flat)]
    brokers: dict[str, Any] = {}
    for name, adapter in om.adapters.items():
        try:
            held = adapter.positions()
        except Exception as exc:  # one broker failing never hides the other
            log.warning("positions() failed at %s: %s", name, type(exc).__name__)
            brokers[name] = {"ok": False, "error": type(exc).__name__, "positions": []}
            continue
        brokers[name] = {"ok": True, "error": "", "positions": [
            {"key": p.key, "quantity": p.quantity, "avg_price": str(p.avg_price), "multiplier": str(p.multiplier)}
            for p in held]}
    return ok(positions=book, brokers=brokers, paused_brokers=om.paused_brokers())


@orders_bp.get("/journal")
@viewer_required
@endpoint(query=JournalQuery, answers=[Answer(200, "journal entries, newest first", JournalReply)], errors=NO_OMS)
def journal() -> Any:
    """OMS journal entries (every order transition and OMS event), newest first; ?stream=fills for fills."""
    om = _orders()
    limit = int_query("limit", 100, 1, MAX_LIMIT)
    stream = request.args.get("stream", "journal")
    if stream not in ("journal", "fills"):
        raise ApiError(400, "stream must be journal or fills", field="stream")
    entries = read_journal(om.store, limit) if stream == "journal" else read_fills(om.store, limit)
    return ok(entries=entries, count=len(entries), limit=limit, stream=stream)


@orders_bp.get("/reconcile")
@viewer_required
@endpoint(answers=[Answer(200, "the last report (null before the first run)", ReconcileReply)], errors=NO_OMS)
def last_reconciliation() -> Any:
    """The last reconciliation report (null before the first run), halted tickers, paused brokers."""
    om = _orders()
    report = _last_report()
    return ok(report=report.to_json() if report is not None else None, halts=_halts_json(),
              paused_brokers=om.paused_brokers())


# ---------------------------------------------------------------------------- operator actions
@orders_bp.post("/reconcile")
@admin_required
@endpoint(answers=[Answer(200, "the report; mismatches halt their tickers", ReconcileReply)], errors=NO_OMS)
def reconcile_now() -> Any:
    """Run reconciliation now (resolves UNKNOWN orders first); mismatches halt their tickers."""
    _orders()
    report = _runtime(required=True).reconcile_now()
    return ok(report=report.to_json(), halts=_halts_json())


@orders_bp.post("/reconcile/adopt")
@admin_required
@endpoint(body=AdoptBody, answers=[Answer(200, "adopted; the halts it lifted", ResolvedReply)],
          errors={404: "the broker holds nothing at key", 502: "the broker could not be read", **NO_OMS})
def adopt() -> Any:
    """Make the OMS book match the broker at `key`: `strategy`'s lane absorbs the difference."""
    om = _orders()
    body = json_body()
    broker = _broker(body.get("broker"), om)
    key = _key(body.get("key"))
    strategy = _strategy(body.get("strategy"))
    symbol = _symbol(body["symbol"]) if body.get("symbol") is not None else None
    runtime = _runtime(required=True)
    try:
        position, cleared = runtime.adopt(broker, key, strategy, symbol)
    except NothingAtKey as exc:
        raise ApiError(404, str(exc), field="key", error="not found") from None
    except Exception as exc:
        log.warning("adopt at %s %s failed: %s", broker, key, type(exc).__name__)
        raise ApiError(502, f"could not read positions at {broker}: {type(exc).__name__}", error="broker_error") from None
    return ok(position=position.to_json(), cleared_halts=cleared, halts=_halts_json())


@orders_bp.post("/reconcile/flatten")
@admin_required
@endpoint(body=FlattenBody, answers=[Answer(200, "flattened; the halts it lifted", ResolvedReply),
                                     Answer(502, "the broker failed, or the flatten did not complete "
                                                 "(`error` flatten_incomplete, with its report)", ErrorReply)],
          errors={404: "the broker holds nothing at key", **NO_OMS})
def flatten() -> Any:
    """Close the broker's whole position at `key` through the normal order path (adopting any
    unexplained remainder first). Halts are cleared only when every close order went through."""
    om = _orders()
    body = json_body()
    broker = _broker(body.get("broker"), om)
    key = _key(body.get("key"))
    runtime = _runtime(required=True)
    try:
        report, cleared = runtime.flatten(broker, key)
    except NothingAtKey as exc:
        raise ApiError(404, str(exc), field="key", error="not found") from None
    except Exception as exc:
        log.warning("flatten at %s %s failed: %s", broker, key, type(exc).__name__)
        raise ApiError(502, f"could not flatten at {broker}: {type(exc).__name__}", error="broker_error") from None
    if not report.ok:
        body_out = {"success": False, "error": "flatten_incomplete",
                    "message": f"flatten at {broker} {key} did not complete; halts kept",
                    "report": report.to_json(), "cleared_halts": [], "halts": _halts_json()}
        return jsonify(body_out), 502
    return ok(report=report.to_json(), cleared_halts=cleared, halts=_halts_json())


_COID_RE = re.compile(r"^[A-Za-z0-9\-]{1,64}$")
_RESOLVED_STATES = (OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED)


@orders_bp.post("/orders/resolve")
@admin_required
@endpoint(body=ResolveOrderBody, answers=[Answer(200, "resolved; the order as the book now has it", OrderReply)],
          errors={404: "no such order", 409: "the order's outcome is not unknown: nothing changed", **NO_OMS})
def resolve_order() -> Any:
    """An operator states the outcome of an order whose outcome is unknown (the broker could not
    be asked, or does not show it): what the broker's own records say. Journaled with who said
    it; the lane unblocks. 409 when the order is not unresolved (nothing changed)."""
    om = _orders()
    body = json_body()
    coid = body.get("client_order_id")
    if not isinstance(coid, str) or not _COID_RE.match(coid):
        raise ApiError(400, "client_order_id must be an order's client id", field="client_order_id")
    raw_state = body.get("state")
    state = _state(raw_state) if isinstance(raw_state, str) else None
    if state not in _RESOLVED_STATES:
        raise ApiError(400, "state must be FILLED, CANCELLED or REJECTED", field="state")
    try:
        filled = parse_int(body.get("filled_quantity", 0), 0, 1_000_000)
    except ParseError as exc:
        raise ApiError(400, f"filled_quantity {exc}", field="filled_quantity") from None
    price = None
    if body.get("avg_fill_price") is not None:
        try:
            price = parse_decimal(body["avg_fill_price"], 0, 10_000_000)
        except ParseError as exc:
            raise ApiError(400, f"avg_fill_price {exc}", field="avg_fill_price") from None
    note = body.get("note", "")
    if not isinstance(note, str) or len(note) > 200:
        raise ApiError(400, "note must be text of at most 200 characters", field="note")
    if om.order(coid) is None:
        raise ApiError(404, f"no order {coid}", field="client_order_id", code="not_found")
    try:
        record = om.resolve_by_operator(coid, state, filled, price, actor=current_user_email() or "admin", note=note)
    except ValueError as exc:
        raise ApiError(409, str(exc), code="not_unresolved") from None
    return ok(order=record.to_json())


__all__ = ["orders_bp"]
