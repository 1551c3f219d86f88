from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any, Callable

import pytest

from config.settings import Settings
from domain.orders import ClientOrderId, OrderRequest, OrderSide, PositionEffect, TASTYTRADE
from domain.risk import OrderContext
from monitoring.audit import AuditLog
from monitoring.metrics import Metrics
from risk.engine import RiskEngine
from store.redis_store import Store


class Clock:
    """Injectable clock the tests move by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **kw: float) -> None:
        self.now += timedelta(**kw)


@pytest.fixture
def clock() -> Clock:
    # Tuesday 2025-06-10 14:00 UTC = 10:00 New York: inside the session that began Monday 18:00 NY.
    return Clock(datetime(2025, 6, 10, 14, 0, tzinfo=UTC))


@pytest.fixture
def flattens() -> list[tuple[str | None, str]]:
    return []


@pytest.fixture
def engine(store: Store, settings: Settings, clock: Clock, flattens: list[Any]) -> RiskEngine:
    def flatten(scope: str | None, reason: str) -> dict[str, Any]:
        flattens.append((scope, reason))
        return {"tastytrade": {"flattened": 1}}

    return RiskEngine(store, settings, clock=clock, flatten_callback=flatten, audit=AuditLog(settings, store),
                      metrics=Metrics())


_n = [0]


def order(qty: int = 1, side: OrderSide = OrderSide.BUY, coid: str | None = None, symbol: str = "/MES") -> OrderRequest:
    _n[0] += 1
    return OrderRequest(ClientOrderId(coid or f"t-{_n[0]}"), symbol, side, qty, PositionEffect.OPEN)


def ctx(strategy: str = "ema", symbol: str = "/MES", current: int = 0, reduces: bool = False,
        reason: str = "signal") -> OrderContext:
    return OrderContext(strategy, symbol, TASTYTRADE, current, reduces, reason)


OrderFactory = Callable[..., OrderRequest]
