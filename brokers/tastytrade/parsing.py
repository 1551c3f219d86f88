"""Pure mappings between our domain objects and the tastytrade SDK's models (no I/O, no session):
which instrument and Tastytrade symbol an order trades, its leg action, the SDK order, which
market-data request a quote needs, and orders, positions, balances, quotes and option chains back
into domain objects.
"""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from tastytrade.account import AccountBalance, CurrentPosition
from tastytrade.instruments import NestedOptionChain
from tastytrade.market_data import MarketData
from tastytrade.order import (
    AdvancedInstructions,
    BaseOrder,
    InstrumentType,
    Leg,
    LimitOrder,
    MarketOrder,
    OrderAction,
    OrderStatus,
    OrderTimeInForce,
    PlacedOrder,
    StopOrder,
    UnplacedOrder,
)

from brokers.position_effect import CrossesZero, account_position_effect
from config.instruments import CATALOG, AssetClass, UnknownSymbolError, canonical_symbol
from config.symbology import contract_from_key, contract_from_venue, front_month
from domain.orders import (
    Balances,
    BrokerOrderId,
    BrokerPosition,
    ClientOrderId,
    Fill,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    OrderUpdate,
    PositionEffect,
    Quote,
)


# --------------------------------------------------------------------------------------------
# Orders: domain -> SDK
# --------------------------------------------------------------------------------------------
_ACTIONS: dict[tuple[OrderSide, PositionEffect], OrderAction] = {
    (OrderSide.BUY, PositionEffect.OPEN): OrderAction.BUY_TO_OPEN,
    (OrderSide.SELL, PositionEffect.CLOSE): OrderAction.SELL_TO_CLOSE,
    (OrderSide.SELL, PositionEffect.OPEN): OrderAction.SELL_TO_OPEN,
    (OrderSide.BUY, PositionEffect.CLOSE): OrderAction.BUY_TO_CLOSE,
}


class UntradeableOrder(ValueError):
    """The order cannot be expressed for Tastytrade (e.g. the SPX index itself)."""


@dataclass(frozen=True, slots=True)
class LegInstrument:
    """What one order trades at Tastytrade: the leg's instrument type and Tastytrade symbol."""

    instrument_type: InstrumentType
    symbol: str


def leg_instrument(order: OrderRequest, today: date) -> LegInstrument:
    if order.option is not None:
        # Tastytrade's equity-option symbol is the OCC OSI symbol (root padded to 6 characters).
        return LegInstrument(InstrumentType.EQUITY_OPTION, order.option.occ_symbol)
    try:
        instrument = CATALOG[canonical_symbol(order.symbol)]
    except UnknownSymbolError as exc:
        raise UntradeableOrder(str(exc)) from None
    if instrument.asset_class is AssetClass.FUTURE:
        # The contract month the book holds (a close goes to the month it was opened in), else
        # the front month today.
        held = contract_from_key(order.contract) if order.contract else None
        return LegInstrument(InstrumentType.FUTURE, (held or front_month(instrument.root, today)).tastytrade)
    if instrument.asset_class is AssetClass.EQUITY:
        return LegInstrument(InstrumentType.EQUITY, instrument.root)
    raise UntradeableOrder(f"{instrument.symbol} is an index and cannot be traded; send an option contract")


def held_quantity(positions: Iterable[CurrentPosition], symbol: str) -> int:
    """The account's signed net position in one Tastytrade symbol (0 when nothing is held)."""
    return sum(broker_position(p).quantity for p in positions if p.symbol == symbol)


def leg_action(order: OrderRequest, instrument: LegInstrument, held: int) -> OrderAction:
    """The leg's action. Futures take Buy/Sell, the actions the SDK's `OrderAction` documents "for
    futures only" (a futures position nets, so the account's position does not matter). Other legs
    take an open/close action whose effect comes from the account's position `held` in the
    instrument (see brokers/position_effect.py), never from the strategy's own position."""
    if instrument.instrument_type is InstrumentType.FUTURE:
        return OrderAction.BUY if order.side is OrderSide.BUY else OrderAction.SELL
    try:
        effect = account_position_effect(instrument.symbol, held, order.signed_quantity)
    except CrossesZero as exc:
        raise UntradeableOrder(str(exc)) from None
    return _ACTIONS[(order.side, effect)]


def tastytrade_leg(order: OrderRequest, instrument: LegInstrument, held: int) -> Leg:
    """The single leg for an order: instrument type, Tastytrade symbol, action and quantity."""
    return Leg(instrument_type=instrument.instrument_type, symbol=instrument.symbol,
               action=leg_action(order, instrument, held), quantity=order.quantity)


def tastytrade_order(order: OrderRequest, instrument: LegInstrument, held: int) -> BaseOrder:
    """Build the SDK order; `held` is the account's signed position in the instrument. Prices
    follow the SDK's sign convention: negative = debit (we pay, i.e. a buy), positive = credit (a
    sell); the SDK turns the sign into `price-effect`."""
    leg = tastytrade_leg(order, instrument, held)
    common: dict[str, Any] = {"time_in_force": OrderTimeInForce.DAY, "legs": [leg],
                              "external_identifier": str(order.client_order_id)}
    if leg.action not in (OrderAction.BUY, OrderAction.SELL):
        # Without this flag Tastytrade turns a close whose position is gone (closed meanwhile by
        # another order, or by another strategy on the account) into an opening order; with it
        # the order is refused and the refusal reaches the order manager as a rejection.
        common["advanced_instructions"] = AdvancedInstructions(strict_position_effect_validation=True)
    if order.order_type is OrderType.MARKET:
        return MarketOrder(**common)
    if order.order_type is OrderType.LIMIT:
        assert order.limit_price is not None  # OrderRequest validates this
        price = Decimal(order.limit_price)
        if price <= 0:
            raise UntradeableOrder("limit price must be positive")
        signed = -price if order.side is OrderSide.BUY else price
        return LimitOrder(price=signed, **common)
    assert order.stop_price is not None
    return StopOrder(stop_trigger=Decimal(order.stop_price), **common)


