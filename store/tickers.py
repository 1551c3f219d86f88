"""Ticker configurations in Redis: one hash per strategy, `tickers:<strategy>`, symbol -> JSON.

Every value is validated again when read (`TickerConfig.from_json` runs the same validator as
add-ticker), so a hand-edited or stale entry can never reach a strategy unchecked; such an entry is
logged and skipped rather than breaking the whole map.
"""
from __future__ import annotations

import logging

from domain.tickers import StrategyName, TickerConfig, TickerValidationError
from store.redis_store import Store

log = logging.getLogger(__name__)


class TickerStore:
    def __init__(self, store: Store) -> None:
        self._store = store

    def _key(self, strategy: StrategyName | str) -> str:
        return self._store.key("tickers", StrategyName(strategy).value)

    def upsert(self, config: TickerConfig) -> None:
        """Insert or replace the config for (strategy, symbol). One HSET: atomic."""
        self._store.redis.hset(self._key(config.strategy), config.symbol, config.to_json())

    def get(self, strategy: StrategyName | str, symbol: str) -> TickerConfig | None:
        raw = self._store.redis.hget(self._key(strategy), symbol)
        return self._decode(strategy, symbol, raw) if raw is not None else None

    def get_map(self, strategy: StrategyName | str) -> dict[str, TickerConfig]:
        """All configs of a strategy, keyed by canonical symbol, sorted by symbol."""
        raw_map: dict[str, str] = self._store.redis.hgetall(self._key(strategy))
        configs: dict[str, TickerConfig] = {}
        for symbol in sorted(raw_map):
            config = self._decode(strategy, symbol, raw_map[symbol])
            if config is not None:
                configs[symbol] = config
        return configs

    def delete(self, strategy: StrategyName | str, symbol: str) -> bool:
        """Remove one symbol; True when it existed."""
        return bool(self._store.redis.hdel(self._key(strategy), symbol))

    def enabled(self, strategy: StrategyName | str) -> list[TickerConfig]:
        """The configs with trade_enabled=True, sorted by symbol."""
        return [c for c in self.get_map(strategy).values() if c.trade_enabled]

    def _decode(self, strategy: StrategyName | str, symbol: str, raw: str) -> TickerConfig | None:
        try:
            return TickerConfig.from_json(raw)
        except (TickerValidationError, ValueError, KeyError, TypeError) as exc:
            log.error("ignoring invalid stored ticker config %s %s: %s", strategy, symbol, exc)
            return None
