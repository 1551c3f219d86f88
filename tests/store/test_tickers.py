"""TickerStore on real Redis and fakeredis."""
from __future__ import annotations

from domain.tickers import StrategyName, TickerConfig
from store.redis_store import Store
from store.tickers import TickerStore


def _config(symbol: str = "MES", enabled: bool = True, strategy: str = "ema") -> TickerConfig:
    return TickerConfig.from_payload({
        "strategy": strategy, "symbol": symbol, "timeframe": "5Min", "trade_enabled": enabled,
        "schwab_quantity": 0, "tastytrade_quantity": 1, "period_1": 9, "period_2": 21,
    })


def test_upsert_get_map_delete_enabled(store: Store) -> None:
    tickers = TickerStore(store)
    assert tickers.get_map("ema") == {}
    tickers.upsert(_config("MES"))
    tickers.upsert(_config("NQ", enabled=False))
    tickers.upsert(_config("MES", enabled=False))  # upsert replaces
    tickers.upsert(_config("RTY"))
    configs = tickers.get_map(StrategyName.EMA)
    assert list(configs) == ["/MES", "/NQ", "/RTY"]
    assert configs["/MES"].trade_enabled is False
    assert [c.symbol for c in tickers.enabled("ema")] == ["/RTY"]
    assert tickers.delete("ema", "/NQ") is True and tickers.delete("ema", "/NQ") is False
    assert list(tickers.get_map("ema")) == ["/MES", "/RTY"]
    assert tickers.get_map("supertrend") == {}
    assert store.redis.type(store.key("tickers", "ema")) == "hash"


def test_round_trip_is_exact(store: Store) -> None:
    tickers = TickerStore(store)
    config = _config("NVDA")
    tickers.upsert(config)
    assert tickers.get("ema", "NVDA") == config


def test_corrupt_entry_is_skipped_not_fatal(store: Store) -> None:
    tickers = TickerStore(store)
    tickers.upsert(_config("MES"))
    store.redis.hset(store.key("tickers", "ema"), "/ES", '{"strategy": "ema", "symbol": "/ES"}')
    store.redis.hset(store.key("tickers", "ema"), "/NQ", "not json")
    assert list(tickers.get_map("ema")) == ["/MES"]