# --------------------------------------------------------------------------------------------
# Orders: SDK -> domain
# --------------------------------------------------------------------------------------------
_WORKING = {OrderStatus.RECEIVED, OrderStatus.ROUTED, OrderStatus.IN_FLIGHT, OrderStatus.LIVE,
            OrderStatus.CONTINGENT, OrderStatus.CANCEL_REQUESTED, OrderStatus.REPLACE_REQUESTED}
_CANCELLED = {OrderStatus.CANCELLED, OrderStatus.EXPIRED, OrderStatus.REMOVED, OrderStatus.PARTIALLY_REMOVED}


def order_update(order: PlacedOrder | UnplacedOrder, client_order_id: ClientOrderId) -> OrderUpdate:
    """Map a Tastytrade order to our OrderUpdate. Filled quantity comes from the legs' fills (or
    quantity - remaining-quantity when fills are not listed), so partial fills are visible while
    the order is still Live."""
    fills: list[Fill] = []
    filled = Decimal(0)
    notional = Decimal(0)
    broker_id = BrokerOrderId(str(order.id)) if isinstance(order, PlacedOrder) else None
    for leg in order.legs:
        leg_filled = Decimal(0)
        for info in leg.fills or []:
            fills.append(Fill(client_order_id, broker_id, info.fill_id, int(info.quantity), info.fill_price,
                              Decimal(0), info.filled_at))
            leg_filled += info.quantity
            notional += info.fill_price * info.quantity
        if not leg.fills and leg.quantity is not None and leg.remaining_quantity is not None:
            leg_filled = Decimal(leg.quantity) - leg.remaining_quantity
        filled += leg_filled
    avg = (notional / sum((f.quantity for f in fills), Decimal(0))) if fills else None
    status = order.status
    reason: str | None = None
    if status is OrderStatus.FILLED:
        state = OrderState.FILLED
    elif status is OrderStatus.REJECTED:
        state, reason = OrderState.REJECTED, order.reject_reason or "rejected by Tastytrade"
    elif status in _CANCELLED:
        state, reason = OrderState.CANCELLED, status.value
    elif status in _WORKING:
        state = OrderState.PARTIALLY_FILLED if filled > 0 else OrderState.ACCEPTED
    else:  # a status the SDK learns later: keep the order open rather than guessing an end
        state, reason = OrderState.ACCEPTED, f"unmapped Tastytrade status {status}"
    return OrderUpdate(client_order_id, broker_id, state, int(filled), avg, reason, tuple(fills))


# --------------------------------------------------------------------------------------------
# Positions and chains
# --------------------------------------------------------------------------------------------


def position_key(position: CurrentPosition, today: date | None = None) -> str:
    """Our position key: the contract month ("/MESZ25", config.symbology) for a catalog future, so
    positions in two months stay apart; the OCC symbol for options; the ticker for equities."""
    if position.instrument_type is InstrumentType.FUTURE:
        contract = contract_from_venue(position.symbol, today or date.today())
        if contract is not None:
            return contract.key
    return position.symbol


def broker_position(position: CurrentPosition, today: date | None = None) -> BrokerPosition:
    # Tastytrade reports an unsigned quantity plus a direction ("Long" | "Short" | "Zero").
    quantity = int(position.quantity)
    if position.quantity_direction.lower() == "short":
        quantity = -abs(quantity)
    elif position.quantity_direction.lower() == "zero":
        quantity = 0
    return BrokerPosition(position_key(position, today), quantity, position.average_open_price, position.multiplier)


def chain_contracts(chains: list[NestedOptionChain], underlying: str, root: str, expiration: date) -> list[OptionContract]:
    contracts: list[OptionContract] = []
    for chain in chains:
        if chain.root_symbol != root:
            continue
        for exp in chain.expirations:
            if exp.expiration_date != expiration:
                continue
            for strike in exp.strikes:
                contracts.append(OptionContract(underlying, root, expiration, strike.strike_price, OptionRight.CALL,
                                                broker_symbol=strike.call))
                contracts.append(OptionContract(underlying, root, expiration, strike.strike_price, OptionRight.PUT,
                                                broker_symbol=strike.put))
    contracts.sort(key=lambda c: (c.strike, c.right.value))
    return contracts


def account_balances(balance: AccountBalance) -> Balances:
    # derivative_buying_power ("option BP") is the binding limit for the futures/SPX options
    # this product trades; realized P&L is not part of Tastytrade's balance record.
    return Balances(cash=balance.cash_balance, equity=balance.net_liquidating_value,
                    buying_power=balance.derivative_buying_power)


# --------------------------------------------------------------------------------------------
# Market data
# --------------------------------------------------------------------------------------------


def market_data_request(symbol: str, today: date) -> dict[str, list[str]]:
    """The keyword of `get_market_data_by_type` a quote of `symbol` needs: an OCC option symbol,
    the front month of a catalog future, an index or an equity by its Tastytrade root."""
    try:
        instrument = CATALOG[canonical_symbol(symbol)]
    except UnknownSymbolError:
        return {"options": [symbol]}
    if instrument.asset_class is AssetClass.FUTURE:
        return {"futures": [front_month(instrument.root, today).tastytrade]}
    if instrument.asset_class is AssetClass.INDEX:
        return {"indices": [instrument.root]}
    return {"equities": [instrument.root]}


def quote_from(row: MarketData, symbol: str) -> Quote:
    return Quote(symbol, row.bid, row.ask, row.last, row.updated_at)
