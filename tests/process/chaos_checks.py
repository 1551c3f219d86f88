"""The chaos test's invariants, checked on one snapshot of a settled service.

A `Snapshot` is read from the outside only: the REST API (orders, book, strategies, halts,
reconciliation) plus the paper broker's own records in Redis (its orders and fills: what the
"broker" actually received and did, which the API shows only as positions). `check()` is pure, so
the checker itself is tested on hand-made snapshots (tests/process/test_chaos_checks.py).

Invariants (each violation is one line in `Findings`):
- no client order id sent twice: the paper broker filled no client order id more than once, nor
  more than the order's quantity; and no intent leg (strategy, symbol, broker, event time, leg)
  has two client order ids in the book;
- every order terminal or resolved: no order left NEW / SUBMITTED / UNKNOWN, no working order the
  broker does not show as working; and book and broker agree on every order (a fill the book lost,
  a fill the broker never made, an order the book does not know), and no order is refused as a
  duplicate of one the broker never received (its intent would be lost: nothing else sends it);
- strategy = book = paper broker for every (strategy, ticker, broker): the strategy's side x the
  ticker's quantity at that broker = the book's lane = the broker's position at the ticker's key,
  and the broker holds nothing the configured lanes do not explain;
- no halted ticker without a standing reason: every halt is affected by a mismatch of a
  reconciliation run at snapshot time.
"""
from __future__ import annotations

import json
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import redis

TERMINAL = frozenset({"FILLED", "CANCELLED", "REJECTED"})
WORKING = frozenset({"ACCEPTED", "PARTIALLY_FILLED"})
SIDE = {"LONG": 1, "SHORT": -1, "FLAT": 0}
_HISTORY = ("duplicate sends", "duplicate intents", "order divergences", "lost intents")


@dataclass(frozen=True, slots=True)
class TickerSpec:
    """One configured ticker: its quantity per broker (0: the broker does not trade it)."""

    strategy: str
    symbol: str
    quantities: tuple[tuple[str, int], ...]  # (broker, quantity) for every broker

    def lanes(self) -> list[tuple[str, str, str, int]]:
        return [(self.strategy, self.symbol, broker, qty) for broker, qty in self.quantities]


@dataclass
class Snapshot:
    tickers: list[TickerSpec]
    strategy_positions: dict[tuple[str, str], str]  # (strategy, symbol) -> LONG / SHORT / FLAT
    book: dict[tuple[str, str, str], tuple[str, int]]  # (strategy, symbol, broker) -> (key, quantity)
    broker_positions: dict[tuple[str, str], int]  # (broker, key) -> quantity at the paper broker
    orders: list[dict[str, Any]]  # the book's orders (GET /api/orders rows)
    paper_orders: dict[str, dict[str, dict[str, Any]]]  # broker -> client order id -> paper order
    paper_fills: dict[str, list[dict[str, Any]]]  # broker -> fill records, in stream order
    halts: list[dict[str, str]]  # {strategy, symbol, reason}
    standing: set[tuple[str, str]]  # (strategy, symbol) pairs a fresh reconciliation's mismatches affect
    reconcile_ok: bool = True


@dataclass
class Findings:
    duplicate_sends: list[str] = field(default_factory=list)
    duplicate_intents: list[str] = field(default_factory=list)
    unresolved_orders: list[str] = field(default_factory=list)
    order_divergences: list[str] = field(default_factory=list)
    lost_intents: list[str] = field(default_factory=list)
    position_divergences: list[str] = field(default_factory=list)
    unexplained_halts: list[str] = field(default_factory=list)

    def groups(self) -> dict[str, list[str]]:
        return {"duplicate sends": self.duplicate_sends, "duplicate intents": self.duplicate_intents,
                "unresolved orders": self.unresolved_orders, "order divergences": self.order_divergences,
                "lost intents": self.lost_intents,
                "position divergences": self.position_divergences,
                "halts without a standing reason": self.unexplained_halts}

    @property
    def violations(self) -> int:
        return sum(len(items) for items in self.groups().values())

    def merge(self, found: "Findings", where: str) -> None:
        """Add one checkpoint's findings. The order history (duplicates, order divergences) is
        re-read whole at every checkpoint: each such finding is kept once. Positions, halts and
        unresolved orders are states: each checkpoint's are kept, marked with where they were seen."""
        for name, items in found.groups().items():
            total = self.groups()[name]
            if name in _HISTORY:
                total += [item for item in items if item not in total]
            else:
                total += [f"{where}: {item}" for item in items]

    def counts(self) -> dict[str, int]:
        return {name.replace(" ", "_"): len(items) for name, items in self.groups().items()}

    def describe(self, limit: int = 15) -> str:
        lines = []
        for name, items in self.groups().items():
            if items:
                lines.append(f"{name} ({len(items)}):")
                lines += [f"  - {item}" for item in items[:limit]]
                if len(items) > limit:
                    lines.append(f"  ... and {len(items) - limit} more")
        return "\n".join(lines) or "no violations"


def check(snap: Snapshot) -> Findings:
    findings = Findings()
    _duplicates(snap, findings)
    _orders(snap, findings)
    _positions(snap, findings)
    _halts(snap, findings)
    return findings


