"""Write-behind for the strategy threads' saved state (one Redis pipeline for many threads).

Every strategy thread saves its state after every bar. Done inline, that is one Redis round trip
per thread per bar, and at a bar close 30 threads make theirs at the same moment, each giving up
and re-taking the GIL around it while the threads that must send orders wait. Instead a thread
hands its document to this writer (a dict assignment) and goes back to waiting; one writer thread
sends whatever is pending in one MSET once no document has arrived for QUIET_SECONDS (at most
LINGER_SECONDS after the first one of the batch). That keeps the write out of the bar-close burst:
the threads of one minute hand in their documents within a few milliseconds of each other, and the
writer makes one write after the last of them instead of several in the middle of them.

Why that is safe: the saved state is a resume point, and acting on a bar is idempotent (the
order manager keys every intent by strategy, symbol, broker and bar time). If the process dies
before a document reached Redis, the restarted thread resumes from the previous one, reads that bar
again and its intent is recognised as already sent: nothing is ordered twice, the strategy ends
in the same state.

Guarantees
- Per key, the newest document wins; documents of one key are written in the order given.
- `get(key)` sees a pending document before Redis does (a restart inside the process resumes
  from the newest state).
- `flush(timeout)` cuts the linger short and returns once everything handed in before the call is
  in Redis (stop and shutdown call it, so a stopped thread's state is durable when stop returns).
- A Redis error keeps the batch (newer documents given meanwhile win) and retries every second.
"""
from __future__ import annotations

import logging
import threading
import time

import redis

from store.redis_store import Store

log = logging.getLogger("engine")

RETRY_SECONDS = 1.0
QUIET_SECONDS = 0.01  # no new document for this long: the burst is over, write
LINGER_SECONDS = 0.1  # a steady stream of documents (tick bars) is still written this often


class StateWriter:
    def __init__(self, store: Store, *, linger_s: float = LINGER_SECONDS, quiet_s: float = QUIET_SECONDS) -> None:
        self._r = store.redis
        self._linger_s = linger_s
        self._quiet_s = min(quiet_s, linger_s)
        self._urgent = False  # a flush is waiting: write without lingering
        self._idle = False  # the writer waits for a first document (only then does a put wake it)
        self._pending: dict[str, str] = {}
        self._cond = threading.Condition()
        self._write_lock = threading.Lock()  # one batch in flight at a time: a key's documents stay in order
        self._generation = 0  # documents handed in so far
        self._written = 0  # generation known to be in Redis
        self._stop = False
        self._thread: threading.Thread | None = None
        self.errors = 0

    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop = False
            self._thread = threading.Thread(target=self._run, name="engine-state-writer", daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self.flush(timeout)
        with self._cond:
            self._stop = True
            self._cond.notify_all()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    @property
    def alive(self) -> bool:
        return bool(self._thread is not None and self._thread.is_alive())

    def put(self, key: str, document: str) -> None:
        with self._cond:
            self._pending[key] = document
            self._generation += 1
            if self._idle:  # while lingering the writer wakes on its own: no wake-up per document
                self._cond.notify_all()
        if not self.alive:  # not started (or died): never lose a save, write it inline
            self._write_pending()

    def get(self, key: str) -> str | None:
        with self._cond:
            pending = self._pending.get(key)
        return pending if pending is not None else self._r.get(key)

    def flush(self, timeout: float = 5.0) -> bool:
        """True once everything put before this call is in Redis."""
        deadline = time.monotonic() + timeout
        with self._cond:
            target = self._generation
            self._urgent = True
            self._cond.notify_all()
            while self._written < target:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or not self.alive:
                    break
                self._cond.wait(remaining)
            done = self._written >= target
        if not done:
            done = self._write_pending()
        return done

    def _run(self) -> None:
        while True:
            with self._cond:
                self._idle = True
                while not self._pending and not self._stop:
                    self._cond.wait()
                self._idle = False
                if self._stop and not self._pending:
                    return
                deadline = time.monotonic() + self._linger_s
                while not self._stop and not self._urgent:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        break
                    seen = self._generation
                    self._cond.wait(min(self._quiet_s, remaining))
                    if self._generation == seen and not self._urgent:
                        break  # nothing new for QUIET_SECONDS
                self._urgent = False
            if not self._write_pending():
                with self._cond:
                    self._cond.wait(RETRY_SECONDS)

    def _write_pending(self) -> bool:
        with self._write_lock:
            with self._cond:
                batch, self._pending = self._pending, {}
                generation = self._generation
            if batch:
                try:
                    self._r.mset(batch)
                except redis.RedisError as exc:
                    self.errors += 1
                    log.warning("saving strategy state failed (%s); retrying", type(exc).__name__)
                    with self._cond:
                        self._pending = {**batch, **self._pending}  # newer documents given meanwhile win
                    return False
            with self._cond:
                self._written = max(self._written, generation)
                self._cond.notify_all()
            return True


__all__ = ["StateWriter"]
