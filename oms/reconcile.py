"""Reconciliation: each broker's positions and open orders against the OMS's own book.

Run at start-up (before any strategy resumes) and every few minutes. It first resolves UNKNOWN
orders (and advances in-flight ones) by querying the brokers, then compares, per broker and
position key, the broker's quantity with the sum of the strategies' OMS positions. The report
lists every mismatch and the (strategy, symbol) pairs it affects; halting those tickers is the
engine's job. Operators then `adopt_broker_position` (make the OMS book match the broker) or
`flatten_mismatch` (adopt, then close everything at that key through the normal order path).
A broker that cannot be read is reported as such, never treated as flat.

Orders keep filling while this runs, and the book and a broker cannot be read at one instant, so
one comparison is taken as: read the book (A), read the broker, read the OMS's working orders,
read the book again (B). A key whose book changed between A and B, or whose difference the
unfilled remainder of its working or UNKNOWN orders can explain (a fill the broker has and the OMS
has not applied yet: the paper broker fills a resting order in its account first and the OMS
books it right after), is *in flight*, not a mismatch. The order matters: an order that completes
after the working-order read changes the book before B (so the key moved) or after B (so it was
still working when read). A key that disagrees without such an excuse is only a candidate; it
becomes a mismatch when it still disagrees on a second comparison taken after `settle()` (the
caller's short wait for in-flight orders to land).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Callable

from config.instruments import CATALOG, SPX_OPTION_MULTIPLIER, canonical_symbol
from config.symbology import contract_from_key
from domain.orders import BrokerName, BrokerPosition, OrderSide, OrderUpdate
from oms.models import BrokerReport, OmsPosition, OrderRecord, TargetOrder, option_to_text, parse_occ
from oms.order_manager import OrderManager

RECONCILE_STRATEGY = "reconcile"  # lane that holds adopted positions no strategy owns


@dataclass(frozen=True, slots=True)
class PositionMismatch:
    broker: str
    key: str
    broker_quantity: int
    oms_quantity: int
    affected: tuple[tuple[str, str], ...]  # (strategy, symbol)

    def to_json(self) -> dict[str, Any]:
        return {"broker": self.broker, "key": self.key, "broker_quantity": self.broker_quantity,
                "oms_quantity": self.oms_quantity, "difference": self.broker_quantity - self.oms_quantity,
                "affected": [list(a) for a in self.affected]}


@dataclass(frozen=True, slots=True)
class InFlightKey:
    """A key whose book and broker differ while orders are moving it: not compared this time."""

    broker: str
    key: str
    broker_quantity: int
    oms_quantity: int
    why: str  # "book changed during the read" or "working orders: <client ids>"

    def to_json(self) -> dict[str, Any]:
        return {"broker": self.broker, "key": self.key, "broker_quantity": self.broker_quantity,
                "oms_quantity": self.oms_quantity, "why": self.why}


@dataclass(frozen=True, slots=True)
class BrokerReconciliation:
    broker: str
    ok: bool
    error: str = ""
    mismatches: tuple[PositionMismatch, ...] = ()  # confirmed: disagreed on both comparisons
    unknown_open_orders: tuple[str, ...] = ()  # open at the broker, not ours (manual orders?)
    missing_open_orders: tuple[str, ...] = ()  # working in the OMS, not open at the broker
    in_flight: tuple[InFlightKey, ...] = ()
    unconfirmed: tuple[PositionMismatch, ...] = ()  # disagreed on the last comparison only: checked next time
    settled: tuple[PositionMismatch, ...] = ()  # disagreed on the first comparison, agreed on the second

    def agrees(self, key: str) -> bool:
        """The broker was read and the key was compared and agreed (nothing moving, nothing differing)."""
        return self.ok and all(key != m.key for m in (*self.mismatches, *self.unconfirmed, *self.in_flight))

    def to_json(self) -> dict[str, Any]:
        return {"broker": self.broker, "ok": self.ok, "error": self.error,
                "mismatches": [m.to_json() for m in self.mismatches],
                "unknown_open_orders": list(self.unknown_open_orders),
                "missing_open_orders": list(self.missing_open_orders),
                "in_flight": [k.to_json() for k in self.in_flight],
                "unconfirmed": [m.to_json() for m in self.unconfirmed],
                "settled": [m.to_json() for m in self.settled]}


@dataclass(frozen=True, slots=True)
class ReconciliationReport:
    ts_ns: int
    brokers: tuple[BrokerReconciliation, ...]
    resolved_unknown: tuple[str, ...] = ()
    still_unknown: tuple[str, ...] = ()
    affected: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # every (strategy, symbol) to halt

    @property
    def ok(self) -> bool:
        return all(b.ok and not b.mismatches for b in self.brokers) and not self.still_unknown

    def broker(self, name: str) -> BrokerReconciliation | None:
        return next((b for b in self.brokers if b.broker == name), None)

    def to_json(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "ok": self.ok, "brokers": [b.to_json() for b in self.brokers],
                "resolved_unknown": list(self.resolved_unknown), "still_unknown": list(self.still_unknown),
                "affected": [list(a) for a in self.affected]}


def _symbol_for_key(key: str) -> str:
    contract = parse_occ(key)
    if contract is not None:
        return contract.underlying
    future = contract_from_key(key)  # a futures contract month, "/MESZ25"
    if future is not None:
        return canonical_symbol("/" + future.root)
    try:
        return canonical_symbol(key)
    except ValueError:
        return key


symbol_for_key = _symbol_for_key  # public: position key (symbol / contract month / OCC) -> catalog symbol

Book = dict[tuple[str, str], dict[tuple[str, str], int]]  # (broker, key) -> {(strategy, symbol): quantity}


def _book(positions: list[OmsPosition]) -> Book:
    """Lanes per (broker, key). A flat lane counts under its symbol: its `key` may still name the
    option it held last."""
    book: Book = {}
    for p in positions:
        book.setdefault((p.broker, p.key if p.quantity else p.symbol), {})[(p.strategy, p.symbol)] = p.quantity
    return book


def _active_orders(om: OrderManager) -> list[OrderRecord]:
    """Every non-terminal order, UNKNOWN included (their outcome may already be at the broker)."""
    r = om.store.redis
    ids = sorted(set(r.smembers(om.k_active)) | set(r.smembers(om.k_unknown)))
    return [rec for rec in (om.order(c) for c in ids) if rec is not None and not rec.state.is_terminal]


def _explainable(orders: list[OrderRecord]) -> tuple[int, int]:
    """The range of (broker - book) that fills the OMS has not applied yet could make: each order
    can still fill between nothing and its unfilled remainder, in its direction."""
    lo = hi = 0
    for o in orders:
        remainder = max(0, o.quantity - o.filled_quantity)
        if o.side is OrderSide.BUY:
            hi += remainder
        else:
            lo -= remainder
    return lo, hi


@dataclass(frozen=True, slots=True)
class _BrokerRead:
    positions: list[BrokerPosition]
    open_orders: list[OrderUpdate]


def _compare(om: OrderManager) -> dict[str, BrokerReconciliation]:
    """One race-aware comparison of every broker with the book (see the module docstring). Its
    `mismatches` are candidates: the caller confirms them with a second comparison."""
    book_a = _book(om.positions(include_flat=True))
    active_a = set(om.store.redis.smembers(om.k_active))
    reads: dict[str, _BrokerRead | str] = {}
    for name, adapter in om.adapters.items():
        try:
            reads[name] = _BrokerRead(adapter.positions(), adapter.open_orders())
        except Exception as exc:  # unreadable is not flat: report it
            reads[name] = type(exc).__name__
    working = _active_orders(om)
    positions_b = om.positions(include_flat=True)
    book_b = _book(positions_b)
    out: dict[str, BrokerReconciliation] = {}
    for name, read in reads.items():
        if isinstance(read, str):
            out[name] = BrokerReconciliation(broker=name, ok=False, error=read)
            continue
        held = {bp.key: bp.quantity for bp in read.positions}
        ours = {k for (b, k), lanes in (*book_a.items(), *book_b.items()) if b == name and any(lanes.values())}
        mismatches: list[PositionMismatch] = []
        in_flight: list[InFlightKey] = []
        for key in sorted(set(held) | ours):
            lanes = book_b.get((name, key), {})
            oms_qty, broker_qty = sum(lanes.values()), held.get(key, 0)
            if broker_qty == oms_qty:
                continue
            if book_a.get((name, key), {}) != lanes:
                in_flight.append(InFlightKey(name, key, broker_qty, oms_qty, "book changed during the read"))
                continue
            # A protective stop rests for as long as the position: it explains no difference.
            at_key = [o for o in working if o.broker == name and o.position_key == key and o.leg != "stop"]
            lo, hi = _explainable(at_key)
            if at_key and lo <= broker_qty - oms_qty <= hi:
                ids = ",".join(o.client_order_id for o in at_key)[:200]
                in_flight.append(InFlightKey(name, key, broker_qty, oms_qty, f"working orders: {ids}"))
                continue
            affected = set(lanes)
            symbol = _symbol_for_key(key)
            affected |= {(p.strategy, p.symbol) for p in positions_b if p.broker == name and p.symbol == symbol}
            if not affected:
                affected = {(RECONCILE_STRATEGY, symbol)}
            mismatches.append(PositionMismatch(name, key, broker_qty, oms_qty, tuple(sorted(affected))))
        open_ids = {u.client_order_id for u in read.open_orders}
        ours_working = {o.client_order_id: o for o in working if o.broker == name}
        out[name] = BrokerReconciliation(
            broker=name, ok=True, mismatches=tuple(mismatches), in_flight=tuple(in_flight),
            unknown_open_orders=tuple(sorted(open_ids - active_a - {o.client_order_id for o in working})),
            # working before and after the broker was read, yet not open there
            missing_open_orders=tuple(sorted(c for c, o in ours_working.items() if c in active_a and c not in open_ids
                                             and o.state.value in ("ACCEPTED", "PARTIALLY_FILLED"))),
        )
    return out


def _confirm(first: BrokerReconciliation | None, second: BrokerReconciliation) -> BrokerReconciliation:
    """A mismatch holds when its key disagreed on both comparisons."""
    if not second.ok:
        return second
    candidates = {m.key for m in first.mismatches} if first is not None and first.ok else set()
    now = {m.key for m in second.mismatches}
    return BrokerReconciliation(
        broker=second.broker, ok=True, error="",
        mismatches=tuple(m for m in second.mismatches if m.key in candidates),
        unknown_open_orders=second.unknown_open_orders, missing_open_orders=second.missing_open_orders,
        in_flight=second.in_flight,
        unconfirmed=tuple(m for m in second.mismatches if m.key not in candidates),
        settled=tuple(m for m in (first.mismatches if first is not None else ()) if m.key not in now),
    )


def reconcile(om: OrderManager, ts_ns: int | None = None, *,
              settle: Callable[[], object] | None = None) -> ReconciliationReport:
    """Resolve UNKNOWN orders, compare, and when something disagrees, wait `settle()` and compare
    again: only a key that disagrees both times is reported as a mismatch. `settle` None re-reads
    at once (tests, callers that cannot wait); the runtime waits a second or two on its stop event."""
    recovered = om.recover()  # resolve UNKNOWN / in-flight orders before comparing
    unknown_left = tuple(sorted(om.store.redis.smembers(om.k_unknown)))
    first = _compare(om)
    if any(b.mismatches for b in first.values()):
        if settle is not None:
            settle()
        second = _compare(om)
        brokers = tuple(_confirm(first.get(name), b) for name, b in second.items())
    else:
        brokers = tuple(first.values())
    affected = {a for b in brokers for m in b.mismatches for a in m.affected}
    return ReconciliationReport(
        ts_ns=ts_ns if ts_ns is not None else om.store.redis.time()[0] * 1_000_000_000,
        brokers=brokers,
        resolved_unknown=tuple(o.client_order_id for o in recovered if o.state.is_terminal),
        still_unknown=unknown_left, affected=tuple(sorted(affected)),
    )


class NothingAtKey(ValueError):
    """Neither the broker nor the order book holds a position at the key (a mistyped key): there is
    nothing to adopt or flatten, and no lane is created for it."""


def adopt_broker_position(om: OrderManager, broker: str, key: str, strategy: str, symbol: str | None = None,
                          reason: str = "operator adopted broker position") -> OmsPosition:
    """Make the OMS book match the broker at `key`: `strategy`'s lane absorbs the difference.
    Raises NothingAtKey when neither side holds anything there."""
    adapter = om.adapters[BrokerName(broker)]
    held = {p.key: p for p in adapter.positions()}
    bp = held.get(key)
    if (bp is None or bp.quantity == 0) and not any(p.quantity for p in om.positions() if p.broker == broker and p.key == key):
        raise NothingAtKey(f"neither {broker} nor the order book holds a position at {key}")
    broker_qty = bp.quantity if bp else 0
    symbol = symbol or _symbol_for_key(key)
    others = sum(p.quantity for p in om.positions() if p.broker == broker and p.key == key
                 and not (p.strategy == strategy and p.symbol == symbol))
    qty = broker_qty - others
    contract = parse_occ(key)
    multiplier = SPX_OPTION_MULTIPLIER if contract else (CATALOG[canonical_symbol(symbol)].multiplier
                                                         if symbol in CATALOG else Decimal(1))
    return om.set_position(strategy, symbol, broker, key, qty, bp.avg_price if bp else Decimal(0), multiplier,
                           option_to_text(contract), reason)


def flatten_mismatch(om: OrderManager, broker: str, key: str, reason: str = "operator flattened mismatch",
                     ts_ns: int | None = None) -> BrokerReport:
    """Close the broker's whole position at `key`: adopt the unexplained remainder into the
    reconcile lane, then take every lane at that key to 0 through the normal (journaled,
    risk-checked, deduplicated) order path."""
    symbol = _symbol_for_key(key)
    adopt_broker_position(om, broker, key, RECONCILE_STRATEGY, symbol, reason=f"{reason} (adopt before flatten)")
    ts = ts_ns if ts_ns is not None else int(om.store.redis.time()[0]) * 1_000_000_000
    targets = [TargetOrder(p.strategy, p.symbol, BrokerName(broker), 0, ts, "manual", reason)
               for p in om.positions() if p.broker == broker and p.key == key]
    results = om.move_all(targets)
    errors = tuple(f"{r.strategy}/{r.symbol}: {r.status.value} {r.reason}" for r in results if not r.ok)
    return BrokerReport(broker=broker, ok=not errors, results=tuple(results), errors=errors)
