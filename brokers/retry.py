"""The one retry policy of the brokers layer: it decides from the exception class alone.

An adapter makes one attempt at a call and translates whatever went wrong into brokers/errors.py;
`retry_reads` then retries a `TemporaryBrokerError` with bounded exponential backoff (waiting at
least the broker's Retry-After, within the same cap) and raises everything else at once:
`OrderRejected`, `AuthenticationRequired`, `OrderOutcomeUnknown`, `BrokerConfigError`, or a plain
`BrokerError`. What an adapter may do inside one attempt (one token refresh after a 401) is the
adapter's business; the number and spacing of attempts is decided here.

Only calls that are safe to repeat go through it: reads, a dry run or preview, a cancel. Orders do
not: an order is sent once, and an adapter that knows its request never reached the broker says
so with a `TemporaryBrokerError` for its caller to decide (brokers/errors.py).
"""
from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from brokers.errors import TemporaryBrokerError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ReadRetry:
    """How often and how far apart a read is tried."""

    attempts: int = 3  # calls in all, the first included
    base: float = 0.5  # seconds before the second call; doubled before each later one
    cap: float = 8.0  # no wait is longer, a broker's Retry-After included

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """The wait after the `failures`-th failed call (1-based)."""
        wait = min(self.cap, self.base * 2 ** (failures - 1))
        if retry_after is not None:
            wait = max(wait, min(retry_after, self.cap))
        return wait


def retry_reads(call: Callable[[], T], policy: ReadRetry, *, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, again after a `TemporaryBrokerError` until `policy.attempts` calls have failed.
    The last failure is raised as a TemporaryBrokerError that says how many calls were made, its
    `retry_after` the wait this policy would have taken next. Any other exception propagates
    unchanged after the call that raised it."""
    failures = 0
    while True:
        try:
            return call()
        except TemporaryBrokerError as exc:
            failures += 1
            wait = policy.delay(failures, exc.retry_after)
            if failures >= policy.attempts:
                raise TemporaryBrokerError(f"{exc.message} (after {failures} attempts)", broker=exc.broker,
                                           retry_after=wait) from None
            log.warning("%s; retrying in %.2fs (attempt %d/%d)", exc.message, wait, failures, policy.attempts)
            sleep(wait)


@dataclass
class ReconnectBackoff:
    """A stream's reconnect schedule (the SPX streams of both brokers). Seconds to wait before reconnect attempt `failures` (1-based): base * 2^(n-1), capped,
    minus up to `jitter` of it so that restarted processes do not reconnect in step."""

    base: float = 1.0
    cap: float = 60.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int) -> float:
        raw = min(self.cap, self.base * 2 ** max(0, failures - 1))
        return raw * (1.0 - self.jitter * self.rng.random())
