"""Paper broker: one simulated account per broker name ("schwab", "tastytrade").

Fill model
- MARKET: fills at once at the latest trade price from `price_source` plus
  `settings.paper_slippage_ticks` ticks against us (buys higher, sells lower).
- LIMIT / STOP: a marketable order fills at once (limit: at the better of last+slippage and the
  limit); otherwise it rests and `on_trade(symbol, price, ts_ns)` fills it when a trade crosses
  (resting limits fill at the limit price, triggered stops at trade price + slippage).
- Options (SPXW): priced from the synthetic chain (`brokers.option_pricing`) at the current SPX
  level: buys pay the ask, sells receive the bid; positions keyed by OCC symbol, multiplier 100.
- No price (or no bid) -> `OrderRejected` with the reason; never a fill at 0.
- Commission: `settings.paper_commission_per_contract` per contract/share filled.

Accounting (Decimal throughout): futures move cash only by realized P&L (tick value via the catalog
multiplier) minus commission; equities and options move cash by the premium/cost. `balances()`
marks open positions at the latest price. `Balances.realized_pnl` is net of commissions.

Persistence: everything lives under `store.key("paper", name, ...)`; a new PaperBroker on the same
store loads it. Redis is written first and the in-memory mirror only after the write succeeded,
so memory never runs ahead of what survives a restart. Each fill is one atomic Lua call.

Idempotency: the client order id is claimed with HSETNX inside the same Lua call that applies the
fill, so the same client order id placed twice (even from two processes) returns the existing
order and never fills twice.

One round trip with the caller's claim (`place_with_claim`): the order manager must durably claim
a client id before an order is sent. For a market order that fills at once, the claim and the fill
go to Redis together in one MULTI/EXEC, and the fill script writes only if the claim's nonce is
in the claimed order afterwards. A claim that lost (a duplicate, or a lane that changed) therefore
writes no fill either.

Group commit: market orders that arrive while the account is busy writing (many strategies acting
on one bar close) go to Redis together, claims and fills in one MULTI/EXEC (`place_with_claim`).

The account's `seq`: cash, P&L and positions are computed in memory and written as absolute values,
so every fill names the `seq` it was computed on and the script writes nothing (-1) if Redis holds
another. In a batch that means: once one fill is not written (its claim lost), the ones after it are
not written either and their callers place them alone; never a fill on a wrong balance. A second
instance writing the same account (another process) is caught the same way: the stale one
reloads and computes its fill again.

A write whose outcome is unknown (connection lost mid-call) leaves Redis possibly ahead of memory;
the account is then reloaded from Redis before its next use.

Concurrency: one lock per instance, held from computing a write until memory has applied it.
"""
from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timezone
from decimal import Decimal
from typing import Any, Callable

import orjson

from brokers.base import BrokerAdapter, ClaimFirst, PlacedAfter
from brokers.errors import OrderRejected, TemporaryBrokerError
from brokers.option_pricing import DEFAULT_IV, price_contract, synthetic_chain
from config.instruments import CATALOG, SPX_OPTION_MULTIPLIER, AssetClass, Instrument, Symbol, canonical_symbol
from config.settings import Settings
from domain.orders import (
    Balances,
    BrokerName,
    BrokerOrderId,
    BrokerPosition,
    BrokerStatus,
    ClientOrderId,
    Fill,
    OptionContract,
    OptionRight,
    OrderRequest,
    OrderSide,
    OrderState,
    OrderType,
    OrderUpdate,
    Quote,
    apply_fill,
)
from store.redis_store import Store, is_noscript

log = logging.getLogger(__name__)

PriceSource = Callable[[str], float | None]
Then = Callable[[OrderUpdate], list[list[str]]]  # see PaperBroker.place_then
ChainSource = Callable[[str, date], list[OptionContract]]

