"""Index values (`$SPX`) streamed from Schwab through schwab-py's `StreamClient` (LEVELONE_EQUITIES).

Why a stream and not quotes: Schwab's REST market data is rate limited per app (120 requests a
minute), which the orders and reconciliation share; a poll fast enough to build bars from would
spend it all. The streamer pushes every change of `$SPX` over one websocket at no request cost.

The protocol, as schwab-py 1.5.1 implements it (schwab/streaming.py):
- `login()`: GET /trader/v1/userPreference through the logged-in REST client (its `streamerInfo`
  holds the socket URL, customer and correlation ids, channel and function id), opens the
  websocket, sends ADMIN LOGIN with the access token and waits for the response with code 0.
- `level_one_equity_subs(["$SPX"], fields=...)`: LEVELONE_EQUITIES SUBS, waits for its ack.
- `handle_message()`: reads one frame. `data` frames go to the handler with the numeric field keys
  relabelled (3 -> LAST_PRICE, 35 -> TRADE_TIME_MILLIS); an entry carries only the fields that
  changed. `notify` heartbeats are skipped; an unsolicited `response` raises UnexpectedResponse.

`SchwabIndexStream.run` implements `market_data.index_feed.IndexSource` (structurally: brokers do
not import market_data). It runs its own asyncio loop on the calling thread (the feed's), and:
- reconnects after any failure (login refused, not logged in yet, socket closed, a frame the SDK
  cannot parse) with exponential backoff (1 s doubling to 60 s, jittered). The backoff resets only
  after a session stayed up `stable_seconds`, so a connection that keeps dropping never makes
  more than one REST login call per backoff step;
- treats `silence_seconds` without any frame (data or heartbeat) as a dead connection that TCP has
  not noticed, and reconnects;
- drops values Schwab marks `delayed` (a login without real-time entitlement): they are not the
  market's price now, and the status says why no value arrives.
Nothing here polls: the loop awaits the socket, the silence timeout or the backoff sleep, and
`interrupt()` cancels whichever it is waiting on.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from schwab.client import Client
from schwab.streaming import StreamClient

from brokers.errors import BrokerError
from brokers.retry import ReconnectBackoff
from brokers.schwab import auth
from brokers.schwab.parsing import parse_level_one

log = logging.getLogger(__name__)
log.addFilter(auth.install())  # failure texts quote Schwab's answers; tokens never reach the log

# Catalog symbol -> Schwab's streamer key. Schwab prefixes indices with '$'.
DEFAULT_SYMBOLS: Mapping[str, str] = {"SPX": "$SPX"}
FIELDS = StreamClient.LevelOneEquityFields
SUBSCRIBED_FIELDS = (FIELDS.SYMBOL, FIELDS.LAST_PRICE, FIELDS.TRADE_TIME_MILLIS)

ValueCallback = Callable[[str, float, int], None]
StateCallback = Callable[[bool, str], None]
StreamFactory = Callable[[Client], StreamClient]


class StreamSilent(Exception):
    """No frame at all (not even a heartbeat) within the silence timeout."""


@dataclass
class StreamStatus:
    connected: bool = False
    sessions: int = 0  # successful logins + subscriptions
    reconnects: int = 0  # sessions after the first
    values: int = 0
    last_value: float | None = None
    last_value_ts_ns: int | None = None
    last_frame_wall: float | None = None
    last_error: str | None = None  # why it is down now (None while connected)
    last_drop: str | None = None  # why the last session ended (kept after a reconnect)
    delayed: tuple[str, ...] = ()
    next_attempt_in: float | None = None


class SchwabIndexStream:
    name = "schwab"

    def __init__(self, client: Callable[[], Client], *, symbols: Mapping[str, str] = DEFAULT_SYMBOLS,
                 silence_seconds: float = 60.0, stable_seconds: float = 60.0, timeout: float = 20.0,
                 backoff: ReconnectBackoff | None = None, stream_factory: StreamFactory | None = None,
                 websocket_connect_args: Mapping[str, Any] | None = None) -> None:
        """`client`: the logged-in schwab-py REST client (SchwabAdapter.streaming_client); called at
        every login, so a re-login or token refresh in the adapter is picked up."""
        self._client = client
        self._venues = dict(symbols)
        self._to_catalog = {venue: sym for sym, venue in self._venues.items()}
        self._silence = silence_seconds
        self._stable = stable_seconds
        self._timeout = timeout
        self._backoff = backoff or ReconnectBackoff()
        self._factory: StreamFactory = stream_factory or (lambda c: StreamClient(c, enforce_enums=True))
        self._connect_args = dict(websocket_connect_args or {})
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._last_ts: dict[str, tuple[int, float]] = {}  # symbol -> (ts_ns, value) last delivered
        self._status = StreamStatus()

    # -- IndexSource ---------------------------------------------------------------------------
    def run(self, on_value: ValueCallback, on_state: StateCallback, stopping: threading.Event) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)  # this thread's loop, for anything that asks for the current one
        try:
            task = loop.create_task(self._main(on_value, on_state, stopping))
            with self._lock:
                self._loop, self._task = loop, task
                if stopping.is_set():  # stop() came before this thread got here
                    task.cancel()
            try:
                loop.run_until_complete(task)
            except asyncio.CancelledError:
                pass
        finally:
            with self._lock:
                self._loop = self._task = None
            self._status.connected = False
            # The websocket library's own tasks (keepalive, closing handshake) end with the loop.
            leftover = asyncio.all_tasks(loop)
            for task_left in leftover:
                task_left.cancel()
            if leftover:
                loop.run_until_complete(asyncio.gather(*leftover, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()

    def interrupt(self) -> None:
        with self._lock:
            if self._loop is not None and self._task is not None and not self._loop.is_closed():
                self._loop.call_soon_threadsafe(self._task.cancel)

    def status(self) -> dict[str, Any]:
        s = self._status
        return {"broker": "schwab", "symbols": dict(self._venues), "connected": s.connected, "sessions": s.sessions,
                "reconnects": s.reconnects, "values": s.values, "last_value": s.last_value,
                "last_value_ts_ns": s.last_value_ts_ns, "last_frame_wall": s.last_frame_wall,
                "last_error": s.last_error, "last_drop": s.last_drop, "delayed": list(s.delayed),
                "next_attempt_in": s.next_attempt_in}

    # -- the loop ------------------------------------------------------------------------------
    async def _main(self, on_value: ValueCallback, on_state: StateCallback, stopping: threading.Event) -> None:
        failures = 0
        while not stopping.is_set():
            started = time.monotonic()
            try:
                await self._session(on_value, on_state, stopping)
                why = "stream ended"
            except StreamSilent as exc:
                why = str(exc)
            except BrokerError as exc:  # not logged in, token refused: the adapter's own words
                why = exc.message
            except Exception as exc:  # socket closed, login refused, unparsable frame, a timeout ...
                why = f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__
            self._status.connected = False
            if stopping.is_set():
                break
            failures = 1 if time.monotonic() - started >= self._stable else failures + 1
            delay = self._backoff.delay(failures)
            self._status.last_error = self._status.last_drop = why
            self._status.next_attempt_in = delay
            log.warning("Schwab index stream down (%s); reconnecting in %.1fs", why, delay)
            on_state(False, why)
            await asyncio.sleep(delay)  # interrupt() cancels it
            self._status.next_attempt_in = None

    async def _session(self, on_value: ValueCallback, on_state: StateCallback, stopping: threading.Event) -> None:
        """One login + subscription, then frames until something fails (raises), the task is
        cancelled or `stopping` is set. The socket is closed on the way out in every case.

        Timeouts use `asyncio.timeout`, not `asyncio.wait_for`: Python 3.11's wait_for returns the
        result and drops the cancel when `interrupt()` lands just as the awaited step completes
        (a subscription ack, a frame), which left the loop waiting `silence_seconds` for a frame
        after stop. `stopping` is also checked after every step for the same reason."""
        stream = self._factory(self._client())
        try:
            async with asyncio.timeout(self._timeout):
                await stream.login(websocket_connect_args=dict(self._connect_args))
            if stopping.is_set():
                return
            stream.add_level_one_equity_handler(lambda message: self._on_message(message, on_value))
            async with asyncio.timeout(self._timeout):
                await stream.level_one_equity_subs(list(self._venues.values()), fields=list(SUBSCRIBED_FIELDS))
            if stopping.is_set():
                return
            status = self._status
            status.reconnects += 1 if status.sessions else 0
            status.sessions += 1
            status.connected, status.last_error = True, None
            log.info("Schwab index stream subscribed to %s", ", ".join(self._venues.values()))
            on_state(True, f"streaming {', '.join(self._venues.values())} from Schwab")
            while not stopping.is_set():
                try:
                    async with asyncio.timeout(self._silence):
                        await stream.handle_message()
                except TimeoutError:
                    raise StreamSilent(f"no frame from Schwab for {self._silence:g}s") from None
                status.last_frame_wall = time.time()
        finally:
            await _close(stream)

    def _on_message(self, message: Mapping[str, Any], on_value: ValueCallback) -> None:
        values, flags = parse_level_one(message, self._to_catalog)
        if flags:
            now_delayed = {v for v in self._status.delayed if flags.get(v) is not False}
            now_delayed |= {v for v, is_delayed in flags.items() if is_delayed}
            if now_delayed - set(self._status.delayed):
                log.error("Schwab sends %s delayed (no real-time entitlement on this login): its values are dropped",
                          ", ".join(sorted(now_delayed)))
            self._status.delayed = tuple(sorted(now_delayed))
        for item in values:
            if self._venues[item.symbol] in self._status.delayed:
                continue
            last = self._last_ts.get(item.symbol)
            ts = item.ts_ns
            if last is not None:
                if (ts, item.value) == last:
                    continue  # the snapshot a re-subscription repeats
                ts = max(ts, last[0])  # never backwards: a late value would miss its bar
            self._last_ts[item.symbol] = (ts, item.value)
            self._status.values += 1
            self._status.last_value, self._status.last_value_ts_ns = item.value, ts
            on_value(item.symbol, item.value, ts)


async def _close(stream: StreamClient) -> None:
    """Close the websocket (Schwab frees its one streamer connection per login). schwab-py has no
    public close; its socket is the websockets connection `login()` opened."""
    socket = getattr(stream, "_socket", None)
    if socket is None:
        return
    try:
        async with asyncio.timeout(2.0):
            await socket.close()
    except Exception:  # already dead: nothing left to free
        pass
