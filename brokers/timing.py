"""How long broker calls take: one context manager for every adapter's latency hook.

Adapters expose `on_latency(label, seconds)` (the service binds it to the broker's latency
histogram, monitoring/metrics.py). A call is timed whether it returns or raises, because slow
failures are what the histogram is for, and a failing hook is logged, never raised: monitoring
must not break trading.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

LatencyHook = Callable[[str, float], None]


@contextmanager
def timed(label: str, hook: LatencyHook | None, *,
          clock: Callable[[], float] = time.perf_counter) -> Iterator[None]:
    """Report the block's duration to `hook(label, seconds)` as it exits, normally or not."""
    started = clock()
    try:
        yield
    finally:
        if hook is not None:
            seconds = clock() - started
            try:
                hook(label, seconds)
            except Exception:  # noqa: BLE001 - a metrics hook must never break trading
                log.warning("latency hook failed for %s", label, exc_info=True)
