"""The strategy supervisor: which (strategy, ticker) threads run, and the API's entry points.

- The operator's running set (`engine:running`) persists in Redis; `resume()` restarts it after a
  service restart, and is called only after broker reconciliation.
- start_strategy starts every enabled ticker of a strategy once (a second start reports "already
  running"); stop_strategy stops them within a second and keeps positions.
- Ticker edits take effect at once: a changed ticker's thread is restarted with the new config; a
  disabled or deleted ticker that holds a position is closed (journaled as ticker_removed).
- Manual triggers go through the same executor, risk checks and journal as signals.

Injection points (all optional keyword arguments): `time_ns` - the wall clock every runner uses
for housekeeping and staleness (tests and replays control time); `on_bar_to_order(strategy,
symbol, seconds)` - bar received by the thread -> order acknowledged latency, for metrics;
`on_restart(strategy, symbol)` - a crashed strategy thread is restarting.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from domain.intents import IntentReason, PositionTarget
from domain.orders import BROKERS
from domain.tickers import StrategyName, TickerConfig, parse_strategy
from engine.executor import ExecutionReport, IntentExecutor
from engine.manual import ManualTrade, manual_actions
from engine.runner import DivergenceCallback, LatencyCallback, RestartCallback, RunnerHooks, StrategyRunner
from engine.state_writer import StateWriter
from engine.stream_hub import StreamHub
from store.redis_store import Store
from store.tickers import TickerStore
from strategies.base import SessionClock

log = logging.getLogger("engine")

class NothingEnabledError(ValueError):
    """start-trading was asked for a strategy with no enabled ticker."""


class TriggerError(ValueError):
    """A manual trigger cannot be carried out (unknown ticker, bad action, no price)."""


class NoRealPriceSource(RuntimeError):
    """A ticker would trade on prices nothing real supplies (live mode, SPX without a broker
    stream). Not a ValueError: the request is well formed, the process cannot serve it (409)."""

    code = "no_real_price_source"


# (ticker) -> why it cannot take new positions on this process's prices, or None when it can.
PriceRefusal = Callable[[TickerConfig], str | None]


class RunningSet:
    """The operator's running set (`engine:running`): the strategies started and not stopped since.
    It outlives the process (`StrategySupervisor.resume()` starts it again), and a process without
    an engine records start/stop here for the engine to pick up."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.key = store.key("engine", "running")

    def add(self, strategy: str) -> bool:
        """True when it was not in the set."""
        return bool(self._store.redis.sadd(self.key, strategy))

    def remove(self, strategy: str) -> bool:
        """True when it was in the set."""
        return bool(self._store.redis.srem(self.key, strategy))

    def members(self) -> set[str]:
        return {str(s) for s in self._store.redis.smembers(self.key)}


@dataclass
class StartResult:
    started: list[str] = field(default_factory=list)
    already_running: list[str] = field(default_factory=list)


