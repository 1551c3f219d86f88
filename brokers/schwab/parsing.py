"""Pure translation between our domain objects and Schwab's JSON (no I/O, no SDK client).

Order specs are built with schwab-py's own templates (`schwab.orders.equities` /
`schwab.orders.options`) so the JSON is exactly what the SDK documents; we only choose the right
template. Responses (orders, positions, balances, quotes, chains, error bodies) and the streamer's
LEVELONE_EQUITIES messages are mapped here too, so the adapter (brokers/schwab/adapter.py) and the
stream (brokers/schwab/stream.py) stay about transport, auth and fault handling.
"""
from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timezone
from decimal import Decimal, InvalidOperation
from typing import Any

from schwab.orders import equities as eq
from schwab.orders import options as opt
from schwab.orders.common import Duration
from schwab.orders.common import OrderType as SchwabOrderType
from schwab.orders.generic import OrderBuilder

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

# (side, position effect) -> (market template, limit template, instruction name). The effect is
# the account's (see brokers/position_effect.py), not the sending strategy's. A swapped row would
# send short sales as plain sells (or the reverse), so the table is spelled out, not derived.
_EQUITY_TEMPLATES: dict[tuple[OrderSide, PositionEffect], tuple[Callable[..., OrderBuilder], Callable[..., OrderBuilder], str]] = {
    (OrderSide.BUY, PositionEffect.OPEN): (eq.equity_buy_market, eq.equity_buy_limit, "BUY"),
    (OrderSide.SELL, PositionEffect.CLOSE): (eq.equity_sell_market, eq.equity_sell_limit, "SELL"),
    (OrderSide.SELL, PositionEffect.OPEN): (eq.equity_sell_short_market, eq.equity_sell_short_limit, "SELL_SHORT"),
    (OrderSide.BUY, PositionEffect.CLOSE): (
        eq.equity_buy_to_cover_market, eq.equity_buy_to_cover_limit, "BUY_TO_COVER",
    ),
}

_OPTION_TEMPLATES: dict[tuple[OrderSide, PositionEffect], tuple[Callable[..., OrderBuilder], Callable[..., OrderBuilder], str]] = {
    (OrderSide.BUY, PositionEffect.OPEN): (opt.option_buy_to_open_market, opt.option_buy_to_open_limit, "BUY_TO_OPEN"),
    (OrderSide.SELL, PositionEffect.CLOSE): (
        opt.option_sell_to_close_market, opt.option_sell_to_close_limit, "SELL_TO_CLOSE",
    ),
    (OrderSide.SELL, PositionEffect.OPEN): (
        opt.option_sell_to_open_market, opt.option_sell_to_open_limit, "SELL_TO_OPEN",
    ),
    (OrderSide.BUY, PositionEffect.CLOSE): (
        opt.option_buy_to_close_market, opt.option_buy_to_close_limit, "BUY_TO_CLOSE",
    ),
}


class UnsupportedOrder(ValueError):
    """The order cannot be expressed for Schwab (caller turns it into OrderRejected)."""


def format_price(price: Decimal, what: str = "limit price") -> str:
    """Decimal -> the string schwab-py's `set_price` / `set_stop_price` pass through untouched.

    Strings avoid the SDK's deprecated float truncation; fixed-point formatting avoids "1E+1".
    """
    if not price.is_finite() or price <= 0:
        raise UnsupportedOrder(f"{what} must be a positive finite number, got {price}")
    if price.as_tuple().exponent > -2:  # type: ignore[operator]
        price = price.quantize(Decimal("0.01"))  # "185.5" -> "185.50", matching the SDK's own formatting
    return format(price, "f")


def check_supported(order: OrderRequest) -> None:
    if order.order_type is OrderType.STOP:
        if order.option is not None:
            # The order manager never rests a stop on an option; an option stop reaching here is
            # a wiring mistake, refused before anything is sent rather than tried at Schwab.
            raise UnsupportedOrder(
                f"Schwab adapter places STOP orders for equities only, not options ({order.option.occ_symbol})")
        return
    if order.order_type not in (OrderType.MARKET, OrderType.LIMIT):
        raise UnsupportedOrder(
            f"Schwab adapter supports MARKET, LIMIT and (equity) STOP orders only, not {order.order_type}")


