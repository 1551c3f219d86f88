"""The one shape every broker adapter has (paper, Schwab, Tastytrade).

Modelled on NautilusTrader's adapter template: the order manager talks only to this interface,
so the same order path runs in paper, live and backtests. Adapters are synchronous facades; an
adapter over an async SDK (Tastytrade) owns its own event-loop thread.

Contract for implementers:
- `place_order` sends exactly once. It returns an `OrderUpdate` (usually ACCEPTED or FILLED) or
  raises from `brokers.errors`: `OrderRejected` (nothing happened), `OrderOutcomeUnknown` (sent,
  no answer: the caller must NOT resend), `AuthenticationRequired`, `TemporaryBrokerError` only
  when the request provably never left.
- `get_order` looks up by our client order id (and the broker id when known), so an UNKNOWN
  order can be resolved after a restart.
- Read methods may retry `TemporaryBrokerError` internally with bounded backoff.
- No method logs or returns tokens, secrets or full account numbers.

Two placement methods have defaults every live adapter keeps; an adapter whose orders live in the
same Redis as the order manager (the paper broker) overrides them, so the order manager has no
paper case: `place_with_claim` (the order manager's claim and an immediate fill in one
transaction: a paper order costs one round trip) and `place_then` (the order manager's record of
the answer written with the broker's own write). `lookup_is_authoritative` says whether "no such
order" from `get_order` proves the order never reached the broker.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import date
from typing import Any, Callable

from domain.orders import (
    Balances,
    BrokerName,
    BrokerOrderId,
    BrokerPosition,
    BrokerStatus,
    ClientOrderId,
    OptionContract,
    OrderRequest,
    OrderUpdate,
    Quote,
)


@dataclass(frozen=True, slots=True)
class ClaimFirst:
    """An atomic write an order depends on (the order manager's claim of its client id): a loaded
    Lua script's sha with its keys and args. `place_with_claim` sends it ahead of the fill in one
    MULTI/EXEC; the fill is written only if afterwards HGET(guard_key, guard_field) == guard_value
    (a nonce only a successful claim writes)."""

    sha: str
    keys: list[str]
    args: list[str]
    guard_key: str
    guard_field: str
    guard_value: str


@dataclass(frozen=True, slots=True)
class PlacedAfter:
    """What `place_with_claim` did. `first_result`: the claim script's reply. `update` is None
    when no fill was written: the claim did not go through, or it did but the fill was computed on
    an account state that changed (the claim's reply tells which; in the second case the caller
    places the order itself). `written`: the caller's `then` commands went in with the fill."""

    first_result: Any
    update: OrderUpdate | None
    written: bool


Then = Callable[[OrderUpdate], list[list[str]]]  # the order manager's writes for a broker's answer


class BrokerAdapter(ABC):
    name: BrokerName  # the broker this account stands for ("schwab" | "tastytrade")
    is_paper: bool = False
    # A live broker's order search can lag or miss (a timeout before the order reached it, a
    # search window): "not found" there is no proof, so an UNKNOWN order stays UNKNOWN (its lane
    # blocked) until the broker shows it or an operator resolves it. The paper account writes its
    # orders atomically in the same Redis: "not found" there is final.
    lookup_is_authoritative: bool = False
    # Whether the adapter places STOP orders that rest at the broker (the order manager keeps a
    # protective stop there for a position only then; otherwise the strategy's own stop alone).
    supports_stop_orders: bool = False

    def place_with_claim(self, order: OrderRequest, then: Then | None, first: ClaimFirst) -> PlacedAfter | None:
        """Write `first` (the order manager's claim) and place the order in one atomic step, when
        the adapter can. None: nothing done; the caller claims, then calls `place_then`."""
        return None

    def on_trade(self, symbol: str, price: float, ts_ns: int) -> list[OrderUpdate]:
        """A trade the feed saw. An account that simulates its fills (paper) answers the updates of
        the resting orders the trade crossed; a live broker fills at the broker: nothing here."""
        return []

    def place_then(self, order: OrderRequest, then: Then | None) -> tuple[OrderUpdate, bool]:
        """Place a claimed order: (the broker's answer, whether `then`'s writes went with it)."""
        return self.place_order(order), False

    @abstractmethod
    def connect(self) -> BrokerStatus:
        """Load tokens / resolve the account; never raises for a missing login (status says so)."""

    @abstractmethod
    def status(self) -> BrokerStatus: ...

    @abstractmethod
    def place_order(self, order: OrderRequest) -> OrderUpdate: ...

    @abstractmethod
    def cancel_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate: ...

    @abstractmethod
    def get_order(self, client_order_id: ClientOrderId, broker_order_id: BrokerOrderId | None) -> OrderUpdate | None:
        """The order's current state, or None if the broker has no such order."""

    @abstractmethod
    def open_orders(self) -> list[OrderUpdate]: ...

    @abstractmethod
    def positions(self) -> list[BrokerPosition]: ...

    @abstractmethod
    def balances(self) -> Balances: ...

    @abstractmethod
    def quote(self, symbol: str) -> Quote: ...

    @abstractmethod
    def option_chain(self, underlying: str, expiration: date) -> list[OptionContract]: ...

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release sockets/threads. Safe to call twice."""
