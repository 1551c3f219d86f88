"""One blocking XREAD for every strategy thread: the engine's reader of the Redis bar and trade streams.

Why a hub: when a minute closes, every ticker's bar arrives at once. With each of 30 threads
blocked in its own XREAD, all 30 wake together and each parses its own reply and sends its next
XREAD: 60 Redis round trips and 30 reply parses competing for one GIL before the last thread even
sees its bar, and the threads that must send orders wait behind them. The hub reads all subscribed
streams in one XREAD, parses the reply once and hands each thread its entries through an
in-process queue, so a thread's wake-up costs a queue get and no Redis round trip.

Contract
- `subscribe(name, {stream_key: last_id})` returns a `Subscription` whose `inbox` (a
  `queue.SimpleQueue`) receives lists of `(stream_key, [(entry_id, fields), ...])`, in stream
  order, each entry exactly once, only entries after the subscription's cursor for that key.
  Ids must be concrete ("0-0" or a real id), never "$": a subscriber decides where it starts.
- `watch(sub, key, last_id)` / `unwatch(sub, key)` change a subscription's streams (a strategy
  watches its trade stream only while it holds a position); `unsubscribe(sub)` ends it. Each wakes
  the hub's XREAD through the hub's own wake stream, so changes apply at once (no polling).
- Several subscriptions may read one stream from different cursors (a restarted ticker catching up
  while another is current): the hub reads from the oldest cursor and filters per subscription.
- Subscriptions hold only cursors, never state: a strategy thread that crashes and restarts
  subscribes again from its saved bar id with a fresh inbox, so nothing is lost or doubled.

Hot work first: the hub counts the messages it delivered that their thread has not yet acted on.
A strategy thread calls `done(sub)` once it has made its decisions and sent its orders for a
message, and `wait_quiet(sub, timeout)` before its bookkeeping (status, ticker-log write, saved
state). When a minute closes, 30 threads wake at once on 2 cores and one GIL; if each wrote its log
and state while others were still sending orders, every order would wait behind all of that. With
the count, bookkeeping starts once every thread woken by the close has sent its orders (or its own
next message arrives, or the timeout passes: a slow broker call never holds bookkeeping for long).

Failure: Redis errors are logged and retried (1 s); any other exception is logged and the loop goes
on. `alive` and `errors` are exposed for health checks; `start()` restarts a dead thread.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import redis

from market_data.redis_buffer import parse_id
from store.redis_store import Store

log = logging.getLogger("engine")

StreamEntries = list[tuple[str, dict[str, str]]]
InboxMessage = list[tuple[str, StreamEntries]]

BLOCK_MS = 30_000  # an idle hub wakes this often only to re-check its stop flag; changes wake it at once
READ_COUNT = 500  # entries per stream per read; a catch-up simply takes several reads
RETRY_SECONDS = 1.0


@dataclass(eq=False)
class Subscription:
    name: str
    inbox: "queue.SimpleQueue[Any]"
    cursors: dict[str, str] = field(default_factory=dict)  # stream key -> last id delivered
    outstanding: int = 0  # messages delivered, not yet reported done


class StreamHub:
    def __init__(self, store: Store, *, block_ms: int = BLOCK_MS) -> None:
        self._store = store
        self._r = store.redis
        self._block_ms = store.safe_block_ms(block_ms)
        # Per hub instance, so two engines on one Redis (tests, the bench) never wake each other.
        self._wake_key = store.key("engine", "hub", uuid.uuid4().hex[:12])
        self._subs: list[Subscription] = []
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)  # a delivery or a `done`
        self._outstanding = 0  # sum of the subscriptions' outstanding messages
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Start the reader thread (again, if it died). Idempotent."""
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            # Taken here, before the thread runs: any wake-up sent after start() (stop's included)
            # is then newer than the id the first XREAD waits after, so none can be missed.
            try:
                latest = self._r.xrevrange(self._wake_key, count=1)
                wake_id = str(latest[0][0]) if latest else "0-0"
            except redis.RedisError:
                wake_id = "0-0"  # the first read then returns at once: harmless
            self._thread = threading.Thread(target=self._run, args=(wake_id,), name="engine-stream-hub", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
        try:
            self._r.delete(self._wake_key)
        except redis.RedisError:
            pass

    @property
    def alive(self) -> bool:
        return bool(self._thread is not None and self._thread.is_alive())

    # --- subscriptions ----------------------------------------------------------------------
    def subscribe(self, name: str, streams: dict[str, str]) -> Subscription:
        sub = Subscription(name, queue.SimpleQueue(), {k: _concrete(v) for k, v in streams.items()})
        with self._lock:
            self._subs.append(sub)
        self._wake()
        return sub

    def watch(self, sub: Subscription, key: str, last_id: str) -> None:
        with self._lock:
            sub.cursors[key] = _concrete(last_id)
        self._wake()

    def unwatch(self, sub: Subscription, key: str) -> None:
        with self._lock:
            removed = sub.cursors.pop(key, None)
        if removed is not None:
            self._wake()

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs = [s for s in self._subs if s is not sub]
            self._release(sub, sub.outstanding)
        self._wake()

    # --- hot work first ---------------------------------------------------------------------
    def done(self, sub: Subscription) -> None:
        """The subscriber has acted on one delivered message (its decisions and orders)."""
        with self._lock:
            self._release(sub, 1)

    def wait_quiet(self, sub: Subscription, timeout: float) -> str:
        """Wait until every delivered message has been acted on ("quiet"), a message for `sub`
        arrives ("input") or `timeout` passes ("timeout"). Returns which."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                if sub.outstanding > 0:
                    return "input"
                if self._outstanding <= 0:
                    return "quiet"
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return "timeout"
                self._changed.wait(remaining)

    def _release(self, sub: Subscription, n: int) -> None:
        n = min(n, sub.outstanding)
        if n <= 0:
            return
        sub.outstanding -= n
        self._outstanding -= n
        if self._outstanding <= 0:
            self._changed.notify_all()

    def _wake(self) -> None:
        try:
            self._r.xadd(self._wake_key, {"w": "1"}, maxlen=16, approximate=True)
        except redis.RedisError:
            pass  # the reader is retrying a broken connection anyway; it re-reads the cursors then

    # --- the reader -------------------------------------------------------------------------
    def _run(self, wake_id: str) -> None:
        while not self._stop.is_set():
            try:
                wake_id = self._read_once(wake_id)
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.errors += 1
                log.warning("stream hub: redis unavailable (%s); retrying in %.0fs", type(exc).__name__, RETRY_SECONDS)
                self._stop.wait(RETRY_SECONDS)
            except Exception:  # never let the engine's only reader die
                self.errors += 1
                log.exception("stream hub read failed; retrying")
                self._stop.wait(RETRY_SECONDS)

    def _read_once(self, wake_id: str) -> str:
        with self._lock:
            merged: dict[str, str] = {}
            for sub in self._subs:
                for key, cursor in sub.cursors.items():
                    current = merged.get(key)
                    if current is None or parse_id(cursor) < parse_id(current):
                        merged[key] = cursor
        streams = {self._wake_key: wake_id, **merged}
        response = self._r.xread(streams, block=self._block_ms, count=READ_COUNT)
        if not response:
            return wake_id
        if len(streams) > 1:
            # Redis < 7.2 answers a blocked multi-stream XREAD with the first stream written only.
            # What else is already there (the rest of one market-data batch) is read now, so the
            # bars that closed together are delivered together and `wait_quiet` counts them all.
            for key, entries in response:
                if entries:
                    streams[key] = entries[-1][0]
            response = [*response, *(self._r.xread(streams, count=READ_COUNT) or [])]
        by_key: dict[str, StreamEntries] = {}
        for key, entries in response:
            if key == self._wake_key:
                wake_id = entries[-1][0] if entries else wake_id
            elif entries:
                by_key.setdefault(key, []).extend(entries)
        if by_key:
            self._deliver(by_key)
        return wake_id

    def _deliver(self, by_key: dict[str, StreamEntries]) -> None:
        with self._lock:
            for sub in self._subs:
                message: InboxMessage = []
                for key, cursor in sub.cursors.items():
                    entries = by_key.get(key)
                    if not entries:
                        continue
                    after = parse_id(cursor)
                    if parse_id(entries[0][0]) <= after:  # read from an older cursor than ours
                        entries = [e for e in entries if parse_id(e[0]) > after]
                        if not entries:
                            continue
                    message.append((key, entries))
                    sub.cursors[key] = entries[-1][0]
                if message:
                    sub.outstanding += 1
                    self._outstanding += 1
                    sub.inbox.put(message)
            self._changed.notify_all()


def _concrete(stream_id: str) -> str:
    if stream_id in ("$", "", ">"):
        raise ValueError(f"a subscription needs a concrete stream id, not {stream_id!r}")
    parse_id(stream_id)  # raises on a malformed id
    return stream_id


__all__ = ["StreamHub", "Subscription", "InboxMessage"]