def build_order_spec(order: OrderRequest, equity_symbol: str, effect: PositionEffect) -> dict[str, Any]:
    """The JSON body for POST /trader/v1/accounts/{hash}/orders, via schwab-py's templates.
    `effect` is the account's open/close effect for the order (brokers/position_effect.py); the
    order's own `position_effect` is its strategy's and is not used."""
    check_supported(order)
    if order.option is not None:
        market, limit, _ = _OPTION_TEMPLATES[(order.side, effect)]
        symbol = order.option.occ_symbol
    else:
        market, limit, _ = _EQUITY_TEMPLATES[(order.side, effect)]
        symbol = equity_symbol
    if order.order_type is OrderType.LIMIT:
        assert order.limit_price is not None  # OrderRequest.__post_init__ guarantees it
        builder = limit(symbol, order.quantity, format_price(order.limit_price))
    elif order.order_type is OrderType.STOP:
        assert order.stop_price is not None  # OrderRequest.__post_init__ guarantees it
        # schwab-py has no stop template: its market template (session NORMAL, SINGLE, the leg)
        # made a STOP with a stopPrice, as Schwab's Order schema defines them. GOOD_TILL_CANCEL
        # (schwab-py's Duration: open up to six months) because a protective stop must still rest
        # tomorrow; a DAY stop would leave the position bare after the close.
        builder = (market(symbol, order.quantity)
                   .set_order_type(SchwabOrderType.STOP)
                   .set_stop_price(format_price(order.stop_price, "stop price"))
                   .set_duration(Duration.GOOD_TILL_CANCEL))
    else:
        builder = market(symbol, order.quantity)
    spec: dict[str, Any] = builder.build()
    return spec


def order_fingerprint(spec: Mapping[str, Any]) -> dict[str, Any]:
    """What identifies an order we sent when Schwab never told us its id (timeout)."""
    leg = spec["orderLegCollection"][0]
    return {
        "symbol": leg["instrument"]["symbol"],
        "instruction": leg["instruction"],
        "quantity": int(leg["quantity"]),
        "orderType": spec["orderType"],
        "price": spec.get("price"),
        "stopPrice": spec.get("stopPrice"),
    }


def matches_fingerprint(order: Mapping[str, Any], fp: Mapping[str, Any]) -> bool:
    legs = order.get("orderLegCollection") or []
    if len(legs) != 1:
        return False
    leg = legs[0]
    if leg.get("instrument", {}).get("symbol") != fp["symbol"] or leg.get("instruction") != fp["instruction"]:
        return False
    if to_int(order.get("quantity")) != fp["quantity"] or order.get("orderType") != fp["orderType"]:
        return False
    if fp.get("price") is not None and to_decimal(order.get("price")) != Decimal(str(fp["price"])):
        return False
    if fp.get("stopPrice") is not None and to_decimal(order.get("stopPrice")) != Decimal(str(fp["stopPrice"])):
        return False
    return True


# --- numbers ------------------------------------------------------------------------------


def to_decimal(value: Any) -> Decimal | None:
    """JSON numbers arrive as float; go through str so 182.1 stays 182.1, not 182.0999..."""
    if value is None or isinstance(value, bool):
        return None
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        return None
    return result if result.is_finite() else None


def to_int(value: Any) -> int:
    number = to_decimal(value)
    return int(number) if number is not None else 0


def _positive_price(value: Any) -> Decimal | None:
    """Schwab reports 0.0 for "no bid"/"no ask"; that is absence, not a price of zero."""
    number = to_decimal(value)
    return number if number is not None and number > 0 else None


def _parse_time(raw: Any) -> datetime | None:
    if not isinstance(raw, str):
        return None
    text = raw.strip()
    # Schwab uses "2025-12-05T15:30:02+0000"; fromisoformat in 3.11 wants "+00:00".
    if len(text) > 5 and text[-5] in "+-" and text[-4:].isdigit():
        text = text[:-2] + ":" + text[-2:]
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


# --- orders -------------------------------------------------------------------------------

_WORKING = {
    "AWAITING_PARENT_ORDER", "AWAITING_CONDITION", "AWAITING_STOP_CONDITION", "AWAITING_MANUAL_REVIEW",
    "ACCEPTED", "AWAITING_UR_OUT", "PENDING_ACTIVATION", "QUEUED", "WORKING", "NEW",
    "AWAITING_RELEASE_TIME", "PENDING_ACKNOWLEDGEMENT", "PENDING_CANCEL", "PENDING_REPLACE", "PENDING_RECALL",
}
_CANCELLED = {"CANCELED", "EXPIRED", "REPLACED"}


def map_state(status: str, filled: int, quantity: int) -> OrderState:
    if status == "FILLED":
        return OrderState.FILLED
    if status == "REJECTED":
        return OrderState.REJECTED
    if status in _CANCELLED:
        # A partially filled order that is then cancelled/expired is terminal: CANCELLED with its
        # filled_quantity tells the OMS what actually happened.
        return OrderState.CANCELLED
    if status in _WORKING:
        return OrderState.PARTIALLY_FILLED if 0 < filled < max(quantity, 1) else OrderState.ACCEPTED
    # "UNKNOWN" or a status added after this was written: never guess a terminal state.
    return OrderState.UNKNOWN


