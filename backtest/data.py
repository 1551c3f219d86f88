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
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from config.instruments import Instrument
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
    # An instrument outside the catalog (backtest/instruments.py): it travels with the data so a
    # sweep worker in another process registers it before it runs a strategy on these bars.
    instrument: Instrument | None = None
    off_tick: "OffTick | None" = None  # loaded with --allow-off-tick: the prices fills round to the tick


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
    # Every price must be a multiple of this tick (None: no check); off-tick prices are refused
    # (`DataError`) unless `allow_off_tick`, which records them in the description (fills round).
    tick_size: Decimal | None = None
    allow_off_tick: bool = False
    research_instrument: Instrument | None = None  # a symbol outside the catalog (backtest/instruments.py)


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
# Header names are compared normalised (`_norm`): lower case, anything but letters and digits as
# "_", so "Timestamp (UTC)", "<DATE>" (MetaTrader) and "Gmt time" (Dukascopy) match too.
_ALIASES = {
    "datetime": ("datetime", "timestamp", "timestamp_utc", "datetime_utc", "date_time", "date_time_utc",
                 "time_stamp", "ts_event", "ts_utc", "ts", "dt", "time_utc", "gmt_time", "utc_time", "utc",
                 "open_time", "unix", "unix_time", "epoch", "timestamp_ms"),
    "date": ("date", "day", "trade_date"),
    "time": ("time",),
    "open": ("open", "o", "open_price"),
    "high": ("high", "h", "high_price"),
    "low": ("low", "l", "low_price"),
    "close": ("close", "c", "last", "close_price"),
    "volume": ("volume", "vol", "v", "tickvol", "tick_volume"),
    "price": ("price", "trade_price"),
    "size": ("size", "qty", "quantity", "trade_size"),
}
# Naive timestamps in a column whose name says UTC/GMT are UTC whatever --tz says.
_UTC_NAMES = ("utc", "gmt", "ts_event")


def _norm(name: str) -> str:
    return "_".join("".join(ch if ch.isalnum() else " " for ch in name.lower()).split())


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


def _is_parquet(path: Path) -> bool:
    return path.name.lower().endswith((".parquet", ".pq"))


def _csv_header(path: Path) -> list[str]:
    """Header names, repaired when the rows have one more field than the header (the 2006 bars file
    writes date and time as two fields under a single "Date" header). Compressed files (.gz, .bz2,
    .zst, .lz4) are read through their codec."""
    import pyarrow as pa

    try:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = stream.read(256 * 1024)
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path.name}: unreadable file ({str(exc)[:100]})") from None
    lines = head.decode("utf-8", errors="replace").splitlines()
    rows = list(csv.reader(lines[:3]))
    if len(rows) < 2 or not rows[0]:
        raise DataError(f"{path.name}: the CSV has no header or no rows")
    header, first = rows[0], rows[1]
    names = [h.strip() for h in header]
    if len(first) == len(names) + 1:
        lowered = [_norm(n) for n in names]
        if "date" in lowered and "time" not in lowered:
            i = lowered.index("date")
            names = names[: i + 1] + ["Time"] + names[i + 1:]
    if len(first) != len(names):
        raise DataError(f"{path.name}: header has {len(names)} columns but rows have {len(first)}")
    return names


def _resolve_columns(names: Sequence[str], given: Mapping[str, str] | None, path: Path) -> dict[str, str]:
    exact = set(names)
    lowered = {n.lower(): n for n in names}
    normalised: dict[str, str] = {}
    for n in names:
        normalised.setdefault(_norm(n), n)
    found: dict[str, str] = {}
    for logical, real in (given or {}).items():
        if real in exact:
            found[logical] = real
        elif real.lower() in lowered:
            found[logical] = lowered[real.lower()]
        elif _norm(real) in normalised:
            found[logical] = normalised[_norm(real)]
        else:
            raise DataError(f"{path.name}: column {real!r} (for {logical}) not in {', '.join(names)}")
    for logical, aliases in _ALIASES.items():
        if logical in found:
            continue
        for alias in aliases:
            if alias in normalised and normalised[alias] not in found.values():
                found[logical] = normalised[alias]
                break
    if "datetime" not in found and "date" not in found and "time" in found:
        found["datetime"] = found.pop("time")  # a lone "time" column holds the whole timestamp (TradingView)
    return found


