"""Scrub secrets from log records emitted by schwab-py and the HTTP stack underneath it.

Why: schwab-py logs every response body at DEBUG (`schwab.client.base`), and
GET /accounts/accountNumbers returns *every* account number on the login with its hash. Turning
on DEBUG in production must not put account numbers or tokens into log files, so a filter sits on
each SDK logger and rewrites the message before any handler sees it.
"""
from __future__ import annotations

import logging
import re
import threading

# Loggers whose records can carry response bodies, URLs with account hashes, or token requests.
SDK_LOGGERS = (
    "schwab", "schwab.client.base", "schwab.auth", "schwab.debug", "schwab.streaming",
    "authlib", "httpx2", "httpx", "httpcore", "httpcore2",
)

_PATTERNS = (
    # JSON fields that are secrets or account identifiers wherever they appear.
    re.compile(r'("(?:access_token|refresh_token|id_token|client_secret|accountNumber|hashValue)"\s*:\s*)"[^"]*"'),
    re.compile(r'("(?:accountNumber)"\s*:\s*)\d+'),
    # Form-encoded token requests and Authorization headers.
    re.compile(r"((?<![A-Za-z_])(?:refresh_token|access_token|code|client_secret)=)[^&\s'\"]+"),
    re.compile(r"((?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]+"),
)


class SecretRedactor(logging.Filter):
    """Replaces registered secret strings and secret-looking fields with placeholders."""

    def __init__(self) -> None:
        super().__init__("schwab-redactor")
        self._secrets: set[str] = set()
        self._lock = threading.Lock()

    def register(self, *values: object) -> None:
        with self._lock:
            for value in values:
                text = str(value) if value is not None else ""
                if len(text) >= 4:  # never register something so short it would mangle every line
                    self._secrets.add(text)

    def redact(self, text: str) -> str:
        with self._lock:
            secrets = sorted(self._secrets, key=len, reverse=True)
        for secret in secrets:
            if secret in text:
                text = text.replace(secret, "<redacted>")
        for pattern in _PATTERNS:
            text = pattern.sub(r'\1"<redacted>"' if pattern.pattern.startswith('("') else r"\1<redacted>", text)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a broken format string must not take logging down
            message = str(record.msg)
        cleaned = self.redact(message)
        if cleaned != message or record.args:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Exception text (e.g. an HTTPStatusError with a URL) is formatted later by handlers;
            # render it now, redacted, and drop the raw exception.
            formatted = logging.Formatter().formatException(record.exc_info)
            record.exc_text = self.redact(formatted)
            record.exc_info = None
        return True


REDACTOR = SecretRedactor()
_installed = False
_install_lock = threading.Lock()


def install() -> SecretRedactor:
    """Attach the one process-wide redactor to every SDK logger (idempotent)."""
    global _installed
    with _install_lock:
        if not _installed:
            for name in SDK_LOGGERS:
                logging.getLogger(name).addFilter(REDACTOR)
            _installed = True
    return REDACTOR
