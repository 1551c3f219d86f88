"""The operator's controls over the strategy engine: one call per trading endpoint of the API.

The API's views validate a request, make one of these calls and turn its answer into HTTP; what
happens is decided here, with or without an engine in the process:

- Without one (`services.engine` is None: the web process alone) start/stop record the desired
  running set (`engine.supervisor.RunningSet`) for the engine to pick up when it starts, and a
  manual trade raises `EngineUnavailable`: nothing ever pretends an order was placed.
- With one, start/stop go to the supervisor, and a manual trade is checked against the time rules
  of engine/manual.py at the operator's clock (`services.time_ns`) before the supervisor sends it.
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from domain.tickers import StrategyName
from engine.manual import ManualTrade, Refusal, session_refusal, zeroday_entry_refusal
from engine.supervisor import NothingEnabledError, NoRealPriceSource, RunningSet

if TYPE_CHECKING:
    from engine.services import Services

log = logging.getLogger("engine.control")


class EngineUnavailable(RuntimeError):
    """No order path runs in this process (the strategy engine and brokers are not running)."""

    code = "service_unavailable"


def start(services: Services, strategy: StrategyName) -> str:
    """Start `strategy` on its trade-enabled tickers; the answer is a line for the operator.
    Raises NothingEnabledError when no ticker is enabled, and NoRealPriceSource (nothing started)
    when a ticker has no real price source in live mode."""
    enabled = [c.symbol for c in services.tickers.enabled(strategy)]
    if not enabled:
        raise NothingEnabledError(f"no {strategy.value} tickers have trade_enabled=true; enable one with add-ticker "
                                  "first")
    if services.engine is None:
        if not RunningSet(services.store).add(strategy.value):
            return f"{strategy.value} is already running"
        log.info("start requested for %s (%s); no engine in this process", strategy.value, ", ".join(enabled))
        return (f"{strategy.value} marked as running for {', '.join(enabled)}; the strategy engine is not active "
                "in this process, so nothing trades until it starts")
    try:
        result = services.engine.start_strategy(strategy.value)
    except NoRealPriceSource as exc:
        log.warning("start %s refused: %s", strategy.value, exc)
        raise
    started, already = list(result.started), list(result.already_running)
    if not started and already:
        return f"{strategy.value} is already running for {', '.join(already)}"
    parts = [f"{strategy.value} started for {', '.join(started) or 'no tickers'}"]
    if already:
        parts.append(f"already running for {', '.join(already)}")
    log.info("start %s: started=%s already=%s", strategy.value, started, already)
    return "; ".join(parts)


def stop(services: Services, strategy: StrategyName) -> str:
    """Stop every ticker of `strategy` (positions are kept); the answer is a line for the operator."""
    if services.engine is None:
        removed = RunningSet(services.store).remove(strategy.value)
        log.info("stop requested for %s; no engine in this process", strategy.value)
        return f"{strategy.value} stopped" if removed else f"{strategy.value} was not running"
    stopped = list(services.engine.stop_strategy(strategy.value))
    log.info("stop %s: %s", strategy.value, stopped)
    if not stopped:
        return f"{strategy.value} was not running"
    return f"{strategy.value} stopped for {', '.join(stopped)}"


def manual_trade(services: Services, strategy: StrategyName, ticker: str, action: str) -> ManualTrade | Refusal:
    """A manual trigger: `action` is the engine's word for it (engine.manual.manual_actions). A
    Refusal when a time rule or the lack of real prices forbids it (nothing sent); otherwise what
    the engine did. Raises EngineUnavailable without an engine, and the engine's ValueError or
    LookupError for a ticker it cannot trade (not configured, no price yet)."""
    if services.engine is None:
        raise EngineUnavailable("order path not available: the strategy engine and brokers are not running in this "
                                "process")
    refusal = _time_rule(services, strategy, ticker, action.lower())
    if refusal is not None:
        log.info("manual trigger %s %s %s refused: %s", strategy.value, ticker, action, refusal.message)
        return refusal
    log.info("manual trigger %s %s %s", strategy.value, ticker, action)
    try:
        return services.engine.manual_trigger(strategy.value, ticker, action)
    except NoRealPriceSource as exc:
        return Refusal(exc.code, str(exc))


def current_position(services: Services, strategy: StrategyName, ticker: str) -> dict[str, Any] | None:
    """The strategy's position in `ticker` at every broker; None when flat, or when no order path runs."""
    if services.orders is None or services.engine is None:
        return None
    return services.engine.current_position(strategy.value, ticker)


def _time_rule(services: Services, strategy: StrategyName, ticker: str, action: str) -> Refusal | None:
    """Session/0DTE time rules (engine/manual.py) at the operator's clock, before anything is sent."""
    now_ns = int(services.time_ns())
    if strategy is StrategyName.ZERODAY:
        if action == "close":  # closing is always allowed (a held 0DTE option must be closable)
            return None
        config = services.tickers.get(StrategyName.ZERODAY, ticker)
        if config is None:  # the engine answers "not configured" (400)
            return None
        return zeroday_entry_refusal(config, action, now_ns)
    return session_refusal(ticker, action, now_ns)
