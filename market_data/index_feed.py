"""Index values (SPX) pushed by a streaming source, fed to the bar builders as trades.

Databento carries no index, so SPX comes from a broker's stream (brokers/schwab/stream.py,
brokers/tastytrade/stream.py). This package must not import brokers: the runtime builds the
sources and hands them in; here are only the `IndexSource` protocol and `FirstConnectedSource`,
which runs one of several brokers' sources.

- `IndexStreamFeed` owns one thread that runs the source (`IndexSource.run` blocks, event-driven,
  and reconnects by itself with backoff). Should `run` raise or return while the feed is running,
  the thread starts it again after `restart_delay` seconds: the feed is supervised. `stop()`
  interrupts the source and joins the thread.
- Each value becomes a `Trade` of size 0 (an index has no volume, as the simulated feed prints it)
  through the same `Feed` callback every other feed uses, so the bar builder, the Redis streams
  and the strategies see SPX exactly like any instrument.
- A connection that dropped and came back emits a `Gap` (not backfilled) over the outage, so the
  bars that were open meanwhile are marked gapped rather than passed off as complete.
- Staleness: `MarketDataService.status()` flags a symbol whose trades stopped during market hours
  (`STALE_FEED_SECONDS`); this feed's status adds the source's own view (connected, reconnects,
  last value).

`NoIndexFeed` stands for SPX in live mode when no broker can stream it: it emits nothing, so no
made-up price ever reaches a live strategy (the simulated walk does in paper mode only).
"""
from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Protocol, Sequence

from config.instruments import CATALOG, canonical_symbol
from config.settings import MarketDataSource, Settings
from domain.market import Trade
from market_data.feeds import Feed, Gap

log = logging.getLogger(__name__)

IndexValueCallback = Callable[[str, float, int], None]  # (catalog symbol, value, exchange time ns)
StateCallback = Callable[[bool, str], None]  # (connected, why)


class IndexSource(Protocol):
    """A stream of index values. Implemented in brokers/ (`SchwabIndexStream`, `TastytradeIndexStream`)."""

    name: str

    def run(self, on_value: IndexValueCallback, on_state: StateCallback, stopping: threading.Event) -> None:
        """Stream until `stopping` is set and `interrupt()` was called, reconnecting on its own;
        return promptly once `stopping` is set (also when it already is on entry)."""

    def interrupt(self) -> None:
        """Wake a running `run` so it sees `stopping` (thread-safe, no-op when not running)."""

    def status(self) -> Mapping[str, Any]:
        """Cheap, no I/O: connection state, reconnects, last value, last error."""


@dataclass(frozen=True, slots=True)
class SourceChoice:
    source: IndexSource
    connected: Callable[[], bool]  # is the broker behind it logged in and connected now (cheap, no I/O)


class FirstConnectedSource:
    """One of several brokers' sources: the first (in the order given) whose broker is connected
    when it starts, the first of all when none is. Each time the running source loses its
    connection, the choice is looked at again: a source whose broker is no longer connected gives
    way to one whose broker is (a drop of a source whose broker is still connected is only a
    drop: that source reconnects by itself). The feed sees a switch as a drop and a reconnect."""

    def __init__(self, choices: Sequence[SourceChoice]) -> None:
        if not choices:
            raise ValueError("FirstConnectedSource needs at least one source")
        self.choices = tuple(choices)
        self.name = "+".join(choice.source.name for choice in self.choices)
        self._lock = threading.Lock()
        self._running: SourceChoice | None = None
        self._running_stop: threading.Event | None = None
        self._shown = self.choices[0]  # whose status status() shows: the one running or last run
        self.switches = 0

    def _pick(self) -> SourceChoice:
        return next((choice for choice in self.choices if _broker_connected(choice)), self.choices[0])

    def run(self, on_value: IndexValueCallback, on_state: StateCallback, stopping: threading.Event) -> None:
        while not stopping.is_set():
            choice = self._pick()
            own_stop = threading.Event()  # set on stop, or to switch away from this source
            with self._lock:
                self._running, self._running_stop, self._shown = choice, own_stop, choice
            if stopping.is_set():  # interrupt() came before the source was known to it
                own_stop.set()

            def state(connected: bool, detail: str, choice: SourceChoice = choice,
                      own_stop: threading.Event = own_stop) -> None:
                on_state(connected, detail)
                if connected or stopping.is_set() or _broker_connected(choice):
                    return
                better = self._pick()
                if better is not choice:
                    log.warning("index source %s lost its broker; switching to %s", choice.source.name,
                                better.source.name)
                    self.switches += 1
                    own_stop.set()
                    choice.source.interrupt()

            try:
                choice.source.run(on_value, state, own_stop)
            finally:
                with self._lock:
                    self._running = self._running_stop = None
            if not own_stop.is_set():
                return  # the source ended by itself: the feed restarts this after its delay

    def interrupt(self) -> None:
        with self._lock:
            choice, own_stop = self._running, self._running_stop
        if own_stop is not None:
            own_stop.set()
        if choice is not None:
            choice.source.interrupt()

    def status(self) -> Mapping[str, Any]:
        shown = self._shown.source
        out = dict(shown.status())
        out.update(active=shown.name if self._running is not None else None, switches=self.switches,
                   candidates=[choice.source.name for choice in self.choices])
        return out


