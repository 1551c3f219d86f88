"""The OMS journal (`oms:journal`, every order state transition) and fill log (`oms:fills`, read by
the P&L engine). Both are Redis Streams, never trimmed: they are the audit trail of real money.
Entries carry no tokens or account numbers."""
from __future__ import annotations

from decimal import Decimal

from oms.models import OrderRecord
from store.redis_store import Store


def journal_key(store: Store) -> str:
    return store.key("oms", "journal")


def fills_key(store: Store) -> str:
    return store.key("oms", "fills")


def transition_entry(rec: OrderRecord, prev_state: str, ts_ns: int, price: Decimal | None = None) -> dict[str, str]:
    px = price if price is not None else rec.avg_fill_price
    return {
        "event": "transition", "ts_ns": str(ts_ns), "broker": rec.broker, "strategy": rec.strategy,
        "symbol": rec.symbol, "key": rec.position_key, "client_order_id": rec.client_order_id,
        "broker_order_id": rec.broker_order_id or "", "leg": rec.leg, "side": rec.side.value,
        "quantity": str(rec.quantity), "filled_quantity": str(rec.filled_quantity),
        "price": "" if px is None else str(px), "prev_state": prev_state, "state": rec.state.value,
        "reason": rec.reason, "intent_reason": rec.intent_reason,
    }


def event_entry(event: str, ts_ns: int, broker: str, strategy: str, symbol: str, reason: str, **extra: str) -> dict[str, str]:
    """Non-transition journal events (adopted position, abandoned open leg, broker paused...)."""
    return {"event": event, "ts_ns": str(ts_ns), "broker": broker, "strategy": strategy, "symbol": symbol,
            "reason": reason, **extra}


def fill_entry(rec: OrderRecord, qty: int, price: Decimal, commission: Decimal, realized: Decimal,
               ts_ns: int) -> dict[str, str]:
    return {
        "ts_ns": str(ts_ns), "broker": rec.broker, "strategy": rec.strategy, "symbol": rec.symbol,
        "key": rec.position_key, "client_order_id": rec.client_order_id,
        "broker_order_id": rec.broker_order_id or "", "leg": rec.leg, "side": rec.side.value,
        "quantity": str(qty), "price": str(price), "commission": str(commission),
        "multiplier": str(rec.multiplier), "realized_pnl": str(realized), "reason": rec.intent_reason,
        "detail": rec.detail,
    }


def read_stream(store: Store, key: str, limit: int = 100) -> list[dict[str, str]]:
    """Newest first; each entry gets its stream id as `id`."""
    rows = store.redis.xrevrange(key, count=max(1, min(limit, 10_000)))
    return [{"id": entry_id, **fields} for entry_id, fields in rows]


def read_journal(store: Store, limit: int = 100) -> list[dict[str, str]]:
    return read_stream(store, journal_key(store), limit)


def read_fills(store: Store, limit: int = 100) -> list[dict[str, str]]:
    return read_stream(store, fills_key(store), limit)
