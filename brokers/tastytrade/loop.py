"""The Tastytrade adapter's one asyncio event loop, on one daemon thread.

The tastytrade SDK is async-only and the adapter is synchronous: engine threads submit coroutines
here and wait for them with a timeout.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")


class LoopThread:
    """One asyncio loop on one daemon thread; the synchronous facade submits coroutines to it.

    The SDK's httpx2 client is bound to the loop it first ran on, so every SDK call of one adapter
    must go through the same loop: hence exactly one thread, owned by the adapter.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def thread(self) -> threading.Thread | None:
        return self._thread

    def start(self) -> bool:
        """Start the loop if it is not running. Returns True when a new loop was started."""
        with self._lock:
            if self.alive:
                return False
            loop = asyncio.new_event_loop()
            ready = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(ready.set)
                try:
                    loop.run_forever()
                finally:
                    # Cancel whatever is still pending so nothing runs on a half-dead loop.
                    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
                    for task in pending:
                        task.cancel()
                    if pending:
                        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
                    loop.close()

            thread = threading.Thread(target=run, name=self._name, daemon=True)
            thread.start()
            ready.wait(timeout=5)
            self._loop, self._thread = loop, thread
            return True

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        loop = self._loop
        if loop is None or not self.alive:
            coro.close()
            raise RuntimeError("tastytrade event loop is not running")
        return asyncio.run_coroutine_threadsafe(coro, loop)

    def stop(self, timeout: float = 5.0) -> None:
        with self._lock:
            loop, thread = self._loop, self._thread
            self._loop = self._thread = None
        if loop is None or thread is None:
            return
        if thread.is_alive():
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout)
            if thread.is_alive():
                log.error("tastytrade event-loop thread did not stop within %.1fs", timeout)
