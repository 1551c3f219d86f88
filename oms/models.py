"""Order manager data: what the engine asks for (TargetOrder), what it gets back (TargetResult),
and the stored shapes of orders and strategy positions. All JSON-able via `to_json()`."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Any

from config.symbology import contract_from_key
from domain.orders import (BrokerName, OptionContract, OptionRight, OrderSide, OrderState, PositionEffect,
                           apply_fill, plain_decimal)



@dataclass(frozen=True, slots=True)
class TargetOrder:
    """Move `strategy`'s position in `symbol` at `broker` to `target_quantity` (signed).

    Options: `option` is the contract to hold and `target_quantity` its (positive) count; FLAT is
    target 0 (option may be None). `event_ts_ns` is the trigger time (bar end / trade time); together
    with strategy, symbol and broker it identifies the intent, so resubmitting it is a no-op.
    """

    strategy: str
    symbol: str  # canonical catalog symbol (the underlying "SPX" for options)
    broker: BrokerName
    target_quantity: int
    event_ts_ns: int
    reason: str  # IntentReason value
    detail: str = ""
    option: OptionContract | None = None
    # A reversal's open leg is sent only until then (ns): after a restart the close is finished but
    # an open for a signal that is no longer current is dropped. None: event_ts_ns + the default.
    open_deadline_ns: int | None = None
    # A future's contract month to hold ("/MESZ25"): a position held in another month is closed
    # there and reopened in this one (the roll). None: the symbol itself is the key.
    contract: str | None = None

    @property
    def target_key(self) -> str:
        return self.option.occ_symbol if self.option else self.contract or self.symbol


class IntentStatus(StrEnum):
    """What became of one intent at one broker (stored in its `oms:intent:*` hash)."""

    NOOP = "noop"  # the lane was already at the target
    SENT = "sent"  # its (last) leg was sent; the orders tell the rest
    PENDING_OPEN = "pending_open"  # a reversal: close sent, the open goes once the close FILLED
    DENIED = "denied"  # the pre-trade check said no; nothing sent
    PAUSED = "paused"  # the broker needs a new login; nothing sent
    ABANDONED = "abandoned"  # a reversal's open leg was dropped (close failed, stale signal, superseded)


# Every allowed change of an intent's status; anything else is a bug (the order manager asserts).
# A new intent starts at one of NEW_INTENT_STATUSES. Only a pending reversal moves on: to SENT when
# its open leg is claimed, to ABANDONED when the open must not go (see OrderManager._advance).
NEW_INTENT_STATUSES = frozenset({IntentStatus.NOOP, IntentStatus.SENT, IntentStatus.PENDING_OPEN,
                                 IntentStatus.DENIED, IntentStatus.PAUSED})
INTENT_TRANSITIONS: dict[IntentStatus, frozenset[IntentStatus]] = {
    IntentStatus.PENDING_OPEN: frozenset({IntentStatus.SENT, IntentStatus.ABANDONED}),
    IntentStatus.NOOP: frozenset(), IntentStatus.SENT: frozenset(), IntentStatus.DENIED: frozenset(),
    IntentStatus.PAUSED: frozenset(), IntentStatus.ABANDONED: frozenset(),
}


def intent_transition(current: IntentStatus, new: IntentStatus) -> IntentStatus:
    if new not in INTENT_TRANSITIONS[current]:
        raise ValueError(f"intent status {current.value} cannot become {new.value}")
    return new


class TargetStatus(StrEnum):
    FILLED = "filled"  # every leg filled; position == target
    WORKING = "working"  # the last sent leg is accepted/resting at the broker
    PENDING_OPEN = "pending_open"  # close sent, open waits for the close fill (poll/on_order_update advance it)
    NOOP = "noop"  # already at target
    DUPLICATE = "duplicate"  # this intent was seen before; nothing new sent (its plan may have been resumed)
    DENIED = "denied"  # pre-trade check said no (journaled with the reason code)
    REJECTED = "rejected"  # broker refused; position unchanged
    UNKNOWN = "unknown"  # sent, outcome unknown: never resent, resolve_unknown()/reconcile resolves it
    PAUSED = "paused"  # broker needs a new login; orders paused
    BLOCKED = "blocked"  # the lane has a working/unknown order from an earlier intent
    ERROR = "error"  # bad request (no adapter, written option, ...)


# The broker has the order: filled, resting/working, or a reversal whose close went and whose open
# follows. (NOOP and DUPLICATE are fine answers too, but no new order was acknowledged.)
ACKNOWLEDGED_STATUSES = frozenset({TargetStatus.FILLED, TargetStatus.WORKING, TargetStatus.PENDING_OPEN})


@dataclass(frozen=True, slots=True)
class OrderRecord:
    client_order_id: str
    broker_order_id: str | None
    strategy: str
    symbol: str
    broker: str
    position_key: str
    leg: str  # "open" | "close" | "stop" (a protective stop resting at the broker)
    side: OrderSide
    quantity: int
    position_effect: PositionEffect
    order_type: str
    state: OrderState
    filled_quantity: int = 0
    avg_fill_price: Decimal | None = None
    commission: Decimal = Decimal(0)
    reason: str = ""  # why it is in this state (broker reason, risk code, ...)
    intent_reason: str = ""
    detail: str = ""
    event_ts_ns: int = 0
    created_ns: int = 0
    updated_ns: int = 0
    multiplier: Decimal = Decimal(1)
    option: OptionContract | None = None
    fill_ids: tuple[str, ...] = ()
    stop_price: Decimal | None = None  # a protective stop's trigger (leg "stop")

    def to_fields(self) -> dict[str, str]:
        return {
            "client_order_id": self.client_order_id, "broker_order_id": self.broker_order_id or "",
            "strategy": self.strategy, "symbol": self.symbol, "broker": self.broker,
            "position_key": self.position_key, "leg": self.leg, "side": self.side.value,
            "quantity": str(self.quantity), "position_effect": self.position_effect.value,
            "order_type": self.order_type, "state": self.state.value, "filled_quantity": str(self.filled_quantity),
            "avg_fill_price": "" if self.avg_fill_price is None else str(self.avg_fill_price),
            "commission": str(self.commission), "reason": self.reason, "intent_reason": self.intent_reason,
            "detail": self.detail, "event_ts_ns": str(self.event_ts_ns), "created_ns": str(self.created_ns),
            "updated_ns": str(self.updated_ns), "multiplier": str(self.multiplier),
            "option": option_to_text(self.option), "fill_ids": ",".join(self.fill_ids),
            "stop_price": "" if self.stop_price is None else str(self.stop_price),
        }

    @staticmethod
    def from_fields(f: dict[str, str]) -> "OrderRecord":
        return OrderRecord(
            client_order_id=f["client_order_id"], broker_order_id=f.get("broker_order_id") or None,
            strategy=f["strategy"], symbol=f["symbol"], broker=f["broker"], position_key=f["position_key"],
            leg=f["leg"], side=OrderSide(f["side"]), quantity=int(f["quantity"]),
            position_effect=PositionEffect(f["position_effect"]), order_type=f.get("order_type", "MARKET"),
            state=OrderState(f["state"]), filled_quantity=int(f.get("filled_quantity") or 0),
            avg_fill_price=Decimal(f["avg_fill_price"]) if f.get("avg_fill_price") else None,
            commission=Decimal(f.get("commission") or "0"), reason=f.get("reason", ""),
            intent_reason=f.get("intent_reason", ""), detail=f.get("detail", ""),
            event_ts_ns=int(f.get("event_ts_ns") or 0), created_ns=int(f.get("created_ns") or 0),
            updated_ns=int(f.get("updated_ns") or 0), multiplier=Decimal(f.get("multiplier") or "1"),
            option=option_from_text(f.get("option", "")),
            fill_ids=tuple(x for x in (f.get("fill_ids") or "").split(",") if x),
            stop_price=Decimal(f["stop_price"]) if f.get("stop_price") else None,
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.to_fields())
        out.update(quantity=self.quantity, filled_quantity=self.filled_quantity, event_ts_ns=self.event_ts_ns,
                   created_ns=self.created_ns, updated_ns=self.updated_ns,
                   option=json.loads(out["option"]) if out["option"] else None,
                   fill_ids=list(self.fill_ids), broker_order_id=self.broker_order_id,
                   avg_fill_price=None if self.avg_fill_price is None else str(self.avg_fill_price),
                   stop_price=None if self.stop_price is None else str(self.stop_price))
        return out


@dataclass(frozen=True, slots=True)
class OmsPosition:
    """One strategy's position in one symbol at one broker (the OMS's own book)."""

    strategy: str
    symbol: str
    broker: str
    key: str  # symbol, or the OCC symbol of the option held
    quantity: int
    avg_price: Decimal
    multiplier: Decimal = Decimal(1)
    option: OptionContract | None = None

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "symbol": self.symbol, "broker": self.broker, "key": self.key,
                "quantity": self.quantity, "avg_price": str(self.avg_price), "multiplier": str(self.multiplier),
                "option": json.loads(option_to_text(self.option)) if self.option else None}


@dataclass(frozen=True, slots=True)
class LaneView:
    """A lane's position and whether an order in it is still in flight (its position may change)."""

    position: OmsPosition
    busy: bool