def _read_table(path: Path, opts: LoadOptions) -> tuple[object, dict[str, str], list[str]]:
    """The file as a pyarrow Table of only the columns it needs, the logical -> column mapping and
    the file's column names. CSV through pyarrow.csv (multi-threaded; .csv.gz etc. decompressed),
    Parquet through pyarrow.parquet."""
    import pyarrow as pa

    if _is_parquet(path):
        import pyarrow.parquet as pq

        try:
            names = list(pq.read_schema(path).names)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path.name}: not a readable Parquet file ({str(exc)[:100]})") from None
        cols = _resolve_columns(names, opts.columns, path)
        try:
            table = pq.read_table(path, columns=sorted(set(cols.values())))
        except (OSError, pa.ArrowException) as exc:
            raise DataError(f"{path.name}: not a readable Parquet file ({str(exc)[:100]})") from None
        return table, cols, names
    import pyarrow.csv as pcsv

    names = _csv_header(path)
    cols = _resolve_columns(names, opts.columns, path)
    wanted = sorted(set(cols.values()), key=names.index)
    text_columns = {cols[k] for k in ("datetime", "date", "time") if k in cols}
    # Time columns are read as text and parsed below (several formats and zones); prices as
    # float64 directly, so a non-numeric value is an error naming its column.
    types = {name: (pa.string() if name in text_columns else pa.float64()) for name in wanted}
    try:
        table = pcsv.read_csv(
            path,
            read_options=pcsv.ReadOptions(column_names=names, skip_rows=1, block_size=8 << 20),
            parse_options=pcsv.ParseOptions(newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(include_columns=wanted, column_types=types,
                                                strings_can_be_null=False, quoted_strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        raise DataError(f"{path.name}: {_csv_problem(str(exc), names)}") from None
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path.name}: unreadable CSV ({str(exc)[:100]})") from None
    return table, cols, names


def _csv_problem(message: str, names: Sequence[str]) -> str:
    """pyarrow's conversion error as one line naming the column ("In CSV column #3: CSV conversion
    error to double: invalid value 'x'")."""
    match = re.search(r"column #(\d+): CSV conversion error to \w+: invalid value '([^']*)'", message)
    if match and int(match.group(1)) < len(names):
        return f"column {names[int(match.group(1))]!r} has non-numeric values (e.g. {match.group(2)[:30]!r})"
    match = re.search(r"Expected (\d+) columns, got (\d+)", message)
    if match:
        return f"rows with {match.group(2)} fields where the header has {match.group(1)} columns"
    return f"unreadable CSV ({message.splitlines()[0][:100]})"


def _epoch_unit(values: np.ndarray) -> str:
    """Seconds, ms, us or ns since the epoch, by magnitude (years 1973..5138 in each unit)."""
    peak = float(np.nanmax(np.abs(values))) if values.size else 0.0
    return "s" if peak < 1e11 else "ms" if peak < 1e14 else "us" if peak < 1e17 else "ns"


def _timestamps(table: object, cols: Mapping[str, str], tz: str, path: Path) -> np.ndarray:
    """int64 ns UTC from the time column(s): Arrow timestamps (zoned or naive), dates, epoch
    numbers (s/ms/us/ns by magnitude) or text (ISO 8601 parsed by Arrow, anything else by pandas).
    Naive values are in `tz`, or UTC when the column's name says so (timestamp_utc, Gmt time)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if "datetime" in cols:
        col, name = table.column(cols["datetime"]), cols["datetime"]  # type: ignore[attr-defined]
    elif "date" in cols and "time" in cols:
        d, t = table.column(cols["date"]), table.column(cols["time"])  # type: ignore[attr-defined]
        col = pc.binary_join_element_wise(pc.cast(d, pa.string()), pc.cast(t, pa.string()), " ")
        name = cols["date"]
    elif "date" in cols:
        col, name = table.column(cols["date"]), cols["date"]  # type: ignore[attr-defined]
    else:
        raise DataError(f"{path.name}: no Date/Time/Datetime column in {', '.join(table.column_names)}; "  # type: ignore[attr-defined]
                        "pass --columns")
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    if col.null_count:
        raise DataError(f"{path.name}: column {name!r} has empty timestamps")
    utc_named = any(word in _norm(name) for word in _UTC_NAMES)
    zone = "UTC" if utc_named else tz
    kind = col.type
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        stripped = pc.utf8_trim_whitespace(col)
        sample = stripped.slice(0, 1000)
        if pc.all(pc.match_substring_regex(sample, r"^\d{8}$")).as_py():  # 20240102: a compact date
            return _text_timestamps(stripped, zone, name, path)
        if pc.all(pc.match_substring_regex(sample, r"^-?\d+(\.\d+)?$")).as_py():  # epoch numbers
            try:
                col = pc.cast(stripped, pa.float64() if pc.any(pc.match_substring(sample, ".")).as_py()
                              else pa.int64())
                kind = col.type
            except pa.ArrowInvalid:
                pass
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return _text_timestamps(stripped, zone, name, path)
    if pa.types.is_integer(kind) or pa.types.is_floating(kind):
        values = col.to_numpy(zero_copy_only=False).astype(np.float64)
        scale = {"s": 1e9, "ms": 1e6, "us": 1e3, "ns": 1.0}[_epoch_unit(values)]
        if pa.types.is_integer(kind):
            ints = col.to_numpy(zero_copy_only=False).astype(np.int64)
            if ints.size and ints.min() >= 19000101 and ints.max() <= 21001231:  # 20240102: a compact date
                return _text_timestamps(pc.cast(col, pa.string()), zone, name, path)
            return ints * int(scale)
        return np.round(values * scale).astype(np.int64)
    if pa.types.is_date(kind):
        col = pc.cast(pc.cast(col, pa.timestamp("s")), pa.timestamp("ns"))
        kind = col.type
    if pa.types.is_timestamp(kind):
        return _localised_ns(col, zone, path)
    raise DataError(f"{path.name}: column {name!r} ({kind}) is not a date/time")


def _text_timestamps(text: object, zone: str, name: str, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    for target in (pa.timestamp("ns"), pa.timestamp("ns", tz="UTC")):  # ISO 8601, naive or with Z/offset
        try:
            return _localised_ns(pc.cast(text, target), zone, path)
        except pa.ArrowInvalid:
            continue
    try:
        return _localised_ns(pc.strptime(text, format="%Y%m%d", unit="ns"), zone, path)
    except pa.ArrowInvalid:
        pass
    series = pd.Series(text.to_numpy(zero_copy_only=False))  # type: ignore[attr-defined]
    first = str(series.iloc[0])
    # Dotted dates are day first (Dukascopy, European exports: 03.01.2006 is 3 January); slashes
    # month first unless a first field above 12 says otherwise (pandas decides that per value).
    dayfirst = bool(re.match(r"^\d{1,2}\.\d{1,2}\.\d{4}", first))
    from pandas.tseries.api import guess_datetime_format

    guessed = guess_datetime_format(first, dayfirst=dayfirst)
    stamps = None
    if guessed:
        try:
            stamps = pd.to_datetime(series, format=guessed)  # one format for the whole column: the fast path
        except (ValueError, TypeError):
            stamps = None
    if stamps is None:
        try:
            stamps = pd.to_datetime(series, format="mixed", dayfirst=dayfirst)
        except (ValueError, TypeError) as exc:
            raise DataError(f"{path.name}: unparseable timestamps in {name!r} ({str(exc)[:100]})") from None
    if stamps.dt.tz is None:
        try:
            stamps = stamps.dt.tz_localize(zone)
        except Exception:
            raise DataError(f"{path.name}: cannot place timestamps in time zone {zone!r}") from None
    # pandas may parse to us or s resolution: ns explicitly.
    return stamps.dt.tz_convert("UTC").astype("datetime64[ns, UTC]").array.asi8.astype(np.int64)


def _localised_ns(col: object, zone: str, path: Path) -> np.ndarray:
    """int64 ns UTC of an Arrow timestamp array; naive values are wall times in `zone`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if col.type.tz is None and zone not in ("UTC", "utc", "Etc/UTC", "Z"):  # type: ignore[attr-defined]
        try:
            col = pc.assume_timezone(col, timezone=zone)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, ValueError):
            raise DataError(f"{path.name}: cannot place timestamps in time zone {zone!r}") from None
    return pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).to_numpy(  # type: ignore[attr-defined]
        zero_copy_only=False).astype(np.int64)


