"""The service container: every component of the process, typed, in one object.

`app.build_services()` makes it with what needs no background thread (auth, tickers, risk,
ledger, metrics, audit, backtest jobs); `app.main()` adds the instance lock and the alerter, and
`runtime.TradingRuntime.build()` the trading side (market data, brokers, order manager, strategy
engine, runtime and halts). A component a deployment does not have is None, and whatever needs it
says so (the API answers 503 with a clear JSON error rather than pretending).

It lives below `api/` and imports neither Flask nor any component at run time: the component
classes are named for type checkers only, so the runtime and the engine can read the container
without importing the web layer, and no import cycle forms (the API reaches it through
`api.services.get_services()`). Slots: a misspelt attribute is an error, not a new key.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from config.settings import Settings
from store.redis_store import Store

if TYPE_CHECKING:  # annotations only: importing these here would pull in the whole process
    from auth.users import UserStore
    from backtest.jobs import BacktestJobs
    from brokers.registry import BrokerRegistry
    from ledger.pnl import MarkPrice
    from ledger.trades import Ledger
    from market_data.service import MarketDataService
    from monitoring.alerts import Alerter
    from monitoring.audit import AuditLog
    from monitoring.metrics import Metrics
    from monitoring.status import StatusBuilder
    from oms.order_manager import OrderManager
    from risk.engine import RiskEngine
    from runtime import Halts, TradingRuntime
    from engine.supervisor import StrategySupervisor
    from store.instance_lock import InstanceLock
    from store.tickers import TickerStore


@dataclass(slots=True, eq=False)
class Services:
    settings: Settings
    store: Store
    users: UserStore
    tickers: TickerStore
    # Monitoring and bookkeeping (app.build_services).
    metrics: Metrics | None = None
    audit: AuditLog | None = None
    ledger: Ledger | None = None
    risk: RiskEngine | None = None
    backtests: BacktestJobs | None = None
    # position key -> mark for unrealized P&L; None: the market data's last trade price
    mark_price: MarkPrice | None = None
    # The process (app.main).
    instance_lock: InstanceLock | None = None
    alerter: Alerter | None = None
    # The trading side (runtime.TradingRuntime.build).
    market_data: MarketDataService | None = None
    brokers: BrokerRegistry | None = None  # adapters and OAuth flows
    orders: OrderManager | None = None
    engine: StrategySupervisor | None = None
    runtime: TradingRuntime | None = None  # reconciliation, operator adopt/flatten, position truth
    halts: Halts | None = None
    # /api/status's document; None: monitoring.status.default_status_builder(services)
    status: StatusBuilder | None = None
    # The wall clock of operator actions (manual triggers' time rules): ns since the epoch.
    time_ns: Callable[[], int] = time.time_ns
