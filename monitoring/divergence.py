"""Standing position divergences: places where the strategy, the OMS book and the broker disagree.

A position the strategy does not know it holds has no stop, so a disagreement must never be
silent. Two sources report here, one entry per (source, strategy, symbol, broker[, key]):

- ``reconciliation``: the book against the broker at one position key, once reconciliation has
  confirmed it on two reads (oms.reconcile). One entry per (strategy, symbol) lane the key
  concerns; it clears when a later reconciliation agrees at the key or an operator adopts or
  flattens there.
- ``strategy``: what the strategy believes it holds against the book lane, reported by the strategy
  engine after it acts (`report_strategy` / `clear_strategy`).

Entries live in Redis (one JSON field per entry in `engine:divergences`), not in memory, so a
restart keeps showing what stood before it, with its original `since`, until the engine or the
next reconciliation looks again: a crash must not make a divergence look resolved.

An entry appearing is logged and alerted once (`position_divergence`, critical); its clearing is
logged and alerted at info (`position_divergence_cleared`). The lane gauge
`trading_position_divergence{strategy,symbol,broker}` is 1 while any entry stands for the lane
and 0 once none does (the quantities are in /api/status, not in the metric, so the gauge stays a
plain "is it wrong" signal whichever source reported it).
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

from store.redis_store import Store

log = logging.getLogger(__name__)

RECONCILIATION = "reconciliation"
STRATEGY = "strategy"

AlertFn = Callable[..., object]  # monitoring.alerts.Alerter.alert(kind, message, severity, dedupe_key=, **details)
LaneFn = Callable[[str, str, str, bool], None]  # (strategy, symbol, broker, diverging) -> the gauge


@dataclass(frozen=True, slots=True)
class Divergence:
    source: str  # RECONCILIATION (book vs broker) or STRATEGY (strategy vs book)
    strategy: str
    symbol: str
    broker: str
    key: str  # the position key for reconciliation entries; "" for strategy entries
    strategy_quantity: int | None  # what the strategy believes the lane holds (None: not known here)
    book_quantity: int  # the OMS book: the lane (strategy entries) or every lane at the key (reconciliation)
    broker_quantity: int | None  # None: not read (strategy entries may not know it)
    note: str
    since_ns: int
    updated_ns: int

    @property
    def field(self) -> str:
        return _field(self.source, self.strategy, self.symbol, self.broker, self.key)

    def same_facts(self, other: "Divergence") -> bool:
        return (self.strategy_quantity, self.book_quantity, self.broker_quantity, self.note) == (
            other.strategy_quantity, other.book_quantity, other.broker_quantity, other.note)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @staticmethod
    def from_json(raw: str) -> "Divergence":
        return Divergence(**json.loads(raw))


def _field(source: str, strategy: str, symbol: str, broker: str, key: str) -> str:
    return "\x1f".join((source, strategy, symbol, broker, key))


class Divergences:
    """The registry. Thread-safe within the process (strategy threads, the maintenance thread and
    web requests all report); one process owns a Redis prefix (the instance lock)."""

    def __init__(self, store: Store, *, alert: AlertFn | None = None, on_lane: LaneFn | None = None,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self._r = store.redis
        self._key = store.key("engine", "divergences")
        self._alert = alert
        self._on_lane = on_lane
        self._clock = clock
        self._lock = threading.Lock()
        # Mirror of the Redis hash: the engine clears after every act, and a clear with nothing
        # standing must cost no round trip.
        self._entries: dict[str, Divergence] = {}
        self._load()

    def _load(self) -> None:
        for field, raw in self._r.hgetall(self._key).items():
            try:
                self._entries[str(field)] = Divergence.from_json(raw)
            except (TypeError, ValueError):
                log.error("unreadable divergence entry dropped: %r", str(field)[:80])
                self._r.hdel(self._key, field)
        for lane in {(d.strategy, d.symbol, d.broker) for d in self._entries.values()}:
            self._lane_changed(*lane)

    # ------------------------------------------------------------------ reads
    def current(self) -> list[Divergence]:
        with self._lock:
            return sorted(self._entries.values(), key=lambda d: (d.strategy, d.symbol, d.broker, d.source, d.key))

    def to_json(self) -> list[dict[str, Any]]:
        return [d.to_json() for d in self.current()]

    # ------------------------------------------------------------------ strategy vs book
    def report_strategy(self, strategy: str, symbol: str, broker: str, strategy_quantity: int, book_quantity: int,
                        broker_quantity: int | None = None, note: str = "") -> bool:
        """The strategy believes it holds `strategy_quantity` in the lane, the book holds
        `book_quantity` (and the broker `broker_quantity`, when known). True when it newly appeared."""
        return self._put(STRATEGY, strategy, symbol, broker, "", strategy_quantity, book_quantity,
                         broker_quantity, note)

    def clear_strategy(self, strategy: str, symbol: str, broker: str, note: str = "") -> bool:
        """The strategy and the book agree again. True when a divergence stood."""
        return self._drop([_field(STRATEGY, strategy, symbol, broker, "")], note or "strategy and book agree")

    # ------------------------------------------------------------------ book vs broker
    def report_reconciliation(self, broker: str, key: str, affected: Iterable[tuple[str, str]], book_quantity: int,
                              broker_quantity: int, note: str = "") -> list[tuple[str, str]]:
        """A confirmed reconciliation mismatch at (broker, key); returns the lanes newly diverging."""
        return [(s, sym) for s, sym in sorted(set(affected))
                if self._put(RECONCILIATION, s, sym, broker, key, None, book_quantity, broker_quantity, note)]

    def clear_reconciliation(self, broker: str, key: str, note: str) -> list[tuple[str, str]]:
        """The book and the broker agree at (broker, key) again; returns the lanes cleared."""
        with self._lock:
            fields = [f for f, d in self._entries.items()
                      if d.source == RECONCILIATION and d.broker == broker and d.key == key]
            lanes = [(self._entries[f].strategy, self._entries[f].symbol) for f in fields]
        self._drop(fields, note)
        return sorted(lanes)

    def reconciliation_keys(self) -> set[tuple[str, str]]:
        """Every (broker, key) with a standing reconciliation entry."""
        with self._lock:
            return {(d.broker, d.key) for d in self._entries.values() if d.source == RECONCILIATION}

    # ------------------------------------------------------------------ internals
    def _put(self, source: str, strategy: str, symbol: str, broker: str, key: str, strategy_quantity: int | None,
             book_quantity: int, broker_quantity: int | None, note: str) -> bool:
        now = self._clock()
        field = _field(source, strategy, symbol, broker, key)
        with self._lock:
            old = self._entries.get(field)
            new = Divergence(source, strategy, symbol, broker, key, strategy_quantity, book_quantity,
                             broker_quantity, note[:300], old.since_ns if old else now, now)
            if old is not None and old.same_facts(new):
                return False  # still standing, nothing new to say (and no write per act)
            self._r.hset(self._key, field, json.dumps(new.to_json()))
            self._entries[field] = new
        if old is None:
            self._announce(new)
            self._lane_changed(strategy, symbol, broker)
        return old is None

    def _drop(self, fields: list[str], note: str) -> bool:
        with self._lock:
            gone = [self._entries[f] for f in fields if f in self._entries]
            if not gone:
                return False
            self._r.hdel(self._key, *[d.field for d in gone])
            for d in gone:
                del self._entries[d.field]
        for d in gone:
            seconds = max(0, self._clock() - d.since_ns) / 1e9
            message = f"{_describe(d)} cleared after {seconds:.0f} s: {note}"
            log.warning("POSITION DIVERGENCE CLEARED %s", message)
            self._raise("position_divergence_cleared", message, "info", dedupe_key=None, **_details(d))
            self._lane_changed(d.strategy, d.symbol, d.broker)
        return True

    def _announce(self, d: Divergence) -> None:
        message = _describe(d) + (f": {d.note}" if d.note else "")
        log.error("POSITION DIVERGENCE %s", message)
        # No dedupe: this runs once per appearance, and one that comes back must page again.
        self._raise("position_divergence", message, "critical", dedupe_key=None, **_details(d))

    def _raise(self, kind: str, message: str, severity: str, *, dedupe_key: str | None, **details: Any) -> None:
        if self._alert is None:
            return
        try:
            self._alert(kind, message, severity, dedupe_key=dedupe_key, **details)
        except Exception:  # an alerting failure must not break the order path that reported
            log.exception("divergence alert failed")

    def _lane_changed(self, strategy: str, symbol: str, broker: str) -> None:
        if self._on_lane is None:
            return
        with self._lock:
            diverging = any((d.strategy, d.symbol, d.broker) == (strategy, symbol, broker)
                            for d in self._entries.values())
        try:
            self._on_lane(strategy, symbol, broker, diverging)
        except Exception:
            log.exception("divergence metric hook failed")


def _describe(d: Divergence) -> str:
    if d.source == RECONCILIATION:
        return (f"{d.strategy} {d.symbol} at {d.broker} {d.key}: book {d.book_quantity}, "
                f"broker {d.broker_quantity}")
    broker = "" if d.broker_quantity is None else f", broker {d.broker_quantity}"
    return f"{d.strategy} {d.symbol} at {d.broker}: strategy {d.strategy_quantity}, book {d.book_quantity}{broker}"


def _details(d: Divergence) -> dict[str, Any]:
    return {"source": d.source, "strategy": d.strategy, "symbol": d.symbol, "broker": d.broker, "key": d.key,
            "strategy_quantity": d.strategy_quantity, "book_quantity": d.book_quantity,
            "broker_quantity": d.broker_quantity}
