"""The order manager: target positions in, orders out, exactly once.

How the engine calls it
- `move_to_target(TargetOrder)` per (strategy, symbol, broker); `move_all([...])` for the fan-out
  (one broker raising never blocks another). Both return `TargetResult`s; nothing raises for a
  broker failure or a risk denial.
- Paper: after every trade call `paper.on_trade(symbol, price, ts_ns)` and pass each returned
  update to `on_order_update(broker, update)` (resting limit/stop fills and pending open legs).
- Live: call `poll_open_orders()` every second or two (and `on_order_update` from any streaming
  feed); it queries working orders by client id, applies fills and sends the open leg of a
  reversal once its close has FILLED. Call `recover()` once at start-up (before strategies resume)
  and `resolve_unknown()` from reconciliation.

Exactly-once rules
- Client order ids are `domain.orders.client_order_id(strategy, symbol, event_ts_ns, leg, broker)`.
- Each intent (strategy, symbol, broker, event_ts_ns) is recorded with its plan the first time it
  is seen; seeing it again only resumes that plan (never re-plans from a newer position).
- The record NEW (+ SUBMITTED) and the intent are written by one Lua script that first checks the
  order key does not exist: the atomic dedupe, across threads and processes. The same call takes
  the risk decision's orders-per-minute slot and audit record (`RateSlot`): one atomic step per
  order, so a crash leaves a recorded order or nothing.
- A reversal's open leg goes only until its signal's deadline (`TargetOrder.open_deadline_ns`).
- "Not found" from a live broker keeps an UNKNOWN order UNKNOWN (lane blocked) until the broker
  shows it or an operator resolves it (`resolve_by_operator`); only the paper account's lookup is
  authoritative.
- Protective stops (`protect`, leg "stop") rest at the broker outside the lane's blocking set and
  are cancelled before any other order of the lane, so a stop and an exit never both fill.
- The order is durably SUBMITTED before the broker call, so a crash after sending leaves an order
  that `recover()`/`poll_open_orders()` looks up by client id instead of sending again.
- OrderOutcomeUnknown (or any unexpected exception after sending) -> UNKNOWN, never resent; the
  lane is blocked until it is resolved.
- A lane with a working or UNKNOWN order from an earlier intent refuses new intents (BLOCKED):
  never stack a second close on top of one whose outcome is not known.

Round trips (paper, steady state: 1 per order)
- The lane's position hash is cached in process (written only with what this process just wrote or
  read, under the lane lock). A new intent is planned from the cache and the Lua claim verifies it
  atomically together with "no intent yet", "no working/unknown order in the lane" and the broker's
  paused flag; if anything differs nothing is written and the script returns the lane's real state,
  from which the plan (and, only if the order or its context changed, the risk check) is redone.
  A stale cache therefore costs a re-plan, never a wrong or duplicate order.
- With a paper adapter, a market order that fills at once goes with its claim in one MULTI/EXEC
  (`place_with_claim`): the paper fill script writes only if the claim's nonce is in the order
  afterwards, so a claim that lost (stale lane, duplicate) writes no fill. The OMS's SUBMITTED ->
  FILLED record, journal entry, fill and position run inside that same fill script
  (`place_then`'s commands). Anything else (a resting order, a rejection) claims first and
  places after, as with a live broker, where the claim must be durable before the order leaves.
- Write payloads go to Lua as one JSON argument (cjson) instead of hundreds of arguments.

Listeners: `add_listener(cb)`; cb(kind, entry) after each journal write ("transition", "fill",
"event"), with the same dict written to the stream; exceptions are logged and swallowed.

Threading: one RLock per (strategy, symbol, broker) lane; the Redis scripts give cross-process
atomicity for the dedupe. Position updates assume one OMS process per Redis prefix.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Iterable

import orjson

from brokers.base import BrokerAdapter, ClaimFirst, PlacedAfter
from brokers.errors import (
    AuthenticationRequired,
    BrokerConfigError,
    BrokerError,
    OrderOutcomeUnknown,
    OrderRejected,
    TemporaryBrokerError,
)
from config.instruments import CATALOG, SPX_OPTION_MULTIPLIER, canonical_symbol
from config.symbology import contract_from_key
from domain.orders import (
    BrokerName,
    ClientOrderId,
    Fill,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    OrderUpdate,
    PositionEffect,
    client_order_id,
    next_order_state,
)
from domain.risk import OrderContext, PreTradeCheck, RateSlot, RiskDecision, RiskReason, allow_all
from oms.journal import event_entry, fill_entry, fills_key, journal_key, read_journal, transition_entry
from oms.models import (
    BrokerReport,
    IntentStatus,
    LaneView,
    LegPlan,
    OmsPosition,
    OrderRecord,
    TargetOrder,
    TargetResult,
    TargetStatus,
    apply_fill,
    intent_transition,
    option_from_text,
    option_to_text,
    plan_legs,
)
from store.rate_window import RATE_SLOT_LUA, rate_slot_args
from store.redis_store import Store

# One read returns at most this many orders: the API's largest page (1,000) plus the one row more
# that tells it whether another page follows.
MAX_ORDERS_READ = 1001

log = logging.getLogger(__name__)


# Atomic claim, one round trip. First leg of an intent (ARGV[1] == '1'): the lane must still be
# what the caller planned from - no intent record yet, no working/unknown order in the lane, the
# broker's paused flag == ARGV[3], and the position hash exactly == ARGV[2] (a JSON [f, v, ...]).
# Otherwise nothing is written and the lane's current state is returned ({-1, pos, intent,
# lane_active, paused}) so the caller re-plans without another read. Then: refuse (0) if the order
# exists; else take the risk decision's orders-per-minute slot (ARGV[6..]: store/rate_window.py;
# a full window returns {-2, count} with nothing written); else run the caller's writes (ARGV[5],
# JSON [[cmd, args...], ...]: the order, its NEW and SUBMITTED/REJECTED journal entries, the
# intent, the indexes) and return 1. The order record is the only "seen" mark of a client id: the
# duplicate check, the rate slot and the record are this one atomic step.
_CLAIM_LUA = """
local unpack = unpack or table.unpack
if ARGV[1] == '1' then
  local stale = redis.call('EXISTS', KEYS[2]) == 1 or redis.call('SCARD', KEYS[3]) > 0
    or (redis.call('HGET', KEYS[5], ARGV[4]) or '') ~= ARGV[3]
  if not stale then
    local exp = cjson.decode(ARGV[2])
    if redis.call('HLEN', KEYS[4]) * 2 ~= #exp then
      stale = true
    elseif #exp > 0 then
      local names = {}
      for i = 1, #exp, 2 do names[#names + 1] = exp[i] end
      local now = redis.call('HMGET', KEYS[4], unpack(names))
      for i = 1, #names do
        if now[i] ~= exp[2 * i] then stale = true; break end
      end
    end
  end
  if stale then
    return {-1, redis.call('HGETALL', KEYS[4]), redis.call('HGETALL', KEYS[2]), redis.call('SMEMBERS', KEYS[3]),
            redis.call('HGET', KEYS[5], ARGV[4]) or ''}
  end
end
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local rate_at = 6
""" + RATE_SLOT_LUA + """
for _, c in ipairs(cjson.decode(ARGV[5])) do redis.call(unpack(c)) end
return 1
"""

# Run a JSON list of commands atomically (one argument to pack instead of hundreds).
_EXEC_LUA = """
local unpack = unpack or table.unpack
for _, c in ipairs(cjson.decode(ARGV[1])) do redis.call(unpack(c)) end
return 1
"""



def _ns_iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, UTC).isoformat(timespec="seconds")


def _flat(d: dict[str, str]) -> list[str]:
    out: list[str] = []
    for k, v in d.items():
        out += (k, v)
    return out


def _pairs(flat: list[str]) -> dict[str, str]:
    return dict(zip(flat[::2], flat[1::2]))


def _dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON for the Lua scripts (orjson: about 10x the stdlib's speed; it runs
    several times per order)."""
    return orjson.dumps(obj)


Listener = Callable[[str, dict[str, str]], None]

# A reversal's open leg not sent within this time of its signal (when the caller gives no deadline
# of its own) is dropped: the close still finishes, the open waits for a current signal.
DEFAULT_OPEN_WINDOW_NS = 5 * 60 * 1_000_000_000


@dataclass(slots=True)
class _LaneState:
    """What move_to_target plans from. `verified` False: taken from the in-process cache; the claim
    script checks it against Redis (and hands back the real state when it differs)."""

    pos_h: dict[str, str]
    intent: dict[str, str]
    lane_active: set[str]
    paused: str | None
    verified: bool


@dataclass(frozen=True, slots=True)
class _RateFull:
    """The claim found the risk decision's orders-per-minute window full; nothing was written."""

    count: int


