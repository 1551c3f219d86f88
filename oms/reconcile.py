"""Reconciliation: each broker's positions and open orders against the OMS's own book.

Run at start-up (before any strategy resumes) and every few minutes. It first resolves UNKNOWN
orders (and advances in-flight ones) by querying the brokers, then compares, per broker and
position key, the broker's quantity with the sum of the strategies' OMS positions. The report
lists every mismatch and the (strategy, symbol) pairs it affects; halting those tickers is the
engine's job. Operators then `adopt_broker_position` (make the OMS book match the broker) or
`flatten_mismatch` (adopt, then close everything at that key through the normal order path).
A broker that cannot be read is reported as such, never treated as flat.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from config.instruments import CATALOG, SPX_OPTION_MULTIPLIER, canonical_symbol
from domain.orders import BrokerName
from oms.models import BrokerReport, OmsPosition, TargetOrder, option_to_text, parse_occ
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
class BrokerReconciliation:
    broker: str
    ok: bool
    error: str = ""
    mismatches: tuple[PositionMismatch, ...] = ()
    unknown_open_orders: tuple[str, ...] = ()  # open at the broker, not ours (manual orders?)
    missing_open_orders: tuple[str, ...] = ()  # working in the OMS, not open at the broker

    def to_json(self) -> dict[str, Any]:
        return {"broker": self.broker, "ok": self.ok, "error": self.error,
                "mismatches": [m.to_json() for m in self.mismatches],
                "unknown_open_orders": list(self.unknown_open_orders),
                "missing_open_orders": list(self.missing_open_orders)}


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

    def to_json(self) -> dict[str, Any]:
        return {"ts_ns": self.ts_ns, "ok": self.ok, "brokers": [b.to_json() for b in self.brokers],
                "resolved_unknown": list(self.resolved_unknown), "still_unknown": list(self.still_unknown),
                "affected": [list(a) for a in self.affected]}


def _symbol_for_key(key: str) -> str:
    contract = parse_occ(key)
    if contract is not None:
        return contract.underlying
    try:
        return canonical_symbol(key)
    except ValueError:
        return key


symbol_for_key = _symbol_for_key  # public: position key (symbol / OCC) -> catalog symbol


def reconcile(om: OrderManager, ts_ns: int | None = None) -> ReconciliationReport:
    recovered = om.recover()  # resolve UNKNOWN / in-flight orders before comparing
    unknown_left = tuple(sorted(om.store.redis.smembers(om.k_unknown)))
    oms_positions = om.positions(include_flat=True)
    working = {o.client_order_id: o for o in om.orders(limit=1000) if not o.state.is_terminal}
    reports: list[BrokerReconciliation] = []
    affected_all: set[tuple[str, str]] = set()
    for name, adapter in om.adapters.items():
        try:
            broker_positions = adapter.positions()
            broker_open = adapter.open_orders()
        except Exception as exc:  # unreadable is not flat: report it
            reports.append(BrokerReconciliation(broker=name, ok=False, error=f"{type(exc).__name__}"))
            continue
        ours: dict[str, list[OmsPosition]] = {}
        for p in oms_positions:
            if p.broker == name:
                ours.setdefault(p.key if p.quantity else p.symbol, []).append(p)
        held = {bp.key: bp.quantity for bp in broker_positions}
        mismatches: list[PositionMismatch] = []
        for key in sorted(set(held) | {k for k, ps in ours.items() if any(p.quantity for p in ps)}):
            oms_qty = sum(p.quantity for p in ours.get(key, []))
            if held.get(key, 0) == oms_qty:
                continue
            affected = {(p.strategy, p.symbol) for p in ours.get(key, [])}
            symbol = _symbol_for_key(key)
            affected |= {(p.strategy, p.symbol) for p in oms_positions if p.broker == name and p.symbol == symbol}
            if not affected:
                affected = {(RECONCILE_STRATEGY, symbol)}
            affected_all |= affected
            mismatches.append(PositionMismatch(name, key, held.get(key, 0), oms_qty, tuple(sorted(affected))))
        open_ids = {u.client_order_id for u in broker_open}
        ours_working = {c for c, o in working.items() if o.broker == name}
        reports.append(BrokerReconciliation(
            broker=name, ok=True, mismatches=tuple(mismatches),
            unknown_open_orders=tuple(sorted(open_ids - set(working))),
            missing_open_orders=tuple(sorted(c for c in ours_working - open_ids
                                             if working[c].state.value in ("ACCEPTED", "PARTIALLY_FILLED"))),
        ))
    return ReconciliationReport(
        ts_ns=ts_ns if ts_ns is not None else om.store.redis.time()[0] * 1_000_000_000,
        brokers=tuple(reports),
        resolved_unknown=tuple(o.client_order_id for o in recovered if o.state.is_terminal),
        still_unknown=unknown_left, affected=tuple(sorted(affected_all)),
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