def _numeric(table: object, column: str, path: Path) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.compute as pc

    col = table.column(column)  # type: ignore[attr-defined]
    try:
        values = pc.cast(col, pa.float64()) if col.type != pa.float64() else col
    except pa.ArrowInvalid:
        raise DataError(f"{path.name}: column {column!r} has non-numeric values") from None
    out = values.to_numpy() if isinstance(values, pa.Array) else values.combine_chunks().to_numpy(zero_copy_only=False)
    if values.null_count or np.isnan(out).any():
        raise DataError(f"{path.name}: column {column!r} has non-numeric values")
    return np.asarray(out, dtype=np.float64)


def _read_csv(path: Path, opts: LoadOptions) -> _Raw:
    """CSV (plain or compressed) or Parquet bars or ticks."""
    table, cols, names = _read_table(path, opts)
    if table.num_rows == 0:  # type: ignore[attr-defined]
        raise DataError(f"{path.name}: the file has no rows")
    ts = _timestamps(table, cols, opts.tz, path)
    order = np.argsort(ts, kind="stable")
    in_order = bool(np.all(order == np.arange(order.size)))
    ts = ts[order]

    def column(key: str) -> np.ndarray:
        values = _numeric(table, cols[key], path)
        return values if in_order else values[order]

    has_ohlc = all(k in cols for k in ("open", "high", "low", "close"))
    kind = opts.csv_kind
    ohlc: tuple[np.ndarray, ...] | None = None
    if kind == "auto":
        if "price" in cols and not has_ohlc:
            kind = "ticks"
        elif has_ohlc:
            ohlc = tuple(column(k) for k in ("open", "high", "low", "close"))
            o, h, l, c = ohlc
            # Tick files written as bars have O=H=L=C on every row and timestamps off the minute grid.
            flat = bool(np.all((o == h) & (h == l) & (l == c)))
            off_grid = bool(np.any(ts % (60 * NS) != 0))
            kind = "ticks" if flat and off_grid else "bars"
        else:
            raise DataError(f"{path.name}: cannot find open/high/low/close or price columns in "
                            f"{', '.join(names)}; pass --columns")
    if kind == "ticks":
        price_key = "price" if "price" in cols else "close" if "close" in cols else None
        if price_key is None:
            raise DataError(f"{path.name}: no price column for ticks in {', '.join(names)}; pass --columns")
        size_key = "size" if "size" in cols else "volume" if "volume" in cols else None
        size = column(size_key).astype(np.int64) if size_key else np.ones(len(ts), dtype=np.int64)
        return _Raw(TickArrays(ts, column(price_key), size), None, None)
    if not has_ohlc:
        raise DataError(f"{path.name}: cannot find open/high/low/close columns in {', '.join(names)}; pass --columns")
    o, h, l, c = ohlc or tuple(column(k) for k in ("open", "high", "low", "close"))
    vol = column("volume").astype(np.int64) if "volume" in cols else np.zeros(len(ts), np.int64)
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