# One round trip per order: claim the id (optionally), then write order, position, account,
# fill and open-set membership together. Returns the existing order JSON when the claim failed,
# nil (Lua false) when written.
# ARGV[11]: a JSON list of the caller's own Redis commands ([["HSET", key, f, v], ...]) run in the
# same atomic call only when this write went through (see `place_then`); '' for none.
# ARGV[12]: the account's `seq` the write was computed on ('' when the account is not written).
# Cash, P&L and positions are written as absolute values, so a write computed on another state
# writes nothing and returns -1; every account write bumps `seq`.
# KEYS[6] (optional): write nothing and return 0 unless HGET(KEYS[6], ARGV[13]) == ARGV[14] (the
# guard of `place_with_claim`: the caller's claim, sent just before in the same transaction).
_WRITE_LUA = """
if KEYS[6] ~= nil and redis.call('HGET', KEYS[6], ARGV[13]) ~= ARGV[14] then
  return 0
end
if ARGV[12] ~= '' and (redis.call('HGET', KEYS[3], 'seq') or '0') ~= ARGV[12] then
  return -1
end
if ARGV[1] == '1' then
  if redis.call('HSETNX', KEYS[1], ARGV[2], ARGV[3]) == 0 then
    return redis.call('HGET', KEYS[1], ARGV[2])
  end
else
  redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
end
if ARGV[4] ~= '' then
  if ARGV[5] == '' then redis.call('HDEL', KEYS[2], ARGV[4]) else redis.call('HSET', KEYS[2], ARGV[4], ARGV[5]) end
end
if ARGV[6] ~= '' then
  redis.call('HSET', KEYS[3], 'cash', ARGV[6], 'realized_pnl', ARGV[7], 'commissions', ARGV[8])
  redis.call('HINCRBY', KEYS[3], 'seq', 1)
end
if ARGV[9] ~= '' then redis.call('XADD', KEYS[4], '*', 'fill', ARGV[9]) end
if ARGV[10] == '1' then redis.call('SADD', KEYS[5], ARGV[2]) else redis.call('SREM', KEYS[5], ARGV[2]) end
if ARGV[11] ~= '' then
  local unpack = unpack or table.unpack
  for _, c in ipairs(cjson.decode(ARGV[11])) do redis.call(unpack(c)) end
end
return false
"""


_GUARD_FAILED, _ACCOUNT_MOVED = 0, -1  # the write script's refusals (written: nil; claim lost: the existing order)
_ACCOUNT_RETRIES = 3


class _AccountMoved(Exception):
    """Internal: the account in Redis is not the state a fill was computed on (another writer);
    nothing was written and memory has been reloaded."""


@dataclass(frozen=True, slots=True)
class _Account:
    cash: Decimal
    realized: Decimal  # gross of commissions
    commissions: Decimal
    seq: int  # bumped in Redis by every account write


@dataclass(frozen=True, slots=True)
class _PreparedFill:
    """A fill computed on one account state, ready to send: nothing is written or applied yet."""

    filled: PaperOrder
    position: PaperPosition  # quantity 0: the position is removed
    before: _Account
    after: _Account
    journal_fill: dict[str, str]
    update: OrderUpdate
    extra: bytes  # the caller's `then` commands, JSON ("" for none)
    claim: bool  # a new order: claimed by the write (HSETNX)


@dataclass(slots=True)
class _AfterRequest:
    """One thread's `place_with_claim` call, waiting to be sent with whatever else is waiting."""

    order: OrderRequest
    then: Then | None
    first: ClaimFirst
    done: bool = False
    result: PlacedAfter | None = None
    error: BaseException | None = None


def contract_to_json(c: OptionContract | None) -> dict[str, str] | None:
    if c is None:
        return None
    return {"underlying": c.underlying, "root": c.root, "expiration": c.expiration.isoformat(),
            "strike": str(c.strike), "right": c.right.value, "broker_symbol": c.broker_symbol or ""}


def contract_from_json(d: dict[str, str] | None) -> OptionContract | None:
    if not d:
        return None
    return OptionContract(underlying=d["underlying"], root=d["root"], expiration=date.fromisoformat(d["expiration"]),
                          strike=Decimal(d["strike"]), right=OptionRight(d["right"]),
                          broker_symbol=d.get("broker_symbol") or None)


@dataclass(slots=True)
class PaperOrder:
    client_order_id: str
    broker_order_id: str
    symbol: str
    side: str
    quantity: int
    position_effect: str
    order_type: str
    limit_price: str | None
    stop_price: str | None
    option: dict[str, str] | None
    state: str
    filled_quantity: int = 0
    avg_fill_price: str | None = None
    reason: str | None = None
    fills: list[dict[str, str]] = field(default_factory=list)
    created_ns: int = 0
    contract: str | None = None  # a future's contract month ("/MESZ25"); its position is keyed by it

    def to_json(self) -> str:
        # Same document as json.dumps(asdict(self), separators=(",", ":")) without asdict's deep
        # copy, encoded by orjson (hot path: once per fill).
        return orjson.dumps({
            "client_order_id": self.client_order_id, "broker_order_id": self.broker_order_id,
            "symbol": self.symbol, "side": self.side, "quantity": self.quantity,
            "position_effect": self.position_effect, "order_type": self.order_type,
            "limit_price": self.limit_price, "stop_price": self.stop_price, "option": self.option,
            "state": self.state, "filled_quantity": self.filled_quantity, "avg_fill_price": self.avg_fill_price,
            "reason": self.reason, "fills": self.fills, "created_ns": self.created_ns, "contract": self.contract,
        }).decode()

    @staticmethod
    def from_json(raw: str) -> "PaperOrder":
        return PaperOrder(**json.loads(raw))

    @property
    def option_contract(self) -> OptionContract | None:
        return contract_from_json(self.option)

    @property
    def position_key(self) -> str:
        c = self.option_contract
        return c.occ_symbol if c else self.contract or self.symbol

    def update(self) -> OrderUpdate:
        fills = tuple(
            Fill(client_order_id=ClientOrderId(self.client_order_id), broker_order_id=BrokerOrderId(self.broker_order_id),
                 fill_id=f["fill_id"], quantity=int(f["quantity"]), price=Decimal(f["price"]),
                 commission=Decimal(f["commission"]), ts=datetime.fromisoformat(f["ts"]))
            for f in self.fills
        )
        return OrderUpdate(
            client_order_id=ClientOrderId(self.client_order_id), broker_order_id=BrokerOrderId(self.broker_order_id),
            state=OrderState(self.state), filled_quantity=self.filled_quantity,
            avg_fill_price=Decimal(self.avg_fill_price) if self.avg_fill_price is not None else None,
            reason=self.reason, fills=fills,
        )


