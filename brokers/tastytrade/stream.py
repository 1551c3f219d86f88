"""Index values (SPX) streamed from Tastytrade through the tastytrade SDK's `DXLinkStreamer`.

Why a stream and not quotes: the REST market data (GET /market-data/by-type) answers one snapshot
per request, and a poll fast enough to build bars from would spend the API's request budget that
orders and reconciliation share. DXLink (dxFeed's websocket protocol) pushes every change of SPX
over one socket at no request cost.

The protocol, as tastytrade 13.2.3 implements it (tastytrade/streamer.py, `DXLinkStreamer`):
- entering the streamer: GET /api-quote-tokens through the session (its `token` and `dxlink-url`;
  the token lasts 24 hours, developer.tastytrade.com/docs/concepts/streaming), a websocket opened
  by an httpx2 client built from the session's client kwargs, then `_reader`: SETUP (keepalive
  timeout 60 s), AUTH with the token on AUTH_STATE UNAUTHORIZED, ready on AUTH_STATE AUTHORIZED;
  `_heartbeat` sends KEEPALIVE every 30 s;
- `subscribe(Trade, ["SPX"])`: CHANNEL_REQUEST (service FEED, contract AUTO), CHANNEL_OPENED awaited
  for up to 10 s, FEED_SETUP (COMPACT, the Trade model's fields), FEED_SUBSCRIPTION;
- FEED_DATA in COMPACT form becomes `Trade` models, read with `listen(Trade)`; an event the model
  refuses (a NaN price) is skipped by the SDK; an ERROR message raises TastytradeError; a closed
  socket raises out of the `async with` (as an ExceptionGroup, from anyio's task group).

Which event carries the index: dxFeed publishes the value of SPX as Trade events (`price`, its
time in `time` ms plus `timeNanoPart`). Quote events for SPX were missing for a long time and are,
where they exist, not the index value (tastyware/tastytrade issues #175 and #307,
tastytrade/tastytrade-api-js issue #48), so quotes are not used, not even as a fallback.

`TastytradeIndexStream.run` implements `market_data.index_feed.IndexSource` (structurally: brokers
do not import market_data). The stream runs on the Tastytrade adapter's own event loop with the
adapter's session (`TastytradeAdapter.start_on_session`: one login, and the session's httpx2 client
is bound to that loop); `run` blocks on the calling thread (the feed's) reading what the stream
hands over through a queue, so the feed's callbacks never run on the adapter's loop and cannot
hold up its orders. It:
- reconnects after any failure (not logged in, quote token refused, socket closed, a DXLink ERROR)
  with exponential backoff (1 s doubling to 60 s, jittered), reset only after a session stayed up
  `stable_seconds`, so a connection that keeps dropping asks for at most one quote token per step;
- treats `silence_seconds` without any frame as a dead connection that TCP has not noticed: the
  server must send something (KEEPALIVE at least) within the 60 s keepalive timeout the SDK sets
  (DXLink specification, "Connection maintenance"), so 90 s of nothing means it is gone;
- renews the session every `renew_after_seconds` (20 h), before the 24-hour quote token lapses:
  the stream is down for a moment then (a Gap), rather than silently unauthorised later;
- gives `connect_timeout` for the quote token, the socket and the authorisation together (the
  SDK itself waits for AUTHORIZED without a limit).
Nothing here polls: the loop awaits the socket under a cancel scope whose deadline every frame
pushes out; `run` blocks on its queue or the backoff wait; `interrupt()` cancels the stream.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import queue
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import anyio
from tastytrade import DXLinkStreamer
from tastytrade.dxfeed import Trade
from tastytrade.session import Session

from brokers.errors import BrokerError
from brokers.retry import ReconnectBackoff

log = logging.getLogger(__name__)

# Catalog symbol -> dxFeed symbol. dxFeed names the S&P 500 index plainly "SPX".
DEFAULT_SYMBOLS: Mapping[str, str] = {"SPX": "SPX"}

ValueCallback = Callable[[str, float, int], None]
StateCallback = Callable[[bool, str], None]
StreamCoroutine = Callable[[Session], Coroutine[Any, Any, None]]
# TastytradeAdapter.start_on_session: starts the coroutine on the adapter's loop with its session.
SessionStarter = Callable[[StreamCoroutine], "concurrent.futures.Future[None]"]


@dataclass(frozen=True, slots=True)
class IndexValue:
    symbol: str  # catalog symbol
    value: float
    ts_ns: int  # dxFeed's time of the value; the time it was received when dxFeed sent none
    timed_on_receipt: bool = False


def trade_value(trade: Trade, venue_to_catalog: Mapping[str, str], received_ns: int) -> IndexValue | None:
    """One SDK Trade event -> the index value it carries, or None (not ours, no usable price)."""
    symbol = venue_to_catalog.get(trade.event_symbol)
    price = trade.price
    if symbol is None or not isinstance(price, Decimal) or not price.is_finite() or price <= 0:
        return None
    if trade.time > 0:
        nanos = trade.time_nano_part if 0 <= trade.time_nano_part < 1_000_000 else 0
        return IndexValue(symbol, float(price), trade.time * 1_000_000 + nanos)
    return IndexValue(symbol, float(price), received_ns, timed_on_receipt=True)


@dataclass
class StreamStatus:
    connected: bool = False
    sessions: int = 0  # successful authorisations + subscriptions
    reconnects: int = 0  # sessions after the first
    values: int = 0
    values_timed_on_receipt: int = 0  # values dxFeed sent without a time
    last_value: float | None = None
    last_value_ts_ns: int | None = None
    last_frame_wall: float | None = None
    last_error: str | None = None  # why it is down now (None while connected)
    last_drop: str | None = None  # why the last session ended (kept after a reconnect)
    next_attempt_in: float | None = None


# What the stream (adapter loop) hands to `run` (feed thread).
@dataclass(frozen=True, slots=True)
class _Subscribed:
    detail: str


@dataclass(frozen=True, slots=True)
class _Ended:
    why: str
    planned: bool = False  # the scheduled renewal: reconnect at once, no backoff


_FUTURE_DONE = None  # the adapter loop's future finished (or was cancelled)
_Item = IndexValue | _Subscribed | _Ended | None


class TastytradeIndexStream:
    name = "tastytrade"

    def __init__(self, start_on_session: SessionStarter, *, symbols: Mapping[str, str] = DEFAULT_SYMBOLS,
                 silence_seconds: float = 90.0, stable_seconds: float = 60.0, connect_timeout: float = 20.0,
                 renew_after_seconds: float = 20 * 3600.0, cleanup_timeout: float = 10.0,
                 backoff: ReconnectBackoff | None = None, time_ns: Callable[[], int] = time.time_ns) -> None:
        """`start_on_session`: the Tastytrade adapter's `start_on_session`, called at every
        connection, so a re-login (a new session) in the adapter is picked up."""
        self._start = start_on_session
        self._venues = dict(symbols)
        self._to_catalog = {venue: sym for sym, venue in self._venues.items()}
        self._silence = silence_seconds
        self._stable = stable_seconds
        self._connect_timeout = connect_timeout
        self._renew_after = renew_after_seconds
        self._cleanup_timeout = cleanup_timeout
        self._backoff = backoff or ReconnectBackoff()
        self._time_ns = time_ns
        self._lock = threading.Lock()
        self._future: concurrent.futures.Future[None] | None = None
        self._last_ts: dict[str, tuple[int, float]] = {}  # symbol -> (ts_ns, value) last delivered
        self._status = StreamStatus()

    # -- IndexSource ---------------------------------------------------------------------------
    def run(self, on_value: ValueCallback, on_state: StateCallback, stopping: threading.Event) -> None:
        failures = 0
        status = self._status
        while not stopping.is_set():
            started = time.monotonic()
            ended = self._session(on_value, on_state, stopping)
            status.connected = False
            if stopping.is_set():
                break
            if ended.planned:
                failures, delay = 0, 0.0
            else:
                failures = 1 if time.monotonic() - started >= self._stable else failures + 1
                delay = self._backoff.delay(failures)
            status.last_error = status.last_drop = ended.why
            status.next_attempt_in = delay
            log.warning("Tastytrade index stream down (%s); reconnecting in %.1fs", ended.why, delay)
            on_state(False, ended.why)
            if delay and stopping.wait(delay):  # stop() sets `stopping`: the wait ends at once
                break
            status.next_attempt_in = None

    def interrupt(self) -> None:
        with self._lock:
            future = self._future
        if future is not None:
            future.cancel()  # cancels the stream's task on the adapter's loop

    def status(self) -> dict[str, Any]:
        s = self._status
        return {"broker": "tastytrade", "symbols": dict(self._venues), "event": "Trade", "connected": s.connected,
                "sessions": s.sessions, "reconnects": s.reconnects, "values": s.values,
                "values_timed_on_receipt": s.values_timed_on_receipt, "last_value": s.last_value,
                "last_value_ts_ns": s.last_value_ts_ns, "last_frame_wall": s.last_frame_wall,
                "last_error": s.last_error, "last_drop": s.last_drop, "next_attempt_in": s.next_attempt_in}

    # -- one session, seen from the feed thread ------------------------------------------------
    def _session(self, on_value: ValueCallback, on_state: StateCallback, stopping: threading.Event) -> _Ended:
        """Start one stream on the adapter's loop and pass on what it hands over until it ends."""
        inbox: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        began = threading.Event()

        async def stream(session: Session) -> None:
            began.set()
            await self._stream(session, inbox)

        try:
            future = self._start(stream)
        except BrokerError as exc:  # not logged in, token refused: the adapter's own words
            return _Ended(exc.message)
        except Exception as exc:  # the adapter's loop could not take it
            return _Ended(_describe(exc))
        future.add_done_callback(lambda _done: inbox.put(_FUTURE_DONE))
        with self._lock:
            self._future = future
        if stopping.is_set():  # stop() came before the future was known to interrupt()
            future.cancel()
        try:
            future_done = False
            while True:
                try:
                    # Once the future is done (a cancel marks it so at once), the task only has
                    # its cleanup left: wait for its last word, but not forever.
                    item = inbox.get(timeout=self._cleanup_timeout if future_done else None)
                except queue.Empty:
                    return _Ended(f"the stream did not finish within {self._cleanup_timeout:g}s of ending")
                if item is _FUTURE_DONE:
                    if not began.is_set():
                        return _Ended("stopped before the stream started")
                    future_done = True
                elif isinstance(item, _Ended):
                    return item
                elif isinstance(item, _Subscribed):
                    status = self._status
                    status.reconnects += 1 if status.sessions else 0
                    status.sessions += 1
                    status.connected, status.last_error = True, None
                    log.info("Tastytrade index stream: %s", item.detail)
                    on_state(True, item.detail)
                elif isinstance(item, IndexValue):
                    self._deliver(item, on_value)
        finally:
            with self._lock:
                self._future = None

    def _deliver(self, item: IndexValue, on_value: ValueCallback) -> None:
        last = self._last_ts.get(item.symbol)
        ts = item.ts_ns
        if last is not None:
            if (ts, item.value) == last:
                return  # the snapshot a new subscription repeats
            ts = max(ts, last[0])  # never backwards: a late value would miss its bar
        self._last_ts[item.symbol] = (ts, item.value)
        status = self._status
        status.values += 1
        status.values_timed_on_receipt += 1 if item.timed_on_receipt else 0
        status.last_value, status.last_value_ts_ns = item.value, ts
        on_value(item.symbol, item.value, ts)

    # -- one session, on the adapter's loop ----------------------------------------------------
    async def _stream(self, session: Session, inbox: queue.SimpleQueue[_Item]) -> None:
        """Quote token, socket, authorisation and subscription, then Trade events until something
        fails, the connection goes silent, the renewal is due or the task is cancelled. Always
        ends by putting an `_Ended` in the inbox."""
        ended = _Ended("stream ended")
        subscribed = False
        renew_at = math.inf
        try:
            # One cancel scope watches the whole session: first the connect timeout, then the
            # silence timeout, pushed out by every frame (and never past the renewal).
            with anyio.CancelScope(deadline=anyio.current_time() + self._connect_timeout) as watchdog:
                async with DXLinkStreamer(session) as streamer:
                    renew_at = anyio.current_time() + self._renew_after
                    self._watch_frames(streamer, watchdog, renew_at)
                    symbols = list(self._venues.values())
                    await streamer.subscribe(Trade, symbols)
                    watchdog.deadline = min(anyio.current_time() + self._silence, renew_at)
                    subscribed = True
                    inbox.put(_Subscribed(f"streaming {', '.join(symbols)} (dxFeed Trade) from Tastytrade"))
                    async for trade in streamer.listen(Trade):
                        value = trade_value(trade, self._to_catalog, self._time_ns())
                        if value is not None:
                            inbox.put(value)
            if watchdog.cancelled_caught:
                if not subscribed:
                    ended = _Ended(f"not streaming within {self._connect_timeout:g}s (quote token, socket, "
                                   f"authorisation and subscription)")
                elif anyio.current_time() >= renew_at:
                    ended = _Ended("renewing the DXLink session before its 24-hour quote token lapses", planned=True)
                else:
                    ended = _Ended(f"no frame from Tastytrade DXLink for {self._silence:g}s")
        except asyncio.CancelledError:
            ended = _Ended("stopped")
            raise
        except Exception as exc:  # socket closed, ERROR message, quote token refused, ... (often a group)
            ended = _Ended(_describe(exc))
        finally:
            inbox.put(ended)

    def _watch_frames(self, streamer: DXLinkStreamer, watchdog: anyio.CancelScope, renew_at: float) -> None:
        """Push the silence deadline out on every frame the SDK's reader takes from the socket
        (data, KEEPALIVE, anything): the reader swallows all but the data, so its receive is
        wrapped. `_websocket` is the SDK's httpx2 websocket session; the reader looks its
        `receive_json` up anew for every frame."""
        socket = streamer._websocket
        receive = socket.receive_json
        status = self._status

        async def receive_and_note(*args: Any, **kwargs: Any) -> Any:
            message = await receive(*args, **kwargs)
            watchdog.deadline = min(anyio.current_time() + self._silence, renew_at)
            status.last_frame_wall = time.time()
            return message

        socket.receive_json = receive_and_note  # type: ignore[method-assign]


def _describe(exc: BaseException) -> str:
    """A failure in a few words; the first leaf of an exception group (anyio wraps them)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return f"{exc.__class__.__name__}: {text}" if text else exc.__class__.__name__
