"""Paper broker fill model: slippage, limit/stop crossing, commissions, multipliers, options, persistence."""
from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from brokers.errors import OrderRejected
from brokers.paper import PaperBroker
from config.settings import Settings
from domain.orders import SCHWAB, TASTYTRADE, ClientOrderId, OrderRequest, OrderSide, OrderState, OrderType, PositionEffect
from tests.oms.helpers import CLOCK


def req(coid: str, symbol: str, side: OrderSide, qty: int, **kw: object) -> OrderRequest:
    return OrderRequest(ClientOrderId(coid), symbol, side, qty, PositionEffect.OPEN, **kw)  # type: ignore[arg-type]


def broker(store, prices, name=SCHWAB, **settings) -> PaperBroker:
    return PaperBroker(store, name, Settings(**settings), prices.get, clock=CLOCK)


def test_market_fill_at_last_plus_adverse_slippage(store):
    prices = {"/MES": 6000.0, "NVDA": 180.0}
    b = broker(store, prices, paper_slippage_ticks=2)
    buy = b.place_order(req("a", "/MES", OrderSide.BUY, 1))
    sell = b.place_order(req("b", "NVDA", OrderSide.SELL, 10))
    assert buy.state is OrderState.FILLED and buy.avg_fill_price == Decimal("6000.50")  # 2 x 0.25 higher
    assert sell.avg_fill_price == Decimal("179.98")  # 2 x 0.01 lower
    assert buy.fills[0].quantity == 1 and buy.fills[0].price == Decimal("6000.50")


def test_futures_pnl_uses_multiplier_and_commission(store):
    prices = {"/MES": 6000.0}
    b = broker(store, prices, paper_commission_per_contract="0.62")
    b.place_order(req("a", "/MES", OrderSide.BUY, 2))
    prices["/MES"] = 6012.25
    b.place_order(req("b", "/MES", OrderSide.SELL, 2))
    bal = b.balances()
    gross = Decimal("12.25") * 5 * 2  # /MES: $5 per point per contract
    fees = Decimal("0.62") * 4
    assert bal.realized_pnl == gross - fees
    assert bal.cash == Decimal("100000") + gross - fees
    assert b.positions() == []


def test_equity_pnl_and_cash(store):
    prices = {"TSLA": 350.0}
    b = broker(store, prices, paper_commission_per_contract="0.01")
    b.place_order(req("a", "TSLA", OrderSide.BUY, 100))
    assert b.balances().cash == Decimal("100000") - Decimal("35000") - Decimal("1.00")
    prices["TSLA"] = 355.5
    assert b.balances().equity == Decimal("100000") - Decimal("1.00") + Decimal("550")
    b.place_order(req("b", "TSLA", OrderSide.SELL, 100))
    assert b.balances().realized_pnl == Decimal("550") - Decimal("2.00")


def test_limit_rests_then_fills_when_price_crosses(store):
    prices = {"/MES": 6000.0}
    b = broker(store, prices)
    u = b.place_order(req("l", "/MES", OrderSide.BUY, 1, order_type=OrderType.LIMIT, limit_price=Decimal("5990")))
    assert u.state is OrderState.ACCEPTED and [o.client_order_id for o in b.open_orders()] == ["l"]
    assert b.on_trade("/MES", 5995.0, 1) == []
    fills = b.on_trade("/MES", 5989.0, 2)
    assert len(fills) == 1 and fills[0].state is OrderState.FILLED and fills[0].avg_fill_price == Decimal("5990")
    assert b.open_orders() == [] and b.positions()[0].quantity == 1


def test_stop_triggers_on_cross_with_slippage(store):
    prices = {"/MES": 6000.0}
    b = broker(store, prices, paper_slippage_ticks=1)
    b.place_order(req("s", "/MES", OrderSide.SELL, 1, order_type=OrderType.STOP, stop_price=Decimal("5980")))
    assert b.on_trade("/MES", 5981.0, 1) == []
    (u,) = b.on_trade("/MES", 5979.75, 2)
    assert u.avg_fill_price == Decimal("5979.50") and b.positions()[0].quantity == -1


def test_no_price_is_rejected_never_filled_at_zero(store):
    b = broker(store, {})
    with pytest.raises(OrderRejected) as exc:
        b.place_order(req("x", "NVDA", OrderSide.BUY, 1))
    assert "no price" in exc.value.reason
    assert b.positions() == [] and b.balances().cash == Decimal("100000")


def test_same_client_order_id_twice_fills_once(store):
    prices = {"NVDA": 180.0}
    b = broker(store, prices)
    first = b.place_order(req("dup", "NVDA", OrderSide.BUY, 5))
    prices["NVDA"] = 190.0
    second = b.place_order(req("dup", "NVDA", OrderSide.BUY, 5))
    assert second.broker_order_id == first.broker_order_id and second.avg_fill_price == Decimal("180.00")
    assert b.positions()[0].quantity == 5
    # also across a restart (a new instance loads the claimed id)
    again = broker(store, prices).place_order(req("dup", "NVDA", OrderSide.BUY, 5))
    assert again.broker_order_id == first.broker_order_id
    assert store.redis.xlen(store.key("paper", SCHWAB, "fills")) == 1


def test_state_persists_across_new_instance_and_accounts_are_separate(store):
    prices = {"/MES": 6000.0}
    b = broker(store, prices, paper_commission_per_contract="1")
    b.place_order(req("a", "/MES", OrderSide.BUY, 3))
    b.place_order(req("r", "/MES", OrderSide.SELL, 1, order_type=OrderType.LIMIT, limit_price=Decimal("6100")))
    b2 = broker(store, prices, paper_commission_per_contract="1")
    assert b2.positions() == b.positions() and b2.balances() == b.balances()
    assert [o.client_order_id for o in b2.open_orders()] == ["r"]
    assert b2.on_trade("/MES", 6101.0, 1)[0].state is OrderState.FILLED
    assert broker(store, prices, name=TASTYTRADE).positions() == []


def test_option_fill_from_synthetic_chain(store):
    prices = {"SPX": 6003.0}
    b = broker(store, prices, paper_commission_per_contract="0.65")
    chain = b.option_chain("SPX", date(2025, 6, 2))
    strikes = sorted({c.strike for c in chain})
    assert all((s % 5) == 0 for s in strikes) and Decimal("6005") in strikes and chain[0].root == "SPXW"
    call = next(c for c in chain if c.strike == Decimal("6005") and c.right.value == "C")
    assert call.bid is not None and call.ask is not None and Decimal(0) < call.bid < call.ask
    u = b.place_order(OrderRequest(ClientOrderId("o1"), "SPX", OrderSide.BUY, 2, PositionEffect.OPEN, option=call))
    assert u.avg_fill_price == call.ask
    (pos,) = b.positions()
    assert pos.key == call.occ_symbol and pos.quantity == 2 and pos.multiplier == 100
    sold = b.place_order(OrderRequest(ClientOrderId("o2"), "SPX", OrderSide.SELL, 2, PositionEffect.CLOSE, option=call))
    assert sold.avg_fill_price == call.bid
    assert b.balances().realized_pnl == (call.bid - call.ask) * 200 - Decimal("0.65") * 4
