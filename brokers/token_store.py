"""Broker OAuth tokens in Redis, encrypted at rest with Fernet.

The key comes from TOKEN_ENCRYPTION_KEY (required in live mode). In paper mode without one, a key
is generated once and kept in Redis beside the tokens (`broker:token_key`): that protects against
casual reads of a dump, not against someone with the whole Redis, which is acceptable for paper
trading and stated in the README.

Never log the token JSON or the key.
"""
from __future__ import annotations

import json
import logging
from typing import Any

from cryptography.fernet import Fernet, InvalidToken

from store.redis_store import Store

log = logging.getLogger(__name__)


class TokenDecryptError(RuntimeError):
    """Stored tokens cannot be decrypted (the encryption key changed). Log in again."""


class TokenStore:
    def __init__(self, store: Store, encryption_key: str | None) -> None:
        self._store = store
        if encryption_key:
            key = encryption_key.encode()
        else:
            generated = Fernet.generate_key().decode()
            # SET NX: the first process to start picks the key; later ones reuse it.
            store.redis.set(store.key("broker", "token_key"), generated, nx=True)
            key = str(store.redis.get(store.key("broker", "token_key"))).encode()
        try:
            self._fernet = Fernet(key)
        except (ValueError, TypeError):
            raise ValueError("TOKEN_ENCRYPTION_KEY is not a valid Fernet key (32 url-safe base64 bytes)") from None

    def _key(self, broker: str) -> str:
        return self._store.key("broker", "tokens", broker)

    def save(self, broker: str, token: dict[str, Any]) -> None:
        blob = self._fernet.encrypt(json.dumps(token, sort_keys=True).encode()).decode()
        self._store.redis.set(self._key(broker), blob)

    def load(self, broker: str) -> dict[str, Any] | None:
        blob = self._store.redis.get(self._key(broker))
        if blob is None:
            return None
        try:
            return dict(json.loads(self._fernet.decrypt(str(blob).encode())))
        except InvalidToken:
            raise TokenDecryptError(
                f"stored {broker} tokens cannot be decrypted with the current TOKEN_ENCRYPTION_KEY; log in again"
            ) from None

    def delete(self, broker: str) -> None:
        self._store.redis.delete(self._key(broker))

    def raw_blob(self, broker: str) -> str | None:
        """The encrypted value as stored (tests assert it holds no plaintext)."""
        value = self._store.redis.get(self._key(broker))
        return None if value is None else str(value)