def session_stamped(bars: BarArrays, symbol: str, tz: str = "UTC") -> BarArrays:
    """Daily bars read from a daily file (stamped with a date, i.e. midnight) moved onto their
    trading session: [open, close) of the session whose trade date is the bar's date (in `tz`,
    the zone the file's dates were read in), as the live builder's daily bars are. Every time
    derived from a daily bar (a fill at its open, a stop or target inside it, the decision at its
    close) is then a real session time, e.g. 14:30Z/21:00Z for NYSE, not midnight or a made-up
    hour. A date without a session (a holiday row) keeps its midnight stamp."""
    from market_data import calendars

    if len(bars) == 0:
        return bars
    calendar = calendars.calendar_for(symbol)
    local = pd.DatetimeIndex(pd.to_datetime(bars.start_ns, utc=True)).tz_convert(tz)
    start = bars.start_ns.copy()
    end = bars.end_ns.copy()
    for k, day in enumerate(local.date):
        session = calendar.session_for_date(day)
        if session is not None and (k == 0 or session.open_ns >= end[k - 1]):
            start[k], end[k] = session.open_ns, session.close_ns
    return BarArrays(start, end, bars.open, bars.high, bars.low, bars.close, bars.volume, bars.trade_count)


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
    if len(parts) == 1 and (len(parts[0]) < 2 or bool(np.all(np.diff(parts[0].start_ns) > 0))):
        return parts[0]  # one file, already in order without duplicates (each file is sorted when read)
    joined = BarArrays(*(np.concatenate([getattr(p, f) for p in parts]) for f in _BAR_FIELDS))
    order = np.argsort(joined.start_ns, kind="stable")
    joined = BarArrays(*(getattr(joined, f)[order] for f in _BAR_FIELDS))
    # Overlapping files: keep the first bar of each start time.
    keep = np.concatenate(([True], np.diff(joined.start_ns) != 0)) if len(joined) else np.zeros(0, bool)
    return joined.take(keep)