def _broker_connected(choice: SourceChoice) -> bool:
    try:
        return bool(choice.connected())
    except Exception:  # a broker that cannot say counts as not connected
        log.exception("index source %s: connection check failed", choice.source.name)
        return False


class IndexStreamFeed(Feed):
    realtime = True

    def __init__(self, source: IndexSource, symbols: Iterable[str] = ("SPX",), *, restart_delay: float = 5.0,
                 time_ns: Callable[[], int] = time.time_ns) -> None:
        super().__init__()
        self.source = source
        self.name = f"index:{source.name}"
        self.symbols = frozenset(canonical_symbol(s) for s in symbols)
        self._restart_delay = restart_delay
        self._time_ns = time_ns
        self._connected = False
        self._down_since_ns: int | None = None  # set when a connection that was up dropped
        self._last_detail = "not started"
        self.restarts = 0

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.source.run(self._on_value, self._on_state, self._stop)
            except Exception as exc:  # a source bug must not end SPX for the day: start it again
                log.exception("index source %s failed; restarting in %.0fs", self.source.name, self._restart_delay)
                self.state.error = f"{exc.__class__.__name__}: {exc}"
            if self._stop.wait(self._restart_delay):
                break
            self.restarts += 1
            log.warning("index source %s ended while the feed runs; restarted", self.source.name)

    def _on_stop(self) -> None:
        self.source.interrupt()

    # -- source callbacks (the source's thread) ---------------------------------------------
    def _on_value(self, symbol: str, value: float, ts_ns: int) -> None:
        sym = canonical_symbol(symbol)
        if sym not in self.symbols:
            self.state.counters.skipped_unknown_symbol += 1
            return
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            self.state.counters.skipped_malformed += 1
            return
        self._emit(Trade(sym, int(ts_ns), float(CATALOG[sym].round_price(value)), 0))

    def _on_state(self, connected: bool, detail: str) -> None:
        self._last_detail = detail
        symbols = tuple(sorted(self.symbols))
        if connected and not self._connected:
            self.state.state, self.state.error = "running", None
            if self._down_since_ns is not None:
                # The outage's values are lost (an index has no history to backfill from): the
                # bar the first new value falls in may lack some too.
                self._event(Gap(symbols, self._down_since_ns, self._time_ns(), backfilled=False))
                self._down_since_ns = None
        elif not connected:
            if self._connected:
                now = self._time_ns()
                self._down_since_ns = now
                self._event(Gap(symbols, now, now, backfilled=False))  # the bar under way misses the rest
            self.state.state, self.state.error = "reconnecting", detail
        self._connected = connected

    def status(self) -> dict[str, Any]:
        out = super().status()
        out.update(connected=self._connected, detail=self._last_detail, restarts=self.restarts,
                   source=dict(self.source.status()))
        return out


class NoIndexFeed(Feed):
    """SPX in live mode without a streaming broker: no trades at all (never made-up ones)."""

    name = "no-index-source"
    realtime = True

    def __init__(self, why: str) -> None:
        super().__init__()
        self.why = why

    def _run(self) -> None:
        self.state.state, self.state.error = "unavailable", self.why
        self._stop.wait()


NO_SPX_SOURCE = ("no broker streams $SPX (Databento carries no index): configure and log in to Schwab "
                 "(SCHWAB_API_KEY, SCHWAB_APP_SECRET, SCHWAB_ACCOUNT_ID) or Tastytrade (TASTYTRADE_CLIENT_ID, "
                 "TASTYTRADE_CLIENT_SECRET, TASTYTRADE_ACCOUNT_ID), whose streamers supply it")


def index_feed_for(settings: Settings, source: IndexSource | None) -> Feed | None:
    """The feed SPX comes from next to Databento: the broker stream when there is one; in live
    mode without one, `NoIndexFeed` (never the simulator); None (build_feed's default: the
    simulated walk) in paper mode, or when the data is simulated or replayed anyway."""
    if settings.market_data_source is not MarketDataSource.DATABENTO:
        return None
    if source is not None:
        return IndexStreamFeed(source, ("SPX",))
    return NoIndexFeed(NO_SPX_SOURCE) if settings.is_live else None
