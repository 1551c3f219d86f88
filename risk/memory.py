"""The risk engine's pre-trade check with its state in this process, for backtests.

`MemoryRiskEngine` decides through the same rule functions as the live `risk.engine.RiskEngine`
(`risk.rules.pre_trade_decision`, `rate_denial`, `lifted_state`): same rules, order, reason codes
and details. Only the state store differs: trading states, limits, session P&L and the
orders-per-minute windows are Python objects instead of Redis keys, so a check costs
microseconds instead of Redis (or fakeredis) round trips, and a backtest can never touch the live
risk counters or trading state.

The rate window keeps Redis's semantics exactly (store/rate_window.py's Lua): entries scored at or
before `now - window` are dropped, a window holding `limit` entries or more refuses the order, an
allowed order adds its entry at `now`. Denials are kept in `decisions` (newest last, bounded like
the live decisions stream) and logged like the live engine's.

Not here: audit records, metrics, events and alerts (a backtest is no trading activity), and the
flatten of a loss-limit breach (`on_pnl` halts the scope as live; the caller owns its positions).
The backtester does not feed P&L, so daily loss limits are not evaluated in a backtest.
"""
from __future__ import annotations

import bisect
import logging
from collections import deque
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Callable, Mapping

from domain.orders import OrderRequest
from domain.risk import OrderContext, RateSlot, RiskDecision
from risk.limits import RiskLimits, apply_update
from risk.rules import (RATE_WINDOW_MS, RiskSnapshot, decision_record, lifted_state, loss_breaches, loss_halt,
                        pre_trade_decision, rate_denial)
from risk.state import GLOBAL_SCOPE, ScopeState, SessionStart, TradingState, default_session_start, next_session_start

log = logging.getLogger("risk.engine")  # the live engine's logger: one switch silences both

DECISIONS_MAXLEN = 50_000
_ACTIVE = ScopeState()  # a scope never set is ACTIVE


_PLAIN_DECISIONS_MAX = 4096  # a caller that builds new objects per order only cycles the memo


def _rate_key(ctx: OrderContext) -> str:
    """The orders-per-minute window's key: per (strategy, symbol), as the live `risk:rate:*` keys."""
    return f"{ctx.strategy}:{ctx.symbol}"


def _d(raw: Decimal | float | str) -> Decimal:
    return raw if isinstance(raw, Decimal) else Decimal(str(raw))