@dataclass(frozen=True, slots=True)
class PaperPosition:
    key: str
    symbol: str  # catalog symbol (underlying for options)
    quantity: int
    avg_price: Decimal
    multiplier: Decimal
    is_future: bool
    option: dict[str, str] | None = None

    def to_json(self) -> str:
        return orjson.dumps({"key": self.key, "symbol": self.symbol, "quantity": self.quantity,
                             "avg_price": str(self.avg_price), "multiplier": str(self.multiplier),
                             "is_future": self.is_future, "option": self.option}).decode()

    @staticmethod
    def from_json(raw: str) -> "PaperPosition":
        d = json.loads(raw)
        return PaperPosition(key=d["key"], symbol=d["symbol"], quantity=int(d["quantity"]),
                             avg_price=Decimal(d["avg_price"]), multiplier=Decimal(d["multiplier"]),
                             is_future=bool(d["is_future"]), option=d.get("option"))


class PaperBroker(BrokerAdapter):
    is_paper = True
    lookup_is_authoritative = True  # its orders are written atomically in this Redis
    supports_stop_orders = True  # resting stops fill when a trade crosses them (not on options)

    def __init__(
        self, store: Store, name: BrokerName, settings: Settings, price_source: PriceSource, *,
        option_iv: float | None = None, chain_source: ChainSource | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    ) -> None:
        self.name = name
        self._store = store
        self._settings = settings
        self._price_source = price_source
        self._chain_source = chain_source  # a connected broker's real chain, when there is one
        self._clock = clock
        self._iv = option_iv if option_iv is not None else float(settings.extra.get("PAPER_OPTION_IV", DEFAULT_IV))
        self._slippage_ticks = settings.paper_slippage_ticks
        self._commission = Decimal(settings.paper_commission_per_contract)
        self._lock = threading.RLock()  # the account: held from computing a write until it is applied
        self._pending: list[_AfterRequest] = []  # see place_with_claim
        self._pending_lock = threading.Lock()
        self._k_orders = store.key("paper", name, "orders")
        self._k_pos = store.key("paper", name, "positions")
        self._k_account = store.key("paper", name, "account")
        self._k_fills = store.key("paper", name, "fills")
        self._k_open = store.key("paper", name, "open")
        self._write = store.redis.register_script(_WRITE_LUA)
        self._stale = False  # a write's outcome is unknown: reload from Redis before the next use
        self._load()

    # ------------------------------------------------------------------ state
    def _load(self) -> None:
        r = self._store.redis
        pipe = r.pipeline(transaction=False)
        pipe.hgetall(self._k_orders)
        pipe.hgetall(self._k_pos)
        pipe.hgetall(self._k_account)
        pipe.smembers(self._k_open)
        orders_raw, pos_raw, account, open_ids = pipe.execute()
        self._orders: dict[str, PaperOrder] = {k: PaperOrder.from_json(v) for k, v in orders_raw.items()}
        self._positions: dict[str, PaperPosition] = {k: PaperPosition.from_json(v) for k, v in pos_raw.items()}
        if not account:
            # First use of this account: starting cash, written once (HSETNX keeps a racing writer's value).
            pipe = r.pipeline(transaction=True)
            pipe.hsetnx(self._k_account, "cash", self._settings.paper_starting_cash)
            pipe.hsetnx(self._k_account, "realized_pnl", "0")
            pipe.hsetnx(self._k_account, "commissions", "0")
            pipe.hgetall(self._k_account)
            account = pipe.execute()[-1]
        self._account = _Account(cash=Decimal(account["cash"]), realized=Decimal(account.get("realized_pnl", "0")),
                                 commissions=Decimal(account.get("commissions", "0")), seq=int(account.get("seq", "0")))
        self._open: dict[str, set[str]] = {}
        for coid in open_ids:
            order = self._orders.get(coid)
            if order is not None and order.state in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED):
                self._open.setdefault(order.symbol, set()).add(coid)

    def _next_broker_id(self) -> str:
        # Unique across restarts without a Redis round trip: time-based, plus the name.
        return f"paper-{self.name}-{time.time_ns():x}-{threading.get_ident() % 10000:04d}"

    # ------------------------------------------------------------------ writes
    def _write_spec(self, order: PaperOrder, *, claim: bool, position: PaperPosition | None = None,
                    account: _Account | None = None, expected_seq: int | None = None,
                    fill: dict[str, str] | None = None, then: bytes = b"") -> tuple[list[str], list[str | bytes]]:
        """The write script's keys and args for storing `order` (and, for a fill, its position,
        the account computed on `expected_seq`, and the fill's journal entry)."""
        is_open = order.state in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED)
        cash, realized, commissions = (
            (str(account.cash), str(account.realized), str(account.commissions)) if account else ("", "", ""))
        keys = [self._k_orders, self._k_pos, self._k_account, self._k_fills, self._k_open]
        args: list[str | bytes] = [
            "1" if claim else "0", order.client_order_id, order.to_json(), position.key if position else "",
            position.to_json() if position is not None and position.quantity != 0 else "",
            cash, realized, commissions, orjson.dumps(fill) if fill else "", "1" if is_open else "0", then,
            "" if expected_seq is None else str(expected_seq)]
        return keys, args

    def _send(self, keys: list[str], args: list[str | bytes], guard: ClaimFirst | None = None) -> Any:
        """One write script call (guarded by `guard`'s nonce when given); its raw reply."""
        if guard is not None:
            keys, args = [*keys, guard.guard_key], [*args, guard.guard_field, guard.guard_value]
        try:
            return self._write(keys=keys, args=args)
        except Exception:
            self._stale = True  # the write may or may not have happened: memory cannot be trusted
            raise

    def _send_after(self, items: list[tuple[ClaimFirst, list[str], list[str | bytes]]]) -> list[tuple[Any, Any]]:
        """Each item's claim, then its guarded write, all in one MULTI/EXEC (EVALSHA directly:
        redis-py's Script in a pipeline would add a SCRIPT EXISTS round trip). Returns each item's
        (claim reply, write reply); a write Redis had lost the script for is sent again alone
        (guarded: written only if its claim went through) once the script is loaded. Raises when
        the outcome is unknown (the caller, `_place_batch`, marks the account stale)."""
        r = self._store.redis
        pipe = r.pipeline(transaction=True)
        for first, keys, args in items:
            pipe.evalsha(first.sha, len(first.keys), *first.keys, *first.args)
            pipe.evalsha(self._write.sha, len(keys) + 1, *keys, first.guard_key, *args,
                         first.guard_field, first.guard_value)
        replies = pipe.execute(raise_on_error=False)
        out: list[tuple[Any, Any]] = []
        loaded = False
        for i, (first, keys, args) in enumerate(items):
            first_result, reply = replies[2 * i], replies[2 * i + 1]
            if is_noscript(reply):  # Redis lost its scripts (a restart): load ours, write alone
                if not loaded:
                    r.script_load(_WRITE_LUA)
                    loaded = True
                reply = self._send(keys, args, guard=first)
            out.append((first_result, reply))
        return out

    # ------------------------------------------------------------------ pricing
    def _instrument(self, symbol: str) -> Instrument:
        try:
            return CATALOG[canonical_symbol(symbol)]
        except ValueError as exc:
            raise OrderRejected(str(exc), broker=f"paper:{self.name}", reason=f"unknown symbol {symbol!r}") from None

    def _last(self, symbol: str) -> Decimal | None:
        raw = self._price_source(symbol)
        if raw is None:
            return None
        value = Decimal(str(raw))
        return value if value.is_finite() and value > 0 else None

    def _executable(self, order: PaperOrder, reference: Decimal | None = None) -> tuple[Decimal | None, str]:
        """Price a market order would fill at now (or at `reference` trade price), or (None, why)."""
        side = OrderSide(order.side)
        last = reference if reference is not None else self._last(order.symbol)
        if last is None:
            return None, f"no price available for {order.symbol}"
        contract = order.option_contract
        if contract is not None:
            priced = price_contract(contract, float(last), self._clock(), self._iv)
            px = priced.ask if side is OrderSide.BUY else priced.bid
            if px is None or px <= 0:
                return None, f"no {'ask' if side is OrderSide.BUY else 'bid'} for {contract.occ_symbol.replace(' ', '')}"
            return px, ""
        inst = self._instrument(order.symbol)
        slip = inst.tick_size * self._slippage_ticks
        base = inst.round_price(last)
        px = base + slip if side is OrderSide.BUY else base - slip
        if px <= 0:
            return None, f"price for {order.symbol} after slippage is not positive"
        return px, ""

    # ------------------------------------------------------------------ fills
    def _prepare_fill(self, order: PaperOrder, price: Decimal, ts: datetime, then: Then | None,
                      account: _Account, positions: dict[str, PaperPosition]) -> _PreparedFill:
        """Fill the whole remaining quantity at `price`, computed on `account` and `positions`
        (memory, or memory plus the fills ahead of it in a batch). Calls `then`; writes nothing."""
        qty = order.quantity - order.filled_quantity
        side = OrderSide(order.side)
        signed = qty if side is OrderSide.BUY else -qty
        contract = order.option_contract
        if contract is not None:
            multiplier, is_future = SPX_OPTION_MULTIPLIER, False
        else:
            inst = self._instrument(order.symbol)
            multiplier, is_future = inst.multiplier, inst.asset_class is AssetClass.FUTURE
        key = order.position_key
        old = positions.get(key)
        new_qty, new_avg, realized = apply_fill(
            old.quantity if old else 0, old.avg_price if old else Decimal(0), signed, price, multiplier)
        commission = self._commission * qty
        if is_future:
            cash = account.cash + realized - commission
        else:
            cash = account.cash - Decimal(signed) * price * multiplier - commission
        after = _Account(cash=cash, realized=account.realized + realized,
                         commissions=account.commissions + commission, seq=account.seq + 1)
        position = PaperPosition(key=key, symbol=order.symbol, quantity=new_qty, avg_price=new_avg,
                                 multiplier=multiplier, is_future=is_future, option=order.option)
        fill = {"fill_id": f"{order.broker_order_id}-{len(order.fills) + 1}", "quantity": str(qty),
                "price": str(price), "commission": str(commission), "ts": ts.isoformat()}
        filled = replace(order, state=OrderState.FILLED.value, filled_quantity=order.quantity,
                         avg_fill_price=str(price), fills=[*order.fills, fill])
        journal_fill = {**fill, "client_order_id": order.client_order_id, "key": key, "side": order.side,
                        "multiplier": str(multiplier), "realized_pnl": str(realized)}
        # `filled.update()` without parsing back what was just formatted: the earlier fills (a
        # resting order's partial fills) from their records, this one from its values.
        coid, broker_id = ClientOrderId(order.client_order_id), BrokerOrderId(order.broker_order_id)
        this_fill = Fill(client_order_id=coid, broker_order_id=broker_id, fill_id=fill["fill_id"], quantity=qty,
                         price=price, commission=commission, ts=ts)
        update = OrderUpdate(client_order_id=coid, broker_order_id=broker_id, state=OrderState.FILLED,
                             filled_quantity=filled.filled_quantity, avg_fill_price=price, reason=filled.reason,
                             fills=(*order.update().fills, this_fill) if order.fills else (this_fill,))
        return _PreparedFill(filled=filled, position=position, before=account, after=after, journal_fill=journal_fill,
                             update=update, extra=self._then_commands(then, update),
                             claim=order.client_order_id not in self._orders)

    def _fill_spec(self, prep: _PreparedFill) -> tuple[list[str], list[str | bytes]]:
        return self._write_spec(prep.filled, claim=prep.claim, position=prep.position, account=prep.after,
                                expected_seq=prep.before.seq, fill=prep.journal_fill, then=prep.extra)

    def _apply_fill(self, prep: _PreparedFill) -> None:
        """Memory follows a fill Redis has taken."""
        order = prep.filled
        self._orders[order.client_order_id] = order
        if prep.position.quantity == 0:
            self._positions.pop(prep.position.key, None)
        else:
            self._positions[prep.position.key] = prep.position
        self._account = prep.after
        self._open.get(order.symbol, set()).discard(order.client_order_id)

    def _adopt(self, raw: str) -> PaperOrder:
        """Another writer owns this client id: its order is the answer, nothing of ours applies."""
        existing = PaperOrder.from_json(raw)
        self._orders[existing.client_order_id] = existing
        return existing

    def _fill(self, order: PaperOrder, price: Decimal, ts: datetime, then: Then | None = None) -> tuple[OrderUpdate, bool]:
        """Fill the whole remaining quantity at `price`; persist, then update memory. Returns
        (update, whether `then`'s commands were written with it). Raises _AccountMoved (nothing
        written, memory reloaded) when the account in Redis was not the one in memory."""
        prep = self._prepare_fill(order, price, ts, then, self._account, self._positions)
        keys, args = self._fill_spec(prep)
        reply = self._send(keys, args)
        if reply == _ACCOUNT_MOVED:
            self._stale = True
            self._reload_if_stale()
            raise _AccountMoved(f"paper {self.name}: account changed by another writer")
        if isinstance(reply, str):
            return self._adopt(reply).update(), False
        self._apply_fill(prep)
        return prep.update, bool(prep.extra)

    @staticmethod
    def _then_commands(then: Then | None, update: OrderUpdate) -> bytes:
        """The caller's commands for `update` as JSON ("" when none, or when building them failed:
        the caller then records the update itself, one round trip later)."""
        if then is None:
            return b""
        try:
            cmds = then(update)
        except Exception:  # never let the caller's bookkeeping break a fill
            log.exception("place_then: building the caller's commands failed; order written alone")
            return b""
        return orjson.dumps(cmds) if cmds else b""

    def _store_only(self, order: PaperOrder, *, claim: bool, then: Then | None = None) -> OrderUpdate:
        update, _ = self._store_only_then(order, claim=claim, then=then)
        return update

    def _store_only_then(self, order: PaperOrder, *, claim: bool, then: Then | None = None) -> tuple[OrderUpdate, bool]:
        update = order.update()
        extra = self._then_commands(then, update)
        reply = self._send(*self._write_spec(order, claim=claim, then=extra))
        if isinstance(reply, str):
            return self._adopt(reply).update(), False
        self._orders[order.client_order_id] = order
        bucket = self._open.setdefault(order.symbol, set())
        if order.state in (OrderState.ACCEPTED, OrderState.PARTIALLY_FILLED):
            bucket.add(order.client_order_id)
        else:
            bucket.discard(order.client_order_id)
        return update, bool(extra)

    def _reject(self, order: PaperOrder, reason: str) -> OrderRejected:
        stored = replace(order, state=OrderState.REJECTED.value, reason=reason)
        update = self._store_only(stored, claim=True)
        return OrderRejected(f"paper {self.name} rejected: {update.reason}", broker=f"paper:{self.name}",
                             reason=update.reason or reason)

    def _crossing_price(self, order: PaperOrder, trade: Decimal, resting: bool) -> Decimal | None:
        """Fill price when `trade` crosses the order's limit/stop, else None."""
        side = OrderSide(order.side)
        if order.order_type == OrderType.LIMIT.value:
            limit = Decimal(order.limit_price or "0")
            px, _ = self._executable(order, trade)
            if px is None:
                return None
            if (side is OrderSide.BUY and px <= limit) or (side is OrderSide.SELL and px >= limit):
                # Arriving marketable: the better market price. Resting: the limit (that is where
                # it would have traded as the price moved through it).
                return limit if resting else px
            return None
        stop = Decimal(order.stop_price or "0")
        triggered = trade >= stop if side is OrderSide.BUY else trade <= stop
        if not triggered:
            return None
        px, _ = self._executable(order, trade)
        return px

    # ------------------------------------------------------------------ adapter API
    def connect(self) -> BrokerStatus:
        return self.status()

    def status(self) -> BrokerStatus:
        return BrokerStatus(broker=self.name, mode="paper", connected=True, account=f"paper-{self.name}",
                            message="paper account")

    def place_order(self, order: OrderRequest) -> OrderUpdate:
        return self.place_then(order, None)[0]

    def place_then(self, order: OrderRequest, then: Then | None) -> tuple[OrderUpdate, bool]:
        """`place_order`, plus the caller's own writes in the same atomic Redis call.

        `then(update)` is called (under this broker's lock) with the update about to be persisted
        when the order is accepted or filled, and returns Redis commands (lists of strings, e.g.
        ["HSET", key, field, value]); they run inside the paper write's Lua call, only if that write
        goes through (never when another writer already owns the client id). Returns (update,
        written): `written` is True iff `then`'s commands were written atomically with the order.
        Rejections raise OrderRejected as from `place_order` (without calling `then`). The order
        manager uses this to record SUBMITTED -> FILLED, its journal, fill and position in the same
        round trip as the paper fill.
        """
        with self._lock:
            for _ in range(_ACCOUNT_RETRIES):
                try:
                    return self._place_now(order, then)
                except _AccountMoved:
                    continue  # nothing was written; memory is reloaded: decide again on the real state
        raise TemporaryBrokerError(f"paper {self.name}: the account kept changing under another writer; "
                                   "order not placed", broker=f"paper:{self.name}")

    def _place_now(self, order: OrderRequest, then: Then | None) -> tuple[OrderUpdate, bool]:
        self._reload_if_stale()
        existing = self._orders.get(order.client_order_id)
        if existing is not None:
            return existing.update(), False  # idempotent: same client id -> same order, never a second fill
        record, problem = self._new_record(order)
        if problem:
            raise self._reject(record, problem)
        now = self._clock()
        if order.order_type is OrderType.MARKET:
            px, why = self._executable(record)
            if px is None:
                raise self._reject(record, why)
            return self._fill(record, px, now, then)
        last = self._last(record.symbol)
        if last is not None:
            px = self._crossing_price(record, last, resting=False)
            if px is not None:
                return self._fill(record, px, now, then)
        return self._store_only_then(record, claim=True, then=then)  # rests until on_trade crosses it

    def place_with_claim(self, order: OrderRequest, then: Then | None, first: ClaimFirst) -> PlacedAfter | None:
        """`place_then` in the same round trip (one MULTI/EXEC) as `first`, the caller's claim
        of the client id, for a market order that fills at once. The fill is written only if the
        claim went through (its guard nonce is there afterwards).

        None - nothing sent, nothing written - when the order would not simply fill now (not a
        market order, no price, unknown symbol, a client id this account already knows, or Redis
        had lost the claim script): the caller then claims on its own and uses `place_then`,
        whose answer (a rejection, a resting order, the existing order) needs its claim first.
        A PlacedAfter without an update: the fill was not written; the claim's reply says whether
        the claim went through (then the caller places the order itself with `place_then`).

        Group commit: orders that arrive while this account is writing (many strategies acting on
        one bar close) wait and go to Redis together, in one MULTI/EXEC, each fill computed on the
        account as the fills ahead of it leave it. Every fill names the account `seq` it was
        computed on, so when one of them is not written (its claim lost) the ones after it write
        nothing either and are answered "claimed, not placed"; never a fill on a wrong balance.
        """
        if order.order_type is not OrderType.MARKET:
            return None
        request = _AfterRequest(order, then, first)
        with self._pending_lock:
            self._pending.append(request)
        with self._lock:
            if not request.done:  # nobody took it along: send what waits, this one included
                with self._pending_lock:
                    batch, self._pending = self._pending, []
                self._place_batch(batch)
        if request.error is not None:
            raise request.error
        return request.result

    def _place_batch(self, batch: list[_AfterRequest]) -> None:
        """Claims and fills of `batch` in one MULTI/EXEC (see place_with_claim). Caller holds the
        lock. Every request ends done, with a result or an error; nothing is raised here, so the
        thread sending the batch gets its own answer like the others."""
        try:
            self._reload_if_stale()
            account, positions = self._account, dict(self._positions)
            prepared: list[tuple[_AfterRequest, _PreparedFill]] = []
            seen: set[str] = set()
            for request in batch:
                prep = self._prepare_after(request.order, request.then, account, positions, seen)
                if prep is None:
                    request.done = True  # result None: the caller claims and places on its own
                    continue
                prepared.append((request, prep))
                account = prep.after
                positions[prep.position.key] = prep.position
            if not prepared:
                return
            replies = self._send_after([(request.first, *self._fill_spec(prep)) for request, prep in prepared])
            in_order = True  # every fill ahead was written: a seq mismatch then means another writer
            for (request, prep), (first_result, reply) in zip(prepared, replies):
                try:
                    request.result, written = self._after_outcome(prep, first_result, reply, in_order)
                except Exception as exc:
                    request.error, written = exc, False
                in_order = in_order and written
                request.done = True
        except BaseException as exc:  # nothing (or not all) known: each waiting caller gets the error
            self._stale = True  # and memory is reloaded from Redis before the next use
            for request in batch:
                if not request.done:
                    request.error, request.done = exc, True

    def _prepare_after(self, order: OrderRequest, then: Then | None, account: _Account,
                       positions: dict[str, PaperPosition], seen: set[str]) -> _PreparedFill | None:
        """The fill of a market order that fills at once, or None when it would not simply fill."""
        if order.client_order_id in self._orders or order.client_order_id in seen:
            return None
        record, problem = self._new_record(order)
        if problem:
            return None
        px, _ = self._executable(record)
        if px is None:
            return None
        seen.add(order.client_order_id)
        return self._prepare_fill(record, px, self._clock(), then, account, positions)

    def _after_outcome(self, prep: _PreparedFill, first_result: Any, reply: Any,
                       in_order: bool) -> tuple[PlacedAfter | None, bool]:
        """One batch item's answer from its replies, applied to memory; and whether it was written."""
        if isinstance(reply, Exception):
            self._stale = True  # not a script answer: what happened is unknown
            raise reply
        if reply == _GUARD_FAILED:  # the claim did not go through: nothing written
            return (None if is_noscript(first_result) else PlacedAfter(first_result, None, False)), False
        if reply == _ACCOUNT_MOVED:  # claimed, fill not written: the caller places it alone
            if in_order:
                self._stale = True  # another writer changed the account: reload before the next use
            return PlacedAfter(first_result, None, False), False
        if isinstance(reply, str):
            return PlacedAfter(first_result, self._adopt(reply).update(), False), False
        self._apply_fill(prep)
        return PlacedAfter(first_result, prep.update, bool(prep.extra)), True

    def _new_record(self, order: OrderRequest) -> tuple[PaperOrder, str]:
        """The account's record of a new order, and why it cannot be accepted ("" when it can)."""
        record = PaperOrder(
            client_order_id=order.client_order_id, broker_order_id=self._next_broker_id(), symbol=order.symbol,
            side=order.side.value, quantity=order.quantity, position_effect=order.position_effect.value,
            order_type=order.order_type.value,
            limit_price=str(order.limit_price) if order.limit_price is not None else None,
            stop_price=str(order.stop_price) if order.stop_price is not None else None,
            option=contract_to_json(order.option), state=OrderState.ACCEPTED.value, created_ns=time.time_ns(),
            contract=order.contract,
        )
        if order.option is not None:
            if order.option.underlying not in CATALOG:
                return record, f"unknown option underlying {order.option.underlying!r}"
            if order.order_type is OrderType.STOP:
                return record, "paper broker does not support stop orders on options"
            return record, ""
        try:
            canonical = canonical_symbol(order.symbol)
        except ValueError:
            return record, f"unknown symbol {order.symbol[:20]!r}"
        if canonical != order.symbol:
            record = replace(record, symbol=canonical)
        return record, ""

    def _reload_if_stale(self) -> None:
        if self._stale:
            self._load()  # raises while Redis is unreachable: nothing is placed on a state we cannot trust
            self._stale = False

    def on_trade(self, symbol: str, price: float, ts_ns: int) -> list[OrderUpdate]:
        """Fill resting orders the trade crosses. Called by the engine for every trade; cheap when idle."""
        if not self._open.get(symbol) and not self._stale:
            return []
        with self._lock:
            self._reload_if_stale()
            trade = Decimal(str(price))
            if not trade.is_finite() or trade <= 0:
                return []
            ts = datetime.fromtimestamp(ts_ns / 1e9, tz=timezone.utc)
            updates: list[OrderUpdate] = []
            for coid in sorted(self._open.get(symbol, set()), key=lambda c: self._orders[c].created_ns):
                order = self._orders[coid]
                px = self._crossing_price(order, trade, resting=True)
                if px is not None:
                    try:
                        updates.append(self._fill(order, px, ts)[0])
                    except _AccountMoved:
                        break  # memory is reloaded; the next trade checks the real orders again
            return updates

    def cancel_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate:
        with self._lock:
            self._reload_if_stale()
            order = self._orders.get(client_order_id)
            if order is None:
                raise OrderRejected("no such order", broker=f"paper:{self.name}", reason="unknown client order id")
            if OrderState(order.state).is_terminal:
                return order.update()  # too late to cancel: report what happened
            return self._store_only(replace(order, state=OrderState.CANCELLED.value, reason="cancelled"), claim=False)

    def get_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate | None:
        with self._lock:
            order = self._orders.get(client_order_id)
            if order is None:  # maybe written by another process since we loaded
                raw = self._store.redis.hget(self._k_orders, client_order_id)
                if raw is None:
                    return None
                order = PaperOrder.from_json(raw)
            return order.update()

    def open_orders(self) -> list[OrderUpdate]:
        with self._lock:
            self._reload_if_stale()
            return [self._orders[c].update() for ids in self._open.values() for c in sorted(ids)]

    def positions(self) -> list[BrokerPosition]:
        with self._lock:
            self._reload_if_stale()
            return [BrokerPosition(key=p.key, quantity=p.quantity, avg_price=p.avg_price, multiplier=p.multiplier)
                    for p in sorted(self._positions.values(), key=lambda p: p.key) if p.quantity != 0]

    def position_details(self) -> list[PaperPosition]:
        with self._lock:
            self._reload_if_stale()
            return list(self._positions.values())

    def balances(self) -> Balances:
        with self._lock:
            self._reload_if_stale()
            account = self._account
            equity = account.cash
            for p in self._positions.values():
                mark = self._mark(p)
                if p.is_future:
                    equity += (mark - p.avg_price) * p.quantity * p.multiplier
                else:
                    equity += mark * p.quantity * p.multiplier
            return Balances(cash=account.cash, equity=equity, buying_power=equity,
                            realized_pnl=account.realized - account.commissions)

    def _mark(self, p: PaperPosition) -> Decimal:
        contract = contract_from_json(p.option)
        spot = self._last(p.symbol)
        if spot is None:
            return p.avg_price
        if contract is not None:
            priced = price_contract(contract, float(spot), self._clock(), self._iv)
            bid, ask = priced.bid or Decimal(0), priced.ask or Decimal(0)
            return (bid + ask) / 2
        return spot

    def account_summary(self) -> dict[str, Any]:
        with self._lock:
            self._reload_if_stale()
            account = self._account
            return {"broker": self.name, "cash": str(account.cash), "realized_pnl_gross": str(account.realized),
                    "commissions": str(account.commissions)}

    def quote(self, symbol: str) -> Quote:
        last = self._last(symbol)
        return Quote(symbol=symbol, bid=last, ask=last, last=last, ts=self._clock() if last is not None else None)

    def option_chain(self, underlying: str, expiration: date) -> list[OptionContract]:
        if self._chain_source is not None:
            chain = self._chain_source(underlying, expiration)
            if chain:
                return chain
        spot = self._last(underlying)
        if spot is None:
            raise OrderRejected(f"no price available for {underlying}", broker=f"paper:{self.name}",
                                reason=f"no price available for {underlying}")
        return synthetic_chain(float(spot), expiration, self._clock(), self._iv, underlying=underlying)


__all__ = ["PaperBroker", "PaperOrder", "PaperPosition", "Symbol"]