@dataclass(frozen=True, slots=True)
class TargetResult:
    strategy: str
    symbol: str
    broker: str
    target_quantity: int
    previous_quantity: int
    quantity: int  # the strategy's position at the broker after this call
    status: TargetStatus
    reason: str = ""
    orders: tuple[OrderRecord, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status in ACKNOWLEDGED_STATUSES or self.status in (TargetStatus.NOOP, TargetStatus.DUPLICATE)

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "symbol": self.symbol, "broker": self.broker,
                "target_quantity": self.target_quantity, "previous_quantity": self.previous_quantity,
                "quantity": self.quantity, "status": self.status.value, "reason": self.reason, "ok": self.ok,
                "orders": [o.to_json() for o in self.orders]}


@dataclass(frozen=True, slots=True)
class BrokerReport:
    """Per-broker outcome of cancel_all / flatten_all: one broker failing never hides the other."""

    broker: str
    ok: bool
    orders: tuple[OrderRecord, ...] = ()
    results: tuple[TargetResult, ...] = ()
    errors: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"broker": self.broker, "ok": self.ok, "orders": [o.to_json() for o in self.orders],
                "results": [r.to_json() for r in self.results], "errors": list(self.errors)}


def option_to_text(c: OptionContract | None) -> str:
    if c is None:
        return ""
    return json.dumps({"underlying": c.underlying, "root": c.root, "expiration": c.expiration.isoformat(),
                       "strike": str(c.strike), "right": c.right.value, "broker_symbol": c.broker_symbol},
                      separators=(",", ":"))


