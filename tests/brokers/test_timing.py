"""brokers/timing.py: one latency recording for every adapter call, on success and on failure."""
from __future__ import annotations

import logging

import pytest

from brokers.timing import timed


class Clock:
    def __init__(self, *readings: float) -> None:
        self.readings = list(readings)

    def __call__(self) -> float:
        return self.readings.pop(0)


def test_a_call_that_returns_is_recorded_under_its_label() -> None:
    seen: list[tuple[str, float]] = []
    with timed("get_account", lambda label, seconds: seen.append((label, seconds)), clock=Clock(10.0, 10.25)):
        pass
    assert seen == [("get_account", 0.25)]


def test_a_call_that_raises_is_recorded_and_its_exception_goes_on() -> None:
    seen: list[tuple[str, float]] = []
    with pytest.raises(TimeoutError):
        with timed("place_order", lambda label, seconds: seen.append((label, seconds)), clock=Clock(1.0, 3.5)):
            raise TimeoutError("read timed out")
    assert seen == [("place_order", 2.5)]


def test_without_a_hook_nothing_is_recorded() -> None:
    clock = Clock(1.0, 2.0)
    with timed("positions", None, clock=clock):
        pass
    assert clock.readings == [2.0]  # the end was never read: nothing to report it to


def test_a_broken_hook_is_logged_and_never_breaks_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(label: str, seconds: float) -> None:
        raise RuntimeError("metrics down")

    with timed("balances", broken, clock=Clock(0.0, 1.0)):
        result = "answered"
    assert result == "answered"
    assert any(r.levelno == logging.WARNING and "balances" in r.getMessage() for r in caplog.records)


def test_a_broken_hook_does_not_hide_the_calls_own_failure() -> None:
    def broken(label: str, seconds: float) -> None:
        raise RuntimeError("metrics down")

    with pytest.raises(ConnectionError):
        with timed("orders.get", broken, clock=Clock(0.0, 1.0)):
            raise ConnectionError("refused")
