"""A local websocket server that plays Schwab's streamer as schwab-py 1.5.1's StreamClient expects
it (schwab/streaming.py; frames as in schwab-py's own tests/streaming_test.py):

- the client sends `{"requests": [{service, requestid, command, SchwabClientCustomerId,
  SchwabClientCorrelId, parameters}]}`; ADMIN LOGIN carries `parameters.Authorization` (the access
  token), `SchwabClientChannel` and `SchwabClientFunctionId` from GET /trader/v1/userPreference;
- every request is answered `{"response": [{service, requestid, command, timestamp,
  content: {code, msg}}]}`; code 0 is success (`_await_response` raises on anything else);
- data frames: `{"data": [{service: "LEVELONE_EQUITIES", command: "SUBS", timestamp,
  content: [{key: "$SPX", delayed, assetMainType: "INDEX", "3": last price, "35": trade time}]}]}`
  with numeric field keys (the SDK relabels them) and only the fields that changed;
- heartbeats: `{"notify": [{"heartbeat": "<ms>"}]}`.

The real SDK connects to it over a real socket (`websockets.legacy.client.connect` on the
`streamerSocketUrl` of the preferences), so drops and silences are real ones.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve

CUSTOMER_ID = "c8f4d1e6a2b94f0e8d7c6b5a4f3e2d1c0b9a8f7e6d5c4b3a2f1e0d9c8b7a6f5e"
CORREL_ID = "9f1c2b3a-4d5e-6f70-8192-a3b4c5d6e7f8"
CHANNEL = "N9"
FUNCTION_ID = "APIAPP"
NOW_MS = 1764774000000  # 2025-12-03 15:00 UTC (10:00 New York, a regular SPX session)


def preferences(url: str) -> dict[str, Any]:
    """GET /trader/v1/userPreference as Schwab answers it (schwab-py tests/testdata/preferences.json)."""
    return {
        "accounts": [{"accountNumber": "87654321", "primaryAccount": True, "type": "BROKERAGE",
                      "nickName": "Individual", "displayAcctId": "...321", "autoPositionEffect": False,
                      "accountColor": "Green"}],
        "streamerInfo": [{"streamerSocketUrl": url, "schwabClientCustomerId": CUSTOMER_ID,
                          "schwabClientCorrelId": CORREL_ID, "schwabClientChannel": CHANNEL,
                          "schwabClientFunctionId": FUNCTION_ID}],
        "offers": [{"level2Permissions": True, "mktDataPermission": "NP"}],
    }


def spx_frame(price: float | None, trade_ms: int | None, *, delayed: bool | None = None, key: str = "$SPX",
              extra: dict[str, Any] | None = None, frame_ms: int = NOW_MS) -> dict[str, Any]:
    """One LEVELONE_EQUITIES data frame; `delayed` None leaves the flag out, as an update carrying
    only changed fields may."""
    entry: dict[str, Any] = {"key": key, "assetMainType": "INDEX", **(extra or {})}
    if delayed is not None:
        entry["delayed"] = delayed
    if price is not None:
        entry["3"] = price
    if trade_ms is not None:
        entry["35"] = trade_ms
    return {"data": [{"service": "LEVELONE_EQUITIES", "command": "SUBS", "timestamp": frame_ms, "content": [entry]}]}


@dataclass
class FakeStreamer:
    access_token: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    logins: int = 0
    subscriptions: int = 0
    heartbeat_seconds: float | None = None  # send heartbeats while idle (Schwab does)
    url: str = ""
    _loop: asyncio.AbstractEventLoop | None = None
    _server: Server | None = None
    _current: ServerConnection | None = None
    _thread: threading.Thread | None = None
    _changed: threading.Condition = field(default_factory=threading.Condition)

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "FakeStreamer":
        ready = threading.Event()

        def main() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop

            async def boot() -> None:
                self._server = await serve(self._handle, "127.0.0.1", 0)
                port = self._server.sockets[0].getsockname()[1]
                self.url = f"ws://127.0.0.1:{port}/ws"
                ready.set()

            loop.run_until_complete(boot())
            loop.run_forever()
            loop.close()

        self._thread = threading.Thread(target=main, name="fake-schwab-streamer", daemon=True)
        self._thread.start()
        assert ready.wait(10), "fake streamer did not start"
        return self

    def close(self) -> None:
        if self._loop is None:
            return

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        assert self._thread is not None
        self._thread.join(10)

    # -- the protocol ------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        self._current = ws
        beat = asyncio.ensure_future(self._heartbeats(ws)) if self.heartbeat_seconds else None
        try:
            async for raw in ws:
                for request in json.loads(raw)["requests"]:
                    self.requests.append(request)
                    await ws.send(json.dumps(self._answer(request)))
                    with self._changed:
                        self._changed.notify_all()
        except Exception:  # the client went away mid-frame: that is what drops look like
            pass
        finally:
            if beat is not None:
                beat.cancel()

    def _answer(self, request: dict[str, Any]) -> dict[str, Any]:
        service, command = request["service"], request["command"]
        code, msg = 0, f"{command} command succeeded"
        if (service, command) == ("ADMIN", "LOGIN"):
            if request["parameters"].get("Authorization") == self.access_token:
                self.logins += 1
                msg = "server=s0635dc6-1;status=PN"
            else:
                code, msg = 3, "Login Denied.: Invalid access token"
        elif command == "SUBS":
            self.subscriptions += 1
        return {"response": [{"service": service, "command": command, "requestid": request["requestid"],
                              "SchwabClientCorrelId": CORREL_ID, "timestamp": int(time.time() * 1000),
                              "content": {"code": code, "msg": msg}}]}

    async def _heartbeats(self, ws: ServerConnection) -> None:
        assert self.heartbeat_seconds is not None
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await ws.send(json.dumps({"notify": [{"heartbeat": str(int(time.time() * 1000))}]}))

    # -- what a test does ----------------------------------------------------------------------
    def wait_subscribed(self, count: int, timeout: float = 15.0) -> None:
        """Until the `count`-th LEVELONE_EQUITIES subscription was acknowledged."""
        with self._changed:
            assert self._changed.wait_for(lambda: self.subscriptions >= count, timeout), \
                f"{self.subscriptions} subscriptions, waited for {count}"

    def send(self, frame: dict[str, Any]) -> None:
        async def push() -> None:
            assert self._current is not None
            await self._current.send(json.dumps(frame))

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(push(), self._loop).result(10)

    def drop(self) -> None:
        """Close the current connection from the server side (a Schwab restart, a network cut)."""
        async def cut() -> None:
            assert self._current is not None
            await self._current.close(code=1011, reason="server restart")

        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(cut(), self._loop).result(10)

    def of(self, service: str, command: str) -> list[dict[str, Any]]:
        return [r for r in self.requests if r["service"] == service and r["command"] == command]