def load(opts: LoadOptions) -> MarketData:
    """Read every file, filter to [start, end), build bars of the requested timeframe."""
    tf = Timeframe.parse(opts.timeframe)
    if opts.research_instrument is not None:  # a sweep worker in another process learns it here
        from backtest.instruments import ensure_registered

        ensure_registered(opts.research_instrument)
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
    source: BarArrays | None = None  # the file's bars, for the tick check (bars files)
    if tick_parts:
        ticks = _concat_ticks(tick_parts)
        mask = (ticks.ts_ns >= lo) & (ticks.ts_ns < hi)
        ticks = TickArrays(ticks.ts_ns[mask], ticks.price[mask], ticks.size[mask])
        bars = ticks_to_bars(ticks, tf, opts.symbol)
        what = f"{len(ticks)} trades"
    else:
        raw_bars = _concat_bars(bar_parts)
        if opts.start_ns is not None or opts.end_ns is not None:
            raw_bars = raw_bars.take((raw_bars.start_ns >= lo) & (raw_bars.start_ns < hi))
        source_seconds = seconds.pop()
        bars = resample_bars(raw_bars, source_seconds, tf, opts.symbol)
        if tf.is_daily and source_seconds == 86400 and opts.symbol is not None:
            bars = session_stamped(bars, opts.symbol, opts.tz)
        what = f"{len(raw_bars)} source bars"
        source = raw_bars
    if len(bars) == 0:
        raise DataError("no data in the requested range" if (opts.start_ns or opts.end_ns) else "the data is empty")
    data = MarketData(bars, ticks, f"{what} -> {len(bars)} {tf.display} bars", opts.research_instrument)
    if opts.tick_size is not None:
        found = off_tick(data if source is None else MarketData(source, None, ""), opts.tick_size)
        if found is not None:
            text = found.message(opts.symbol or "the instrument", opts.tick_size)
            if not opts.allow_off_tick:
                raise DataError(f"{text}: the data is another instrument's (give its --symbol, or --tick-size for "
                                "one outside the catalog), or pass --allow-off-tick to round fills to the tick")
            data = MarketData(bars, ticks, f"{data.description}; {found.count} of {found.total} prices off the "
                              f"{opts.tick_size} tick (fills rounded to it)", opts.research_instrument, found)
    return data


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


@dataclass(frozen=True, slots=True)
class OffTick:
    """Prices of the data that are not whole multiples of the instrument's tick size."""

    count: int
    total: int
    example_price: float
    example_ns: int

    def message(self, symbol: str, tick_size: Decimal) -> str:
        return (f"{self.count} of {self.total} prices are not multiples of {symbol}'s tick size {tick_size} "
                f"(e.g. {self.example_price!r} at {utc_iso(self.example_ns)})")


def off_tick(data: MarketData, tick_size: Decimal) -> OffTick | None:
    """Which prices a fill would have to round: a file of another instrument (a 6E file run as
    /ES fills everything at 1.00) or adjusted prices. A millionth of a tick absorbs float noise."""
    tick = float(tick_size)
    if data.ticks is not None:
        prices, stamps = data.ticks.price, data.ticks.ts_ns
    else:
        b = data.bars
        prices = np.concatenate((b.open, b.high, b.low, b.close))
        stamps = np.concatenate((b.start_ns, b.start_ns, b.start_ns, b.start_ns))
    if prices.size == 0:
        return None
    ratio = prices / tick
    off = np.abs(ratio - np.rint(ratio)) > 1e-6
    count = int(np.count_nonzero(off))
    if count == 0:
        return None
    k = int(np.argmax(off))
    return OffTick(count, int(prices.size), float(prices[k]), int(stamps[k]))