def map_order(raw: Mapping[str, Any], client_order_id: ClientOrderId) -> OrderUpdate:
    broker_id = BrokerOrderId(str(raw.get("orderId"))) if raw.get("orderId") is not None else None
    status = str(raw.get("status") or "UNKNOWN")
    quantity = to_int(raw.get("quantity"))
    fills: list[Fill] = []
    for activity in raw.get("orderActivityCollection") or []:
        if activity.get("activityType") != "EXECUTION":
            continue
        for index, leg in enumerate(activity.get("executionLegs") or []):
            qty = to_int(leg.get("quantity"))
            price = to_decimal(leg.get("price"))
            if qty <= 0 or price is None:
                continue
            fills.append(Fill(
                client_order_id=client_order_id, broker_order_id=broker_id,
                fill_id=f"{activity.get('activityId', 'x')}-{leg.get('legId', 0)}-{index}",
                quantity=qty, price=price, commission=Decimal(0),  # Schwab reports fees on transactions, not orders
                ts=_parse_time(leg.get("time")) or _parse_time(raw.get("closeTime")) or datetime.now(timezone.utc),
            ))
    filled = to_int(raw.get("filledQuantity"))
    fill_qty = sum(f.quantity for f in fills)
    filled = max(filled, fill_qty)
    avg: Decimal | None = None
    if fill_qty:
        avg = sum((f.price * f.quantity for f in fills), Decimal(0)) / fill_qty
    state = map_state(status, filled, quantity)
    reason = raw.get("statusDescription") if state in (OrderState.REJECTED, OrderState.CANCELLED) else None
    if state is OrderState.CANCELLED and reason is None and status != "CANCELED":
        reason = status.lower()
    return OrderUpdate(
        client_order_id=client_order_id, broker_order_id=broker_id, state=state, filled_quantity=filled,
        avg_fill_price=avg, reason=reason, fills=tuple(fills),
    )


# --- account ------------------------------------------------------------------------------


def map_positions(account_json: Mapping[str, Any], canonical: Callable[[str], str]) -> list[BrokerPosition]:
    positions: list[BrokerPosition] = []
    for raw in (account_json.get("securitiesAccount") or {}).get("positions") or []:
        instrument = raw.get("instrument") or {}
        asset = instrument.get("assetType")
        symbol = str(instrument.get("symbol") or "")
        qty_dec = (to_decimal(raw.get("longQuantity")) or Decimal(0)) - (to_decimal(raw.get("shortQuantity")) or Decimal(0))
        if not symbol or qty_dec == 0:
            continue
        avg = to_decimal(raw.get("averagePrice")) or Decimal(0)
        if asset == "OPTION":
            # Schwab's option symbol is already the OCC/OSI form ("SPXW  251219C06000000").
            positions.append(BrokerPosition(key=symbol, quantity=int(qty_dec), avg_price=avg, multiplier=Decimal(100)))
        elif asset in ("EQUITY", "COLLECTIVE_INVESTMENT", "ETF"):
            positions.append(BrokerPosition(key=canonical(symbol), quantity=int(qty_dec), avg_price=avg))
        # Cash equivalents / money-market sweep and fixed income are not positions we trade.
    return positions


def map_balances(account_json: Mapping[str, Any]) -> Balances:
    account = account_json.get("securitiesAccount") or {}
    current = account.get("currentBalances") or {}
    aggregated = account_json.get("aggregatedBalance") or {}
    cash = to_decimal(current.get("cashBalance"))
    if cash is None:
        cash = to_decimal(current.get("totalCash")) or Decimal(0)
    equity = to_decimal(current.get("liquidationValue"))
    if equity is None:
        equity = to_decimal(aggregated.get("currentLiquidationValue")) or Decimal(0)
    # Margin accounts report buyingPower; cash accounts only cashAvailableForTrading.
    buying_power = to_decimal(current.get("buyingPower"))
    if buying_power is None:
        buying_power = to_decimal(current.get("cashAvailableForTrading")) or Decimal(0)
    return Balances(cash=cash, equity=equity, buying_power=buying_power)


# --- market data --------------------------------------------------------------------------


def map_quote(payload: Mapping[str, Any], venue_symbol: str, our_symbol: str) -> Quote | None:
    entry = payload.get(venue_symbol)
    if not isinstance(entry, Mapping):
        return None
    q = entry.get("quote") or {}
    ts_ms = q.get("quoteTime") or q.get("tradeTime")
    ts = datetime.fromtimestamp(int(ts_ms) / 1000, tz=timezone.utc) if isinstance(ts_ms, (int, float)) else None
    return Quote(
        symbol=our_symbol, bid=_positive_price(q.get("bidPrice")), ask=_positive_price(q.get("askPrice")),
        last=_positive_price(q.get("lastPrice")), ts=ts,
    )