@dataclass(slots=True)
class _Claim:
    """One order's claim: the script call, and what to remember once it went through."""

    keys: list[str]
    args: list[str]
    k_order: str
    nonce: str
    lane: tuple[str, str, str]
    k_intent: str
    pending: bool
    entries: list[tuple[str, dict[str, str]]]  # the NEW and SUBMITTED/REJECTED journal entries


@dataclass(slots=True)
class _Applied:
    """One update's writes, built before they are sent (so they can ride with the paper fill)."""

    new: OrderRecord
    cmds: list[list[str]]
    entries: list[tuple[str, dict[str, str]]]  # (kind, entry) for the listeners, in write order
    lane: tuple[str, str, str]
    pos_h: dict[str, str] | None  # the lane's position hash after the write (when written)


class OrderManager:
    def __init__(
        self, store: Store, adapters: dict[BrokerName, BrokerAdapter], pre_trade_check: PreTradeCheck = allow_all,
        clock: Callable[[], int] = time.time_ns, *, not_found_grace_s: float = 30.0,
    ) -> None:
        self._store = store
        self._r = store.redis
        self._adapters = dict(adapters)
        self._check = pre_trade_check
        self._clock = clock
        self._grace_ns = int(not_found_grace_s * 1e9)
        self._locks: dict[tuple[str, str, str], threading.RLock] = {}
        self._locks_guard = threading.Lock()
        self._claim = self._r.register_script(_CLAIM_LUA)
        self._exec = self._r.register_script(_EXEC_LUA)
        # Last known position hash per lane, written only under the lane lock with what this
        # process wrote or read. Only ever used as the claim's *expected* state: a stale entry
        # costs a re-plan, never a wrong order.
        self._pos_cache: dict[tuple[str, str, str], dict[str, str]] = {}
        self._listeners: list[Listener] = []
        self.k_orders = store.key("oms", "orders")
        self.k_journal = journal_key(store)
        self.k_fills = fills_key(store)
        self.k_active = store.key("oms", "active")  # non-terminal client ids (incl. UNKNOWN)
        self.k_unknown = store.key("oms", "unknown")
        self.k_pending = store.key("oms", "pending")  # intent keys whose open leg waits for a close fill
        self.k_paused = store.key("oms", "paused")  # broker -> reason (authentication required)
        self.k_lanes = store.key("oms", "lanes")  # "strategy\x1fsymbol\x1fbroker" with a position record
        # lane ("strategy\x1fsymbol\x1fbroker") -> client id of its protective stop resting at the broker
        self.k_stops = store.key("oms", "stops")
        # What this process knows of each lane's resting stop (None: none), as the position cache
        # above: filled from Redis on a lane's first use, then kept with what this process writes.
        self._stop_cache: dict[tuple[str, str, str], str | None] = {}
        self._pos_keys: dict[tuple[str, str, str], str] = {}
        self._lane_active_keys: dict[tuple[str, str, str], str] = {}

    # ------------------------------------------------------------------ keys / locks
    def _k_order(self, coid: str) -> str:
        return self._store.key("oms", "order", coid)

    def _k_pos(self, strategy: str, symbol: str, broker: str) -> str:
        lane = (strategy, symbol, broker)
        key = self._pos_keys.get(lane)
        if key is None:  # a lane's keys are built once, not for every order
            key = self._pos_keys[lane] = self._store.key("oms", "pos", strategy, symbol, broker)
        return key

    def _k_lane_active(self, strategy: str, symbol: str, broker: str) -> str:
        lane = (strategy, symbol, broker)
        key = self._lane_active_keys.get(lane)
        if key is None:
            key = self._lane_active_keys[lane] = self._store.key("oms", "lane_active", strategy, symbol, broker)
        return key

    def _k_intent(self, strategy: str, symbol: str, broker: str, event_ts_ns: int) -> str:
        return self._store.key("oms", "intent", strategy, symbol, broker, event_ts_ns)

    def _lock(self, strategy: str, symbol: str, broker: str) -> threading.RLock:
        lane = (strategy, symbol, broker)
        with self._locks_guard:
            lock = self._locks.get(lane)
            if lock is None:
                lock = self._locks[lane] = threading.RLock()
            return lock

    # ------------------------------------------------------------------ reads
    def _position_from(self, strategy: str, symbol: str, broker: str, h: dict[str, str]) -> OmsPosition:
        return OmsPosition(strategy=strategy, symbol=symbol, broker=broker, key=h.get("key") or symbol,
                           quantity=int(h.get("qty") or 0), avg_price=Decimal(h.get("avg_price") or "0"),
                           multiplier=Decimal(h.get("multiplier") or "1"), option=option_from_text(h.get("option", "")))

    def position(self, strategy: str, symbol: str, broker: str) -> OmsPosition:
        return self._position_from(strategy, symbol, broker, self._r.hgetall(self._k_pos(strategy, symbol, broker)))

    def intent_sent(self, strategy: str, symbol: str, broker: str, event_ts_ns: int) -> bool:
        """Whether the intent of (strategy, symbol, event) was planned at `broker` (claimed, in any
        state): a decision already acted on, however late it is read again."""
        return bool(self._r.exists(self._k_intent(strategy, symbol, broker, event_ts_ns)))

    def lane(self, strategy: str, symbol: str, broker: str) -> LaneView:
        """One lane's position and whether orders are still in flight in it (working, UNKNOWN, or a
        reversal's open leg waiting): while busy, the position is about to change."""
        return self.lanes(strategy, symbol, (broker,))[broker]

    def lanes(self, strategy: str, symbol: str, brokers: Iterable[str]) -> dict[str, LaneView]:
        """`lane` for several brokers of one (strategy, symbol), in one round trip."""
        names = list(brokers)
        pipe = self._r.pipeline(transaction=False)
        for broker in names:
            pipe.hgetall(self._k_pos(strategy, symbol, broker))
            pipe.scard(self._k_lane_active(strategy, symbol, broker))
        replies = pipe.execute()
        views: dict[str, LaneView] = {}
        for k, broker in enumerate(names):
            pos_h, active = replies[2 * k], replies[2 * k + 1]
            views[broker] = LaneView(self._position_from(strategy, symbol, broker, pos_h),
                                     busy=bool(active) or bool(pos_h.get("pending_intent")))
        return views

    def positions(self, include_flat: bool = False) -> list[OmsPosition]:
        lanes = sorted(self._r.smembers(self.k_lanes))
        pipe = self._r.pipeline(transaction=False)
        parsed = [tuple(lane.split("\x1f")) for lane in lanes]
        for s, sym, b in parsed:
            pipe.hgetall(self._k_pos(s, sym, b))
        out = [self._position_from(s, sym, b, h) for (s, sym, b), h in zip(parsed, pipe.execute())]
        return [p for p in out if include_flat or p.quantity != 0]

    def order(self, coid: str) -> OrderRecord | None:
        h = self._r.hgetall(self._k_order(coid))
        return OrderRecord.from_fields(h) if h else None

    def orders(self, strategy: str | None = None, symbol: str | None = None, broker: str | None = None,
               state: str | OrderState | None = None, offset: int = 0, limit: int = 100) -> list[OrderRecord]:
        """Newest first, filtered, paged (at most MAX_ORDERS_READ)."""
        offset, limit = max(0, offset), max(0, min(limit, MAX_ORDERS_READ))
        want_state = OrderState(state) if state else None
        out: list[OrderRecord] = []
        skipped, start, chunk = 0, 0, 500
        while len(out) < limit:
            ids = self._r.zrevrange(self.k_orders, start, start + chunk - 1)
            if not ids:
                break
            start += chunk
            pipe = self._r.pipeline(transaction=False)
            for coid in ids:
                pipe.hgetall(self._k_order(coid))
            for h in pipe.execute():
                if not h:
                    continue
                rec = OrderRecord.from_fields(h)
                if ((strategy and rec.strategy != strategy) or (symbol and rec.symbol != symbol)
                        or (broker and rec.broker != broker) or (want_state and rec.state is not want_state)):
                    continue
                if skipped < offset:
                    skipped += 1
                    continue
                out.append(rec)
                if len(out) >= limit:
                    break
        return out

    def journal(self, limit: int = 100) -> list[dict[str, str]]:
        return read_journal(self._store, limit)

    def paused_brokers(self) -> dict[str, str]:
        return dict(self._r.hgetall(self.k_paused))

    def unpause_broker(self, broker: str) -> None:
        """Call after the broker's login is fixed (the registry does this on a successful connect)."""
        self._r.hdel(self.k_paused, broker)
        entry = event_entry("broker_resumed", self._clock(), broker, "", "", "login restored")
        self._r.xadd(self.k_journal, entry)
        self._emit([("event", entry)])

    # ------------------------------------------------------------------ listeners
    def add_listener(self, callback: Listener) -> None:
        """Call `callback(kind, entry)` after every journal write, with the very dict written:
        kind "transition" (an order state change, `oms:journal`), "fill" (`oms:fills`) or "event"
        (other journal events: position_adopted, open_abandoned, broker_paused, broker_resumed).
        Called synchronously after the write succeeded, in write order, possibly under a lane lock:
        keep it fast (metrics, audit line, ledger) and never call back into the order manager from
        it. Exceptions are logged and swallowed: a listener never breaks the order path. The dict is
        a copy per listener, so a listener cannot change what another sees."""
        with self._locks_guard:
            self._listeners = [*self._listeners, callback]

    def remove_listener(self, callback: Listener) -> None:
        with self._locks_guard:
            self._listeners = [cb for cb in self._listeners if cb is not callback]

    def _emit(self, entries: list[tuple[str, dict[str, str]]]) -> None:
        listeners = self._listeners
        if not listeners:
            return
        for kind, entry in entries:
            for cb in listeners:
                try:
                    cb(kind, dict(entry))
                except Exception:
                    log.exception("order listener %r failed on %s (ignored)", cb, kind)

    # ------------------------------------------------------------------ main entry
    def move_all(self, targets: Iterable[TargetOrder]) -> list[TargetResult]:
        """Fan-out: each target on its own; an exception for one broker becomes that target's ERROR."""
        results: list[TargetResult] = []
        for t in targets:
            try:
                results.append(self.move_to_target(t))
            except Exception as exc:  # never let one broker block the others
                log.exception("move_to_target failed for %s %s at %s", t.strategy, t.symbol, t.broker)
                results.append(TargetResult(t.strategy, t.symbol, t.broker, t.target_quantity, 0, 0,
                                            TargetStatus.ERROR, f"{type(exc).__name__}: {exc}"))
        return results

    def move_to_target(self, t: TargetOrder) -> TargetResult:
        def err(why: str) -> TargetResult:
            return TargetResult(t.strategy, t.symbol, t.broker, t.target_quantity, 0, 0, TargetStatus.ERROR, why)

        if t.broker not in self._adapters:
            return err(f"no adapter for broker {t.broker!r}")
        if not isinstance(t.target_quantity, int) or isinstance(t.target_quantity, bool):
            return err("target_quantity must be a whole number")
        if t.option is not None and t.target_quantity < 0:
            return err("written (short) options are not supported: hold calls or puts long")
        if t.option is None:
            try:
                if canonical_symbol(t.symbol) != t.symbol:
                    return err(f"symbol must be canonical, e.g. {canonical_symbol(t.symbol)!r}")
            except ValueError as exc:
                return err(str(exc))
        lane = (t.strategy, t.symbol, t.broker)
        with self._lock(*lane):
            k_intent = self._k_intent(t.strategy, t.symbol, t.broker, t.event_ts_ns)
            cached = self._pos_cache.get(lane)
            if cached is None or cached.get("pending_intent"):
                state = self._read_lane(t, k_intent)
            else:  # planned from the cache; the claim script verifies it (fast path: no read)
                state = _LaneState(dict(cached), {}, set(), None, verified=False)
            memo: list[tuple[OrderRequest, OrderContext, RiskDecision]] = []
            for _ in range(10):
                pos_h = state.pos_h
                pos = self._position_from(t.strategy, t.symbol, t.broker, pos_h)
                if state.intent:
                    return self._resume(t, k_intent, state.intent, pos)
                if state.lane_active:
                    return TargetResult(t.strategy, t.symbol, t.broker, t.target_quantity, pos.quantity, pos.quantity,
                                        TargetStatus.BLOCKED,
                                        f"lane has working/unknown order(s) {', '.join(sorted(state.lane_active))}; "
                                        "resolve them first")
                if pos_h.get("pending_intent"):
                    self._abandon(pos_h["pending_intent"], "superseded by a newer intent")
                    pos_h = {k: v for k, v in pos_h.items() if k != "pending_intent"}
                    self._pos_cache[lane] = dict(pos_h)
                legs = plan_legs(pos.key, pos.quantity, pos.option, t)
                if legs and self._resting_stop(lane) is not None:
                    # The protective stop goes first: the broker's stop and this order must never
                    # both fill. Cancelled (or found filled: the position moved), then re-plan.
                    stop = self._cancel_stop(lane)
                    if stop is not None and not stop.state.is_terminal:
                        return TargetResult(t.strategy, t.symbol, t.broker, t.target_quantity, pos.quantity,
                                            pos.quantity, TargetStatus.BLOCKED,
                                            f"protective stop {stop.client_order_id} could not be cancelled; "
                                            "not sent (it may still fill)")
                    state = self._read_lane(t, k_intent)
                    continue
                if not legs:
                    if not state.verified:
                        state = self._read_lane(t, k_intent)
                        continue
                    self._r.hset(k_intent, mapping={"status": IntentStatus.NOOP, "target": str(t.target_quantity)})
                    return TargetResult(t.strategy, t.symbol, t.broker, t.target_quantity, pos.quantity, pos.quantity,
                                        TargetStatus.NOOP)
                coids = {leg.leg: self._coid(t, leg.leg) for leg in legs}
                intent_fields = {
                    "strategy": t.strategy, "symbol": t.symbol, "broker": t.broker, "event_ts_ns": str(t.event_ts_ns),
                    "target": str(t.target_quantity), "reason": t.reason, "detail": t.detail,
                    "status": IntentStatus.PENDING_OPEN if len(legs) == 2 else IntentStatus.SENT,
                    "legs": ",".join(leg.leg for leg in legs),
                    "close_coid": coids.get("close", ""), "open_coid": coids.get("open", ""),
                    "open_qty": str(legs[-1].quantity) if legs[-1].leg == "open" else "0",
                    "open_side": legs[-1].side.value, "open_key": legs[-1].position_key,
                    "option": option_to_text(t.option),
                    "open_deadline_ns": str(t.open_deadline_ns if t.open_deadline_ns is not None
                                            else t.event_ts_ns + DEFAULT_OPEN_WINDOW_NS),
                }
                sent = self._send_leg(t, legs[0], pos, k_intent, intent_fields, state.paused,
                                      expect=pos_h, memo=memo, coid=coids[legs[0].leg])
                if isinstance(sent, _LaneState):  # the lane changed under the plan: re-plan from Redis's state
                    state = sent
                    continue
                rec, known_status = sent
                orders = [rec]
                if len(legs) == 2:
                    if rec.state is OrderState.FILLED:
                        opened = self._open_after_close(t, k_intent, intent_fields)
                        if opened is not None:
                            after = self._pos_cache.get(lane)
                            known = (int(after.get("qty") or 0), IntentStatus.SENT, intent_fields["legs"]) if after is not None else None
                            return self._result(t, pos.quantity, [rec, opened], known=known)
                        orders += [o for o in self._advance(k_intent) if o.client_order_id != rec.client_order_id]
                    return self._result(t, pos.quantity, orders)
                # One leg: the intent status and the lane's position are what this call just wrote.
                after = self._pos_cache.get(lane)
                known = (int(after.get("qty") or 0), known_status, intent_fields["legs"]) if after is not None else None
                return self._result(t, pos.quantity, orders, known=known)
            return err("lane state kept changing under the order manager; not sent, try again")

    def _open_after_close(self, t: TargetOrder, k_intent: str, intent_fields: dict[str, str]) -> OrderRecord | None:
        """A reversal's open leg, right after its close FILLED within this same call (paper, or a
        broker that fills at once). The lane lock is still held and everything the open leg needs
        is what this call just wrote, so nothing is read back; the open leg's claim also clears the
        intent's pending mark in the same atomic script (no window where the intent says "sent"
        but no open order exists). None when the lane is not flat as expected: `_advance` then
        takes the careful path (abandon or resume)."""
        lane = (t.strategy, t.symbol, t.broker)
        cached = self._pos_cache.get(lane)
        if cached is None or int(cached.get("qty") or 0) != 0:
            return None
        pos_h = {k: v for k, v in cached.items() if k != "pending_intent"}
        pos = self._position_from(t.strategy, t.symbol, t.broker, pos_h)
        leg = LegPlan("open", OrderSide(intent_fields["open_side"]), int(intent_fields["open_qty"]),
                      PositionEffect.OPEN, intent_fields["open_key"], t.option)
        clear = [["HSET", k_intent, "status", intent_transition(IntentStatus.PENDING_OPEN, IntentStatus.SENT)], ["SREM", self.k_pending, k_intent],
                 ["HDEL", self._k_pos(*lane), "pending_intent"]]
        # Not paused: the close leg's claim verified the broker's paused flag a moment ago.
        sent = self._send_leg(t, leg, pos, k_intent, None, None, pos_h=pos_h, extra_cmds=clear)
        assert not isinstance(sent, _LaneState)  # no expectation given: the claim never reports a stale lane
        return sent[0]

    def _read_lane(self, t: TargetOrder, k_intent: str) -> _LaneState:
        pipe = self._r.pipeline(transaction=False)
        pipe.hgetall(self._k_pos(t.strategy, t.symbol, t.broker))
        pipe.hgetall(k_intent)
        pipe.smembers(self._k_lane_active(t.strategy, t.symbol, t.broker))
        pipe.hget(self.k_paused, t.broker)
        pipe.hget(self.k_stops, "\x1f".join((t.strategy, t.symbol, t.broker)))
        pos_h, intent, lane_active, paused, stop = pipe.execute()
        self._pos_cache[(t.strategy, t.symbol, t.broker)] = dict(pos_h)
        self._stop_cache[(t.strategy, t.symbol, t.broker)] = stop
        return _LaneState(dict(pos_h), dict(intent), set(lane_active), paused, verified=True)

    # ------------------------------------------------------------------ internals
    def _coid(self, t: TargetOrder, leg: str) -> ClientOrderId:
        return client_order_id(t.strategy, t.symbol, t.event_ts_ns, leg, BrokerName(t.broker))

    def _result(self, t: TargetOrder, previous: int, orders: list[OrderRecord], duplicate: bool = False,
                known: tuple[int, str, str] | None = None) -> TargetResult:
        """`known` = (position qty, intent status, intent legs) when the caller just wrote them itself."""
        if known is not None:
            now_qty, intent_status, intent_legs = known
        else:
            pipe = self._r.pipeline(transaction=False)
            pipe.hget(self._k_pos(t.strategy, t.symbol, t.broker), "qty")
            pipe.hget(self._k_intent(t.strategy, t.symbol, t.broker, t.event_ts_ns), "status")
            pipe.hget(self._k_intent(t.strategy, t.symbol, t.broker, t.event_ts_ns), "legs")
            qty_raw, intent_status, intent_legs = pipe.execute()
            now_qty = int(qty_raw or 0)
        last = orders[-1] if orders else None
        status, reason = TargetStatus.NOOP, ""
        if last is not None:
            reason = last.reason
            if last.state is OrderState.FILLED:
                status = (TargetStatus.PENDING_OPEN if intent_status == IntentStatus.PENDING_OPEN
                          else TargetStatus.FILLED)
            elif last.state in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED, OrderState.SUBMITTED):
                status = (TargetStatus.PENDING_OPEN if last.leg == "close" and "open" in (intent_legs or "").split(",")
                          else TargetStatus.WORKING)
            elif last.state is OrderState.UNKNOWN:
                status = TargetStatus.UNKNOWN
            elif last.state is OrderState.REJECTED:
                if intent_status == IntentStatus.PAUSED:
                    status = TargetStatus.PAUSED
                elif intent_status == IntentStatus.DENIED or last.reason.startswith("risk:"):
                    status = TargetStatus.DENIED
                elif last.reason.startswith("paused:"):
                    status = TargetStatus.PAUSED
                else:
                    status = TargetStatus.REJECTED
            elif last.state is OrderState.CANCELLED:
                status = TargetStatus.REJECTED
        if duplicate:
            reason = f"duplicate intent ({status.value}); nothing new sent" if not reason else f"duplicate intent: {reason}"
            status = TargetStatus.DUPLICATE
        return TargetResult(t.strategy, t.symbol, t.broker, t.target_quantity, previous, now_qty, status, reason,
                            tuple(orders))

    def _resume(self, t: TargetOrder, k_intent: str, intent: dict[str, str], pos: OmsPosition) -> TargetResult:
        """A known intent: never re-plan; only finish its own plan (restart / retry / double click)."""
        orders: list[OrderRecord] = []
        for coid in (intent.get("close_coid"), intent.get("open_coid")):
            rec = self.order(coid) if coid else None
            if rec is not None and rec.state.is_working:
                rec = self._refresh(rec)
            if rec is not None:
                orders.append(rec)
        sent = {o.client_order_id for o in orders}
        orders += [o for o in self._advance(k_intent) if o.client_order_id not in sent]
        return self._result(t, pos.quantity, orders, duplicate=True)

    def _decide(self, req: OrderRequest, ctx: OrderContext) -> RiskDecision:
        try:
            return self._check(req, ctx)
        except Exception as exc:  # a broken risk check must fail closed, visibly
            log.exception("pre-trade check raised")
            return RiskDecision(False, RiskReason.HALTED, f"pre-trade check error {type(exc).__name__}")

    def _send_leg(self, t: TargetOrder, leg: LegPlan, pos: OmsPosition, k_intent: str,
                  intent_fields: dict[str, str] | None, paused: str | None, *,
                  expect: dict[str, str] | None = None, pos_h: dict[str, str] | None = None,
                  memo: list[tuple[OrderRequest, OrderContext, RiskDecision]] | None = None,
                  extra_cmds: list[list[str]] | None = None, coid: ClientOrderId | None = None,
                  ) -> tuple[OrderRecord, str] | _LaneState:
        """Claim (atomic dedupe), then send one leg. With `expect` (first leg of a new intent: the
        lane's position hash the plan came from) the claim only goes through if the lane is still
        in that state; otherwise the lane's current state is returned and nothing was written.
        `extra_cmds` ride along with the claim's writes (atomically, only if the claim succeeds).
        Returns (record, intent status written). `coid`: the leg's client id when the caller has it."""
        coid = coid or self._coid(t, leg.leg)
        instrument = None if leg.option else CATALOG.get(t.symbol)  # move_to_target checked it is canonical
        multiplier = (SPX_OPTION_MULTIPLIER if leg.option
                      else (instrument or CATALOG[canonical_symbol(t.symbol)]).multiplier)
        req = OrderRequest(client_order_id=coid, symbol=t.symbol, side=leg.side, quantity=leg.quantity,
                           position_effect=leg.effect, order_type=OrderType.MARKET, option=leg.option,
                           contract=leg.contract)
        now = self._clock()
        # The order's record but for its state and reason, which the risk decision sets (its NEW
        # state exists only as the claim's first journal entry).
        record = dict(
            client_order_id=coid, broker_order_id=None, strategy=t.strategy, symbol=t.symbol, broker=t.broker,
            position_key=leg.position_key, leg=leg.leg, side=leg.side, quantity=leg.quantity,
            position_effect=leg.effect, order_type=req.order_type.value,
            intent_reason=t.reason, detail=t.detail, event_ts_ns=t.event_ts_ns, created_ns=now, updated_ns=now,
            multiplier=multiplier, option=leg.option,
        )
        ctx = OrderContext(strategy=t.strategy, symbol=t.symbol, broker=BrokerName(t.broker),
                           current_quantity=pos.quantity, reduces_position=leg.leg == "close", reason=t.reason)
        if paused:
            decision = RiskDecision(False, RiskReason.OK, f"broker needs login ({paused})")
        else:
            # A re-plan after a stale claim asks again only if the order or its context changed.
            prior = next((d for r, c, d in (memo or ()) if r == req and c == ctx), None)
            decision = prior if prior is not None else self._decide(req, ctx)
            if memo is not None and prior is None:
                memo.append((req, ctx, decision))
        adapter = self._adapters[BrokerName(t.broker)]
        lane = (t.strategy, t.symbol, t.broker)
        pos_h = expect if expect is not None else pos_h
        for _attempt in range(2):  # a second time only when the claim found the rate window full
            decision_ok = decision.allowed
            why = ("" if decision_ok else f"paused: {decision.detail}" if paused
                   else f"risk:{decision.reason.value}: {decision.detail}".rstrip(": "))
            final = OrderRecord(**record, state=OrderState.SUBMITTED if decision_ok else OrderState.REJECTED,  # type: ignore[arg-type]
                                reason=why)
            fields = intent_fields
            if fields is not None and not decision_ok:
                fields = {**fields, "status": IntentStatus.PAUSED if paused else IntentStatus.DENIED}
            status = fields["status"] if fields is not None else ""
            claim = self._claim_spec(final, k_intent, fields,
                                     pending=decision_ok and fields is not None
                                     and fields.get("status") == IntentStatus.PENDING_OPEN,
                                     expect=expect, paused=paused, extra_cmds=extra_cmds,
                                     slot=decision.slot if decision_ok else None)
            built: list[_Applied | None] = []

            def then(update: OrderUpdate, final: OrderRecord = final, built: list[_Applied | None] = built
                     ) -> list[list[str]]:
                # The SUBMITTED -> FILLED record, journal, fill and position, written by the paper
                # broker's own atomic call together with its fill.
                plan = self._apply_plan(final, update, pos_h)
                built.append(plan)
                return plan.cmds if plan is not None else []

            placed: PlacedAfter | None = None
            if decision_ok:
                # A broker whose orders live in this Redis (paper) may write the claim and an
                # immediate fill in one transaction; any other adapter answers None.
                try:
                    placed = adapter.place_with_claim(req, then, ClaimFirst(
                        self._claim.sha, claim.keys, claim.args, claim.k_order, "claim", claim.nonce))
                except Exception:
                    self._pos_cache.pop(lane, None)
                    raise
            if placed is not None:
                if placed.update is None and isinstance(placed.first_result, Exception):
                    self._pos_cache.pop(lane, None)
                    raise placed.first_result
                # A written fill proves the claim (its nonce was there): otherwise the claim's reply says why not.
                claimed = self._claim_outcome(claim, 1 if placed.update is not None else placed.first_result)
            else:
                claimed = self._claim_order(claim)
            if isinstance(claimed, _RateFull):
                decision = self._check.rate_limited(req, ctx, decision, claimed.count)
                continue
            break
        else:  # the denial's own claim cannot find a full window: it takes no slot
            raise AssertionError("unreachable: a denied order's claim took a rate slot")
        if isinstance(claimed, _LaneState):
            return claimed
        if not claimed:  # another thread/process got here first with the same intent: never send twice
            existing = self.order(coid)
            assert existing is not None
            return existing, status
        if not decision_ok:
            return final, status
        if placed is not None and placed.update is not None:
            update, written = placed.update, placed.written
        else:
            try:
                update, written = self._place(adapter, req, then)
            except Exception as exc:
                return self._placement_failed(final, t, exc), status
        if written and built and built[-1] is not None:
            return self._committed(built[-1]), status
        return self._apply(final, update, pos_h), status

    @staticmethod
    def _place(adapter: BrokerAdapter, req: OrderRequest,
               then: Callable[[OrderUpdate], list[list[str]]]) -> tuple[OrderUpdate, bool]:
        """Send one claimed order: (update, whether `then`'s commands were written with it)."""
        return adapter.place_then(req, then)

    def _placement_failed(self, final: OrderRecord, t: TargetOrder, exc: Exception) -> OrderRecord:
        """Record a claimed order whose placement raised; the exception decides what is known."""
        if isinstance(exc, OrderRejected):
            return self._transition(final, OrderState.REJECTED, reason=f"rejected: {exc.reason}")
        if isinstance(exc, AuthenticationRequired):
            self._pause(t.broker, exc.message)
            return self._transition(final, OrderState.REJECTED, reason=f"paused: authentication required ({exc.message})")
        if isinstance(exc, TemporaryBrokerError):  # by contract: provably never left
            return self._transition(final, OrderState.REJECTED, reason=f"not sent: temporary broker error ({exc.message})")
        if isinstance(exc, BrokerConfigError):
            return self._transition(final, OrderState.REJECTED, reason=f"broker configuration: {exc.message}")
        if isinstance(exc, OrderOutcomeUnknown):
            return self._transition(final, OrderState.UNKNOWN, reason=f"outcome unknown: {exc.message}")
        # Anything else: we cannot prove it was not sent, so UNKNOWN and never resent.
        log.error("place_order raised unexpectedly for %s", final.client_order_id, exc_info=exc)
        self._pos_cache.pop((t.strategy, t.symbol, t.broker), None)
        return self._transition(final, OrderState.UNKNOWN, reason=f"outcome unknown: {type(exc).__name__}")

    def _claim_spec(self, final: OrderRecord, k_intent: str,
                    intent_fields: dict[str, str] | None, pending: bool, *,
                    expect: dict[str, str] | None = None, paused: str | None = None,
                    extra_cmds: list[list[str]] | None = None, slot: RateSlot | None = None) -> _Claim:
        """The claim script's call for one order (see _CLAIM_LUA); nothing is sent here. `final`:
        the order as claimed (SUBMITTED or REJECTED); its NEW journal entry is the same order in
        state NEW without a reason, before it."""
        j_final = transition_entry(final, OrderState.NEW.value, final.created_ns)
        j_new = {**j_final, "prev_state": "", "state": OrderState.NEW.value, "reason": ""}
        coid = final.client_order_id
        k_order = self._k_order(coid)
        k_pos = self._k_pos(final.strategy, final.symbol, final.broker)
        k_lane_active = self._k_lane_active(final.strategy, final.symbol, final.broker)
        nonce = os.urandom(8).hex()  # only this claim writes it: the guard of a fill sent with it
        cmds: list[list[str]] = [
            ["HSET", k_order, *_flat(final.to_fields()), "claim", nonce],
            ["XADD", self.k_journal, "*", *_flat(j_new)],
            ["XADD", self.k_journal, "*", *_flat(j_final)],
        ]
        if intent_fields:
            cmds.append(["HSET", k_intent, *_flat(intent_fields)])
        cmds.append(["ZADD", self.k_orders, str(final.created_ns), coid])
        if final.state is OrderState.SUBMITTED:
            cmds.append(["SADD", self.k_active, coid])
            if final.leg == "stop":  # rests for as long as the position: it never blocks the lane
                cmds.append(["HSET", self.k_stops, "\x1f".join((final.strategy, final.symbol, final.broker)), coid])
            else:
                cmds.append(["SADD", k_lane_active, coid])
        if pending:  # the lane remembers its pending reversal
            cmds.append(["SADD", self.k_pending, k_intent])
            cmds.append(["HSET", k_pos, "pending_intent", k_intent])
        cmds += extra_cmds or []
        keys = [k_order, k_intent, k_lane_active, k_pos, self.k_paused]
        args = ["1" if expect is not None else "0", _dumps(_flat(expect)) if expect is not None else "[]",
                paused or "", final.broker, _dumps(cmds), *rate_slot_args(slot)]
        return _Claim(keys, args, k_order, nonce, (final.strategy, final.symbol, final.broker), k_intent, pending,
                      [("transition", j_new), ("transition", j_final)])

    def _claim_order(self, claim: _Claim) -> bool | _LaneState | _RateFull:
        try:
            out = self._claim(keys=claim.keys, args=claim.args)
        except Exception:
            self._pos_cache.pop(claim.lane, None)
            raise
        return self._claim_outcome(claim, out)

    def _claim_outcome(self, claim: _Claim, out: Any) -> bool | _LaneState | _RateFull:
        """The claim script's reply: 1 claimed, 0 the order exists already, the rate window full, or
        the lane's real state when it was not what the plan assumed (nothing written in both)."""
        if isinstance(out, list) and int(out[0]) == -2:
            return _RateFull(int(out[1]))
        if isinstance(out, list):
            pos_h, intent, lane_active, now_paused = _pairs(out[1]), _pairs(out[2]), set(out[3]), out[4] or None
            self._pos_cache[claim.lane] = dict(pos_h)
            return _LaneState(pos_h, intent, lane_active, now_paused, verified=True)
        if not out:
            return False
        if claim.pending:
            cached = self._pos_cache.get(claim.lane)
            if cached is not None:
                cached["pending_intent"] = claim.k_intent
        self._emit(claim.entries)
        return True

    def _pause(self, broker: str, message: str) -> None:
        self._r.hset(self.k_paused, broker, message[:200])
        entry = event_entry("broker_paused", self._clock(), broker, "", "", f"authentication required: {message[:200]}")
        self._r.xadd(self.k_journal, entry)
        self._emit([("event", entry)])
        log.error("broker %s paused: authentication required", broker)

    def _transition(self, rec: OrderRecord, state: OrderState, reason: str) -> OrderRecord:
        """A state change without fills (rejected, unknown, cancelled)."""
        return self._apply(rec, OrderUpdate(ClientOrderId(rec.client_order_id),
                                            None, state, rec.filled_quantity, rec.avg_fill_price, reason))

    def _apply(self, rec: OrderRecord, update: OrderUpdate, pos_h: dict[str, str] | None = None) -> OrderRecord:
        """Record a broker update: state, journal, fills, strategy position - one atomic call. Caller
        holds the lane lock. `pos_h`: the lane's position hash read under that lock (saves a read)."""
        plan = self._apply_plan(rec, update, pos_h)
        if plan is None:
            return rec
        try:
            self._exec(keys=[], args=[_dumps(plan.cmds)])
        except Exception:
            self._pos_cache.pop(plan.lane, None)
            raise
        return self._committed(plan)

    def _committed(self, plan: _Applied) -> OrderRecord:
        """After `plan`'s writes went through: mirror the position, tell the listeners."""
        if plan.pos_h is not None:
            self._pos_cache[plan.lane] = plan.pos_h
        if plan.new.leg == "stop" and plan.new.state.is_terminal:
            self._stop_cache[plan.lane] = None
        self._emit(plan.entries)
        if plan.new.state is OrderState.UNKNOWN:
            log.warning("order %s outcome unknown at %s: not resent; reconciliation will resolve it",
                        plan.new.client_order_id, plan.new.broker)
        return plan.new

    def _apply_plan(self, rec: OrderRecord, update: OrderUpdate, pos_h: dict[str, str] | None) -> _Applied | None:
        """The writes that record `update` on `rec` (None: nothing to record). No writes here."""
        if rec.state.is_terminal:
            return None  # terminal is final; a late or repeated update changes nothing
        new_state = next_order_state(rec.state, update.state)  # the lifecycle table (domain/orders.py)
        delta = max(0, update.filled_quantity - rec.filled_quantity)
        now = self._clock()
        seen = set(rec.fill_ids)
        new_fills = [f for f in update.fills if f.fill_id not in seen]
        commission = sum((f.commission for f in new_fills), Decimal(0))
        price: Decimal | None = None
        if delta:
            if update.avg_fill_price is not None:
                old_notional = (rec.avg_fill_price or Decimal(0)) * rec.filled_quantity
                price = (update.avg_fill_price * update.filled_quantity - old_notional) / delta
            elif new_fills:
                price = sum((f.price * f.quantity for f in new_fills), Decimal(0)) / sum(f.quantity for f in new_fills)
        avg = update.avg_fill_price if update.avg_fill_price is not None else rec.avg_fill_price
        reason = update.reason if update.reason is not None else rec.reason
        broker_order_id = update.broker_order_id or rec.broker_order_id
        reason = reason or ""
        if (new_state is rec.state and broker_order_id == rec.broker_order_id and not delta and avg == rec.avg_fill_price
                and not new_fills and reason == rec.reason):
            return None  # nothing changed: no journal noise from polling
        new = replace(rec, state=new_state, broker_order_id=broker_order_id,
                      filled_quantity=rec.filled_quantity + delta, avg_fill_price=avg,
                      commission=rec.commission + commission, reason=reason, updated_ns=now,
                      fill_ids=rec.fill_ids + tuple(f.fill_id for f in new_fills))
        coid = rec.client_order_id
        lane = (rec.strategy, rec.symbol, rec.broker)
        # Only the fields an update can change, formatted as to_fields does:
        # fewer bytes to pack and send per order.
        journal = transition_entry(new, rec.state.value, now, price)
        cmds: list[list[str]] = [["HSET", self._k_order(coid), "state", new.state.value,
                                  "broker_order_id", new.broker_order_id or "",
                                  "filled_quantity", str(new.filled_quantity),
                                  "avg_fill_price", "" if new.avg_fill_price is None else str(new.avg_fill_price),
                                  "commission", str(new.commission), "reason", new.reason,
                                  "updated_ns", str(new.updated_ns), "fill_ids", ",".join(new.fill_ids)],
                                 ["XADD", self.k_journal, "*", *_flat(journal)]]
        entries: list[tuple[str, dict[str, str]]] = [("transition", journal)]
        lane_active = self._k_lane_active(*lane)
        if new_state.is_terminal:
            cmds += [["SREM", self.k_active, coid], ["SREM", self.k_unknown, coid], ["SREM", lane_active, coid]]
            if rec.leg == "stop":
                cmds.append(["HDEL", self.k_stops, "\x1f".join(lane)])
        elif new_state is OrderState.UNKNOWN:
            cmds.append(["SADD", self.k_unknown, coid])
        else:
            cmds.append(["SREM", self.k_unknown, coid])
        new_pos_h: dict[str, str] | None = None
        if delta:
            if price is None:  # a broker reporting a fill without any price: keep quantities right, flag it
                log.error("fill without price for %s; position average left unchanged", coid)
            pos_key = self._k_pos(*lane)
            if pos_h is None:
                pos_h = self._r.hgetall(pos_key)
            pos = self._position_from(rec.strategy, rec.symbol, rec.broker, pos_h)
            signed = delta if new.side.value == "BUY" else -delta
            cur_qty = pos.quantity if pos.key == rec.position_key else 0
            if pos.quantity and pos.key != rec.position_key:
                log.error("fill for %s on key %s while lane holds %s", coid, rec.position_key, pos.key)
            qty, avg_px, realized = apply_fill(cur_qty, pos.avg_price if cur_qty else Decimal(0), signed,
                                               price if price is not None else pos.avg_price, rec.multiplier)
            mapping = {
                "key": rec.position_key if qty else rec.symbol, "qty": str(qty), "avg_price": str(avg_px),
                "multiplier": str(rec.multiplier), "option": option_to_text(rec.option) if qty else "",
                "updated_ns": str(now),
            }
            new_pos_h = {**pos_h, **mapping}
            fill = fill_entry(new, delta, price if price is not None else Decimal(0), commission, realized, now)
            cmds += [["HSET", pos_key, *_flat(mapping)], ["SADD", self.k_lanes, "\x1f".join(lane)],
                     ["XADD", self.k_fills, "*", *_flat(fill)]]
            entries.append(("fill", fill))
        return _Applied(new, cmds, entries, lane, new_pos_h)

    def _abandon(self, k_intent: str, why: str) -> None:
        intent = self._r.hgetall(k_intent)
        pipe = self._r.pipeline(transaction=True)
        pipe.srem(self.k_pending, k_intent)
        entry: dict[str, str] | None = None
        if intent:
            self._pos_cache.pop((intent["strategy"], intent["symbol"], intent["broker"]), None)
            if intent.get("status") == IntentStatus.PENDING_OPEN:
                pipe.hset(k_intent, "status", intent_transition(IntentStatus.PENDING_OPEN, IntentStatus.ABANDONED))
            pipe.hdel(self._k_pos(intent["strategy"], intent["symbol"], intent["broker"]), "pending_intent")
            entry = event_entry("open_abandoned", self._clock(), intent["broker"], intent["strategy"],
                                intent["symbol"], why, client_order_id=intent.get("open_coid", ""))
            pipe.xadd(self.k_journal, entry)
        pipe.execute()
        if entry is not None:
            self._emit([("event", entry)])

    def _advance(self, k_intent: str) -> list[OrderRecord]:
        """Send a reversal's open leg once its close has FILLED. Idempotent; returns the orders touched."""
        intent = self._r.hgetall(k_intent)
        if not intent or intent.get("status") != IntentStatus.PENDING_OPEN:
            return []
        strategy, symbol, broker = intent["strategy"], intent["symbol"], intent["broker"]
        with self._lock(strategy, symbol, broker):
            intent = self._r.hgetall(k_intent)
            if intent.get("status") != IntentStatus.PENDING_OPEN:
                return []
            close = self.order(intent["close_coid"])
            if close is None:
                self._abandon(k_intent, "close leg missing")
                return []
            if close.state.is_working:
                close = self._refresh(close)
            if close.state in (OrderState.CANCELLED, OrderState.REJECTED):
                self._abandon(k_intent, f"close {close.state.value.lower()}: {close.reason}")
                return [close]
            if close.state is not OrderState.FILLED:
                return []  # still working or UNKNOWN: wait
            pos_h = self._r.hgetall(self._k_pos(strategy, symbol, broker))
            pos = self._position_from(strategy, symbol, broker, pos_h)
            t = TargetOrder(strategy=strategy, symbol=symbol, broker=BrokerName(broker),
                            target_quantity=int(intent["target"]), event_ts_ns=int(intent["event_ts_ns"]),
                            reason=intent.get("reason", ""), detail=intent.get("detail", ""),
                            option=option_from_text(intent.get("option", "")))
            existing = self.order(intent["open_coid"])
            deadline = int(intent.get("open_deadline_ns") or 0) or int(intent["event_ts_ns"]) + DEFAULT_OPEN_WINDOW_NS
            if existing is None and self._clock() > deadline:
                self._abandon(k_intent, f"signal of {_ns_iso(int(intent['event_ts_ns']))} no longer current "
                                        f"(open leg due by {_ns_iso(deadline)}): closed, not reopened")
                return [close]
            if existing is None and pos.quantity != 0:
                self._abandon(k_intent, f"position is {pos.quantity} after the close filled, not flat")
                return [close]
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(k_intent, "status", intent_transition(IntentStatus.PENDING_OPEN, IntentStatus.SENT))
            pipe.srem(self.k_pending, k_intent)
            pipe.hdel(self._k_pos(strategy, symbol, broker), "pending_intent")
            pipe.execute()
            pos_h = {k: v for k, v in pos_h.items() if k != "pending_intent"}
            self._pos_cache[(strategy, symbol, broker)] = dict(pos_h)
            if existing is not None:
                return [close, existing]
            leg = LegPlan("open", OrderSide(intent["open_side"]), int(intent["open_qty"]), PositionEffect.OPEN,
                          intent["open_key"], t.option)
            paused = self._r.hget(self.k_paused, broker)
            sent = self._send_leg(t, leg, pos, k_intent, None, paused, pos_h=pos_h)
            assert not isinstance(sent, _LaneState)  # no expectation given: the claim never reports a stale lane
            return [close, sent[0]]

    def _refresh(self, rec: OrderRecord) -> OrderRecord:
        """Ask the broker about one order by client id and apply the answer."""
        adapter = self._adapters.get(BrokerName(rec.broker))
        if adapter is None:
            return rec
        try:
            update = adapter.get_order(ClientOrderId(rec.client_order_id),
                                       None if rec.broker_order_id is None else rec.broker_order_id)  # type: ignore[arg-type]
        except BrokerError as exc:
            log.warning("get_order %s at %s failed: %s", rec.client_order_id, rec.broker, type(exc).__name__)
            return rec
        with self._lock(rec.strategy, rec.symbol, rec.broker):
            current = self.order(rec.client_order_id) or rec
            if update is None:
                return self._not_found(adapter, current)
            return self._apply(current, update)

    def _not_found(self, adapter: BrokerAdapter, rec: OrderRecord) -> OrderRecord:
        """The broker has no order with this client id. Only an authoritative lookup (paper) proves
        it never arrived; a live broker's "not found" may be a lag or a search gap, and a sent order
        that filled must never be written off: the order stays UNKNOWN, its lane blocked, until the
        broker shows it or an operator resolves it (`resolve_by_operator`)."""
        if rec.state not in (OrderState.SUBMITTED, OrderState.UNKNOWN):
            return rec
        if adapter.lookup_is_authoritative:
            # No grace needed: every claim -> place -> record runs under its lane's lock, which the
            # caller holds, so a claimed order the account does not have was never placed.
            return self._transition(rec, OrderState.REJECTED, reason="never reached the broker (not in its book)")
        if self._clock() - rec.created_ns < self._grace_ns:
            return rec  # a live broker may not show a fresh order yet
        if rec.state is OrderState.SUBMITTED:
            return self._transition(rec, OrderState.UNKNOWN,
                                    reason="submitted but not found at the broker: outcome unknown, lane blocked "
                                           "until the broker shows it or an operator resolves it")
        return rec

    # ------------------------------------------------------------------ advancing / recovery
    def on_order_update(self, broker: str, update: OrderUpdate) -> OrderRecord | None:
        """Apply a pushed update (paper on_trade fills, a streaming feed); advances a pending open leg."""
        rec = self.order(update.client_order_id)
        if rec is None or rec.broker != broker:
            log.warning("update for unknown order %s at %s ignored", update.client_order_id, broker)
            return None
        with self._lock(rec.strategy, rec.symbol, rec.broker):
            rec = self._apply(self.order(update.client_order_id) or rec, update)
            if rec.leg == "close":
                k_intent = self._k_intent(rec.strategy, rec.symbol, rec.broker, rec.event_ts_ns)
                self._advance(k_intent)
        return rec

    def poll_open_orders(self) -> list[OrderRecord]:
        """Query every working order (not UNKNOWN: see resolve_unknown) and advance pending reversals."""
        changed: list[OrderRecord] = []
        for coid in sorted(self._r.smembers(self.k_active)):
            rec = self.order(coid)
            if rec is None or not rec.state.is_working:
                continue
            new = self._refresh(rec)
            if new != rec:
                changed.append(new)
        for k_intent in sorted(self._r.smembers(self.k_pending)):
            changed += [o for o in self._advance(k_intent) if o.leg == "open"]
        return changed

    def resolve_unknown(self) -> list[OrderRecord]:
        """Query the broker for every UNKNOWN order by client id; returns the resolved ones."""
        resolved: list[OrderRecord] = []
        for coid in sorted(self._r.smembers(self.k_unknown)):
            rec = self.order(coid)
            if rec is None:
                self._r.srem(self.k_unknown, coid)
                continue
            new = self._refresh(rec)
            if new.state is not OrderState.UNKNOWN:
                resolved.append(new)
                if new.leg == "close":
                    self._advance(self._k_intent(new.strategy, new.symbol, new.broker, new.event_ts_ns))
        return resolved

    def recover(self) -> list[OrderRecord]:
        """Start-up: resolve in-flight, unknown and pending-reversal orders left by a previous process."""
        return self.poll_open_orders() + self.resolve_unknown()

    # ------------------------------------------------------------------ operator actions
    def cancel_all(self, broker: str | None = None) -> dict[str, BrokerReport]:
        """Cancel working orders (per broker, isolated) and drop pending open legs."""
        reports: dict[str, BrokerReport] = {}
        brokers = [broker] if broker else list(self._adapters)
        active = [r for r in (self.order(c) for c in sorted(self._r.smembers(self.k_active))) if r is not None]
        pending = sorted(self._r.smembers(self.k_pending))
        for b in brokers:
            done: list[OrderRecord] = []
            errors: list[str] = []
            for k_intent in pending:
                if self._r.hget(k_intent, "broker") == b:
                    self._abandon(k_intent, "cancel_all")
            adapter = self._adapters.get(BrokerName(b))
            for rec in (r for r in active if r.broker == b and r.state in (OrderState.ACCEPTED,
                                                                            OrderState.PARTIALLY_FILLED)):
                try:
                    assert adapter is not None
                    update = adapter.cancel_order(ClientOrderId(rec.client_order_id),
                                                  rec.broker_order_id)  # type: ignore[arg-type]
                    with self._lock(rec.strategy, rec.symbol, rec.broker):
                        done.append(self._apply(self.order(rec.client_order_id) or rec, update))
                except Exception as exc:
                    errors.append(f"{rec.client_order_id}: {type(exc).__name__}: {getattr(exc, 'message', exc)}")
            reports[b] = BrokerReport(broker=b, ok=not errors, orders=tuple(done), errors=tuple(errors))
        return reports

    def flatten_all(self, reason: str, broker: str | None = None) -> dict[str, BrokerReport]:
        """Cancel working orders, then take every strategy position to 0. Per broker, isolated."""
        reports: dict[str, BrokerReport] = {}
        cancelled = {}
        for b in ([broker] if broker else list(self._adapters)):
            try:
                cancelled[b] = self.cancel_all(b)[b]
            except Exception as exc:
                cancelled[b] = BrokerReport(b, False, errors=(f"cancel: {type(exc).__name__}",))
        ts = self._clock()
        for b, cancel_report in cancelled.items():
            targets = [TargetOrder(p.strategy, p.symbol, BrokerName(b), 0, ts, reason, "flatten_all")
                       for p in self.positions() if p.broker == b]
            results = self.move_all(targets)
            errors = list(cancel_report.errors) + [f"{r.strategy}/{r.symbol}: {r.status.value} {r.reason}"
                                                   for r in results if not r.ok]
            reports[b] = BrokerReport(broker=b, ok=not errors, orders=cancel_report.orders, results=tuple(results),
                                      errors=tuple(errors))
        return reports

    # ------------------------------------------------------------------ protective stops
    def protect(self, strategy: str, symbol: str, broker: str, stop_price: Decimal | None,
                ts_ns: int) -> OrderRecord | None:
        """Keep one protective stop order resting at the broker for the lane's whole position at
        `stop_price` (None: no stop wanted): placed, moved (cancel, then place) or cancelled as the
        position and the level change. The strategy's own stop stays armed as the backup; an order
        of the lane's (its exit) cancels the resting stop first, so the two never both fill. Only
        for adapters that rest stops (`supports_stop_orders`) and never for options. Returns the
        resting stop, or None."""
        adapter = self._adapters.get(BrokerName(broker))
        if adapter is None or not adapter.supports_stop_orders:
            return None
        lane = (strategy, symbol, broker)
        with self._lock(*lane):
            # Asked on every housekeeping tick of a held position: the position, the resting stop
            # and the lanes sharing the symbol are read in one round trip.
            coid = self._resting_stop(lane)
            pipe = self._r.pipeline(transaction=False)
            pipe.hgetall(self._k_pos(strategy, symbol, broker))
            pipe.smembers(self.k_lanes)
            if coid:
                pipe.hgetall(self._k_order(coid))
            replies = pipe.execute()
            pos = self._position_from(strategy, symbol, broker, replies[0])
            current = OrderRecord.from_fields(replies[2]) if coid and replies[2] else None
            if current is not None and current.state.is_terminal:
                self._forget_stop(lane)
                current = None
            # Another strategy holding the same symbol at this account: a resting stop's close could
            # meet an account that is no longer long (or short) and open a position there, so
            # those lanes keep their strategies' own stops only.
            wanted = (stop_price is not None and pos.quantity != 0 and pos.option is None
                      and not self._shared_at_broker(strategy, symbol, broker, replies[1]))
            side = OrderSide.SELL if pos.quantity > 0 else OrderSide.BUY
            if current is not None and wanted and (current.side, current.quantity, current.stop_price,
                                                   current.position_key) == (side, abs(pos.quantity), stop_price,
                                                                             pos.key):
                return current
            if current is not None:
                current = self._cancel_stop(lane)
                if current is not None and not current.state.is_terminal:
                    return current  # could not be cancelled: it stays (and still protects)
                if current is not None and current.filled_quantity:
                    return None  # it filled meanwhile: the position moved; the caller looks again
            if not wanted:
                return None
            assert stop_price is not None
            return self._place_stop(adapter, pos, side, stop_price, ts_ns)

    def _place_stop(self, adapter: BrokerAdapter, pos: OmsPosition, side: OrderSide, stop_price: Decimal,
                    ts_ns: int) -> OrderRecord | None:
        coid = client_order_id(pos.strategy, pos.symbol, ts_ns, "stop", BrokerName(pos.broker))
        contract = pos.key if contract_from_key(pos.key) is not None else None
        req = OrderRequest(client_order_id=coid, symbol=pos.symbol, side=side, quantity=abs(pos.quantity),
                           position_effect=PositionEffect.CLOSE, order_type=OrderType.STOP, stop_price=stop_price,
                           contract=contract)
        now = self._clock()
        rec = OrderRecord(
            client_order_id=coid, broker_order_id=None, strategy=pos.strategy, symbol=pos.symbol, broker=pos.broker,
            position_key=pos.key, leg="stop", side=side, quantity=abs(pos.quantity),
            position_effect=PositionEffect.CLOSE, order_type=OrderType.STOP.value, state=OrderState.NEW,
            intent_reason="stop", detail=f"protective stop at {stop_price}", event_ts_ns=ts_ns, created_ns=now,
            updated_ns=now, multiplier=pos.multiplier, stop_price=stop_price)
        ctx = OrderContext(strategy=pos.strategy, symbol=pos.symbol, broker=BrokerName(pos.broker),
                           current_quantity=pos.quantity, reduces_position=True, reason="stop")
        decision = self._decide(req, ctx)
        if not decision.allowed:
            log.warning("protective stop for %s %s at %s not placed: %s", pos.strategy, pos.symbol, pos.broker,
                        decision.detail)
            return None
        final = replace(rec, state=OrderState.SUBMITTED)
        claim = self._claim_spec(final, self._k_order(coid), None, pending=False, slot=decision.slot)
        claimed = self._claim_order(claim)
        if claimed is not True:  # this stop was placed before (the same moment asked twice)
            return self.order(coid)
        try:
            update, _ = self._place(adapter, req, lambda u: [])
        except Exception as exc:
            return self._placement_failed(final, TargetOrder(pos.strategy, pos.symbol, BrokerName(pos.broker),
                                                             0, ts_ns, "stop"), exc)
        self._stop_cache[(pos.strategy, pos.symbol, pos.broker)] = coid
        return self._apply(final, update)

    def _shared_at_broker(self, strategy: str, symbol: str, broker: str, lanes: Iterable[str]) -> bool:
        """Whether another strategy holds a position in `symbol` at `broker` (`lanes`: the members
        of the lanes set)."""
        others = [p for p in (tuple(lane.split("\x1f")) for lane in lanes)
                  if len(p) == 3 and p[1] == symbol and p[2] == broker and p[0] != strategy]
        if not others:
            return False
        pipe = self._r.pipeline(transaction=False)
        for other in others:
            pipe.hget(self._k_pos(*other), "qty")
        return any(int(qty or 0) != 0 for qty in pipe.execute())

    def _resting_stop(self, lane: tuple[str, str, str]) -> str | None:
        if lane not in self._stop_cache:
            self._stop_cache[lane] = self._r.hget(self.k_stops, "\x1f".join(lane))
        return self._stop_cache[lane]

    def _forget_stop(self, lane: tuple[str, str, str]) -> None:
        self._r.hdel(self.k_stops, "\x1f".join(lane))
        self._stop_cache[lane] = None

    def _cancel_stop(self, lane: tuple[str, str, str]) -> OrderRecord | None:
        """Cancel the lane's resting stop (caller holds the lane lock). Returns its record as the
        broker now has it: CANCELLED, FILLED (it fired first) or still working (not cancelled)."""
        coid = self._resting_stop(lane)
        rec = self.order(coid) if coid else None
        if rec is None or rec.state.is_terminal:
            self._forget_stop(lane)
            return rec
        adapter = self._adapters[BrokerName(rec.broker)]
        try:
            update = adapter.cancel_order(ClientOrderId(rec.client_order_id), rec.broker_order_id)  # type: ignore[arg-type]
        except BrokerError as exc:
            log.warning("cancel of protective stop %s at %s failed: %s; looking it up", coid, rec.broker,
                        type(exc).__name__)
            return self._refresh(rec)
        return self._apply(rec, update)

    def resolve_by_operator(self, coid: str, state: OrderState, filled_quantity: int = 0,
                            avg_fill_price: Decimal | None = None, *, actor: str, note: str = "") -> OrderRecord:
        """An operator states the outcome of an order the broker cannot be asked about (UNKNOWN,
        or SUBMITTED and not found): what the broker's own records show. Journaled with who said
        it; the lane unblocks, and a reversal's pending open leg follows its close as usual.
        Raises ValueError (nothing changed) for an order that is not unresolved or a bad outcome."""
        rec = self.order(coid)
        if rec is None:
            raise ValueError(f"no order {coid}")
        if rec.state not in (OrderState.UNKNOWN, OrderState.SUBMITTED):
            raise ValueError(f"order {coid} is {rec.state.value}: only UNKNOWN or SUBMITTED orders are resolved by hand")
        if state not in (OrderState.FILLED, OrderState.CANCELLED, OrderState.REJECTED):
            raise ValueError("state must be FILLED, CANCELLED or REJECTED")
        if not 0 <= filled_quantity <= rec.quantity:
            raise ValueError(f"filled_quantity must be 0..{rec.quantity}")
        if state is OrderState.FILLED and filled_quantity != rec.quantity:
            raise ValueError(f"a FILLED order filled all {rec.quantity}")
        if state is OrderState.REJECTED and filled_quantity:
            raise ValueError("a REJECTED order filled nothing")
        if filled_quantity and (avg_fill_price is None or not avg_fill_price.is_finite() or avg_fill_price <= 0):
            raise ValueError("a fill needs its avg_fill_price (> 0)")
        now = self._clock()
        fills = ((Fill(ClientOrderId(coid), None, f"operator-{coid}", filled_quantity - rec.filled_quantity,
                       avg_fill_price, Decimal(0), datetime.fromtimestamp(now / 1e9, UTC)),)  # type: ignore[arg-type]
                 if filled_quantity > rec.filled_quantity else ())
        reason = f"resolved by operator {actor}" + (f": {note}" if note else "")
        update = OrderUpdate(ClientOrderId(coid), None, state, filled_quantity, avg_fill_price, reason, fills)
        with self._lock(rec.strategy, rec.symbol, rec.broker):
            current = self.order(coid) or rec
            if current.state is not rec.state:
                raise ValueError(f"order {coid} changed meanwhile (now {current.state.value}); look again")
            done = self._apply(current, update)  # SUBMITTED/UNKNOWN -> the outcome: lifecycle table edges
            entry = event_entry("order_resolved", now, rec.broker, rec.strategy, rec.symbol, reason,
                                client_order_id=coid, state=state.value, filled=str(filled_quantity))
            self._r.xadd(self.k_journal, entry)
            self._emit([("event", entry)])
        if done.leg == "close":
            self._advance(self._k_intent(done.strategy, done.symbol, done.broker, done.event_ts_ns))
        return done

    def set_position(self, strategy: str, symbol: str, broker: str, key: str, quantity: int, avg_price: Decimal,
                     multiplier: Decimal, option_text: str, reason: str) -> OmsPosition:
        """Overwrite one lane's book (reconciliation's adopt). Journaled; the caller states why."""
        with self._lock(strategy, symbol, broker):
            before = self.position(strategy, symbol, broker)
            now = self._clock()
            pipe = self._r.pipeline(transaction=True)
            pipe.hset(self._k_pos(strategy, symbol, broker), mapping={
                "key": key if quantity else symbol, "qty": str(quantity), "avg_price": str(avg_price),
                "multiplier": str(multiplier), "option": option_text if quantity else "", "updated_ns": str(now)})
            pipe.sadd(self.k_lanes, "\x1f".join((strategy, symbol, broker)))
            entry = event_entry("position_adopted", now, broker, strategy, symbol, reason, key=key,
                                before=str(before.quantity), after=str(quantity))
            pipe.xadd(self.k_journal, entry)
            self._pos_cache.pop((strategy, symbol, broker), None)
            pipe.execute()
            self._emit([("event", entry)])
            return self.position(strategy, symbol, broker)

    @property
    def adapters(self) -> dict[BrokerName, BrokerAdapter]:
        return dict(self._adapters)

    @property
    def store(self) -> Store:
        return self._store


__all__ = ["OrderManager", "TargetOrder", "TargetResult", "TargetStatus"]