def _duplicates(snap: Snapshot, findings: Findings) -> None:
    for broker, fills in sorted(snap.paper_fills.items()):
        count: Counter[str] = Counter()
        qty: Counter[str] = Counter()
        for fill in fills:
            coid = str(fill.get("client_order_id", ""))
            count[coid] += 1
            qty[coid] += int(fill.get("quantity") or 0)
        for coid in sorted(count):
            order = snap.paper_orders.get(broker, {}).get(coid)
            ordered = int(order["quantity"]) if order else None
            if count[coid] > 1 or (ordered is not None and qty[coid] > ordered):
                findings.duplicate_sends.append(
                    f"{broker} {coid}: {count[coid]} fills for {qty[coid]} in all, order quantity {ordered}")
    legs: dict[tuple[str, str, str, str, str], set[str]] = defaultdict(set)
    for o in snap.orders:
        legs[(o["strategy"], o["symbol"], o["broker"], str(o["event_ts_ns"]), o["leg"])].add(o["client_order_id"])
    for (strategy, symbol, broker, ts, leg), coids in sorted(legs.items()):
        if len(coids) > 1:
            findings.duplicate_intents.append(
                f"{strategy} {symbol} {broker} event {ts} {leg}: {len(coids)} client order ids {sorted(coids)}")


def _orders(snap: Snapshot, findings: Findings) -> None:
    ours = {o["client_order_id"]: o for o in snap.orders}
    for o in snap.orders:
        coid, broker, state = o["client_order_id"], o["broker"], o["state"]
        paper = snap.paper_orders.get(broker, {}).get(coid)
        where = f"{o['strategy']} {o['symbol']} {broker} {o['leg']} {coid}"
        reason = f" ({o.get('reason')})" if o.get("reason") else ""
        if state not in TERMINAL:
            if state in WORKING and paper is not None and paper["state"] in WORKING:
                continue  # working at the broker too: resolved, just not done
            findings.unresolved_orders.append(
                f"{where}: {state}{reason}; paper broker: {paper['state'] if paper else 'no such order'}")
            continue
        if state == "REJECTED" and paper is None and "duplicate" in str(o.get("reason", "")).lower():
            findings.lost_intents.append(f"{where}: refused as a duplicate{reason}, but the broker never received it")
        paper_filled = int(paper["filled_quantity"]) if paper else 0
        if int(o["filled_quantity"]) != paper_filled:
            findings.order_divergences.append(
                f"{where}: book {state} filled {o['filled_quantity']}{reason}, paper broker "
                f"{paper['state'] + ' filled ' + str(paper_filled) if paper else 'has no such order'}")
    for broker, orders in sorted(snap.paper_orders.items()):
        for coid, paper in sorted(orders.items()):
            if coid not in ours:
                findings.order_divergences.append(
                    f"{broker} {coid}: the paper broker has it ({paper['side']} {paper['quantity']} {paper['symbol']}, "
                    f"{paper['state']}) and the book does not")


def _positions(snap: Snapshot, findings: Findings) -> None:
    explained: set[tuple[str, str]] = set()
    configured: set[tuple[str, str, str]] = set()
    for spec in snap.tickers:
        side = snap.strategy_positions.get((spec.strategy, spec.symbol), "FLAT")
        for strategy, symbol, broker, qty in spec.lanes():
            configured.add((strategy, symbol, broker))
            key, held = snap.book.get((strategy, symbol, broker), (symbol, 0))
            explained.add((broker, key))
            at_broker = snap.broker_positions.get((broker, key), 0)
            wanted = SIDE.get(side, 0) * qty
            if not wanted == held == at_broker:
                findings.position_divergences.append(
                    f"{strategy} {symbol} {broker}: strategy {side} x{qty} = {wanted}, book {held}, "
                    f"paper broker {at_broker} at {key}")
    for lane, (key, held) in sorted(snap.book.items()):
        if lane not in configured and held:
            findings.position_divergences.append(f"{' '.join(lane)}: the book holds {held} at {key} for no configured ticker")
    for (broker, key), held in sorted(snap.broker_positions.items()):
        if (broker, key) not in explained and held:
            findings.position_divergences.append(f"{broker} {key}: the paper broker holds {held} that no book lane explains")


def _halts(snap: Snapshot, findings: Findings) -> None:
    for halt in snap.halts:
        if (halt["strategy"], halt["symbol"]) not in snap.standing:
            findings.unexplained_halts.append(
                f"{halt['strategy']} {halt['symbol']} halted ({halt['reason']}) but reconciliation now agrees")


# ---- reading a snapshot ---------------------------------------------------------------------

def paper_records(client: redis.Redis, prefix: str, brokers: Iterable[str]
                  ) -> tuple[dict[str, dict[str, dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """The paper broker's own records: its orders (`paper:<broker>:orders`, client id -> order JSON)
    and its fill log (`paper:<broker>:fills`, one entry per fill). See brokers/paper.py."""
    orders: dict[str, dict[str, dict[str, Any]]] = {}
    fills: dict[str, list[dict[str, Any]]] = {}
    for broker in brokers:
        raw = client.hgetall(f"{prefix}:paper:{broker}:orders")
        orders[broker] = {str(k): json.loads(v) for k, v in raw.items()}
        fills[broker] = [json.loads(f["fill"]) for _id, f in client.xrange(f"{prefix}:paper:{broker}:fills")]
    return orders, fills


def book_from_positions(payload: dict[str, Any]) -> tuple[dict[tuple[str, str, str], tuple[str, int]],
                                                          dict[tuple[str, str], int]]:
    """GET /api/positions?include_flat=true -> (the book's lanes, each broker's positions by key)."""
    book = {(p["strategy"], p["symbol"], p["broker"]): (str(p["key"]), int(p["quantity"]))
            for p in payload["positions"]}
    held: dict[tuple[str, str], int] = {}
    for broker, answer in payload["brokers"].items():
        assert answer.get("ok"), f"GET /api/positions could not read {broker}: {answer}"
        for p in answer["positions"]:
            held[(broker, str(p["key"]))] = held.get((broker, str(p["key"])), 0) + int(p["quantity"])
    return book, held
