"""An engine wired like production (market data service, paper brokers, order manager, strategy
supervisor) on the test's Redis, with trades pushed synchronously through the real bar builder."""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from brokers.paper import PaperBroker
from brokers.registry import BrokerRegistry
from config.settings import MarketDataSource, Settings
from domain.market import Bar, Trade
from domain.orders import BROKERS, BrokerName
from domain.tickers import TickerConfig
from engine.clock import spx_session_clock
from engine.executor import IntentExecutor
import engine.runner as runner_module
from engine.runner import StrategyRunner
from engine.supervisor import StrategySupervisor
from market_data.feeds import Feed, ReplayFeed
from market_data.service import MarketDataService
from oms.order_manager import OrderManager
from store.redis_store import Store
from store.tickers import TickerStore

MINUTE_NS = 60_000_000_000


def wait_until(condition: Callable[[], bool], timeout: float = 15.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.01)
    raise AssertionError(f"timed out waiting for {what}")


@dataclass
class EngineRig:
    store: Store
    settings: Settings
    md: MarketDataService
    paper: dict[BrokerName, PaperBroker]
    orders: OrderManager
    tickers: TickerStore
    supervisor: StrategySupervisor

    def add_ticker(self, **payload: object) -> TickerConfig:
        config = TickerConfig.from_payload(payload)
        self.tickers.upsert(config)
        return config

    def push(self, trades: list[Trade]) -> None:
        self.md.process_now(trades)

    def push_bar_and_wait(self, strategy: str, trades: list[Trade], bar_end_ns: int) -> None:
        """Push trades, then wait until the strategy thread has processed the bar ending at
        `bar_end_ns` (lock-step, so paper fills see the price at that moment)."""
        self.push(trades)
        symbol = trades[0].symbol

        def seen() -> bool:
            runner = self.supervisor._runners.get((strategy, symbol))
            return bool(runner and runner.status.last_bar and runner.status.last_bar["end_ns"] >= bar_end_ns)

        wait_until(seen, what=f"bar ending {bar_end_ns}")
        self.wait_idle(strategy, symbol)

    def wait_idle(self, strategy: str, symbol: str) -> None:
        """Wait until the strategy thread is back in its XREAD (it holds its lock while acting)."""
        runner = self.supervisor._runners[(strategy, symbol)]
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if runner._lock.acquire(timeout=0.01):
                runner._lock.release()
                time.sleep(0.002)
                if runner._lock.acquire(blocking=False):
                    runner._lock.release()
                    return
        raise AssertionError("strategy thread stayed busy")

    def wait_caught_up(self, strategy: str, symbol: str) -> str:
        """Wait until the ticker's thread has handled the newest bar in its stream (acted on it, or
        skipped it as outside the session) and is idle; returns that bar's stream id."""
        runner = self.supervisor._runners[(strategy, symbol)]
        newest = self.store.redis.xrevrange(self.md.bars_key(symbol, runner._timeframe), count=1)
        assert newest, f"no {symbol} bar was written"
        wait_until(lambda: runner._bar_id == newest[0][0], what=f"{strategy} {symbol} to handle bar {newest[0][0]}")
        self.wait_idle(strategy, symbol)
        return str(newest[0][0])

    def ready_runner(self, strategy: str, symbol: str) -> StrategyRunner:
        """The ticker's runner once it has warmed up on what history there is (or resumed) and
        waits for its bars (its thread holds the lock until then)."""
        runner = self.supervisor._runners[(strategy, symbol)]
        wait_until(lambda: runner._prepared, what=f"{strategy} {symbol} to be ready")
        self.wait_idle(strategy, symbol)
        return runner

    def position(self, strategy: str, symbol: str, broker: str) -> int:
        return self.orders.position(strategy, symbol, broker).quantity