class StrategySupervisor:
    def __init__(
        self,
        *,
        store: Store,
        tickers: TickerStore,
        market_data: Any,
        orders: Any,
        executor: IntentExecutor,
        log_dir: Path,
        clock_provider: Callable[[int], SessionClock] | None = None,
        on_report: Callable[[ExecutionReport], None] | None = None,
        skip_stale_signals: bool = True,
        time_ns: Callable[[], int] = time.time_ns,
        on_bar_to_order: LatencyCallback | None = None,
        on_restart: RestartCallback | None = None,
        on_divergence: DivergenceCallback | None = None,
        roll_reopens: bool = True,
        broker_stops: bool = True,
        hub: StreamHub | None = None,
        price_refusal: PriceRefusal | None = None,
    ) -> None:
        """`hub`: a reader shared with another supervisor on the same market data (the engine
        bench runs two); its owner starts and stops it. By default the supervisor has its own.
        `price_refusal`: checked for every ticker before start-trading and before a manual entry
        (the runtime refuses SPX in live mode without a broker stream); None: never refused."""
        self._price_refusal = price_refusal
        self._store = store
        self._hooks = RunnerHooks(on_report=on_report, skip_stale_signals=skip_stale_signals, time_ns=time_ns,
                                  on_bar_to_order=on_bar_to_order, on_restart=on_restart,
                                  on_divergence=on_divergence, roll_reopens=roll_reopens,
                                  broker_stops=broker_stops)
        self._tickers = tickers
        self._md = market_data
        self._orders = orders
        self._executor = executor
        self._log_dir = log_dir
        self._clock_provider = clock_provider
        self._runners: dict[tuple[str, str], StrategyRunner] = {}
        self._lock = threading.RLock()
        self._owns_hub = hub is None
        self._hub = hub or StreamHub(store)  # the one XREAD every strategy thread's bars and trades come through
        self._states = StateWriter(store)  # write-behind of every thread's saved state
        self._running = RunningSet(store)

    def running_strategies(self) -> set[str]:
        return self._running.members()

    # --- start / stop -----------------------------------------------------------------------
    def start_strategy(self, strategy: str | StrategyName) -> StartResult:
        name = parse_strategy(strategy)
        enabled = self._tickers.enabled(name)
        if not enabled:
            raise NothingEnabledError(f"no enabled ticker for {name.value}; add one with trade_enabled true first")
        for config in enabled:  # nothing starts (nor is marked running) when one ticker has no real prices
            self._refuse_without_real_prices(config)
        result = StartResult()
        with self._lock:
            self._running.add(name.value)
            for config in enabled:
                key = (name.value, config.symbol)
                runner = self._runners.get(key)
                if runner and runner.is_alive():
                    result.already_running.append(config.symbol)
                    continue
                self._start_runner(config)
                result.started.append(config.symbol)
        log.info("start %s: started %s, already running %s", name.value, result.started, result.already_running)
        return result

    def stop_strategy(self, strategy: str | StrategyName) -> list[str]:
        name = parse_strategy(strategy)
        with self._lock:
            self._running.remove(name.value)
            stopping = [(key, r) for key, r in self._runners.items() if key[0] == name.value]
            for key, _ in stopping:
                del self._runners[key]
        for _, runner in stopping:
            runner.stop()
        symbols = [key[1] for key, _ in stopping]
        log.info("stop %s: stopped %s (positions kept)", name.value, symbols)
        return symbols

    def resume(self) -> dict[str, StartResult]:
        """Restart what was running before the process stopped. Call after reconciliation."""
        resumed: dict[str, StartResult] = {}
        for name in sorted(self.running_strategies()):
            try:
                resumed[name] = self.start_strategy(name)
            except NothingEnabledError:
                self._running.remove(name)
            except NoRealPriceSource as exc:  # an operator starts it again once real prices exist
                log.error("not resuming %s: %s", name, exc)
                self._running.remove(name)
        return resumed

    def _refuse_without_real_prices(self, config: TickerConfig) -> None:
        why = self._price_refusal(config) if self._price_refusal is not None else None
        if why is not None:
            raise NoRealPriceSource(why)

    def shutdown(self) -> None:
        """Graceful stop (SIGTERM): threads stop, state is saved, the running set is kept."""
        with self._lock:
            runners = list(self._runners.values())
            self._runners.clear()
        for runner in runners:
            runner.stop()
        if self._owns_hub:
            self._hub.stop()
        self._states.stop()

    def _start_runner(self, config: TickerConfig) -> StrategyRunner:
        self._hub.start()  # no-op while it runs; restarts it should it ever have died
        self._states.start()
        runner = self._make_runner(config)
        self._runners[(config.strategy.value, config.symbol)] = runner
        runner.start()
        return runner

    def _make_runner(self, config: TickerConfig) -> StrategyRunner:
        # Only the 0DTE strategy is time-aware; the others act on bars alone.
        clock = self._clock_provider if config.strategy is StrategyName.ZERODAY else None
        return StrategyRunner(
            config=config, store=self._store, hub=self._hub, states=self._states, market_data=self._md,
            executor=self._executor, log_dir=self._log_dir, clock_provider=clock, hooks=self._hooks,
            orders=self._orders,
        )

    # --- ticker edits -----------------------------------------------------------------------
    def ensure_bars_for_enabled_tickers(self) -> None:
        """Build bars for every enabled ticker, running or not, so a trader sees bars accumulate
        (and warm-up history exists) before starting a strategy."""
        for name in StrategyName:
            for config in self._tickers.enabled(name):
                self._md.ensure(config.symbol, config.tf)

    def ticker_changed(self, config: TickerConfig) -> None:
        key = (config.strategy.value, config.symbol)
        if config.trade_enabled:
            self._md.ensure(config.symbol, config.tf)
        with self._lock:
            runner = self._runners.pop(key, None)
            if runner:
                runner.stop()
            if not config.trade_enabled:
                self._close_position(config, "ticker disabled")
            if config.trade_enabled and config.strategy.value in self.running_strategies():
                self._start_runner(config)

    def ticker_removed(self, strategy: str, symbol: str, config: TickerConfig | None = None) -> None:
        key = (parse_strategy(strategy).value, symbol)
        with self._lock:
            runner = self._runners.pop(key, None)
            if runner:
                runner.stop()
                config = config or runner.config
        if config is not None:
            self._close_position(config, "ticker deleted")

    def _close_position(self, config: TickerConfig, why: str) -> None:
        if not self._holds_position(config):
            return
        runner = self._make_runner(config)
        price = self._md.last_price(config.symbol) or 0.0
        report = runner.force_target(PositionTarget.FLAT, IntentReason.TICKER_REMOVED, why, price)
        log.info("%s %s: %s -> closed: %s", config.strategy.value, config.symbol, why, report.summary())

    def _holds_position(self, config: TickerConfig) -> bool:
        return any(self._orders.position(config.strategy.value, config.symbol, b).quantity != 0 for b in BROKERS)

    def sync_with_book(self, strategy: str | None) -> None:
        """Positions were moved outside the strategies (loss limit, kill switch): every strategy
        (of `strategy`, or all) takes what the book holds now. A flatten that failed leaves the
        strategy holding, its exits armed; one that worked leaves it flat."""
        with self._lock:
            running = dict(self._runners)
        for (name, _), runner in running.items():
            if strategy is None or name == strategy:
                runner.sync_with_book("positions closed outside the strategy")
        # Stopped tickers too (e.g. traded by a manual trigger only): their saved state is what the
        # next start-trading resumes from, and it must not still say LONG/SHORT.
        for strategy_name in StrategyName:
            if strategy is not None and strategy_name.value != strategy:
                continue
            for symbol, config in self._tickers.get_map(strategy_name).items():
                if (strategy_name.value, symbol) not in running:
                    runner = self._make_runner(config)
                    runner.sync_saved_position(runner.book_target())

    # --- manual triggers --------------------------------------------------------------------
    def manual_trigger(self, strategy: str, symbol: str, action: str) -> ManualTrade:
        """LONG/SHORT/CLOSE (ema, supertrend) or call/put/close (zeroday) through the ticker's own
        order path (running or not): same client ids, risk checks and journal as its signals.
        Raises TriggerError for a bad action, an unconfigured ticker or no price yet."""
        name = parse_strategy(strategy)
        actions = manual_actions(name)
        word = actions.word(action)
        if word is None:
            raise TriggerError(f"action must be one of {actions.describe()}")
        target = actions.targets[word]
        config = self._tickers.get_map(name).get(symbol)
        if config is None:
            raise TriggerError(f"{symbol} is not configured for {name.value}; add it first")
        if target is not PositionTarget.FLAT:  # a close is always allowed: it takes no new risk
            self._refuse_without_real_prices(config)
        price = self._md.last_price(symbol)
        if price is None:
            raise TriggerError(f"no market price for {symbol} yet; wait for the feed")
        with self._lock:
            runner = self._runners.get((name.value, symbol))
        if runner is None:  # not running: a one-off runner still uses the same path and state
            runner = self._make_runner(config)
        report = runner.force_target(target, IntentReason.MANUAL, f"manual {word.lower()}", float(price))
        return ManualTrade(f"manual {word.lower()} on {symbol}: {report.summary()}", report)

    def housekeeping_now(self, strategy: str | None = None) -> int:
        """Wake running threads (all, or one strategy's) to run housekeeping at once: 0DTE time
        exits, stale-feed checks and the strategy-vs-book comparison. Returns how many were woken."""
        with self._lock:
            runners = [r for (name, _), r in self._runners.items() if strategy is None or name == strategy]
        for runner in runners:
            runner.housekeeping_now()
        return len(runners)

    def book_moved(self, strategy: str, symbol: str) -> None:
        """A lane's position moved outside its strategy (a resting stop filled at the broker): a
        running strategy compares with the book at once (on its own thread); a stopped ticker's
        saved state takes the book's side, so its next start does not resume a closed position."""
        with self._lock:
            runner = self._runners.get((strategy, symbol))
        if runner is not None and runner.is_alive():
            runner.housekeeping_now()
            return
        for config in self._tickers.get_map(parse_strategy(strategy)).values():
            if config.symbol == symbol:
                stopped = self._make_runner(config)
                stopped.sync_saved_position(stopped.book_target())

    def runner(self, strategy: str, symbol: str) -> StrategyRunner | None:
        with self._lock:
            return self._runners.get((parse_strategy(strategy).value, symbol))

    def health(self) -> dict[str, Any]:
        """Liveness summary for monitoring: threads expected, alive, dead, stale feeds, restarts."""
        with self._lock:
            runners = dict(self._runners)
        dead = sorted(f"{name}:{symbol}" for (name, symbol), r in runners.items() if not r.is_alive())
        if runners and not self._hub.alive:
            dead.append("stream-hub")  # every thread's bars come through it
        if runners and not self._states.alive:
            dead.append("state-writer")
        stale = sorted(f"{name}:{symbol}" for (name, symbol), r in runners.items() if r.status.stale_feed)
        return {"threads": len(runners), "alive": len(runners) - len(dead), "dead": dead, "stale_feed": stale,
                "restarts": sum(r.status.restarts for r in runners.values())}

    # --- queries ----------------------------------------------------------------------------
    def current_position(self, strategy: str, symbol: str) -> dict[str, Any] | None:
        name = parse_strategy(strategy)
        held = []
        for broker in BROKERS:
            position = self._orders.position(name.value, symbol, broker)
            if position.quantity != 0:
                held.append({"broker": broker, **position.to_json()})
        return {"strategy": name.value, "symbol": symbol, "positions": held} if held else None

    def _saved_position(self, strategy: str, symbol: str) -> str:
        """The position a stopped ticker's strategy will resume with (FLAT when never saved)."""
        raw = self._states.get(self._store.key("engine", "state", strategy, symbol))
        if not raw:
            return PositionTarget.FLAT.value
        try:
            return str(json.loads(raw).get("position") or PositionTarget.FLAT.value)
        except ValueError:
            return PositionTarget.FLAT.value

    def strategies_status(self) -> dict[str, Any]:
        running = self.running_strategies()
        out: dict[str, Any] = {}
        for name in StrategyName:
            configs = self._tickers.get_map(name)
            tickers = {}
            for symbol, config in configs.items():
                runner = self._runners.get((name.value, symbol))
                status = runner.status.to_json() if runner else {
                    "strategy": name.value, "symbol": symbol, "timeframe": config.timeframe, "running": False,
                    "position": self._saved_position(name.value, symbol),
                }
                status["running"] = bool(runner and runner.is_alive())
                status["alive"] = status["running"]
                status["trade_enabled"] = config.trade_enabled
                status["positions"] = self.current_position(name.value, symbol)
                tickers[symbol] = status
            out[name.value] = {"running": name.value in running, "tickers": tickers}
        return out
