"""Turns a strategy's `Intent` into per-broker target orders for the order manager.

One path for everything that changes a position: strategy signals, stops, 0DTE time exits,
manual triggers, a ticker being disabled or deleted. So manual trades get the same client ids,
risk checks and journal as automatic ones.

Quantities come from the ticker: `schwab_quantity` at Schwab, `tastytrade_quantity` at
Tastytrade; a broker with quantity 0 gets no order. For the 0DTE strategy a LONG target means
"hold the ATM SPXW call expiring today", SHORT "hold the ATM put" (always a long premium position).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable, Protocol
from zoneinfo import ZoneInfo

from config.symbology import contract_key_at
from domain.intents import Intent, PositionTarget
from domain.orders import SCHWAB, TASTYTRADE, BrokerName, OptionContract, OptionRight
from domain.tickers import StrategyName, TickerConfig
from oms.models import TargetOrder, TargetResult

log = logging.getLogger(__name__)
NEW_YORK = ZoneInfo("America/New_York")

ChainProvider = Callable[[BrokerName, str, date], list[OptionContract]]


class OrderManagerLike(Protocol):
    def move_all(self, targets: list[TargetOrder]) -> list[TargetResult]: ...


class NoContractError(RuntimeError):
    """No same-day SPXW contract could be found for the 0DTE strategy."""


@dataclass(frozen=True, slots=True)
class ExecutionReport:
    intent: Intent
    results: list[TargetResult]
    errors: dict[str, str]

    def summary(self) -> str:
        parts = [
            f"{r.broker}: {r.status.value} {r.previous_quantity}->{r.quantity} (target {r.target_quantity})"
            + (f" {r.reason}" if r.reason else "")
            for r in self.results
        ]
        parts += [f"{broker}: {error}" for broker, error in self.errors.items()]
        return "; ".join(parts) or "no broker has a quantity for this ticker"


def allocations(config: TickerConfig) -> dict[BrokerName, int]:
    """Broker -> contracts/shares for one ticker; brokers with 0 are left out."""
    wanted = {SCHWAB: config.schwab_quantity, TASTYTRADE: config.tastytrade_quantity}
    return {broker: qty for broker, qty in wanted.items() if qty > 0}


def nearest_strike(chain: list[OptionContract], level: float, right: OptionRight, expiration: date) -> OptionContract:
    """The contract of `right` expiring on `expiration` whose strike is nearest the index level.
    Ties go to the lower strike so the choice is deterministic."""
    candidates = [c for c in chain if c.right is right and c.expiration == expiration]
    if not candidates:
        raise NoContractError(f"no SPXW {right.name.lower()} expiring {expiration} in the chain")
    target = Decimal(str(level))
    return min(candidates, key=lambda c: (abs(c.strike - target), c.strike))


class IntentExecutor:
    def __init__(self, orders: OrderManagerLike, chain_provider: ChainProvider | None = None,
                 halted: Callable[[str, str], str | None] | None = None) -> None:
        self._orders = orders
        self._chain_provider = chain_provider
        self._halted = halted  # (strategy, symbol) -> reason while reconciliation holds the ticker

    def targets_for(self, intent: Intent, config: TickerConfig, *, today: date | None = None,
                    open_deadline_ns: int | None = None) -> tuple[list[TargetOrder], dict[str, str]]:
        targets: list[TargetOrder] = []
        errors: dict[str, str] = {}
        # A future is held in the contract month that is the front month when the signal came
        # (the roll rule, in New York days): a position in another month is rolled into it.
        contract = contract_key_at(intent.symbol, intent.event_ts_ns)
        for broker, quantity in allocations(config).items():
            option: OptionContract | None = None
            signed = 0
            if config.strategy is StrategyName.ZERODAY:
                if intent.target is not PositionTarget.FLAT:
                    try:
                        option = self._atm_contract(broker, intent, today)
                    except Exception as exc:  # a chain failure at one broker must not block the other
                        errors[broker] = f"no ATM contract: {exc}"
                        continue
                    signed = quantity  # long premium: calls for LONG, puts for SHORT
            elif intent.target is PositionTarget.LONG:
                signed = quantity
            elif intent.target is PositionTarget.SHORT:
                signed = -quantity
            targets.append(TargetOrder(
                strategy=intent.strategy, symbol=intent.symbol, broker=broker, target_quantity=signed,
                event_ts_ns=intent.event_ts_ns, reason=intent.reason.value, detail=intent.detail, option=option,
                open_deadline_ns=open_deadline_ns, contract=contract,
            ))
        return targets, errors

    def execute(self, intent: Intent, config: TickerConfig, *, today: date | None = None,
                open_deadline_ns: int | None = None) -> ExecutionReport:
        """`open_deadline_ns`: a reversal's open leg is not sent after then (see TargetOrder)."""
        reason = self._halted(intent.strategy, intent.symbol) if self._halted else None
        # A halted ticker takes no new risk, but its way out is never refused: FLAT goes through.
        if reason is not None and intent.target is not PositionTarget.FLAT:
            return ExecutionReport(intent, [], {"all": f"ticker halted, no new position: {reason}"})
        targets, errors = self.targets_for(intent, config, today=today, open_deadline_ns=open_deadline_ns)
        results = self._orders.move_all(targets) if targets else []
        return ExecutionReport(intent, results, errors)

    def _atm_contract(self, broker: BrokerName, intent: Intent, today: date | None) -> OptionContract:
        if self._chain_provider is None:
            raise NoContractError("no option chain source is configured")
        expiration = today or datetime.fromtimestamp(intent.event_ts_ns / 1e9, NEW_YORK).date()
        right = OptionRight.CALL if intent.target is PositionTarget.LONG else OptionRight.PUT
        chain = self._chain_provider(broker, "SPX", expiration)
        return nearest_strike(chain, intent.price, right, expiration)


def describe_results(results: list[TargetResult]) -> list[dict[str, Any]]:
    return [r.to_json() for r in results]
