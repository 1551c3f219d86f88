"""Round-trip trades built from the order manager's fills (`oms:fills` stream).

Positions are tracked per (strategy, broker, position_key) with average-cost accounting. A round
trip is recorded for every fill that reduces a position: a partial close yields a trade for the
closed quantity; a fill larger than the position (a reversal: SELL 3 against LONG 2) closes the
long (one trade) and opens a short of the remainder at the fill price. Commissions are split in
proportion to quantity: the entry's share moves with the closed quantity, a reversal fill's
commission is split between the part that closes and the part that opens.

Applying a fill is idempotent (keyed by client_order_id + fill id) and atomic in Redis
(MULTI), so replaying the stream after a crash never double-counts.
"""
from __future__ import annotations

import csv
import io
import json
import threading
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Iterable, Mapping

from config.instruments import SPX_OPTION_MULTIPLIER, UnknownSymbolError, get_instrument
from store.redis_store import Store

PRICE_PLACES = Decimal("0.00000001")
MONEY_PLACES = Decimal("0.0001")


class FillError(ValueError):
    """A fill record is missing a field or has an unusable value (named in the message)."""


def parse_ts(raw: Any) -> datetime:
    """ISO-8601 text, or an epoch number in s/ms/us/ns (guessed from its size)."""
    if isinstance(raw, datetime):
        return raw if raw.tzinfo else raw.replace(tzinfo=UTC)
    text = str(raw).strip()
    if text.lstrip("-").isdigit():
        value = int(text)
        for scale, threshold in ((1_000_000_000, 10**17), (1_000_000, 10**14), (1_000, 10**11)):
            if abs(value) >= threshold:
                return datetime.fromtimestamp(value / scale, UTC)
        return datetime.fromtimestamp(value, UTC)
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise FillError(f"ts: {text[:40]!r} is not an ISO time or epoch number") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _dec(fields: Mapping[str, Any], name: str, default: str | None = None) -> Decimal:
    raw = fields.get(name, default)
    if raw is None or raw == "":
        if default is None:
            raise FillError(f"{name}: missing")
        raw = default
    try:
        value = Decimal(str(raw))
    except Exception:  # noqa: BLE001 - decimal.InvalidOperation and friends
        raise FillError(f"{name}: {str(raw)[:20]!r} is not a number") from None
    if not value.is_finite():
        raise FillError(f"{name}: must be finite")
    return value


def default_multiplier(symbol: str, position_key: str) -> Decimal:
    if position_key != symbol:  # an OCC option symbol: SPX/SPXW options are x100
        return SPX_OPTION_MULTIPLIER
    try:
        return get_instrument(symbol).multiplier
    except UnknownSymbolError:
        return Decimal(1)


@dataclass(frozen=True, slots=True)
class FillRecord:
    key: str  # idempotency key: client_order_id:fill_id
    client_order_id: str
    broker: str
    strategy: str
    symbol: str
    position_key: str
    side: str  # BUY | SELL
    quantity: int
    price: Decimal
    commission: Decimal
    multiplier: Decimal
    ts: datetime
    reason: str

    @property
    def signed_quantity(self) -> int:
        return self.quantity if self.side == "BUY" else -self.quantity

    @staticmethod
    def from_fields(fields: Mapping[str, Any], fallback_id: str | None = None) -> "FillRecord":
        def text(name: str, default: str | None = None) -> str:
            raw = fields.get(name, default)
            if raw is None or str(raw).strip() == "":
                raise FillError(f"{name}: missing")
            return str(raw).strip()

        coid = text("client_order_id")
        fill_id = str(fields.get("fill_id") or fields.get("id") or fallback_id or "").strip()
        if not fill_id:
            raise FillError("fill_id: missing (and no stream id to fall back on)")
        side = text("side").upper()
        if side not in ("BUY", "SELL"):
            raise FillError(f"side: {side[:10]!r} is not BUY or SELL")
        qty_raw = _dec(fields, "quantity")
        if qty_raw != qty_raw.to_integral_value() or qty_raw <= 0:
            raise FillError("quantity: must be a positive whole number")
        symbol = text("symbol")
        # The order manager's entries (oms/journal.fill_entry) name these `key` and `ts_ns`.
        position_key = str(fields.get("position_key") or fields.get("key") or symbol).strip()
        multiplier = (_dec(fields, "multiplier") if fields.get("multiplier") not in (None, "")
                      else default_multiplier(symbol, position_key))
        return FillRecord(
            key=f"{coid}:{fill_id}", client_order_id=coid, broker=text("broker"), strategy=text("strategy"),
            symbol=symbol, position_key=position_key, side=side, quantity=int(qty_raw),
            price=_dec(fields, "price"), commission=abs(_dec(fields, "commission", "0")), multiplier=multiplier,
            ts=parse_ts(fields.get("ts") or text("ts_ns")), reason=str(fields.get("reason") or "signal"),
        )


