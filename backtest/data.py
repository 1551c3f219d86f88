"""Loading history for the backtester: DBN files, CSV bars or ticks, Databento Historical.

Everything ends up columnar (numpy arrays) so a million bars cost ~70 MB, pickle cheaply to sweep
workers and the engine loop indexes plain Python lists built from them.

Conventions:
- Timestamps are int64 ns since the epoch, UTC. Naive CSV timestamps are read in `tz` (UTC unless
  given) and CSV bar timestamps mark the bar *start* unless `bar_time="end"`.
- Time bars use the live bar builder's grid (`market_data.bars.SessionGrid` for the symbol): they
  start at the session open (CME 18:00 ET, equities 09:30 ET) and step by the bar size, the last
  bar of a session is cut at the close, daily bars are one per session; so 1h/4h/1d bars equal the
  live ones. Without a symbol (`LoadOptions.symbol` None) `FixedGrid` (UTC-aligned) is used. Tick
  charts close every N trades.
- Ticks (trades) are kept beside the bars so market orders can fill at the next trade and stops
  can be checked trade by trade.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from config.timeframes import Timeframe


class DataError(ValueError):
    """The data cannot be used; the message is one line meant for the user."""


NS = 1_000_000_000
_DBN_BAR_SECONDS = {"ohlcv-1s": 1, "ohlcv-1m": 60, "ohlcv-1h": 3600, "ohlcv-1d": 86400}
_FIXED = 1e-9  # Databento fixed-point price scale


@dataclass(frozen=True, slots=True)
class BarArrays:
    start_ns: np.ndarray  # int64
    end_ns: np.ndarray  # int64
    open: np.ndarray  # float64
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray  # int64
    trade_count: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.start_ns.shape[0])

    def take(self, mask: np.ndarray) -> "BarArrays":
        return BarArrays(*(getattr(self, f)[mask] for f in _BAR_FIELDS))


_BAR_FIELDS = ("start_ns", "end_ns", "open", "high", "low", "close", "volume", "trade_count")


@dataclass(frozen=True, slots=True)
class TickArrays:
    ts_ns: np.ndarray  # int64, sorted
    price: np.ndarray  # float64
    size: np.ndarray  # int64

    def __len__(self) -> int:
        return int(self.ts_ns.shape[0])


@dataclass(frozen=True, slots=True)
class MarketData:
    """Bars of the requested timeframe, plus the trades they were built from when available."""

    bars: BarArrays
    ticks: TickArrays | None
    description: str


@dataclass(frozen=True, slots=True)
class LoadOptions:
    paths: tuple[Path, ...]
    timeframe: str
    start_ns: int | None = None  # inclusive
    end_ns: int | None = None  # exclusive
    columns: Mapping[str, str] | None = None  # logical -> CSV header name
    tz: str = "UTC"
    bar_time: str = "start"  # CSV bar timestamps mark the bar "start" or "end"
    csv_kind: str = "auto"  # "auto" | "bars" | "ticks"
    instrument: str | None = None  # raw symbol inside a multi-instrument DBN file ("ESU4")
    root: str | None = None  # catalog root ("ES") used to pick the instrument automatically
    symbol: str | None = None  # catalog symbol: time bars on its session grid (None: UTC-aligned)


# --------------------------------------------------------------------------------------------
# Raw sources -> (ticks | bars with their own bar length)
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class _Raw:
    ticks: TickArrays | None
    bars: BarArrays | None
    bar_seconds: int | None  # source bar length, None when unknown (tick data)


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DataError(f"data file not found: {path}")
    if not path.is_file():
        raise DataError(f"data path is not a file: {path}")
    if not os.access(path, os.R_OK):
        raise DataError(f"data file is not readable: {path}")


def _is_dbn(path: Path) -> bool:
    name = path.name.lower()
    return name.endswith(".dbn") or name.endswith(".dbn.zst")


def _pick_instrument(store: object, ids: np.ndarray, opts: LoadOptions, path: Path) -> int | None:
    unique = np.unique(ids)
    if unique.size <= 1:
        return None
    by_symbol: dict[str, int] = {}
    for raw_symbol, intervals in (getattr(store, "mappings", None) or {}).items():
        for interval in intervals:
            try:
                by_symbol[str(raw_symbol)] = int(interval["symbol"])
            except (KeyError, ValueError):
                continue
    if opts.instrument:
        if opts.instrument not in by_symbol:
            raise DataError(f"{path.name}: instrument {opts.instrument!r} not in file ({', '.join(sorted(by_symbol))})")
        return by_symbol[opts.instrument]
    if opts.root:
        # "ES" matches ESU4 but not ESH4-NQ spreads or MES; futures raw symbols are root + month + year.
        matches = [s for s in by_symbol if s.startswith(opts.root) and s[len(opts.root):len(opts.root) + 1].isalpha()
                   and s[len(opts.root) + 1:].isdigit()]
        if len(matches) == 1:
            return by_symbol[matches[0]]
    raise DataError(
        f"{path.name} holds {unique.size} instruments ({', '.join(sorted(by_symbol)) or 'unmapped'}); "
        "choose one with --instrument"
    )


def _read_dbn(path: Path, opts: LoadOptions) -> _Raw:
    import databento as db

    try:
        store = db.DBNStore.from_file(path)
        schema = str(store.schema) if store.schema is not None else ""
        records = store.to_ndarray()
    except Exception as exc:  # databento raises several types for corrupt / foreign files
        raise DataError(f"{path.name}: not a readable DBN file ({exc.__class__.__name__}: {str(exc)[:120]})") from None
    if schema not in ("trades", "mbo") and schema not in _DBN_BAR_SECONDS:
        raise DataError(f"{path.name}: DBN schema {schema or 'mixed'!r} is not supported (trades, mbo, ohlcv-*)")
    if len(records) == 0:
        raise DataError(f"{path.name}: the file has no records")
    instrument_id = _pick_instrument(store, records["instrument_id"], opts, path)
    if instrument_id is not None:
        records = records[records["instrument_id"] == instrument_id]
    if schema in ("trades", "mbo"):
        if schema == "mbo":
            # Only action 'T' is a trade; 'F' records are the resting side's fills of the same trade.
            records = records[records["action"] == b"T"]
        ts = records["ts_event"].astype(np.int64)
        order = np.argsort(ts, kind="stable")
        return _Raw(TickArrays(ts[order], records["price"][order].astype(np.float64) * _FIXED,
                               records["size"][order].astype(np.int64)), None, None)
    seconds = _DBN_BAR_SECONDS[schema]
    start = records["ts_event"].astype(np.int64)
    order = np.argsort(start, kind="stable")
    start = start[order]
    bars = BarArrays(
        start, start + seconds * NS,
        *(records[f][order].astype(np.float64) * _FIXED for f in ("open", "high", "low", "close")),
        records["volume"][order].astype(np.int64), np.zeros(start.shape[0], dtype=np.int64),
    )
    return _Raw(None, bars, seconds)


_LOGICAL = ("datetime", "date", "time", "open", "high", "low", "close", "volume", "price", "size")
_ALIASES = {
    "datetime": ("datetime", "timestamp", "ts_event", "ts"),
    "date": ("date", "day"),
    "time": ("time",),
    "open": ("open", "o"),
    "high": ("high", "h"),
    "low": ("low", "l"),
    "close": ("close", "c", "last"),
    "volume": ("volume", "vol", "v"),
    "price": ("price",),
    "size": ("size", "qty", "quantity"),
}


def parse_columns(text: str) -> dict[str, str]:
    """`--columns datetime=Timestamp,open=O,...` -> {"datetime": "Timestamp", "open": "O"}."""
    mapping: dict[str, str] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        key = key.strip().lower()
        if not sep or not value.strip() or key not in _LOGICAL:
            raise DataError(f"--columns entry {part.strip()!r} must be one of {', '.join(_LOGICAL)} = a CSV column")
        mapping[key] = value.strip()
    return mapping


def _csv_header(path: Path) -> tuple[list[str], int]:
    """Header names, repaired when the rows have one more field than the header (the 2006 bars file
    writes date and time as two fields under a single "Date" header)."""
    with path.open(newline="", encoding="utf-8", errors="replace") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        first = next(reader, None)
    if not header or first is None:
        raise DataError(f"{path.name}: the CSV has no header or no rows")
    names = [h.strip() for h in header]
    if len(first) == len(names) + 1:
        lowered = [n.lower() for n in names]
        if "date" in lowered and "time" not in lowered:
            i = lowered.index("date")
            names = names[: i + 1] + ["Time"] + names[i + 1:]
    if len(first) != len(names):
        raise DataError(f"{path.name}: header has {len(names)} columns but rows have {len(first)}")
    return names, len(names)


def _resolve_columns(names: Sequence[str], given: Mapping[str, str] | None, path: Path) -> dict[str, str]:
    lowered = {n.lower(): n for n in names}
    found: dict[str, str] = {}
    for logical, real in (given or {}).items():
        if real not in names and real.lower() not in lowered:
            raise DataError(f"{path.name}: column {real!r} (for {logical}) not in {', '.join(names)}")
        found[logical] = real if real in names else lowered[real.lower()]
    for logical, aliases in _ALIASES.items():
        if logical in found:
            continue
        for alias in aliases:
            if alias in lowered and lowered[alias] not in found.values():
                found[logical] = lowered[alias]
                break
    return found


def _csv_timestamps(frame: pd.DataFrame, cols: Mapping[str, str], tz: str, path: Path) -> np.ndarray:
    if "datetime" in cols:
        text = frame[cols["datetime"]].astype(str)
    elif "date" in cols and "time" in cols:
        text = frame[cols["date"]].astype(str) + " " + frame[cols["time"]].astype(str)
    elif "date" in cols:
        text = frame[cols["date"]].astype(str)
    else:
        raise DataError(f"{path.name}: no Date/Time/Datetime column in {', '.join(frame.columns)}; pass --columns")
    try:
        stamps = pd.to_datetime(text, format="mixed")
    except (ValueError, TypeError) as exc:
        raise DataError(f"{path.name}: unparseable timestamps ({str(exc)[:100]})") from None
    if stamps.dt.tz is None:
        try:
            stamps = stamps.dt.tz_localize(tz)
        except Exception:
            raise DataError(f"{path.name}: cannot place timestamps in time zone {tz!r}") from None
    return stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").to_numpy().astype("datetime64[ns]").astype(np.int64)


def _numeric(frame: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype=np.float64)
    if np.isnan(values).any():
        raise DataError(f"{path.name}: column {column!r} has non-numeric values")
    return values


def _read_csv(path: Path, opts: LoadOptions) -> _Raw:
    names, _ = _csv_header(path)
    cols = _resolve_columns(names, opts.columns, path)
    try:
        frame = pd.read_csv(path, header=None, skiprows=1, names=names, dtype=str, skipinitialspace=True)
    except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as exc:
        raise DataError(f"{path.name}: unreadable CSV ({str(exc)[:100]})") from None
    if frame.empty:
        raise DataError(f"{path.name}: the CSV has no rows")
    ts = _csv_timestamps(frame, cols, opts.tz, path)
    order = np.argsort(ts, kind="stable")
    ts = ts[order]
    frame = frame.iloc[order]

    has_ohlc = all(k in cols for k in ("open", "high", "low", "close"))
    kind = opts.csv_kind
    if kind == "auto":
        if "price" in cols and not has_ohlc:
            kind = "ticks"
        elif has_ohlc:
            o, h, l, c = (_numeric(frame, cols[k], path) for k in ("open", "high", "low", "close"))
            # Tick files written as bars have O=H=L=C on every row and timestamps off the minute grid.
            flat = bool(np.all((o == h) & (h == l) & (l == c)))
            off_grid = bool(np.any(ts % (60 * NS) != 0))
            kind = "ticks" if flat and off_grid else "bars"
        else:
            raise DataError(f"{path.name}: cannot find open/high/low/close or price columns in "
                            f"{', '.join(names)}; pass --columns")
    if kind == "ticks":
        price_col = cols.get("price") or cols.get("close")
        if price_col is None:
            raise DataError(f"{path.name}: no price column for ticks in {', '.join(names)}; pass --columns")
        size_col = cols.get("size") or cols.get("volume")
        size = _numeric(frame, size_col, path).astype(np.int64) if size_col else np.ones(len(ts), dtype=np.int64)
        return _Raw(TickArrays(ts, _numeric(frame, price_col, path), size), None, None)
    if not has_ohlc:
        raise DataError(f"{path.name}: cannot find open/high/low/close columns in {', '.join(names)}; pass --columns")
    o, h, l, c = (_numeric(frame, cols[k], path) for k in ("open", "high", "low", "close"))
    vol = _numeric(frame, cols["volume"], path).astype(np.int64) if "volume" in cols else np.zeros(len(ts), np.int64)
    seconds = _infer_bar_seconds(ts)
    start = ts - seconds * NS if opts.bar_time == "end" else ts
    return _Raw(None, BarArrays(start, start + seconds * NS, o, h, l, c, vol, np.zeros(len(ts), np.int64)), seconds)


def _infer_bar_seconds(ts: np.ndarray) -> int:
    """The source bar length: the most common gap between consecutive bars (sessions and weekends
    make the mean useless). Daily data (gaps of 1 and 3 days) -> 86400."""
    if ts.shape[0] < 2:
        return 60
    diffs = np.diff(ts)
    diffs = diffs[diffs > 0]
    if diffs.size == 0:
        return 60
    values, counts = np.unique(diffs, return_counts=True)
    seconds = int(values[np.argmax(counts)] // NS)
    return 86400 if seconds >= 86400 else max(seconds, 1)


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

def _group_bounds(keys: np.ndarray) -> np.ndarray:
    """Start indices of runs of equal keys (keys sorted)."""
    if keys.shape[0] == 0:
        return np.zeros(0, dtype=np.int64)
    return np.concatenate(([0], np.flatnonzero(np.diff(keys)) + 1))


def grid_buckets(ts: np.ndarray, tf: Timeframe, symbol: str | None) -> tuple[np.ndarray, np.ndarray]:
    """[start, end) of the live bar builder's bucket for every timestamp, vectorised: equal to
    `market_data.bars.SessionGrid(symbol).bucket(ts, tf)` (FixedGrid when `symbol` is None)."""
    ts = np.asarray(ts, dtype=np.int64)
    if symbol is None:
        size = tf.seconds * NS
        start = ts - ts % size
        return start, start + size
    from market_data import calendars

    if ts.shape[0] == 0:
        return ts.copy(), ts.copy()
    opens, closes = calendars.calendar_for(symbol).session_arrays(int(ts.min()), int(ts.max()))
    idx = np.searchsorted(opens, ts, "right") - 1
    safe = np.maximum(idx, 0)
    inside = (idx >= 0) & (ts < closes[safe])
    day_start = np.where(inside, opens[safe], 0)
    day_end = np.where(inside, closes[safe], 0)
    outside = np.flatnonzero(~inside)
    if outside.size:  # outside every session: the anchored day (SessionGrid's fallback)
        anchor = calendars.session_anchor(symbol)
        lo = hi = 0
        for k in outside.tolist():
            t = int(ts[k])
            if not lo <= t < hi:
                lo = calendars.anchored_day_start_ns(t, anchor)
                hi = lo + 86_400 * NS
            day_start[k], day_end[k] = lo, hi
    if tf.is_daily:
        return day_start, day_end
    size = tf.seconds * NS
    start = day_start + (ts - day_start) // size * size
    return start, np.minimum(start + size, day_end)


def ticks_to_bars(ticks: TickArrays, tf: Timeframe, symbol: str | None = None) -> BarArrays:
    """Aggregate trades to bars: the live builder's time grid (`grid_buckets`), or every N trades
    for tick charts."""
    n = len(ticks)
    if n == 0:
        return _empty_bars()
    grid_end: np.ndarray | None = None
    if tf.is_tick:
        keys = np.arange(n, dtype=np.int64) // tf.size
    else:
        keys, grid_end = grid_buckets(ticks.ts_ns, tf, symbol)
    starts = _group_bounds(keys)
    ends = np.concatenate((starts[1:], [n])) - 1
    price = ticks.price
    if tf.is_tick:
        start_ns = ticks.ts_ns[starts]
        end_ns = ticks.ts_ns[ends]
    else:
        assert grid_end is not None
        start_ns = keys[starts]
        end_ns = grid_end[starts]
    return BarArrays(
        start_ns.astype(np.int64), end_ns.astype(np.int64), price[starts].copy(),
        np.maximum.reduceat(price, starts), np.minimum.reduceat(price, starts), price[ends].copy(),
        np.add.reduceat(ticks.size, starts).astype(np.int64), (ends - starts + 1).astype(np.int64),
    )


def resample_bars(bars: BarArrays, source_seconds: int, tf: Timeframe, symbol: str | None = None) -> BarArrays:
    """Resample finer bars to `tf` on the live builder's grid (a source bar goes to the bucket
    containing its start, as `market_data.bars.resample_bars`). Equal timeframes pass through."""
    if tf.is_tick:
        raise DataError(f"tick charts ({tf.display}) need trade data, not bars")
    if source_seconds > tf.seconds:
        raise DataError(f"the data has {source_seconds}s bars; cannot build finer {tf.display} bars from them")
    if source_seconds == tf.seconds or len(bars) == 0:
        return bars
    if tf.seconds % source_seconds:
        raise DataError(f"{source_seconds}s bars do not divide evenly into {tf.display} bars")
    keys, grid_end = grid_buckets(bars.start_ns, tf, symbol)
    starts = _group_bounds(keys)
    ends = np.concatenate((starts[1:], [len(bars)])) - 1
    start_ns = keys[starts]
    return BarArrays(
        start_ns, grid_end[starts], bars.open[starts].copy(),
        np.maximum.reduceat(bars.high, starts), np.minimum.reduceat(bars.low, starts), bars.close[ends].copy(),
        np.add.reduceat(bars.volume, starts), np.add.reduceat(bars.trade_count, starts),
    )


def _empty_bars() -> BarArrays:
    z = np.zeros(0, dtype=np.int64)
    f = np.zeros(0, dtype=np.float64)
    return BarArrays(z, z, f, f, f, f, z, z)


def _concat_ticks(parts: list[TickArrays]) -> TickArrays:
    ts = np.concatenate([p.ts_ns for p in parts])
    order = np.argsort(ts, kind="stable")
    return TickArrays(ts[order], np.concatenate([p.price for p in parts])[order],
                      np.concatenate([p.size for p in parts])[order])


def _concat_bars(parts: list[BarArrays]) -> BarArrays:
    joined = BarArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in _BAR_FIELDS))
    order = np.argsort(joined.start_ns, kind="stable")
    joined = BarArrays(*(getattr(joined, f)[order] for f in _BAR_FIELDS))
    # Overlapping files: keep the first bar of each start time.
    keep = np.concatenate(([True], np.diff(joined.start_ns) != 0)) if len(joined) else np.zeros(0, bool)
    return joined.take(keep)


def load(opts: LoadOptions) -> MarketData:
    """Read every file, filter to [start, end), build bars of the requested timeframe."""
    tf = Timeframe.parse(opts.timeframe)
    if not opts.paths:
        raise DataError("no data files given")
    tick_parts: list[TickArrays] = []
    bar_parts: list[BarArrays] = []
    seconds: set[int] = set()
    for path in opts.paths:
        _check_file(path)
        raw = _read_dbn(path, opts) if _is_dbn(path) else _read_csv(path, opts)
        if raw.ticks is not None:
            tick_parts.append(raw.ticks)
        if raw.bars is not None:
            bar_parts.append(raw.bars)
            seconds.add(int(raw.bar_seconds or 60))
    if tick_parts and bar_parts:
        raise DataError("mixing trade files and bar files in one run is not supported")
    if len(seconds) > 1:
        raise DataError(f"the bar files have different bar lengths ({sorted(seconds)} s)")
    lo = opts.start_ns if opts.start_ns is not None else np.iinfo(np.int64).min
    hi = opts.end_ns if opts.end_ns is not None else np.iinfo(np.int64).max
    ticks: TickArrays | None = None
    if tick_parts:
        ticks = _concat_ticks(tick_parts)
        mask = (ticks.ts_ns >= lo) & (ticks.ts_ns < hi)
        ticks = TickArrays(ticks.ts_ns[mask], ticks.price[mask], ticks.size[mask])
        bars = ticks_to_bars(ticks, tf, opts.symbol)
        what = f"{len(ticks)} trades"
    else:
        raw_bars = _concat_bars(bar_parts)
        raw_bars = raw_bars.take((raw_bars.start_ns >= lo) & (raw_bars.start_ns < hi))
        bars = resample_bars(raw_bars, seconds.pop(), tf, opts.symbol)
        what = f"{len(raw_bars)} source bars"
    if len(bars) == 0:
        raise DataError("no data in the requested range" if (opts.start_ns or opts.end_ns) else "the data is empty")
    return MarketData(bars, ticks, f"{what} -> {len(bars)} {tf.display} bars")


def parse_when(text: str, tz: str = "UTC") -> int:
    """`--from/--to`: ISO date or datetime; naive values are in `tz`."""
    try:
        stamp = pd.Timestamp(text)
    except (ValueError, TypeError):
        raise DataError(f"cannot parse date/time {text!r}; use ISO format such as 2006-03-01 or 2006-03-01T14:30") from None
    if stamp is pd.NaT:
        raise DataError(f"cannot parse date/time {text!r}")
    if stamp.tzinfo is None:
        stamp = stamp.tz_localize(tz)
    return int(stamp.tz_convert("UTC").value)


def fetch_databento(dataset: str, raw_symbol: str, schema: str, start: str, end: str, api_key: str,
                    dest: Path) -> Path:
    """Download from Databento Historical into a DBN file, then read it like any other file.

    Needs DATABENTO_API_KEY and network access: this path cannot be exercised offline/in tests."""
    import databento as db

    client = db.Historical(api_key)
    data = client.timeseries.get_range(dataset=dataset, symbols=[raw_symbol], schema=schema, start=start, end=end)
    dest.parent.mkdir(parents=True, exist_ok=True)
    data.to_file(dest)
    return dest


def utc_iso(ns: int) -> str:
    return datetime.fromtimestamp(ns / NS, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
