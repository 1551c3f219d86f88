"""Rules and outcome reading for manual triggers (POST /api/manual-trigger, /api/ema-manual-trigger).

Actions: the words each strategy's trigger takes and the position each asks for (`manual_actions`):
call/put/close for `zeroday` (also long/short, which a dashboard build sends for call/put: the
strategy holds long premium only), LONG/SHORT/CLOSE for the others; any case. The API validates
with these tables and the supervisor acts on them: one definition.

Time rules, checked before anything is sent:
- 0DTE (`zeroday`) call/put: only when the zeroday strategy itself would enter at that instant
  (`ZeroDayStrategy.entry_allowed_at` with the engine's `spx_session_clock`: a session today with a
  same-day SPXW expiration, 09:35-15:30 ET, before the forced close at 15:45 ET / 15 minutes before
  an early close). The calendar and window logic are the strategy's and the clock's, not repeated
  here. Close is not time-gated.
- Other instruments (`ema`): LONG, SHORT and CLOSE only while the instrument's session is open
  (`market_data.calendars.is_open`); on a closed market a paper fill would be at a stale price and
  a real broker would reject the order.

Outcome: which brokers acknowledged the order. FILLED, WORKING and PENDING_OPEN are acknowledged;
NOOP (already at target) and a DUPLICATE of an intent that reached its target or whose orders were
sent are success without a new order; UNKNOWN is "sent, outcome unknown"; everything else (denied by
risk, rejected, paused, blocked, error, no contract, halted ticker) was refused and nothing was sent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Callable, Mapping

from domain.intents import PositionTarget
from domain.tickers import StrategyName, TickerConfig
from engine.clock import spx_session_clock
from engine.executor import NEW_YORK, ExecutionReport
from market_data import calendars
from domain.orders import OrderState
from oms.models import ACKNOWLEDGED_STATUSES, TargetResult, TargetStatus
from strategies import build_strategy
from strategies.base import SessionClock
from strategies.zeroday import ZeroDayStrategy


# A duplicate intent's orders in these states mean its first answer was acknowledged.
_SENT_STATES = frozenset({OrderState.SUBMITTED, OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED, OrderState.FILLED})


@dataclass(frozen=True, slots=True)
class ManualActions:
    """The words one strategy's manual trigger takes. `targets`: each word as the engine spells it
    (and logs it: "manual put on SPX") -> the position it asks for; `aliases`: other words taken
    for one of them."""

    targets: Mapping[str, PositionTarget]
    aliases: Mapping[str, str] = field(default_factory=dict)

    def word(self, raw: object) -> str | None:
        """The engine's word for `raw` (any case, surrounding spaces ignored); None when it is none."""
        if not isinstance(raw, str):
            return None
        text = raw.strip().lower()
        text = self.aliases.get(text, text)
        return next((word for word in self.targets if word.lower() == text), None)

    def target(self, raw: object) -> PositionTarget | None:
        word = self.word(raw)
        return None if word is None else self.targets[word]

    def words(self) -> list[str]:
        """Every word taken, the engine's first (for documentation)."""
        return [*self.targets, *self.aliases]

    def describe(self) -> str:
        """"call, put, close (or long, short for call, put)": for an error message."""
        also = f" (or {', '.join(self.aliases)} for {', '.join(self.aliases.values())})" if self.aliases else ""
        return f"{', '.join(self.targets)}{also}"


ZERODAY_ACTIONS = ManualActions({"call": PositionTarget.LONG, "put": PositionTarget.SHORT, "close": PositionTarget.FLAT},
                                aliases={"long": "call", "short": "put"})
EMA_ACTIONS = ManualActions({"LONG": PositionTarget.LONG, "SHORT": PositionTarget.SHORT, "CLOSE": PositionTarget.FLAT})


def manual_actions(strategy: StrategyName) -> ManualActions:
    """The 0DTE strategy trades options (call/put); every other strategy the instrument itself."""
    return ZERODAY_ACTIONS if strategy is StrategyName.ZERODAY else EMA_ACTIONS


@dataclass(frozen=True, slots=True)
class Refusal:
    """A manual trigger refused before anything was sent: `code` for programs, `message` for people."""

    code: str
    message: str