@dataclass(frozen=True, slots=True)
class OpenLot:
    strategy: str
    broker: str
    symbol: str
    position_key: str
    multiplier: Decimal
    quantity: int  # signed
    avg_price: Decimal
    entry_time: datetime
    entry_commission: Decimal  # commissions paid on the still-open quantity
    entry_reason: str

    def to_json(self) -> dict[str, Any]:
        doc = asdict(self)
        for k in ("multiplier", "avg_price", "entry_commission"):
            doc[k] = str(doc[k])
        doc["entry_time"] = self.entry_time.isoformat()
        return doc

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> "OpenLot":
        return OpenLot(doc["strategy"], doc["broker"], doc["symbol"], doc["position_key"], Decimal(doc["multiplier"]),
                       int(doc["quantity"]), Decimal(doc["avg_price"]), datetime.fromisoformat(doc["entry_time"]),
                       Decimal(doc["entry_commission"]), doc["entry_reason"])


@dataclass(frozen=True, slots=True)
class RoundTrip:
    id: str
    strategy: str
    broker: str
    symbol: str
    position_key: str
    direction: str  # LONG | SHORT
    quantity: int
    entry_time: datetime
    entry_price: Decimal
    exit_time: datetime
    exit_price: Decimal
    multiplier: Decimal
    gross_pnl: Decimal
    commission: Decimal
    net_pnl: Decimal
    exit_reason: str
    entry_reason: str

    @property
    def duration_seconds(self) -> float:
        return (self.exit_time - self.entry_time).total_seconds()

    def to_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {}
        for name in CSV_COLUMNS:
            value = getattr(self, name)
            doc[name] = value.isoformat() if isinstance(value, datetime) else (
                str(value) if isinstance(value, Decimal) else value)
        return doc

    @staticmethod
    def from_json(doc: Mapping[str, Any]) -> "RoundTrip":
        return RoundTrip(
            doc["id"], doc["strategy"], doc["broker"], doc["symbol"], doc["position_key"], doc["direction"],
            int(doc["quantity"]), datetime.fromisoformat(doc["entry_time"]), Decimal(doc["entry_price"]),
            datetime.fromisoformat(doc["exit_time"]), Decimal(doc["exit_price"]), Decimal(doc["multiplier"]),
            Decimal(doc["gross_pnl"]), Decimal(doc["commission"]), Decimal(doc["net_pnl"]), doc["exit_reason"],
            doc["entry_reason"],
        )


CSV_COLUMNS = ("id", "strategy", "broker", "symbol", "position_key", "direction", "quantity", "entry_time",
               "entry_price", "exit_time", "exit_price", "multiplier", "gross_pnl", "commission", "net_pnl",
               "duration_seconds", "exit_reason", "entry_reason")


def apply_to_lot(lot: OpenLot | None, fill: FillRecord) -> tuple[OpenLot | None, RoundTrip | None]:
    """Pure position arithmetic: the lot after the fill and the round trip it closed (if any)."""
    trade: RoundTrip | None = None
    remaining = fill.quantity
    if lot is not None and (lot.quantity > 0) != (fill.signed_quantity > 0):
        closed = min(abs(lot.quantity), fill.quantity)
        direction = 1 if lot.quantity > 0 else -1
        if closed == abs(lot.quantity):
            entry_comm = lot.entry_commission  # all of it: no rounding dust left behind
        else:
            entry_comm = (lot.entry_commission * closed / abs(lot.quantity)).quantize(MONEY_PLACES)
        exit_comm = fill.commission if closed == fill.quantity else \
            (fill.commission * closed / fill.quantity).quantize(MONEY_PLACES)
        gross = (fill.price - lot.avg_price) * closed * lot.multiplier * direction
        commission = entry_comm + exit_comm
        trade = RoundTrip(
            id=fill.key, strategy=lot.strategy, broker=lot.broker, symbol=lot.symbol, position_key=lot.position_key,
            direction="LONG" if direction > 0 else "SHORT", quantity=closed, entry_time=lot.entry_time,
            entry_price=lot.avg_price, exit_time=fill.ts, exit_price=fill.price, multiplier=lot.multiplier,
            gross_pnl=gross, commission=commission, net_pnl=gross - commission, exit_reason=fill.reason,
            entry_reason=lot.entry_reason,
        )
        left = lot.quantity - direction * closed
        lot = replace(lot, quantity=left, entry_commission=lot.entry_commission - entry_comm) if left else None
        remaining -= closed
        open_comm = fill.commission - exit_comm
    else:
        open_comm = fill.commission
    if remaining:
        signed = remaining if fill.side == "BUY" else -remaining
        if lot is None:
            lot = OpenLot(fill.strategy, fill.broker, fill.symbol, fill.position_key, fill.multiplier, signed,
                          fill.price, fill.ts, open_comm, fill.reason)
        else:  # adding to the position: average the entry price, keep the first entry time
            total = abs(lot.quantity) + remaining
            avg = ((lot.avg_price * abs(lot.quantity) + fill.price * remaining) / total).quantize(PRICE_PLACES)
            lot = replace(lot, quantity=lot.quantity + signed, avg_price=avg,
                          entry_commission=lot.entry_commission + open_comm)
    return lot, trade


