"""Synthetic data for the backtest tests (imported as tests.backtest.helpers)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from backtest.data import BarArrays, MarketData

NS = 1_000_000_000
T0 = 1_136_329_200 * NS  # 2006-01-03T23:00:00Z = 18:00 ET Tuesday: a CME session opens (23 h of bars in session)


def random_walk(n: int, seed: int = 7, start: float = 4000.0, tick: float = 0.25) -> BarArrays:
    """Tick-aligned 1-minute OHLC bars from a seeded random walk."""
    rng = np.random.default_rng(seed)
    close = start + np.cumsum(rng.integers(-4, 5, n)) * tick
    open_ = np.concatenate(([start], close[:-1]))
    high = np.maximum(open_, close) + rng.integers(0, 3, n) * tick
    low = np.minimum(open_, close) - rng.integers(0, 3, n) * tick
    s = T0 + np.arange(n, dtype=np.int64) * 60 * NS
    return BarArrays(s, s + 60 * NS, open_, high, low, close, np.full(n, 10, np.int64), np.zeros(n, np.int64))


def market(bars: BarArrays) -> MarketData:
    return MarketData(bars, None, "synthetic")


def write_csv(path: Path, bars: BarArrays) -> Path:
    with path.open("w") as fh:
        fh.write("Datetime,Open,High,Low,Close,Volume\n")
        for i in range(len(bars)):
            ts = np.datetime64(int(bars.start_ns[i]), "ns").astype("datetime64[s]")
            fh.write(f"{ts},{bars.open[i]},{bars.high[i]},{bars.low[i]},{bars.close[i]},{bars.volume[i]}\n")
    return path
