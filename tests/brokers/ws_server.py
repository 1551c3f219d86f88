"""A websocket server on 127.0.0.1 (a free port) running on its own event-loop thread: the
transport under the fakes of the brokers' streams (Schwab's streamer, Tastytrade's DXLink)."""
from __future__ import annotations

import asyncio
import threading
from typing import Any, Awaitable, Callable, Coroutine

from websockets.asyncio.server import Server, ServerConnection, serve

Handler = Callable[[ServerConnection], Awaitable[None]]


class LocalWebSocketServer:
    def __init__(self, handler: Handler, path: str, name: str) -> None:
        self._handler, self._path, self._name = handler, path, name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    def start(self) -> str:
        """Serve; returns the URL (ws://127.0.0.1:<port><path>)."""
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def boot() -> None:
                self._server = await serve(self._handler, "127.0.0.1", 0)
                port = self._server.sockets[0].getsockname()[1]
                self.url = f"ws://127.0.0.1:{port}{self._path}"
                ready.set()

            loop.run_until_complete(boot())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name=self._name, daemon=True)
        self._thread.start()
        assert ready.wait(10), f"{self._name} did not start"
        return self.url

    def run(self, coroutine: Coroutine[Any, Any, Any]) -> Any:
        """Run `coroutine` on the server's loop (from a test's thread) and return its result."""
        assert self._loop is not None, "not started"
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    def close(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        self.run(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)
