"""The one redactor for the whole app: secrets out of log records and out of messages we return.

Three kinds of text leak, and each has its own defence here:
- Values we know are secret: configured ones (JWT secret, API keys, client secrets: the service's
  handlers redact them from every record) and ones learnt at runtime (OAuth tokens, account
  hashes), given at construction, `register`ed later, or read through a callable at redaction
  time when they rotate (a Tastytrade access token lives 15 minutes).
- Account numbers: shown masked (`****1234`, as everywhere else), because the last digits are
  what a trader recognises and a broker URL carries the full number (`/accounts/5WT12345/orders`).
- Secrets we were never told about: the SDKs log whole request and response bodies at DEBUG
  (schwab-py logs GET /accounts/accountNumbers, every account number on the login with its hash),
  so token fields, form-encoded token requests and Authorization headers are recognised by shape.

It sits below every layer that logs (brokers, the programs) so that all of them share it, and it
is a `logging.Filter`, so it can go on a logger (an SDK's, whose records never reach our handlers
unredacted) or on a handler (the service's file and stderr, the last line of defence).
"""
from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable

from domain.orders import mask_account

MASK = "***"
# Shorter values would mask ordinary words in every line; real secrets and account numbers are longer.
MIN_SECRET_LENGTH = 4

# Fields that are secrets or account identifiers wherever they appear in JSON, quoted or a number.
_JSON_FIELD = re.compile(r'("(?:access_token|refresh_token|id_token|client_secret|accountNumber|hashValue)"\s*:\s*)"[^"]*"')
_JSON_ACCOUNT_NUMBER = re.compile(r'("accountNumber"\s*:\s*)\d+')
# Form-encoded token requests and redirect URLs (`code=` not preceded by a letter: `status_code=200` stays).
_FORM_FIELD = re.compile(r"((?<![A-Za-z_])(?:refresh_token|access_token|code|client_secret)=)[^&\s'\"]+")
_AUTHORIZATION = re.compile(r"((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+")
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (_JSON_FIELD, rf'\1"{MASK}"'),
    (_JSON_ACCOUNT_NUMBER, rf'\1"{MASK}"'),
    (_FORM_FIELD, rf"\1{MASK}"),
    (_AUTHORIZATION, rf"\1{MASK}"),
)

Values = Callable[[], Iterable[str | None]]


def _nothing() -> tuple[str, ...]:
    return ()


class Redactor(logging.Filter):
    """Replaces secrets with `***` and account numbers with their masked form, in text and in
    log records (message, arguments and a traceback's text)."""

    def __init__(self, secrets: Iterable[object] = (), *, accounts: Iterable[str | None] = (),
                 live_secrets: Values = _nothing, live_accounts: Values = _nothing) -> None:
        super().__init__()
        self._secrets: frozenset[str] = frozenset()
        self._accounts = tuple(a for a in accounts if a)
        self._live_secrets = live_secrets
        self._live_accounts = live_accounts
        self._lock = threading.Lock()
        self.register(*secrets)

    def register(self, *values: object) -> None:
        """Secrets learnt at runtime (a token just issued, the hashes of a login's accounts)."""
        found = {text for text in (str(v) for v in values if v is not None) if len(text) >= MIN_SECRET_LENGTH}
        with self._lock:
            self._secrets = self._secrets | found  # swapped whole: another thread may be redacting

    def redact(self, text: str) -> str:
        for account in {*self._accounts, *(a for a in self._live_accounts() if a)}:
            text = text.replace(account, mask_account(account) or MASK)
        live = {s for s in self._live_secrets() if s and len(s) >= MIN_SECRET_LENGTH}
        # Longest first, so a secret that contains another is masked whole.
        for secret in sorted(self._secrets | live, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        for pattern, replacement in _PATTERNS:
            text = pattern.sub(replacement, text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            try:
                message = record.getMessage()
            except Exception:  # a broken format string must not take logging down
                message = str(record.msg)
            cleaned = self.redact(message)
            if cleaned != message or record.args:
                record.msg, record.args = cleaned, None
            if record.exc_info and record.exc_info[1] is not None:
                # Handlers format the traceback later (an HTTPStatusError's text holds its URL):
                # render it now, redacted, and drop the raw exception.
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
                record.exc_info = None
        except Exception:  # noqa: BLE001 - a filter that raises would break the caller's log call
            pass
        return True
