"""One thread per running (strategy, ticker).

The thread blocks in a single XREAD on three Redis streams:
- its control stream (`engine:ctl:<strategy>:<symbol>`): stop / reload requests wake it at once,
  so stop-trading takes effect within a second although the block timeout is 10-60 s;
- its bar stream (`md:bars:<symbol>:<tf>`): completed bars only, so signals never repaint;
- while holding a position, the trade stream (`md:trades:<symbol>`): intrabar stops.
When the block times out (the spec's check interval for the timeframe) it does housekeeping:
0DTE time exits and stale-feed notes. No polling loop, no busy wait.

State (strategy indicators, position target, last bar id) is saved to Redis after every bar, so a
restarted process resumes where it stopped without re-trading a bar it already acted on.

A crash inside the loop is logged with its traceback, recorded as `last_error`, and the loop
restarts with exponential backoff (1 s .. 60 s); `stop()` interrupts the backoff.
"""
from __future__ import annotations

import json
import logging
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import redis

from config.timeframes import Timeframe
from domain.intents import Intent, IntentReason, PositionTarget
from domain.market import Bar, Trade
from domain.tickers import TickerConfig
from engine.executor import ExecutionReport, IntentExecutor
from engine.logs import ticker_logger
from store.redis_store import Store
from strategies import build_strategy
from strategies.base import SessionClock, Strategy

app_log = logging.getLogger("engine")

MAX_BACKOFF_SECONDS = 60.0
# A bar older than this many bar-lengths when we read it (catch-up after downtime) still updates
# indicators but its signal is not traded: acting on a stale signal trades at a price the strategy
# never saw.
STALE_BAR_FACTOR = 2
TICK_BAR_STALE_SECONDS = 300


