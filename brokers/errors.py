"""The broker exception tree. The class decides the retry policy, not the message.

    BrokerError
    ├── TemporaryBrokerError     network blip, 429, 5xx before anything was sent.
    │                            Reads may be retried with bounded backoff. An order may be retried
    │                            ONLY when the adapter knows the request never reached the broker.
    ├── OrderRejected            the broker refused the order (permanent). Carries the broker's
    │                            reason. Never retried; positions are unchanged.
    ├── AuthenticationRequired   token missing, expired or revoked. The broker is marked
    │                            disconnected, its orders are paused and an alert is raised.
    ├── OrderOutcomeUnknown      the order was sent but no answer came (timeout, dropped connection).
    │                            NEVER resent: the order goes to UNKNOWN and reconciliation resolves
    │                            it by querying the broker.
    └── BrokerConfigError        misconfiguration (e.g. SCHWAB_ACCOUNT_ID not on the login). Not retried.
"""
from __future__ import annotations


class BrokerError(Exception):
    """Base class. `broker` names the adapter ("schwab", "tastytrade", "paper:schwab")."""

    def __init__(self, message: str, *, broker: str = "") -> None:
        super().__init__(message)
        self.broker = broker
        self.message = message


class TemporaryBrokerError(BrokerError):
    def __init__(self, message: str, *, broker: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, broker=broker)
        self.retry_after = retry_after


class OrderRejected(BrokerError):
    def __init__(self, message: str, *, broker: str = "", reason: str = "") -> None:
        super().__init__(message, broker=broker)
        self.reason = reason or message


class AuthenticationRequired(BrokerError):
    pass


class OrderOutcomeUnknown(BrokerError):
    pass


class BrokerConfigError(BrokerError):
    pass