def _ny(ts_ns: int) -> datetime:
    return datetime.fromtimestamp(ts_ns // 1_000_000_000, NEW_YORK)


def _hm(ts_ns: int) -> str:
    return _ny(ts_ns).strftime("%H:%M")


def zeroday_entry_refusal(config: TickerConfig, action: str, now_ns: int,
                          clock_provider: Callable[[int], SessionClock] = spx_session_clock) -> Refusal | None:
    """None when a manual 0DTE `action` (call/put) may open a position at `now_ns`, else why not."""
    if not config.side_enabled(action == "call"):
        return Refusal(f"{action}_disabled", f"manual {action} refused: {action}s are disabled for this ticker "
                                             f"({action}_enabled is false)")
    strategy = build_strategy(config)  # the same strategy (and time parameters) the runner uses
    if not isinstance(strategy, ZeroDayStrategy):
        raise TypeError(f"{config.strategy.value} is not the 0DTE strategy")
    clock = clock_provider(now_ns)
    strategy.on_clock(clock)  # a fresh, flat strategy: only records the clock
    if strategy.entry_allowed_at(now_ns):
        return None
    now = _ny(now_ns)
    day = now.date()
    when = f"{now.strftime('%A %Y-%m-%d %H:%M')} ET"
    if clock.session_open_ns is None:
        return Refusal("no_session", f"manual {action} refused: no SPX session on {when} (weekend or holiday), "
                                     "so no same-day SPXW expiration; 0DTE trades only on days with one")
    if not clock.has_same_day_expiration:
        return Refusal("no_same_day_expiration", f"manual {action} refused: no same-day SPXW expiration on {when}")
    times = strategy.times
    close_ns = strategy.close_ns(day)
    start = times.entry_start.strftime("%H:%M")
    end = min(times.entry_end.strftime("%H:%M"), _hm(close_ns))
    return Refusal("outside_entry_window",
                   f"manual {action} refused: 0DTE entries only {start}-{end} ET and every 0DTE position is "
                   f"closed at {_hm(close_ns)} ET; it is {when}")


def session_refusal(symbol: str, action: str, now_ns: int) -> Refusal | None:
    """None while `symbol`'s session is open at `now_ns`, else why the manual `action` is refused."""
    if calendars.is_open(symbol, now_ns):
        return None
    next_open = calendars.next_open(symbol, now_ns).astimezone(NEW_YORK)
    return Refusal("market_closed",
                   f"manual {action} on {symbol} refused: the {symbol} session is closed at "
                   f"{_ny(now_ns).strftime('%A %Y-%m-%d %H:%M')} ET (next open {next_open.strftime('%A %Y-%m-%d %H:%M')} "
                   "ET); an order now would fill at a stale price or be rejected by the broker")


@dataclass(frozen=True, slots=True)
class BrokerOutcome:
    broker: str
    status: str  # a TargetStatus value, or "not_sent" (no order built: no contract, ticker halted)
    reason: str = ""
    previous_quantity: int | None = None
    quantity: int | None = None
    target_quantity: int | None = None
    acknowledged: bool = False  # the broker has the order, or the position already is where the trigger wants it

    def to_json(self) -> dict[str, Any]:
        return {"broker": self.broker, "status": self.status, "ok": self.acknowledged, "reason": self.reason,
                "previous_quantity": self.previous_quantity, "quantity": self.quantity,
                "target_quantity": self.target_quantity}


@dataclass(frozen=True, slots=True)
class ManualOutcome:
    results: tuple[BrokerOutcome, ...]

    @property
    def acknowledged(self) -> list[BrokerOutcome]:
        return [r for r in self.results if r.acknowledged]

    @property
    def unknown(self) -> list[BrokerOutcome]:
        return [r for r in self.results if r.status == TargetStatus.UNKNOWN]

    @property
    def refused(self) -> list[BrokerOutcome]:
        return [r for r in self.results if not r.acknowledged and r.status != TargetStatus.UNKNOWN]

    @property
    def already_at_target(self) -> bool:
        return bool(self.results) and all(r.status in (TargetStatus.NOOP, TargetStatus.DUPLICATE)
                                          and r.acknowledged for r in self.results)

    def error_code(self) -> str:
        """For a trigger no broker acknowledged: why, in one word."""
        if not self.results:
            return "no_broker_quantity"
        if self.unknown:
            return "order_outcome_unknown"
        statuses = {r.status for r in self.results}
        if statuses == {TargetStatus.DENIED.value}:
            return "risk_denied"
        if statuses == {TargetStatus.PAUSED.value}:
            return "broker_paused"
        if any(r.broker == "all" for r in self.results):
            return "ticker_halted"
        return "order_refused"

    def to_json(self) -> list[dict[str, Any]]:
        return [r.to_json() for r in self.results]


def _acknowledged(result: TargetResult) -> bool:
    if result.status in ACKNOWLEDGED_STATUSES or result.status is TargetStatus.NOOP:
        return True
    if result.status is TargetStatus.DUPLICATE:  # the first answer to this intent decides
        return result.quantity == result.target_quantity or any(o.state in _SENT_STATES for o in result.orders)
    return False


def outcome_from_report(report: ExecutionReport) -> ManualOutcome:
    """Which brokers acknowledged the order of one manual trigger's report."""
    results = [BrokerOutcome(r.broker, r.status.value, r.reason, r.previous_quantity, r.quantity, r.target_quantity,
                             _acknowledged(r))
               for r in report.results]
    results += [BrokerOutcome(broker, "not_sent", error) for broker, error in report.errors.items()]
    return ManualOutcome(tuple(results))


@dataclass(frozen=True, slots=True)
class ManualTrade:
    """What `StrategySupervisor.manual_trigger` did: a line for people and the per-broker report."""

    message: str
    report: ExecutionReport

    def __str__(self) -> str:
        return self.message

    def outcome(self) -> ManualOutcome:
        return outcome_from_report(self.report)