def option_from_text(text: str) -> OptionContract | None:
    if not text:
        return None
    d = json.loads(text)
    return OptionContract(underlying=d["underlying"], root=d["root"], expiration=date.fromisoformat(d["expiration"]),
                          strike=Decimal(d["strike"]), right=OptionRight(d["right"]),
                          broker_symbol=d.get("broker_symbol"))


_OCC = re.compile(r"^(?P<root>[A-Z0-9]{1,6})\s*(?P<ymd>\d{6})(?P<right>[CP])(?P<strike>\d{8})$")
_ROOT_UNDERLYING = {"SPXW": "SPX", "SPX": "SPX"}


def parse_occ(symbol: str) -> OptionContract | None:
    """OCC OSI symbol ("SPXW  250602C06000000", spaces optional) -> OptionContract, else None."""
    m = _OCC.match(symbol.strip().upper())
    if not m:
        return None
    ymd = m["ymd"]
    return OptionContract(
        underlying=_ROOT_UNDERLYING.get(m["root"], m["root"]), root=m["root"],
        expiration=date(2000 + int(ymd[:2]), int(ymd[2:4]), int(ymd[4:])),
        strike=plain_decimal(Decimal(int(m["strike"])) / 1000), right=OptionRight(m["right"]),
    )


@dataclass(frozen=True, slots=True)
class LegPlan:
    leg: str  # "close" | "open"
    side: OrderSide
    quantity: int
    effect: PositionEffect
    position_key: str
    option: OptionContract | None = None

    @property
    def contract(self) -> str | None:
        """The future's contract month the leg trades (its key, when the key names one)."""
        return self.position_key if contract_from_key(self.position_key) is not None else None


def plan_legs(cur_key: str, cur_qty: int, cur_option: OptionContract | None, target: TargetOrder) -> list[LegPlan]:
    """Close-then-open legs that take (cur_key, cur_qty) to the target. Reversals and contract
    changes (call -> put, new strike) close everything first; the open goes only after that fill."""
    t_qty, t_key = target.target_quantity, target.target_key
    if cur_key == target.symbol and target.contract is not None and cur_qty and (cur_qty > 0) == (t_qty > 0):
        # A futures position booked before positions were keyed by contract month: it is the
        # contract it was bought in, taken as the one asked for (no spurious roll); it is keyed
        # by its contract from its next order on.
        t_key = cur_key
    legs: list[LegPlan] = []

    def close(n: int) -> LegPlan:
        return LegPlan("close", OrderSide.SELL if cur_qty > 0 else OrderSide.BUY, n, PositionEffect.CLOSE,
                       cur_key, cur_option)

    def open_(n: int) -> LegPlan:
        return LegPlan("open", OrderSide.BUY if t_qty > 0 else OrderSide.SELL, n, PositionEffect.OPEN,
                       t_key, target.option)

    if cur_qty == 0:
        return [open_(abs(t_qty))] if t_qty else []
    if t_qty == 0:
        return [close(abs(cur_qty))]
    if cur_key != t_key or (cur_qty > 0) != (t_qty > 0):
        return [close(abs(cur_qty)), open_(abs(t_qty))]
    if abs(t_qty) > abs(cur_qty):
        legs.append(open_(abs(t_qty) - abs(cur_qty)))
    elif abs(t_qty) < abs(cur_qty):
        legs.append(close(abs(cur_qty) - abs(t_qty)))
    return legs


__all__ = ["TargetOrder", "TargetResult", "TargetStatus", "LaneView", "IntentStatus", "intent_transition", "OrderRecord", "OmsPosition", "BrokerReport",
           "LegPlan", "plan_legs", "apply_fill", "parse_occ", "option_to_text", "option_from_text",
           "BrokerName", "field"]
