"""brokers/retry.py: the one retry policy, deciding from the exception class alone."""
from __future__ import annotations

from collections.abc import Callable

import pytest

from brokers.errors import (
    AuthenticationRequired,
    BrokerConfigError,
    BrokerError,
    OrderOutcomeUnknown,
    OrderRejected,
    TemporaryBrokerError,
)
from brokers.retry import ReadRetry, retry_reads


class Script:
    """A call that raises the given exceptions in turn, then returns "ok"."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def busy(retry_after: float | None = None) -> TemporaryBrokerError:
    return TemporaryBrokerError("broker get_account: HTTP 503", broker="x", retry_after=retry_after)


def run(call: Callable[[], str], policy: ReadRetry) -> tuple[str, list[float]]:
    sleeps: list[float] = []
    return retry_reads(call, policy, sleep=sleeps.append), sleeps


def test_a_temporary_failure_is_retried_with_doubling_waits_until_the_call_answers() -> None:
    call = Script(busy(), busy(), busy())
    answer, sleeps = run(call, ReadRetry(attempts=4, base=0.5, cap=8.0))
    assert answer == "ok" and call.calls == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_the_waits_never_exceed_the_cap() -> None:
    call = Script(*(busy() for _ in range(5)))
    _, sleeps = run(call, ReadRetry(attempts=6, base=1.0, cap=3.0))
    assert sleeps == [1.0, 2.0, 3.0, 3.0, 3.0]


def test_after_the_last_attempt_the_failure_says_how_many_calls_were_made() -> None:
    call = Script(*(busy() for _ in range(10)))
    sleeps: list[float] = []
    with pytest.raises(TemporaryBrokerError) as info:
        retry_reads(call, ReadRetry(attempts=3, base=0.5, cap=8.0), sleep=sleeps.append)
    assert call.calls == 3 and sleeps == [0.5, 1.0]  # bounded: no wait after the last call
    assert info.value.message == "broker get_account: HTTP 503 (after 3 attempts)"
    assert info.value.broker == "x"
    assert info.value.retry_after == 2.0  # the wait the policy would have taken next


def test_retry_after_is_waited_when_longer_than_the_backoff_but_never_past_the_cap() -> None:
    call = Script(busy(retry_after=3.0), busy(retry_after=600.0), busy(retry_after=0.1))
    _, sleeps = run(call, ReadRetry(attempts=4, base=0.5, cap=8.0))
    assert sleeps == [3.0, 8.0, 2.0]


def test_the_give_up_retry_after_honours_the_brokers_own() -> None:
    call = Script(busy(retry_after=5.0))
    with pytest.raises(TemporaryBrokerError) as info:
        retry_reads(call, ReadRetry(attempts=1), sleep=lambda s: None)
    assert call.calls == 1 and info.value.retry_after == 5.0


@pytest.mark.parametrize("error", [
    OrderOutcomeUnknown("sent, no answer", broker="x"),
    OrderRejected("refused", broker="x", reason="no buying power"),
    AuthenticationRequired("log in again", broker="x"),
    BrokerConfigError("account not on the login", broker="x"),
    BrokerError("HTTP 400", broker="x"),
    ValueError("not a broker error at all"),
])
def test_anything_but_a_temporary_failure_is_raised_at_once(error: Exception) -> None:
    call = Script(error)
    sleeps: list[float] = []
    with pytest.raises(type(error)) as info:
        retry_reads(call, ReadRetry(attempts=5), sleep=sleeps.append)
    assert info.value is error  # unchanged, not wrapped
    assert call.calls == 1 and sleeps == []


def test_a_permanent_failure_after_temporary_ones_stops_the_retries() -> None:
    rejected = OrderRejected("not found", broker="x")
    call = Script(busy(), rejected)
    sleeps: list[float] = []
    with pytest.raises(OrderRejected):
        retry_reads(call, ReadRetry(attempts=5, base=0.5), sleep=sleeps.append)
    assert call.calls == 2 and sleeps == [0.5]