@dataclass
class RunnerStatus:
    strategy: str
    symbol: str
    timeframe: str
    running: bool = False
    started_at: str | None = None
    last_bar: dict[str, Any] | None = None
    indicators: dict[str, float | None] = field(default_factory=dict)
    position: str = PositionTarget.FLAT.value
    last_signal: str | None = None
    last_error: str | None = None
    restarts: int = 0
    warmed_up: bool = False

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class StrategyRunner:
    def __init__(
        self,
        *,
        config: TickerConfig,
        store: Store,
        market_data: Any,
        executor: IntentExecutor,
        log_dir: Any,
        clock_provider: Callable[[int], SessionClock] | None = None,
        on_report: Callable[[ExecutionReport], None] | None = None,
        skip_stale_signals: bool = True,
    ) -> None:
        self.config = config
        # Real-time feeds: a bar read long after it closed (catch-up) is not traded. Replay feeds
        # run history through the live path on purpose, so they turn this off.
        self._skip_stale_signals = skip_stale_signals
        self._store = store
        self._md = market_data
        self._executor = executor
        self._clock_provider = clock_provider
        self._on_report = on_report
        self._timeframe = Timeframe.parse(config.timeframe)
        self._stop = threading.Event()
        self._lock = threading.RLock()  # guards the strategy between the thread and manual triggers
        self._thread: threading.Thread | None = None
        self.log = ticker_logger(log_dir, config.strategy.value, config.symbol)
        self.strategy: Strategy = build_strategy(config)
        self.status = RunnerStatus(config.strategy.value, config.symbol, config.timeframe)
        self._bar_id = "$"
        self._trade_id = "$"
        self._prepared = False  # strategy restored or warmed up (so its saved state is meaningful)

    # --- keys -------------------------------------------------------------------------------
    @property
    def control_key(self) -> str:
        return self._store.key("engine", "ctl", self.config.strategy.value, self.config.symbol)

    @property
    def state_key(self) -> str:
        return self._store.key("engine", "state", self.config.strategy.value, self.config.symbol)

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stop.clear()
        self._md.ensure(self.config.symbol, self._timeframe)
        self._thread = threading.Thread(
            target=self._supervised, name=f"strategy-{self.config.strategy.value}-{self.config.symbol}", daemon=True
        )
        self.status.running = True
        self.status.started_at = datetime.now(timezone.utc).isoformat()
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        try:  # wake the blocking XREAD immediately
            self._store.redis.xadd(self.control_key, {"cmd": "stop"}, maxlen=100, approximate=True)
        except redis.RedisError:
            pass
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self.status.running = False

    def is_alive(self) -> bool:
        return bool(self._thread and self._thread.is_alive())

    # --- thread body ------------------------------------------------------------------------
    def _supervised(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                self._prepare()
                self._loop()
                return
            except Exception as exc:  # the supervisor's job: log, record, restart with backoff
                self.status.restarts += 1
                self.status.last_error = f"{exc.__class__.__name__}: {exc}"
                self.log.error("strategy loop crashed (restart %d in %.0fs):\n%s",
                               self.status.restarts, backoff, traceback.format_exc())
                app_log.error("%s %s crashed: %s", self.config.strategy.value, self.config.symbol, exc)
                if self._stop.wait(backoff):
                    return
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)

    def _prepare(self) -> None:
        """Restore saved state, else warm up from history (warm-up bars never trade)."""
        with self._lock:
            self._prepared = True
            saved = self._store.redis.get(self.state_key)
            if saved:
                data = json.loads(saved)
                if data.get("config") == self.config.to_json():
                    try:
                        self.strategy.restore(data["strategy"])
                    except ValueError as exc:  # saved state from another version: rebuild it
                        self.log.warning("saved state not usable (%s); warming up again", exc)
                        self.strategy = build_strategy(self.config)
                    else:
                        self._bar_id = data.get("bar_id", "$")
                        self.status.warmed_up = True
                        self.log.info("resumed from saved state at bar id %s (position %s)", self._bar_id,
                                      self.strategy.target.value)
                        return
                # The ticker's parameters changed: indicators must be rebuilt, the position is kept.
                self.log.info("parameters changed since the saved state; warming up again")
                position = data.get("position")
                self.strategy = build_strategy(self.config)
                if position:
                    self.strategy.set_position(PositionTarget(position))
            needed = self.strategy.warmup_bars()
            history: list[Bar] = self._md.warmup(self.config.symbol, self._timeframe, needed)
            for bar in history:
                self.strategy.on_bar(bar)  # intents from warm-up bars are discarded on purpose
            if history:
                self._bar_id = self._bar_id_after(history[-1])
            self.status.warmed_up = len(history) >= needed
            self.log.info("warmed up on %d bars (need %d)", len(history), needed)
            self._save()

    def _bar_id_after(self, bar: Bar) -> str:
        # Continue after the newest bar already in the stream (the warm-up saw it): "$" in a
        # repeated XREAD would skip bars that closed between two calls.
        return self._last_id(self._md.bars_key(self.config.symbol, self._timeframe))

    def _last_id(self, key: str) -> str:
        latest = self._store.redis.xrevrange(key, count=1)
        return str(latest[0][0]) if latest else "0-0"

    def _loop(self) -> None:
        block_ms = int(self._timeframe.check_interval_seconds * 1000)
        bars_key = self._md.bars_key(self.config.symbol, self._timeframe)
        trades_key = self._md.trades_key(self.config.symbol)
        control_id = self._last_id(self.control_key)
        if self._bar_id == "$":
            self._bar_id = self._last_id(bars_key)
        while not self._stop.is_set():
            streams = {self.control_key: control_id, bars_key: self._bar_id}
            if self.strategy.target is not PositionTarget.FLAT:
                if self._trade_id == "$":  # start watching trades from now on
                    self._trade_id = self._last_id(trades_key)
                streams[trades_key] = self._trade_id
            else:
                self._trade_id = "$"
            try:
                response = self._store.redis.xread(streams, block=block_ms, count=500)
            except redis.ConnectionError:
                self.log.warning("redis unavailable; retrying in 1 s")
                self._stop.wait(1.0)
                continue
            if not response:
                self._housekeeping()
                continue
            for key, entries in response:
                if not entries:
                    continue
                if key == self.control_key:
                    control_id = entries[-1][0]
                    continue
                if key == bars_key:
                    for entry_id, fields in entries:
                        self._on_bar(Bar.from_fields(fields))
                        self._bar_id = entry_id
                        self._save()
                elif key == trades_key:
                    for entry_id, fields in entries:
                        self._trade_id = entry_id
                        self._on_trade(Trade.from_fields(self.config.symbol, fields))

    # --- events -----------------------------------------------------------------------------
    def _on_bar(self, bar: Bar) -> None:
        with self._lock:
            clock_intents = self._clock_intents(bar.end_ns)
            intents = clock_intents + self.strategy.on_bar(bar)
            values = self.strategy.indicators()
            self.status.last_bar = bar.to_json()
            self.status.indicators = values
            self.log.info(
                "bar %s O=%s H=%s L=%s C=%s V=%s n=%s%s | %s",
                _iso(bar.end_ns), bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count,
                " GAPPED" if bar.gapped else "", " ".join(f"{k}={_fmt(v)}" for k, v in values.items()),
            )
            if self._skip_stale_signals and self._is_stale(bar):
                for intent in intents:
                    self.log.warning("stale bar (catch-up): NOT trading %s %s", intent.target.value, intent.detail)
                return
            self._act(intents)

    def _on_trade(self, trade: Trade) -> None:
        with self._lock:
            self._act(self.strategy.on_trade(trade))

    def _housekeeping(self) -> None:
        with self._lock:
            self._act(self._clock_intents(time.time_ns()))

    def _clock_intents(self, now_ns: int) -> list[Intent]:
        if self._clock_provider is None:
            return []
        return self.strategy.on_clock(self._clock_provider(now_ns))

    def _is_stale(self, bar: Bar) -> bool:
        if self._timeframe.is_tick:
            limit_ns = TICK_BAR_STALE_SECONDS * 1_000_000_000
        else:
            limit_ns = STALE_BAR_FACTOR * self._timeframe.seconds * 1_000_000_000
        return time.time_ns() - bar.end_ns > limit_ns

    def _act(self, intents: list[Intent]) -> None:
        for intent in intents:
            self.status.last_signal = f"{intent.target.value} ({intent.reason.value}): {intent.detail}"
            self.status.position = self.strategy.target.value
            if not self.config.trade_enabled:
                self.log.info("signal %s (trading disabled, no order)", self.status.last_signal)
                continue
            self.log.info("signal %s", self.status.last_signal)
            report = self._executor.execute(intent, self.config)
            self.log.info("orders: %s", report.summary())
            if self._on_report:
                self._on_report(report)
        if intents:
            self._save()

    # --- external commands (manual trigger, ticker removal) ---------------------------------
    def force_target(self, target: PositionTarget, reason: IntentReason, detail: str, price: float) -> ExecutionReport:
        """Move to `target` through the same path as a signal, and tell the strategy."""
        with self._lock:
            if not self._prepared:  # a one-off runner (strategy not started): load its real state
                self._prepare()
            intent = Intent(self.config.strategy.value, self.config.symbol, target, reason, detail,
                            time.time_ns(), price)
            self.strategy.set_position(target, price)
            self.status.position = target.value
            self.status.last_signal = f"{target.value} ({reason.value}): {detail}"
            self.log.info("%s -> %s: %s", reason.value, target.value, detail)
            report = self._executor.execute(intent, self.config)
            self.log.info("orders: %s", report.summary())
            self._save()
            return report

    def _save(self) -> None:
        state = {"config": self.config.to_json(), "strategy": self.strategy.state(), "bar_id": self._bar_id,
                 "position": self.strategy.target.value}
        self._store.redis.set(self.state_key, json.dumps(state))


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / 1e9, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"
