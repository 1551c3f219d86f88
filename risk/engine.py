"""The risk engine: the `PreTradeCheck` the order manager calls for every order, trading states,
daily loss limits with automatic flatten + halt, the kill switch, and limit administration.

Everything lives in Redis (`risk:*`) so a restart keeps halts, limits, duplicate-intent memory
and the rate window. A denial is returned (and recorded), never raised. If Redis itself fails the
check fails closed for orders that add exposure and lets position-reducing orders through: a
trader must always be able to get out.

The way out is never refused: an order that only reduces a position (a stop, a take-profit, a
0DTE time exit, a signal's close leg, the kill switch's or the loss limit's flatten, a manual
close) passes HALTED and REDUCING and takes no orders-per-minute slot. Those states and the rate
guard exist to stop new risk, not to keep a trader in the risk they hold.

The check writes nothing (see domain/risk.py): an allowed decision carries the `RateSlot` the
order manager's claim takes together with the order record, so there is one atomic step per order.
`check_and_take` does both for a caller without an order manager.

The rules themselves are pure functions in risk/rules.py, shared with `risk.memory.MemoryRiskEngine`
(the same check over in-process state, for backtests); this class keeps their state in Redis.
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Mapping

import redis

from config.settings import Settings
from domain.orders import OrderRequest
from domain.risk import OrderContext, RateSlot, RiskDecision, RiskReason
from monitoring.audit import AUDIT_STREAM_MAXLEN
from risk.limits import RiskLimits, apply_update, load_limits, save_limits
from risk.rules import (RATE_WINDOW_MS, RiskSnapshot, decision_record, lifted_state, loss_breaches, loss_halt,
                        pre_trade_decision, rate_denial)
from risk.sizing import SizingResult, size_order
from risk.state import GLOBAL_SCOPE, ScopeState, SessionStart, TradingState, default_session_start, next_session_start
from store.rate_window import RATE_SLOT_LUA, rate_slot_args
from store.redis_store import Store

log = logging.getLogger(__name__)

FlattenCallback = Callable[[str | None, str], dict[str, Any]]  # (strategy or None for global, reason) -> report
PnlSource = Callable[[datetime], Mapping[str, tuple[Decimal, Decimal]]]  # session start -> {strategy: (realized, unrealized)}

DECISIONS_MAXLEN = 50_000
EVENTS_MAXLEN = 10_000
PNL_TTL_SECONDS = 4 * 24 * 3600
# The session's equity curve (realized + unrealized of all strategies) for the console: one point
# per P&L refresh at most this often; a 23-hour futures session stays under the cap.
EQUITY_SAMPLE_SECONDS = 10.0
EQUITY_MAX_POINTS = 10_000

# Takes a decision's slot when no order manager does (check_and_take): ARGV = the slot's arguments.
_TAKE_SLOT_LUA = "local rate_at = 1\n" + RATE_SLOT_LUA + "\nreturn {1, 0}"


@dataclass(frozen=True, slots=True)
class BreachEvent:
    scope: str  # strategy name or "global"
    limit: Decimal
    pnl: Decimal
    session_start: str
    resumes_at: str | None
    flatten_required: bool = True
    flatten_report: dict[str, Any] | None = None
    ts: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"type": "loss_limit_breach", "scope": self.scope, "limit": str(self.limit), "pnl": str(self.pnl),
                "session_start": self.session_start, "resumes_at": self.resumes_at,
                "flatten_required": self.flatten_required, "flatten_report": self.flatten_report, "ts": self.ts}


_fields = decision_record


def _d(raw: Any) -> Decimal:
    return raw if isinstance(raw, Decimal) else Decimal(str(raw))


class RiskEngine:
    """Implements `domain.risk.PreTradeCheck`. Thread-safe: all shared state is in Redis and
    multi-step updates are atomic there (Lua, SET NX)."""

    def __init__(
        self,
        store: Store,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        calendar_session_start: SessionStart | None = None,
        session_symbol: str = "/ES",
        flatten_callback: FlattenCallback | None = None,
        pnl_source: PnlSource | None = None,
        audit: Any = None,  # monitoring.audit.AuditLog
        metrics: Any = None,  # monitoring.metrics.Metrics
        alerter: Any = None,  # monitoring.alerts.Alerter
        audit_allowed: bool = True,
    ) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        self.session_start_fn: SessionStart = calendar_session_start or default_session_start
        self.session_symbol = session_symbol
        self.flatten_callback = flatten_callback
        self.pnl_source = pnl_source
        self.audit = audit
        self.metrics = metrics
        self.alerter = alerter
        self.audit_allowed = audit_allowed
        self._take_slot = store.redis.register_script(_TAKE_SLOT_LUA)
        self._eval_lock = threading.Lock()  # one loss-limit evaluation at a time in this process
        self._last_equity_sample: datetime | None = None
        # What every opening order's check parses again and again, kept by the exact raw text it
        # came from (a different text is parsed afresh): the limits, the trading states, the
        # session's P&L; and the session id of the current minute.
        self._limits_parsed: tuple[str, RiskLimits] | None = None
        self._states_parsed: dict[str, ScopeState] = {}
        self._pnl_parsed: tuple[dict[str, str], dict[str, tuple[Decimal, Decimal]]] | None = None
        self._session_cached: tuple[int, SessionStart, str, str] | None = None

    # ------------------------------------------------------------------ keys
    def _k(self, *parts: object) -> str:
        return self.store.key("risk", *parts)

    @property
    def decisions_key(self) -> str:
        return self._k("decisions")

    @property
    def events_key(self) -> str:
        return self._k("events")

    # ------------------------------------------------------------------ session
    def session_start(self, now: datetime | None = None) -> datetime:
        return self.session_start_fn(self.session_symbol, now or self.clock())

    def _session_id(self, now: datetime) -> str:
        # Sessions open and close on whole minutes (every calendar here has minute resolution),
        # so within one minute the answer is the same: computed once per minute, not per order.
        minute = int(now.timestamp()) // 60
        cached = self._session_cached
        if (cached is not None and cached[0] == minute and cached[1] is self.session_start_fn
                and cached[2] == self.session_symbol):
            return cached[3]
        session_id = self.session_start(now).isoformat()
        self._session_cached = (minute, self.session_start_fn, self.session_symbol, session_id)
        return session_id

    # ------------------------------------------------------------------ limits
    def get_limits(self) -> RiskLimits:
        return load_limits(self.store.redis, self._k("limits"))

    def update_limits(self, payload: Mapping[str, Any], actor: str | None = None) -> RiskLimits:
        """Validate and persist a partial update; raises `LimitsValidationError(field, message)`."""
        current = self.get_limits()
        updated = apply_update(current, payload)
        save_limits(self.store.redis, self._k("limits"), updated)
        self._audit("risk_limits", actor=actor, before=current.to_json(), after=updated.to_json())
        return updated

    def size(self, fixed_quantity: int, symbol: str, stop_distance_points: float | None,
             max_position: int | None = None) -> SizingResult:
        """Quantity for one broker under the configured sizing mode (see risk/sizing.py)."""
        limits = self.get_limits()
        cap = max_position if max_position is not None else limits.position_limit(symbol)
        return size_order(fixed_quantity, symbol=symbol, mode=limits.sizing_mode, risk_amount=limits.risk_per_trade,
                          stop_distance_points=stop_distance_points, max_position=cap)

    # ------------------------------------------------------------------ states
    def scope_state(self, scope: str = GLOBAL_SCOPE, now: datetime | None = None) -> ScopeState:
        now = now or self.clock()
        return self._lift_if_new_session(scope, ScopeState.loads(self.store.redis.get(self._k("state", scope))), now)

    def _lift_if_new_session(self, scope: str, state: ScopeState, now: datetime) -> ScopeState:
        if state.state is TradingState.HALTED and state.auto_resume and state.halted_session is not None:
            lifted = lifted_state(state, self._session_id(now), now)
            if lifted is not None:
                self.store.redis.set(self._k("state", scope), lifted.dumps())
                self._event({"type": "reactivated", "scope": scope, "previous_session": state.halted_session,
                             "ts": now.isoformat()})
                self._audit("trading_state", scope=scope, state="ACTIVE", by="session_change",
                            reason="new trading session after a loss-limit halt")
                self._metric_state(scope, TradingState.ACTIVE)
                return lifted
        return state

    def set_state(self, scope: str, state: TradingState | str, reason: str, *, by: str = "operator",
                  actor: str | None = None) -> ScopeState:
        new = ScopeState(TradingState(state), reason, self.clock().isoformat(), by)
        self.store.redis.set(self._k("state", scope), new.dumps())
        self._audit("trading_state", scope=scope, state=new.state.value, by=by, actor=actor, reason=reason)
        self._metric_state(scope, new.state)
        return new

    def states(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        scopes = {GLOBAL_SCOPE}
        prefix = self._k("state", "")
        for key in self.store.redis.scan_iter(match=prefix + "*", count=500):
            scopes.add(key[len(prefix):])
        return {scope: self.scope_state(scope, now).to_json() for scope in sorted(scopes)}

    def trading_state(self) -> str:
        """Global state as a plain string, for /api/status."""
        return self.scope_state(GLOBAL_SCOPE).state.value

    def resume(self, scope: str = GLOBAL_SCOPE, actor: str | None = None) -> ScopeState:
        """Back to ACTIVE (the operator's decision; also lifts a loss-limit halt early)."""
        new = self.set_state(scope, TradingState.ACTIVE, "resumed by operator", by="resume", actor=actor)
        self._event({"type": "resume", "scope": scope, "actor": actor, "ts": new.since})
        return new

    # ------------------------------------------------------------------ the check
    def __call__(self, order: OrderRequest, context: OrderContext) -> RiskDecision:
        """Decide (one pipelined read, no write). Allowed: the decision's `slot` is what the
        order's claim takes atomically with the order record."""
        now = self.clock()
        limit = -1
        try:
            decision, limit = self._check(order, context, now)
        except redis.RedisError as exc:
            # Fail closed for new exposure; never trap a trader in a position.
            if context.reduces_position:
                decision = RiskDecision(True, RiskReason.OK, f"risk store unavailable ({exc.__class__.__name__}); "
                                                             "reducing order allowed")
            else:
                decision = RiskDecision(False, RiskReason.HALTED,
                                        f"risk store unavailable ({exc.__class__.__name__}): failing closed")
        if not decision.allowed:
            self._record(order, context, decision, now)
            return decision
        event = None
        if self.audit is not None and self.audit_allowed:
            event = self.audit.event("risk_decision", **_fields(order, context, decision, now))
        if self.metrics is not None:
            self.metrics.risk_decision(True, decision.reason.value)
        if limit < 0 and (event is None or self.audit.stream_key is None):
            if event is not None:
                self.audit.write_file(event)  # no audit stream: the file line is the record
            return decision
        line = ""
        if event is not None:
            line = self.audit.write_file(event)  # its stream entry rides in the slot, with the order's claim
        slot = RateSlot(key=self._k("rate", context.strategy, context.symbol), limit=limit, window_ms=RATE_WINDOW_MS,
                        now_ms=int(now.timestamp() * 1000),
                        member=f"{order.client_order_id}:{os.urandom(4).hex()}",
                        audit_key=(self.audit.stream_key or "") if event is not None else "",
                        audit_maxlen=AUDIT_STREAM_MAXLEN,
                        audit_fields=("ts", event.ts, "kind", event.kind, "json", line) if event else ())
        return RiskDecision(True, decision.reason, decision.detail, slot=slot)

    def rate_limited(self, order: OrderRequest, context: OrderContext, decision: RiskDecision,
                     count: int) -> RiskDecision:
        """The claim found the window full: the denial (recorded like any other)."""
        denial = rate_denial(context, decision.slot.limit if decision.slot is not None else 0, count)
        self._record(order, context, denial, self.clock())
        return denial

    def check_and_take(self, order: OrderRequest, context: OrderContext) -> RiskDecision:
        """The check plus taking its slot, for a caller that records orders without the order
        manager's claim (the backtester). Same rules and reason codes as live."""
        decision = self(order, context)
        if not decision.allowed or decision.slot is None:
            return decision
        status, count = self._take_slot(keys=[], args=rate_slot_args(decision.slot))
        if int(status) == -2:
            return self.rate_limited(order, context, decision, int(count))
        return decision

    def _snapshot(self, context: OrderContext, now: datetime) -> RiskSnapshot:
        pipe = self.store.redis.pipeline(transaction=False)  # one round trip for every read
        pipe.get(self._k("state", GLOBAL_SCOPE))
        pipe.get(self._k("state", context.strategy))
        pipe.get(self._k("limits"))
        pipe.hgetall(self._k("pnl", self._session_id(now)))
        g_raw, s_raw, limits_raw, pnl_raw = pipe.execute()
        return RiskSnapshot(
            self._lift_if_new_session(GLOBAL_SCOPE, self._state_from(g_raw), now),
            self._lift_if_new_session(context.strategy, self._state_from(s_raw), now),
            self._limits_from(limits_raw), self._pnl_from(pnl_raw),
        )

    def _limits_from(self, raw: str | None) -> RiskLimits:
        if not raw:
            return RiskLimits()
        parsed = self._limits_parsed
        if parsed is not None and parsed[0] == raw:
            return parsed[1]
        limits = RiskLimits.from_json(json.loads(raw))
        self._limits_parsed = (raw, limits)
        return limits

    def _state_from(self, raw: str | None) -> ScopeState:
        if not raw:
            return ScopeState()
        state = self._states_parsed.get(raw)
        if state is None:
            if len(self._states_parsed) >= 64:  # states change rarely; a bounded memo either way
                self._states_parsed.clear()
            state = self._states_parsed[raw] = ScopeState.loads(raw)
        return state

    def _pnl_from(self, raw: dict[str, str]) -> dict[str, tuple[Decimal, Decimal]]:
        parsed = self._pnl_parsed
        if parsed is not None and parsed[0] == raw:
            return parsed[1]
        pnl = {name: (_d(json.loads(v)["realized"]), _d(json.loads(v)["unrealized"])) for name, v in raw.items()}
        self._pnl_parsed = (raw, pnl)
        return pnl

    def _check(self, order: OrderRequest, ctx: OrderContext, now: datetime) -> tuple[RiskDecision, int]:
        """The decision and, when allowed, the orders-per-minute limit its slot applies (-1: none)."""
        return pre_trade_decision(order, ctx, lambda: self._snapshot(ctx, now))

    # ------------------------------------------------------------------ P&L and loss limits
    def on_pnl(self, strategy: str, realized: Decimal | float | str, unrealized: Decimal | float | str,
               now: datetime | None = None) -> list[BreachEvent]:
        """Latest session P&L of one strategy (realized since session start + open unrealized);
        evaluates the loss limits and returns any new breach (already halted + flattened)."""
        now = now or self.clock()
        key = self._k("pnl", self._session_id(now))
        doc = {"realized": str(_d(realized)), "unrealized": str(_d(unrealized)), "ts": now.isoformat()}
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.hset(key, strategy, json.dumps(doc))
        pipe.expire(key, PNL_TTL_SECONDS)
        pipe.execute()
        if self.metrics is not None:
            self.metrics.set_pnl(strategy, _d(realized), _d(unrealized))
        return self.evaluate(now)

    def refresh_pnl(self, now: datetime | None = None) -> list[BreachEvent]:
        """Pull P&L from `pnl_source` (e.g. the ledger) and evaluate; for a periodic thread."""
        if self.pnl_source is None:
            return self.evaluate(now)
        now = now or self.clock()
        events: list[BreachEvent] = []
        for strategy, (realized, unrealized) in self.pnl_source(self.session_start(now)).items():
            events += self.on_pnl(strategy, realized, unrealized, now)
        events += self.evaluate(now)
        self.sample_equity(now)
        return events

    def sample_equity(self, now: datetime | None = None) -> bool:
        """Append the session's P&L (all strategies, realized and unrealized, as the loss limits
        see it) to the session's equity curve, at most every EQUITY_SAMPLE_SECONDS; True when a
        point was added."""
        now = now or self.clock()
        last = self._last_equity_sample
        if last is not None and last <= now and (now - last).total_seconds() < EQUITY_SAMPLE_SECONDS:
            return False
        self._last_equity_sample = now
        pnl = self.session_pnl(now)
        doc = {"ts": now.isoformat(), "realized": str(sum((r for r, _ in pnl.values()), Decimal(0))),
               "unrealized": str(sum((u for _, u in pnl.values()), Decimal(0)))}
        key = self._k("equity", self._session_id(now))
        pipe = self.store.redis.pipeline(transaction=False)
        pipe.rpush(key, json.dumps(doc))
        pipe.ltrim(key, -EQUITY_MAX_POINTS, -1)
        pipe.expire(key, PNL_TTL_SECONDS)
        pipe.execute()
        return True

    def intraday_equity(self, now: datetime | None = None) -> dict[str, Any]:
        """The current session's equity curve, oldest first: {session_start, points: [{ts,
        realized, unrealized, total}]} (decimals as text)."""
        now = now or self.clock()
        points = []
        for raw in self.store.redis.lrange(self._k("equity", self._session_id(now)), 0, -1):
            doc = json.loads(raw)
            total = _d(doc["realized"]) + _d(doc["unrealized"])
            points.append({**doc, "total": str(total)})
        return {"session_start": self.session_start(now).isoformat(), "points": points}

    def session_pnl(self, now: datetime | None = None) -> dict[str, tuple[Decimal, Decimal]]:
        now = now or self.clock()
        raw = self.store.redis.hgetall(self._k("pnl", self._session_id(now)))
        return {name: (_d(json.loads(v)["realized"]), _d(json.loads(v)["unrealized"])) for name, v in raw.items()}

    def evaluate(self, now: datetime | None = None) -> list[BreachEvent]:
        now = now or self.clock()
        with self._eval_lock:
            limits = self.get_limits()
            pnl = self.session_pnl(now)
            events: list[BreachEvent] = []
            for scope, limit, total in loss_breaches(limits, pnl):
                event = self._breach(scope, limit, total, now)
                if event:
                    events.append(event)
            if self.metrics is not None and pnl:
                self.metrics.set_pnl(GLOBAL_SCOPE, sum((r for r, _ in pnl.values()), Decimal(0)),
                                     sum((u for _, u in pnl.values()), Decimal(0)))
            return events

    def _breach(self, scope: str, limit: Decimal, pnl: Decimal, now: datetime) -> BreachEvent | None:
        session = self._session_id(now)
        # Once per scope per session, across threads and processes: a P&L update every tick must
        # not flatten again and again.
        if not self.store.redis.set(self._k("breach", scope, session), now.isoformat(), nx=True, ex=PNL_TTL_SECONDS):
            return None
        resumes = next_session_start(self.session_start_fn, self.session_symbol, now)
        halted = loss_halt(limit, pnl, now, session, resumes)
        reason = halted.reason
        self.store.redis.set(self._k("state", scope), halted.dumps())
        self._metric_state(scope, TradingState.HALTED)
        report: dict[str, Any] | None = None
        if self.flatten_callback is not None:
            report = self._safe(lambda: self.flatten_callback(None if scope == GLOBAL_SCOPE else scope, "risk"))  # type: ignore[misc]
        event = BreachEvent(scope, limit, pnl, session, halted.resumes_at, True, report, now.isoformat())
        self._event(event.to_json())
        self._audit("loss_limit_breach", **event.to_json())
        if self.alerter is not None:
            self.alerter.alert("loss_limit", f"{scope}: {reason}", "critical", scope=scope, pnl=str(pnl),
                               limit=str(limit), flatten=report)
        log.critical("LOSS LIMIT %s: %s", scope, reason)
        return event

    # ------------------------------------------------------------------ kill switch
    def kill_switch(self, cancel_all: Callable[[], dict[str, Any]] | None,
                    flatten_all: Callable[[str], dict[str, Any]] | None, actor: str | None = None) -> dict[str, Any]:
        """HALT everything first (so no strategy sends a new order meanwhile), then cancel every open
        order (so no working entry fills after the flatten), then flatten every position.
        Each step's failure is reported, never raised: the halt stands regardless."""
        now = self.clock()
        state = ScopeState(TradingState.HALTED, "kill switch", now.isoformat(), "kill_switch")
        self.store.redis.set(self._k("state", GLOBAL_SCOPE), state.dumps())
        self._metric_state(GLOBAL_SCOPE, TradingState.HALTED)
        report: dict[str, Any] = {
            "state": TradingState.HALTED.value,
            "ts": now.isoformat(),
            "cancel": self._safe(cancel_all) if cancel_all else {"error": "order manager not available"},
            "flatten": self._safe(lambda: flatten_all("kill_switch")) if flatten_all
            else {"error": "order manager not available"},
        }
        self._event({"type": "kill_switch", "actor": actor, **report})
        self._audit("kill_switch", actor=actor, **report)
        if self.alerter is not None:
            self.alerter.alert("kill_switch", f"kill switch engaged by {actor or 'system'}", "critical", report=report)
        log.critical("KILL SWITCH engaged by %s", actor or "system")
        return report

    # ------------------------------------------------------------------ usage
    def usage(self, positions: list[Mapping[str, Any]] | None = None) -> dict[str, Any]:
        """Current use of every limit. `positions` (optional, from the order manager): rows with
        strategy, symbol, broker, quantity."""
        now = self.clock()
        limits = self.get_limits()
        pnl = self.session_pnl(now)
        strategies: dict[str, Any] = {}
        for name, (realized, unrealized) in sorted(pnl.items()):
            limit = limits.strategy_loss_limit(name)
            strategies[name] = _loss_usage(realized, unrealized, limit)
        g_real = sum((r for r, _ in pnl.values()), Decimal(0))
        g_unreal = sum((u for _, u in pnl.values()), Decimal(0))
        rates: dict[str, int] = {}
        prefix = self._k("rate", "")
        now_ms = int(now.timestamp() * 1000)
        for key in self.store.redis.scan_iter(match=prefix + "*", count=500):
            count = int(self.store.redis.zcount(key, now_ms - RATE_WINDOW_MS + 1, "+inf"))
            if count:
                rates[key[len(prefix):]] = count
        pos_rows = []
        for row in positions or []:
            cap = limits.position_limit(str(row.get("symbol")))
            qty = int(row.get("quantity", 0))
            pos_rows.append({**row, "limit": cap,
                             "used_pct": round(abs(qty) / cap * 100, 1) if cap else None})
        return {
            "session_start": self.session_start(now).isoformat(),
            "states": self.states(),
            "daily_loss": {"global": _loss_usage(g_real, g_unreal, limits.daily_loss_limit_global),
                           "strategies": strategies},
            "orders_per_minute": {"limit": limits.max_orders_per_minute, "tickers": rates},
            "max_position": {"default": limits.max_position, "by_symbol": limits.max_position_by_symbol,
                             "positions": pos_rows},
            "max_order_quantity": {"limit": limits.max_order_quantity},
            "sizing": {"mode": limits.sizing_mode,
                       "risk_per_trade": str(limits.risk_per_trade) if limits.risk_per_trade is not None else None},
        }

    def recent_decisions(self, count: int = 50) -> list[dict[str, Any]]:
        return [{"id": i, **f} for i, f in self.store.redis.xrevrange(self.decisions_key, count=count)]

    def recent_events(self, count: int = 50) -> list[dict[str, Any]]:
        return [{"id": i, **json.loads(f["json"])} for i, f in self.store.redis.xrevrange(self.events_key, count=count)]

    # ------------------------------------------------------------------ recording
    def _record(self, order: OrderRequest, ctx: OrderContext, decision: RiskDecision, now: datetime) -> None:
        """A denial: metrics, the log, the decisions stream and the audit record."""
        if self.metrics is not None:
            self.metrics.risk_decision(decision.allowed, decision.reason.value)
        fields = _fields(order, ctx, decision, now)
        log.warning("risk denied %s %s %s x%d at %s: %s (%s)", ctx.strategy, order.side.value, order.position_key,
                    order.quantity, ctx.broker, decision.reason.value, decision.detail)
        try:
            self.store.redis.xadd(self.decisions_key, fields, maxlen=DECISIONS_MAXLEN, approximate=True)
        except redis.RedisError as exc:
            log.error("could not record risk decision: %s", exc)
        if self.audit is not None:
            self.audit.risk_decision(**fields)

    def _event(self, doc: dict[str, Any]) -> None:
        try:
            self.store.redis.xadd(self.events_key, {"json": json.dumps(doc, default=str)}, maxlen=EVENTS_MAXLEN,
                                  approximate=True)
        except redis.RedisError as exc:
            log.error("could not record risk event: %s", exc)

    def _audit(self, kind: str, **data: Any) -> None:
        if self.audit is not None:
            self.audit.record(kind, **data)

    def _metric_state(self, scope: str, state: TradingState) -> None:
        if self.metrics is not None:
            self.metrics.set_trading_state(scope, state.value)

    @staticmethod
    def _safe(fn: Callable[[], Any]) -> dict[str, Any]:
        try:
            result = fn()
            return result if isinstance(result, dict) else {"result": result}
        except Exception as exc:  # noqa: BLE001 - a failing broker must not abort the kill switch
            log.exception("risk action failed")
            return {"error": f"{exc.__class__.__name__}: {exc}"}


def _loss_usage(realized: Decimal, unrealized: Decimal, limit: Decimal | None) -> dict[str, Any]:
    total = realized + unrealized
    used = None
    if limit is not None:
        used = float(max(Decimal(0), -total) / limit * 100)
    return {"realized": str(realized), "unrealized": str(unrealized), "total": str(total),
            "limit": str(limit) if limit is not None else None,
            "used_pct": round(used, 1) if used is not None else None}
