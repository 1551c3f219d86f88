"""The service container the Flask app carries (`app.extensions["services"]`).

`create_app()` builds it; views reach it with `get_services()`. Components that a given deployment
does not have yet are None, and endpoints needing them answer 503 with a clear JSON error rather
than pretending.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from flask import current_app

from config.settings import Settings
from store.redis_store import Store

if TYPE_CHECKING:  # imported for annotations only: keeps import order one-way
    from auth.users import UserStore
    from store.tickers import TickerStore


@dataclass
class Services:
    settings: Settings
    store: Store
    users: "UserStore"
    tickers: "TickerStore"
    market_data: Any = None  # market_data.service.MarketDataService
    brokers: Any = None  # brokers.registry.BrokerRegistry (adapters + OAuth flows)
    orders: Any = None  # oms.order_manager.OrderManager
    risk: Any = None  # risk.engine.RiskEngine
    engine: Any = None  # engine.supervisor.StrategySupervisor
    backtests: Any = None  # backtest.jobs.BacktestJobs
    extras: dict[str, Any] = field(default_factory=dict)


def get_services() -> Services:
    return current_app.extensions["services"]  # type: ignore[no-any-return]