@dataclass(frozen=True, slots=True)
class TradeFilter:
    strategy: str | None = None
    symbol: str | None = None
    broker: str | None = None
    start: datetime | None = None  # exit time >= start
    end: datetime | None = None  # exit time < end

    def matches(self, t: RoundTrip) -> bool:
        return ((self.strategy is None or t.strategy == self.strategy)
                and (self.symbol is None or t.symbol == self.symbol or t.position_key == self.symbol)
                and (self.broker is None or t.broker == self.broker))


def _ns(ts: datetime) -> int:
    return int(ts.timestamp() * 1_000_000) * 1000


class Ledger:
    """Redis-backed journal. Keys: ledger:applied (set), ledger:open (hash), ledger:trades (hash),
    ledger:trades:by_exit (zset), ledger:cursor (last oms:fills id consumed)."""

    STREAM_BATCH = 1000

    def __init__(self, store: Store, fills_stream: str | None = None) -> None:
        self.store = store
        self.fills_stream = fills_stream or store.key("oms", "fills")
        self._lock = threading.Lock()  # one writer at a time in this process (instance lock covers others)

    def _k(self, *parts: str) -> str:
        return self.store.key("ledger", *parts)

    @staticmethod
    def _lot_field(strategy: str, broker: str, position_key: str) -> str:
        return f"{strategy}|{broker}|{position_key}"

    # ------------------------------------------------------------------ writing
    def apply_fill(self, fields: Mapping[str, Any], fallback_id: str | None = None) -> RoundTrip | None:
        """Apply one fill; returns the round trip it closed, or None. Re-applying is a no-op."""
        fill = FillRecord.from_fields(fields, fallback_id)
        r = self.store.redis
        with self._lock:
            if r.sismember(self._k("applied"), fill.key):
                return None
            lot_field = self._lot_field(fill.strategy, fill.broker, fill.position_key)
            raw = r.hget(self._k("open"), lot_field)
            lot, trade = apply_to_lot(OpenLot.from_json(json.loads(raw)) if raw else None, fill)
            pipe = r.pipeline(transaction=True)  # all or nothing: a crash never half-applies a fill
            pipe.sadd(self._k("applied"), fill.key)
            if lot is None:
                pipe.hdel(self._k("open"), lot_field)
            else:
                pipe.hset(self._k("open"), lot_field, json.dumps(lot.to_json()))
            if trade is not None:
                pipe.hset(self._k("trades"), trade.id, json.dumps(trade.to_json()))
                pipe.zadd(self._k("trades", "by_exit"), {trade.id: _ns(trade.exit_time)})
            pipe.execute()
            return trade

    def sync(self) -> int:
        """Consume new entries of the fills stream since the stored cursor; returns entries consumed.
        Bad records are skipped (and returned by `skipped`) rather than blocking the journal."""
        r = self.store.redis
        applied = 0
        cursor = r.get(self._k("cursor")) or "0-0"
        while True:
            entries = r.xrange(self.fills_stream, min=f"({cursor}", count=self.STREAM_BATCH) if cursor != "0-0" \
                else r.xrange(self.fills_stream, min="-", count=self.STREAM_BATCH)
            if not entries:
                return applied
            for entry_id, fields in entries:
                try:
                    self.apply_fill(fields, fallback_id=entry_id)
                    applied += 1
                except FillError as exc:
                    r.hset(self._k("skipped"), entry_id, str(exc))
                cursor = entry_id
                r.set(self._k("cursor"), cursor)

    def rebuild_from_stream(self) -> int:
        """Forget everything derived and replay the whole fills stream."""
        with self._lock:
            self.store.redis.delete(*(self._k(*p) for p in (("applied",), ("open",), ("trades",),
                                                             ("trades", "by_exit"), ("cursor",), ("skipped",))))
        return self.sync()

    def skipped(self) -> dict[str, str]:
        return dict(self.store.redis.hgetall(self._k("skipped")))

    # ------------------------------------------------------------------ reading
    def open_positions(self) -> list[OpenLot]:
        return [OpenLot.from_json(json.loads(v)) for v in self.store.redis.hvals(self._k("open"))]

    def _load(self, start: datetime | None, end: datetime | None) -> list[RoundTrip]:
        low = _ns(start) if start else "-inf"
        high = f"({_ns(end)}" if end else "+inf"
        ids = self.store.redis.zrangebyscore(self._k("trades", "by_exit"), low, high)
        if not ids:
            return []
        docs = self.store.redis.hmget(self._k("trades"), ids)
        return [RoundTrip.from_json(json.loads(d)) for d in docs if d]

    def trades(self, flt: TradeFilter | None = None, offset: int = 0, limit: int | None = 100,
               newest_first: bool = True) -> tuple[list[RoundTrip], int]:
        """Filtered trades (by exit time) and the total count before paging."""
        flt = flt or TradeFilter()
        rows = [t for t in self._load(flt.start, flt.end) if flt.matches(t)]
        if newest_first:
            rows.reverse()
        total = len(rows)
        return rows[offset: None if limit is None else offset + limit], total

    @staticmethod
    def to_csv(trades: Iterable[RoundTrip]) -> str:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for t in trades:
            doc = t.to_json()
            writer.writerow([doc[c] for c in CSV_COLUMNS])
        return out.getvalue()