def build_rig(store: Store, settings: Settings, option_clock: Callable[[], datetime] | None = None, *,
              time_ns: Callable[[], int] | None = None, source: Feed | None = None,
              **supervisor_options: object) -> EngineRig:
    """`time_ns` is the engine's wall clock (ns); when given, the market data service's bar builders
    follow it, and so does the paper brokers' clock (option pricing) unless `option_clock` is
    given. `source`: the market data feed (default: an empty replay; the test pushes trades)."""
    md = MarketDataService(settings, store, source=source if source is not None else ReplayFeed([]),
                           **({"time_ns": time_ns} if time_ns is not None else {}))
    if option_clock is None and time_ns is not None:
        option_clock = lambda: datetime.fromtimestamp(time_ns() / 1e9, timezone.utc)  # noqa: E731
    clock = option_clock or (lambda: datetime.now(timezone.utc))
    paper: dict[BrokerName, PaperBroker] = {
        name: PaperBroker(store, name, settings, md.last_price, clock=clock) for name in BROKERS
    }
    registry = BrokerRegistry(settings, live={}, paper=dict(paper))
    orders = OrderManager(store, registry.trading_adapters())
    tickers = TickerStore(store)
    supervisor = StrategySupervisor(
        store=store, tickers=tickers, market_data=md, orders=orders,
        executor=IntentExecutor(orders, chain_provider=registry.option_chain), log_dir=settings.log_dir,
        clock_provider=supervisor_options.pop("clock_provider", spx_session_clock),
        skip_stale_signals=supervisor_options.pop("skip_stale_signals", False),
        **({"time_ns": time_ns} if time_ns is not None else {}), **supervisor_options,  # type: ignore[arg-type]
    )
    return EngineRig(store, settings, md, paper, orders, tickers, supervisor)


class FedBars:
    """Records every bar each built strategy is fed (warm-up and live), per strategy instance."""

    def __init__(self) -> None:
        self.per_strategy: list[list[int]] = []
        self.on_first_warmup_bar: Any = None

    def wrap(self, build: Any) -> Any:
        def build_recording(config: Any) -> Any:
            strategy = build(config)
            fed: list[int] = []
            self.per_strategy.append(fed)
            on_bar = strategy.on_bar

            def recording_on_bar(bar: Bar) -> Any:
                fed.append(bar.start_ns)
                if len(fed) == 1 and self.on_first_warmup_bar is not None:
                    hook, self.on_first_warmup_bar = self.on_first_warmup_bar, None
                    hook()
                return on_bar(bar)

            strategy.on_bar = recording_on_bar
            return strategy
        return build_recording


@pytest.fixture
def fed(monkeypatch: pytest.MonkeyPatch) -> Iterator[FedBars]:
    recorder = FedBars()
    monkeypatch.setattr(runner_module, "build_strategy", recorder.wrap(runner_module.build_strategy))
    yield recorder


@pytest.fixture
def replay_settings(settings: Settings) -> Settings:
    return replace(settings, market_data_source=MarketDataSource.REPLAY)


@pytest.fixture
def rig(real_store: Store, replay_settings: Settings) -> Iterator[EngineRig]:
    # Real Redis only: strategy threads block in XREAD, and fakeredis misses cross-thread wake-ups
    # once a second FakeRedis exists in the process (production's fallback has exactly one).
    built = build_rig(real_store, replay_settings)
    yield built
    built.supervisor.shutdown()


def minute_trades(symbol: str, start_ns: int, closes: list[float], per_bar: int = 3) -> list[list[Trade]]:
    """Trades for consecutive 1-minute bars: each bar opens and closes at its close price."""
    bars = []
    for i, close in enumerate(closes):
        t0 = start_ns + i * MINUTE_NS
        bars.append([Trade(symbol, t0 + k * 1_000_000_000, close, 1) for k in range(per_bar)])
    return bars


def session_minute(day: str, hh: int, mm: int, tz: str = "America/New_York") -> int:
    from zoneinfo import ZoneInfo

    dt = datetime.fromisoformat(day).replace(hour=hh, minute=mm, tzinfo=ZoneInfo(tz))
    return int(dt.timestamp()) * 1_000_000_000


__all__ = ["EngineRig", "build_rig", "minute_trades", "session_minute", "wait_until", "MINUTE_NS", "Path"]
