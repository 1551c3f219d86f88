"""Shared builders for the strategy tests: configs, bars at New York times, real-data loaders."""
from __future__ import annotations

import csv
import json
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable
from zoneinfo import ZoneInfo

from domain.intents import Intent
from domain.market import Bar
from domain.tickers import StrategyName, TickerConfig
from strategies.base import SessionClock, Strategy

NY = ZoneInfo("America/New_York")
MINUTE_NS = 60_000_000_000


def config(strategy: str, symbol: str, **params: Any) -> TickerConfig:
    payload: dict[str, Any] = {"strategy": strategy, "symbol": symbol, "timeframe": "1Min", "trade_enabled": True,
                               "schwab_quantity": 1 if symbol == "SPX" else 0, "tastytrade_quantity": 1,
                               "period_1": 9, "period_2": 21}
    payload.update(params)
    return TickerConfig.from_payload(payload, StrategyName(strategy))


def ny_ns(day: str, hhmm: str) -> int:
    """ns since epoch of a New York wall-clock time, e.g. ny_ns("2025-11-28", "12:45")."""
    dt = datetime.fromisoformat(f"{day}T{hhmm}").replace(tzinfo=NY)
    return int(dt.timestamp()) * 1_000_000_000


def bar(symbol: str, end_ns: int, close: float, high: float | None = None, low: float | None = None,
        open_: float | None = None) -> Bar:
    high = close if high is None else high
    low = close if low is None else low
    return Bar(symbol, "1", end_ns - MINUTE_NS, end_ns, close if open_ is None else open_, high, low, close, 100, 10)


def closes_to_bars(symbol: str, closes: Iterable[float], start_ns: int = 10 * MINUTE_NS) -> list[Bar]:
    return [bar(symbol, start_ns + i * MINUTE_NS, c) for i, c in enumerate(closes)]


def clock(day: str, now: str, close: str = "16:00", expiration: bool = True, open_: str = "09:30") -> SessionClock:
    return SessionClock(ny_ns(day, now), ny_ns(day, open_), ny_ns(day, close), expiration)


def load_ohlc(path: Path, intraday: bool) -> list[tuple[int, float, float, float, float]]:
    """(end_ns, open, high, low, close) rows. The 2006 1-minute file's header lacks the Time
    column: rows are date,time,open,high,low,close,volume,openinterest."""
    rows: list[tuple[int, float, float, float, float]] = []
    with path.open() as fh:
        reader = csv.reader(fh)
        next(reader)
        for i, r in enumerate(reader):
            if intraday:
                o, h, lo, c = map(float, r[2:6])
            else:
                o, h, lo, c = map(float, r[1:5])
            rows.append(((i + 1) * MINUTE_NS, o, h, lo, c))
    return rows


def rows_to_bars(symbol: str, rows: list[tuple[int, float, float, float, float]]) -> list[Bar]:
    return [Bar(symbol, "1", t - MINUTE_NS, t, o, h, lo, c, 1, 1) for t, o, h, lo, c in rows]


def json_roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(state, allow_nan=False))


def feed(strategy: Strategy, bars: Iterable[Bar]) -> list[Intent]:
    out: list[Intent] = []
    for b in bars:
        out.extend(strategy.on_bar(b))
    return out
