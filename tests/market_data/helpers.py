"""Helpers for the market data tests (imported as tests.market_data.helpers)."""
from __future__ import annotations

import threading
from typing import Callable

from domain.market import Trade
from market_data.feeds import Feed, FeedEvent


class ManualFeed(Feed):
    """A feed the test drives: `push(trade)` delivers on the caller's thread (like a live feed's
    callback thread). `realtime` decides whether bar timers apply."""

    name = "manual"

    def __init__(self, realtime: bool = True) -> None:
        super().__init__()
        self.realtime = realtime

    def _run(self) -> None:
        self._stop.wait()

    def push(self, trade: Trade) -> None:
        self._emit(trade)

    def push_event(self, event: FeedEvent) -> None:
        self._event(event)


def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> bool:
    """Wait on an Event with short timeouts until predicate() holds (tests only)."""
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if predicate():
            return True
        done.wait(0.01)
    return predicate()