def map_chain(payload: Mapping[str, Any], underlying: str, root: str, expiration: date) -> list[OptionContract]:
    contracts: list[OptionContract] = []
    for side_key in ("callExpDateMap", "putExpDateMap"):
        for exp_key, strikes in (payload.get(side_key) or {}).items():
            # Keys look like "2025-12-19:0" (date:days-to-expiration).
            if exp_key.split(":", 1)[0] != expiration.isoformat():
                continue
            for options in strikes.values():
                for raw in options:
                    if raw.get("optionRoot") != root:
                        continue  # e.g. the AM-settled monthly "SPX" on a third Friday
                    strike = to_decimal(raw.get("strikePrice"))
                    put_call = raw.get("putCall")
                    if strike is None or put_call not in ("CALL", "PUT"):
                        continue
                    contract = OptionContract(
                        underlying=underlying, root=root, expiration=expiration, strike=strike,
                        right=OptionRight.CALL if put_call == "CALL" else OptionRight.PUT,
                        bid=_positive_price(raw.get("bid")), ask=_positive_price(raw.get("ask")),
                    )
                    venue = str(raw.get("symbol") or "")
                    if venue and venue != contract.occ_symbol:
                        contract = OptionContract(
                            underlying=underlying, root=root, expiration=expiration, strike=strike,
                            right=contract.right, bid=contract.bid, ask=contract.ask, broker_symbol=venue,
                        )
                    contracts.append(contract)
    contracts.sort(key=lambda c: (c.strike, c.right.value))
    return contracts


# --- errors -------------------------------------------------------------------------------

_MESSAGE_LIMIT = 300
_CONTROL = re.compile(r"[\x00-\x1f]+")


def retry_after(resp: Any) -> float | None:
    """The seconds in a response's Retry-After header; None without one (or in its HTTP-date
    form, which Schwab does not send)."""
    raw = resp.headers.get("Retry-After")
    if not raw:
        return None
    try:
        return float(raw)
    except ValueError:
        return None


def schwab_message(resp: Any) -> str:
    """Schwab's error text: {"message": ..., "errors": [...]} or plain text; trimmed, one line."""
    try:
        body = resp.json()
    except (ValueError, json.JSONDecodeError):
        body = None
    parts: list[str] = []
    if isinstance(body, dict):
        if body.get("message"):
            parts.append(str(body["message"]))
        for err in body.get("errors") or []:
            if isinstance(err, dict):
                parts.append(str(err.get("detail") or err.get("title") or err.get("message") or ""))
            else:
                parts.append(str(err))
        if body.get("error_description") or body.get("error"):
            parts.append(str(body.get("error_description") or body.get("error")))
    text = "; ".join(p for p in parts if p) or (resp.text or "").strip() or f"HTTP {resp.status_code}"
    return _CONTROL.sub(" ", text)[:_MESSAGE_LIMIT]


# --- the streamer ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class IndexValue:
    symbol: str  # catalog symbol
    value: float
    ts_ns: int  # Schwab's trade time when it sent one, else the frame's timestamp


def parse_level_one(message: Mapping[str, Any],
                    venue_to_catalog: Mapping[str, str]) -> tuple[list[IndexValue], dict[str, bool]]:
    """One relabelled LEVELONE_EQUITIES data message -> (the values it carries, venue symbol ->
    `delayed` for the entries that say). Entries without LAST_PRICE (only other fields changed)
    carry no value; delayed ones are returned too, the caller decides."""
    values: list[IndexValue] = []
    delayed: dict[str, bool] = {}
    frame_ms = message.get("timestamp")
    for entry in message.get("content") or ():
        if not isinstance(entry, Mapping):
            continue
        key = entry.get("key")
        symbol = venue_to_catalog.get(key) if isinstance(key, str) else None
        if symbol is None:
            continue
        if isinstance(entry.get("delayed"), bool):
            delayed[str(key)] = bool(entry["delayed"])
        price = entry.get("LAST_PRICE")
        if isinstance(price, bool) or not isinstance(price, (int, float)) or not math.isfinite(price) or price <= 0:
            continue
        millis = entry.get("TRADE_TIME_MILLIS")
        if isinstance(millis, bool) or not isinstance(millis, (int, float)) or millis <= 0:
            millis = frame_ms
        if isinstance(millis, bool) or not isinstance(millis, (int, float)) or millis <= 0:
            continue
        values.append(IndexValue(symbol, float(price), int(millis) * 1_000_000))
    return values, delayed