class MemoryRiskEngine:
    """Implements `domain.risk.PreTradeCheck` (plus `check_and_take`) over in-process state.
    Single-threaded use (one backtest loop)."""

    def __init__(
        self,
        *,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        calendar_session_start: SessionStart | None = None,
        session_symbol: str = "/ES",
        limits: RiskLimits | None = None,
    ) -> None:
        self.clock = clock
        self.session_start_fn: SessionStart = calendar_session_start or default_session_start
        self.session_symbol = session_symbol
        self.limits = limits or RiskLimits()
        self._states: dict[str, ScopeState] = {}
        self._pnl: dict[str, dict[str, tuple[Decimal, Decimal]]] = {}  # session id -> strategy -> (realized, unrealized)
        self._windows: dict[str, list[int]] = {}  # rate key -> sorted entry times (ms)
        self._breached: set[tuple[str, str]] = set()  # (scope, session id) already halted for its loss
        self.decisions: deque[dict[str, str]] = deque(maxlen=DECISIONS_MAXLEN)
        self._plain: RiskSnapshot | None = None  # the snapshot while nothing but limits was ever set
        # While that plain snapshot holds, a decision depends only on the order, its context and
        # the limits (all immutable): a caller that reuses its order and context objects (the
        # backtester keeps one pair per order shape) gets the decision computed once.
        # (id(order), id(context)) -> (order, context, decision, limit); the pair is kept so an id
        # is never reused. Emptied whenever the plain snapshot is rebuilt (new limits).
        self._plain_decisions: dict[tuple[int, int], tuple[OrderRequest, OrderContext, RiskDecision, int]] = {}

    # ------------------------------------------------------------------ state
    def _session_id(self, now: datetime) -> str:
        return self.session_start_fn(self.session_symbol, now).isoformat()

    def get_limits(self) -> RiskLimits:
        return self.limits

    def update_limits(self, payload: Mapping[str, Any], actor: str | None = None) -> RiskLimits:
        """Validate and apply a partial update, as `RiskEngine.update_limits` (same validator)."""
        self.limits = apply_update(self.limits, payload)
        return self.limits

    def set_state(self, scope: str, state: TradingState | str, reason: str, *, by: str = "operator",
                  actor: str | None = None) -> ScopeState:
        new = ScopeState(TradingState(state), reason, self.clock().isoformat(), by)
        self._states[scope] = new
        return new

    def scope_state(self, scope: str = GLOBAL_SCOPE, now: datetime | None = None) -> ScopeState:
        state = self._states.get(scope)
        if state is None:
            return _ACTIVE
        if state.auto_resume and state.state is TradingState.HALTED:  # only a loss-limit halt needs the session
            now = now or self.clock()
            lifted = lifted_state(state, self._session_id(now), now)
            if lifted is not None:
                self._states[scope] = state = lifted
        return state

    def on_pnl(self, strategy: str, realized: Decimal | float | str, unrealized: Decimal | float | str,
               now: datetime | None = None) -> list[tuple[str, Decimal, Decimal]]:
        """Latest session P&L of one strategy, then the loss limits, as `RiskEngine.on_pnl`: a
        breached scope is HALTED until the next session (once per scope and session). Returns the
        new breaches as (scope, limit, P&L); there is nothing to flatten here (the caller's
        position is its own)."""
        now = now or self.clock()
        session = self._session_id(now)
        self._pnl.setdefault(session, {})[strategy] = (_d(realized), _d(unrealized))
        new: list[tuple[str, Decimal, Decimal]] = []
        for scope, limit, total in loss_breaches(self.limits, self._pnl[session]):
            if (scope, session) in self._breached:
                continue
            self._breached.add((scope, session))
            resumes = next_session_start(self.session_start_fn, self.session_symbol, now)
            self._states[scope] = loss_halt(limit, total, now, session, resumes)
            new.append((scope, limit, total))
        return new

    def _snapshot(self, ctx: OrderContext) -> RiskSnapshot:
        if not self._states and not self._pnl:
            # Every scope ACTIVE and no P&L ever fed (every backtest): nothing to look up.
            plain = self._plain
            if plain is None or plain.limits is not self.limits:
                plain = self._plain = RiskSnapshot(_ACTIVE, _ACTIVE, self.limits, {})
                self._plain_decisions.clear()  # decided under the old limits
            return plain
        now = self.clock()
        pnl = dict(self._pnl.get(self._session_id(now), {})) if self._pnl else {}
        return RiskSnapshot(self.scope_state(GLOBAL_SCOPE, now), self.scope_state(ctx.strategy, now), self.limits, pnl)

    # ------------------------------------------------------------------ the check
    def __call__(self, order: OrderRequest, context: OrderContext) -> RiskDecision:
        """Decide, write nothing (as the live check); an allowed decision carries its RateSlot."""
        decision, limit = self._pre_trade(order, context)
        if limit < 0:
            return decision
        now = self.clock()
        slot = RateSlot(key=_rate_key(context), limit=limit, window_ms=RATE_WINDOW_MS,
                        now_ms=int(now.timestamp() * 1000), member=order.client_order_id)
        return RiskDecision(True, decision.reason, decision.detail, slot=slot)

    def rate_limited(self, order: OrderRequest, context: OrderContext, decision: RiskDecision,
                     count: int) -> RiskDecision:
        denial = rate_denial(context, decision.slot.limit if decision.slot is not None else 0, count)
        self._record(order, context, denial, self.clock())
        return denial

    def take_slot(self, slot: RateSlot) -> tuple[int, int]:
        """The rate fragment of store/rate_window.py on the in-process window: (-2, count) when
        the window is full (nothing added), else (1, 0) with the entry added."""
        count = self._take(slot.key, slot.now_ms, slot.window_ms, slot.limit)
        return (-2, count) if count >= 0 else (1, 0)

    def _take(self, key: str, now_ms: int, window_ms: int, limit: int) -> int:
        """-1 with the entry added, else the count of the full window (nothing added)."""
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = []
        elif window and window[0] <= now_ms - window_ms:  # ZREMRANGEBYSCORE -inf (now - window)
            del window[:bisect.bisect_right(window, now_ms - window_ms)]
        if len(window) >= limit:
            return len(window)
        if not window or window[-1] <= now_ms:
            window.append(now_ms)  # the usual case: time moves forward
        else:
            bisect.insort_right(window, now_ms)
        return -1

    def check_and_take(self, order: OrderRequest, context: OrderContext) -> RiskDecision:
        """The check plus taking its slot (no order manager in a backtest): the decision of
        `RiskEngine.check_and_take` (allowed, reason, detail), without building the slot object."""
        decision, limit = self._pre_trade(order, context)
        if limit < 0:
            return decision
        now = self.clock()
        count = self._take(_rate_key(context), int(now.timestamp() * 1000), RATE_WINDOW_MS, limit)
        if count >= 0:
            denial = rate_denial(context, limit, count)
            self._record(order, context, denial, now)
            return denial
        return decision

    def _pre_trade(self, order: OrderRequest, context: OrderContext) -> tuple[RiskDecision, int]:
        """The rules before the rate window: (decision, the window's limit), the limit -1 when the
        decision is final (a denial, recorded here, or an order no window limits). The clock is
        read only when something needs the time (a stored state or P&L, a denial's record, then
        the rate window): the way out of a position needs none."""
        if self._states or self._pnl:
            decision, limit = pre_trade_decision(order, context, lambda: self._snapshot(context))
        else:
            decision, limit = self._plain_decision(order, context)
        if not decision.allowed:
            self._record(order, context, decision, self.clock())
            return decision, -1
        return decision, limit

    def _plain_decision(self, order: OrderRequest, context: OrderContext) -> tuple[RiskDecision, int]:
        snapshot = self._snapshot(context)  # the plain one; rebuilding it for new limits empties the memo
        memo = self._plain_decisions
        if len(memo) >= _PLAIN_DECISIONS_MAX:
            memo.clear()
        known = memo.get((id(order), id(context)))
        if known is not None and known[0] is order and known[1] is context:
            return known[2], known[3]
        decision, limit = pre_trade_decision(order, context, lambda: snapshot)
        memo[(id(order), id(context))] = (order, context, decision, limit)
        return decision, limit

    def _record(self, order: OrderRequest, ctx: OrderContext, decision: RiskDecision, now: datetime) -> None:
        self.decisions.append(decision_record(order, ctx, decision, now))
        if log.isEnabledFor(logging.WARNING):
            log.warning("risk denied %s %s %s x%d at %s: %s (%s)", ctx.strategy, order.side.value, order.position_key,
                        order.quantity, ctx.broker, decision.reason.value, decision.detail)
