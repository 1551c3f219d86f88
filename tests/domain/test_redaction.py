"""domain/redaction.py: the one redactor, covering every secret each of the app's former three
(the service's handlers, Schwab's SDK loggers, Tastytrade's SDK loggers) hid."""
from __future__ import annotations

import logging
import sys

import pytest

from domain.redaction import MASK, Redactor


@pytest.mark.parametrize("raw, hidden, kept", [
    # JSON fields schwab-py logs at DEBUG (GET /accounts/accountNumbers, token answers).
    ('{"accountNumber":"12345678","hashValue":"ABCDEF"}', ["12345678", "ABCDEF"], ['"accountNumber":"***"']),
    ('{"accountNumber": 12345678, "status": "WORKING"}', ["12345678"], ["WORKING"]),
    ('{"access_token": "I0.at", "refresh_token": "R0.rt", "id_token": "eyJid", "expires_in": 1800}',
     ["I0.at", "R0.rt", "eyJid"], ['"expires_in": 1800']),
    ('{"client_secret":"cs-1"}', ["cs-1"], ["client_secret"]),
    # Form-encoded token requests and redirect URLs.
    ("grant_type=refresh_token&refresh_token=RT-secret@&x=1", ["RT-secret@"], ["grant_type=refresh_token", "x=1"]),
    ("grant_type=authorization_code&code=C0.abc%40&client_secret=CS9&state=s", ["C0.abc%40", "CS9"], ["state=s"]),
    ("https://127.0.0.1/cb?code=C0.xyz&session=1", ["C0.xyz"], ["session=1"]),
    ("access_token=AT.1 sent", ["AT.1"], ["sent"]),
    # Authorization headers.
    ("Authorization: Bearer I0.abc.def@", ["I0.abc.def@"], ["Authorization: Bearer ***"]),
    ("Authorization: Basic Y2lkOnNlY3JldA==", ["Y2lkOnNlY3JldA=="], ["Basic ***"]),
    # Look-alikes stay.
    ("status_code=200", [], ["status_code=200"]),
    ("exit returncode=2", [], ["returncode=2"]),
])
def test_secret_shaped_text_is_hidden_without_being_told(raw: str, hidden: list[str], kept: list[str]) -> None:
    cleaned = Redactor().redact(raw)
    assert all(h not in cleaned for h in hidden), cleaned
    assert all(k in cleaned for k in kept), cleaned


def test_configured_secrets_are_masked_longest_first() -> None:
    # The service's handlers: every configured secret (JWT secret, API keys, webhook URL, ...).
    redactor = Redactor(["db-key-0123456789", "db-key-0123456789-long", None, ""])
    assert redactor.redact("key db-key-0123456789-long and db-key-0123456789") == f"key {MASK} and {MASK}"


def test_registered_secrets_are_masked_from_then_on() -> None:
    # Schwab: tokens, account numbers and hashes learnt while running.
    redactor = Redactor()
    assert redactor.redact("hash 0F1E2D3C") == "hash 0F1E2D3C"
    redactor.register("0F1E2D3C", None, 11112222)
    assert redactor.redact("hash 0F1E2D3C of 11112222") == f"hash {MASK} of {MASK}"


def test_values_too_short_to_be_secrets_are_never_masked() -> None:
    redactor = Redactor(["abc"], live_secrets=lambda: ["xyz", None])
    redactor.register("de")
    assert redactor.redact("abc de xyz") == "abc de xyz"


def test_live_secrets_are_read_at_redaction_time() -> None:
    # Tastytrade: the access token rotates every 15 minutes.
    tokens = ["atoken-0001"]
    redactor = Redactor(live_secrets=lambda: tokens)
    assert redactor.redact("Bearer-less atoken-0001") == f"Bearer-less {MASK}"
    tokens[:] = ["atoken-0002"]
    assert redactor.redact("now atoken-0002") == f"now {MASK}"


def test_account_numbers_show_masked() -> None:
    account = ["5WT00001"]
    redactor = Redactor(accounts=["11114321", None], live_accounts=lambda: account)
    text = "GET /accounts/5WT00001/orders for 11114321"
    assert redactor.redact(text) == "GET /accounts/****0001/orders for ****4321"


def test_a_log_record_is_redacted_in_its_message_arguments_and_traceback() -> None:
    redactor = Redactor(["s3cret-value"])
    try:
        raise RuntimeError("token s3cret-value refused")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "login with %s failed", ("s3cret-value",),
                                   sys.exc_info())
    assert redactor.filter(record) is True
    assert record.getMessage() == f"login with {MASK} failed"
    assert record.exc_info is None and record.exc_text is not None
    assert "s3cret-value" not in record.exc_text and "RuntimeError" in record.exc_text


def test_a_record_with_a_broken_format_string_is_still_logged_redacted() -> None:
    redactor = Redactor(["s3cret-value"])
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d s3cret-value", ("not a number",), None)
    assert redactor.filter(record) is True
    assert record.getMessage() == f"%d {MASK}"


def test_a_failing_secret_source_never_breaks_the_log_call() -> None:
    def broken() -> list[str]:
        raise RuntimeError("session gone")

    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", (), None)
    assert Redactor(live_secrets=broken).filter(record) is True
