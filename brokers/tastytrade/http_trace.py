"""What each Tastytrade SDK call did on the wire.

The SDK turns every non-2xx answer into a bare `TastytradeError(message)`: the status code is
lost, yet the status decides the retry policy (401 refresh, 429/5xx backoff, 4xx rejection).
httpx2 event hooks see every request/response of the Session's client, so each adapter call
runs with its own `HttpTrace` in a ContextVar (asyncio tasks copy the context, so concurrent
calls never see each other's requests) and the hooks append to it. A failed call is raised as an
`HttpFailure` carrying what the trace saw.
"""
from __future__ import annotations

import contextvars
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx2


@dataclass(slots=True)
class HttpEvent:
    method: str
    path: str
    status: int | None = None  # None until the response arrives (or forever, on a transport error)
    retry_after: float | None = None


@dataclass(slots=True)
class HttpTrace:
    events: list[HttpEvent] = field(default_factory=list)

    def last_for(self, method: str, path_suffix: str) -> HttpEvent | None:
        for event in reversed(self.events):
            if event.method == method and event.path.endswith(path_suffix):
                return event
        return None

    def sent(self, method: str, path_suffix: str) -> bool:
        """True when a request for this endpoint was handed to the transport."""
        return self.last_for(method, path_suffix) is not None

    @property
    def last(self) -> HttpEvent | None:
        return self.events[-1] if self.events else None


CURRENT_TRACE: contextvars.ContextVar[HttpTrace | None] = contextvars.ContextVar("tastytrade_trace", default=None)


async def _on_request(request: httpx2.Request) -> None:
    trace = CURRENT_TRACE.get()
    if trace is not None:
        trace.events.append(HttpEvent(request.method, request.url.path))


async def _on_response(response: httpx2.Response) -> None:
    trace = CURRENT_TRACE.get()
    if trace is None:
        return
    for event in reversed(trace.events):
        if event.status is None and event.method == response.request.method and event.path == response.request.url.path:
            event.status = response.status_code
            event.retry_after = _retry_after(response.headers.get("Retry-After"))
            break


def _retry_after(raw: str | None) -> float | None:
    if not raw:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        return None  # HTTP-date form: ignored, our own backoff applies


def event_hooks() -> dict[str, list[Callable[..., Any]]]:
    return {"request": [_on_request], "response": [_on_response]}


# Transport errors raised before any byte of the request can have reached Tastytrade. Anything
# else (read timeout, dropped connection, protocol error) may have happened after the broker got
# the request, so for an order it means "outcome unknown".
NOT_SENT_ERRORS: tuple[type[Exception], ...] = (httpx2.ConnectError, httpx2.ConnectTimeout, httpx2.PoolTimeout)


class HttpFailure(Exception):
    """An SDK call failed; carries what the HTTP trace saw, for the adapter to classify into
    brokers.errors (the SDK's own exceptions carry no status code)."""

    def __init__(self, message: str, *, status: int | None, path: str | None, retry_after: float | None,
                 transport_error: Exception | None = None, sent: bool = True, call_timeout: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.path = path
        self.retry_after = retry_after
        self.transport_error = transport_error
        self.sent = sent
        self.call_timeout = call_timeout
