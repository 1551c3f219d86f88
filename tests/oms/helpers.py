"""Shared builders for OMS tests: a paper broker pair, a scriptable fake adapter."""
from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Callable

from brokers.base import BrokerAdapter
from brokers.paper import PaperBroker
from config.settings import Settings
from domain.orders import (
    SCHWAB, TASTYTRADE, Balances, BrokerName, BrokerOrderId, BrokerPosition, BrokerStatus, ClientOrderId,
    Fill, OptionContract, OrderRequest, OrderState, OrderUpdate, Quote,
)
from oms.order_manager import OrderManager
from store.redis_store import Store

CLOCK = lambda: datetime(2025, 6, 2, 15, 0, tzinfo=timezone.utc)  # noqa: E731 - 11:00 ET, 0DTE day


def paper_pair(store: Store, prices: dict[str, float], **settings: object) -> dict[BrokerName, BrokerAdapter]:
    st = Settings(**settings)  # type: ignore[arg-type]
    return {b: PaperBroker(store, b, st, prices.get, clock=CLOCK) for b in (SCHWAB, TASTYTRADE)}


class FakeAdapter(BrokerAdapter):
    """Records every place_order; `on_place` decides what happens (return an update or raise)."""

    is_paper = False

    def __init__(self, name: BrokerName, on_place: Callable[[OrderRequest], OrderUpdate] | None = None) -> None:
        self.name = name
        self.placed: list[OrderRequest] = []
        self.on_place = on_place or self.fill_at(Decimal("100"))
        self.broker_orders: dict[str, OrderUpdate] = {}
        self.broker_positions: list[BrokerPosition] = []

    @staticmethod
    def fill_at(price: Decimal) -> Callable[[OrderRequest], OrderUpdate]:
        def _f(o: OrderRequest) -> OrderUpdate:
            fill = Fill(o.client_order_id, BrokerOrderId("B-" + o.client_order_id), "F-" + o.client_order_id,
                        o.quantity, price, Decimal("0"), CLOCK())
            return OrderUpdate(o.client_order_id, BrokerOrderId("B-" + o.client_order_id), OrderState.FILLED,
                               o.quantity, price, None, (fill,))
        return _f

    def connect(self) -> BrokerStatus:
        return self.status()

    def status(self) -> BrokerStatus:
        return BrokerStatus(self.name, "live", True)

    def place_order(self, order: OrderRequest) -> OrderUpdate:
        self.placed.append(order)
        update = self.on_place(order)
        self.broker_orders[order.client_order_id] = update
        return update

    def cancel_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate:
        u = self.broker_orders[client_order_id]
        return OrderUpdate(u.client_order_id, u.broker_order_id, OrderState.CANCELLED, u.filled_quantity)

    def get_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate | None:
        return self.broker_orders.get(client_order_id)

    def open_orders(self) -> list[OrderUpdate]:
        return [u for u in self.broker_orders.values() if not u.state.is_terminal]

    def positions(self) -> list[BrokerPosition]:
        return list(self.broker_positions)

    def balances(self) -> Balances:
        return Balances(Decimal(0), Decimal(0), Decimal(0))

    def quote(self, symbol: str) -> Quote:
        return Quote(symbol, None, None, None)

    def option_chain(self, underlying: str, expiration: date) -> list[OptionContract]:
        return []


def make_om(store: Store, adapters: dict[BrokerName, BrokerAdapter], **kw: object) -> OrderManager:
    return OrderManager(store, adapters, **kw)  # type: ignore[arg-type]
