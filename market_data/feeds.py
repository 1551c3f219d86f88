"""Market data feeds behind one interface: start / stop / subscribe / status, one callback per trade.

- `SimulatedFeed`: random-walk trades for every catalog instrument (the default source).
- `ReplayFeed`: DBN files (trades, MBO, MBP, ohlcv schemas) and CSV bars/ticks, merged in timestamp
  order, as fast as possible or at N x real time.
- `DatabentoLiveFeed` lives in `market_data/databento_feed.py`.

Feeds also emit `FeedEvent`s: a `Watermark` ("no more trades before ts will come", used to close
the last bars of a replay file whose metadata says where its data ends) and a `Gap` (data may be
missing for a time range; the bar builders mark the open bar as gapped).

`Feed.history(symbol, tf, n, end_ns, end_price)` is the feed's own past: bars from before its live
data, asked for by the warm-up (`MarketDataService.warmup`) once Redis has nothing older. Only the
simulated feed has one (generated, `market_data/simulated_history.py`); Databento's past comes
from Databento Historical and a replay's from its files, both read by the service.
"""
from __future__ import annotations

import csv
import heapq
import logging
import math
import random
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

from config.instruments import CATALOG, AssetClass, UnknownSymbolError, canonical_symbol
from config.symbology import catalog_symbol_for_raw
from config.timeframes import Timeframe
from domain.market import Bar, Trade
from market_data.bars import bar_to_trades
from market_data.simulated_history import BackwardWalk, WalkParams

log = logging.getLogger(__name__)

UNDEF_TIMESTAMP = 2**64 - 1  # databento_dbn.UNDEF_TIMESTAMP
UNDEF_PRICE = 2**63 - 1  # databento_dbn.UNDEF_PRICE
PRICE_SCALE = 1e-9  # DBN fixed-point prices


@dataclass(frozen=True, slots=True)
class Watermark:
    ts_ns: int  # no trade with an earlier timestamp will follow


@dataclass(frozen=True, slots=True)
class Gap:
    symbols: tuple[str, ...]  # empty = every subscribed symbol
    start_ns: int
    end_ns: int
    backfilled: bool  # True when the missing trades were fetched and delivered before this event


FeedEvent = Watermark | Gap
TradeCallback = Callable[[Trade], None]
EventCallback = Callable[[FeedEvent], None]


@dataclass
class FeedCounters:
    trades: int = 0
    skipped_malformed: int = 0
    skipped_undefined_ts: int = 0
    skipped_unknown_symbol: int = 0
    skipped_other_records: int = 0


@dataclass
class FeedState:
    state: str = "idle"  # idle | running | reconnecting | finished | stopped | error
    last_trade_ns: int | None = None  # exchange time of the last trade
    last_trade_wall: float | None = None  # time.time() when it was received
    error: str | None = None
    counters: FeedCounters = field(default_factory=FeedCounters)


class Feed(ABC):
    name: str = "feed"
    realtime: bool = True  # trades arrive in wall-clock time (bar timers apply)

    def __init__(self) -> None:
        self._on_trade: TradeCallback | None = None
        self._on_event: EventCallback | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._subscribed: set[str] = set()
        self._lock = threading.Lock()
        self.state = FeedState()

    # -- interface ------------------------------------------------------------------------
    def backfill_from_ns(self) -> int | None:
        """Start of a gap whose backfill is in flight (None: none). Trades after it are still to
        come, so bar timers must not close bars past it yet (see MarketDataService)."""
        return None

    def start(self, on_trade: TradeCallback, on_event: EventCallback | None = None) -> None:
        self._on_trade = on_trade
        self._on_event = on_event
        self._stop.clear()
        self.state.state = "running"
        self._thread = threading.Thread(target=self._run_safely, name=f"md-feed-{self.name}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._on_stop()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        if self.state.state not in ("finished", "error"):
            self.state.state = "stopped"

    def subscribe(self, symbol: str) -> None:
        with self._lock:
            self._subscribed.add(canonical_symbol(symbol))

    def history(self, symbol: str, tf: Timeframe, n: int, end_ns: int, end_price: float | None = None) -> list[Bar]:
        """Up to `n` completed bars of this feed's own past, oldest first, ending before `end_ns` (time
        bars at or before it, tick bars' closing trade strictly before it) and, when the feed makes
        its prices up, closing at `end_price`. Default: a real feed has no past of its own."""
        return []

    def continue_from(self, prices: Mapping[str, float]) -> None:
        """The last prices published before this process started (Redis). A feed that makes its
        prices up continues from them; a real feed ignores them."""

    def status(self) -> dict[str, Any]:
        s = self.state
        return {
            "feed": self.name, "state": s.state, "realtime": self.realtime,
            "last_trade_ns": s.last_trade_ns, "last_trade_wall": s.last_trade_wall,
            "error": s.error, "subscribed": sorted(self._subscribed), **vars(s.counters),
        }

    def join(self, timeout: float | None = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    # -- helpers --------------------------------------------------------------------------
    @abstractmethod
    def _run(self) -> None: ...

    def _on_stop(self) -> None:
        """Hook for feeds that must interrupt a blocking client."""

    def _run_safely(self) -> None:
        try:
            self._run()
        except Exception as exc:  # a feed thread must never die silently
            log.exception("market data feed %s failed", self.name)
            self.state.state, self.state.error = "error", f"{exc.__class__.__name__}: {exc}"

    def _emit(self, trade: Trade) -> None:
        self.state.counters.trades += 1
        self.state.last_trade_ns = trade.ts_ns
        self.state.last_trade_wall = time.time()
        assert self._on_trade is not None
        self._on_trade(trade)

    def _event(self, event: FeedEvent) -> None:
        if self._on_event is not None:
            self._on_event(event)


# ---- simulated ------------------------------------------------------------------------------

QuoteSource = Callable[[], float | None]


class SimulatedFeed(Feed):
    """Random-walk trades at each instrument's tick size. Every `1 / trades_per_second` seconds each
    instrument prints one trade; the step size scales the instrument's daily volatility to the
    number of trades in a 6.5 hour day so charts move visibly but plausibly. SPX comes from
    `quote_sources["SPX"]` (a broker quote callable) when given, else from the random walk."""

    name = "simulated"

    def __init__(self, trades_per_second: float = 20.0, *, seed: int | None = None,
                 symbols: Iterable[str] | None = None, quote_sources: dict[str, QuoteSource] | None = None) -> None:
        super().__init__()
        self.trades_per_second = trades_per_second
        self._seed = seed
        self._random = random.Random(seed)
        self._symbols = [canonical_symbol(s) for s in (symbols if symbols is not None else CATALOG)]
        self._quotes = {canonical_symbol(k): v for k, v in (quote_sources or {}).items()}
        self._prices = {s: float(CATALOG[s].typical_price) for s in self._symbols}
        trades_per_day = max(trades_per_second * 6.5 * 3600, 1.0)
        self._step_fraction = {s: CATALOG[s].daily_volatility / math.sqrt(trades_per_day) for s in self._symbols}
        # One generated past per (symbol, timeframe), kept while it is asked for with the same end:
        # every strategy warming up on the same bars sees the same history.
        self._history: dict[tuple[str, str], BackwardWalk] = {}
        self._history_lock = threading.Lock()

    def continue_from(self, prices: Mapping[str, float]) -> None:
        """Start the walk at the last published prices, so bars kept in Redis from an earlier run
        and the new live bars join without a jump back to the typical price."""
        for raw, price in prices.items():
            sym = canonical_symbol(raw)
            if sym in self._prices and sym not in self._quotes and math.isfinite(price) and price > 0:
                self._prices[sym] = float(CATALOG[sym].round_price(price))

    def history(self, symbol: str, tf: Timeframe, n: int, end_ns: int, end_price: float | None = None) -> list[Bar]:
        """Bars generated backwards from (`end_ns`, `end_price`; default the walk's current price)
        with the live walk's tick and volatility, inside the instrument's sessions only. A symbol
        priced from a broker quote gets none: made-up bars must never mix with real prices."""
        sym = canonical_symbol(symbol)
        if n <= 0 or sym not in self._prices or sym in self._quotes:
            return []
        instrument = CATALOG[sym]
        with self._history_lock:
            walk = self._history.get((sym, tf.raw))
            if walk is None or walk.end_ns != end_ns:
                price = end_price if end_price is not None and math.isfinite(end_price) and end_price > 0 \
                    else self._prices[sym]
                params = WalkParams(float(instrument.tick_size), self._step_fraction[sym], self.trades_per_second,
                                    has_volume=instrument.asset_class is not AssetClass.INDEX)
                # Seeded feeds (tests) generate the same past for the same request.
                rng = random.Random(f"{self._seed}:{sym}:{tf.raw}:{end_ns}") if self._seed is not None else random.Random()
                walk = BackwardWalk(sym, tf, end_ns, float(instrument.round_price(price)), params, rng)
                self._history[(sym, tf.raw)] = walk
            return walk.bars(n)

    def next_trade(self, symbol: str, ts_ns: int) -> Trade | None:
        instrument = CATALOG[symbol]  # type: ignore[index]
        quote = self._quotes.get(symbol)
        if quote is not None:
            try:
                value = quote()
            except Exception:  # a flaky broker quote must not kill the feed
                log.warning("quote source for %s failed", symbol, exc_info=True)
                value = None
            if value is None or not math.isfinite(value) or value <= 0:
                return None
            return Trade(symbol, ts_ns, float(instrument.round_price(value)), 0)
        tick = float(instrument.tick_size)
        price = self._prices[symbol]
        step = self._random.gauss(0.0, price * self._step_fraction[symbol])
        price = max(tick, round((price + step) / tick) * tick)
        price = round(price, 6)
        self._prices[symbol] = price
        size = 0 if instrument.asset_class.value == "index" else 1 + int(self._random.expovariate(0.7))
        return Trade(symbol, ts_ns, price, size)

    def _run(self) -> None:
        interval = 1.0 / self.trades_per_second
        next_at = time.monotonic()
        while not self._stop.is_set():
            now_ns = time.time_ns()
            for symbol in self._symbols:
                trade = self.next_trade(symbol, now_ns)
                if trade is not None:
                    self._emit(trade)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay < 0:  # fell behind (slow machine): do not burst to catch up
                next_at, delay = time.monotonic(), 0.0
            self._stop.wait(delay)


# ---- replay ---------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class ReplaySource:
    """The trades of one file in timestamp order, plus where its data is known to end."""

    path: str
    trades: list[tuple[int, Trade]]  # (ordering ts, trade)
    end_ns: int | None
    counters: FeedCounters


def _dbn_symbol_map(store: Any) -> dict[int, str]:
    mapping: dict[int, str] = {}
    for raw, intervals in (store.metadata.mappings or {}).items():
        for interval in intervals:
            try:
                mapping[int(interval["symbol"])] = raw
            except (KeyError, ValueError, TypeError):
                continue
    return mapping


def load_dbn(path: str | Path) -> ReplaySource:
    """Read a DBN file into catalog-symbol trades.

    Trade sources, in priority order so a capture holding several schemas never double counts:
    trades-schema records, else MBO records with action 'T' (action 'F' fills are the resting side
    of the same trade, not extra trades), else MBP records with action 'T', else OHLCV bars turned
    into synthetic O/H/L/C trades. Other records (definitions, statistics, status) are skipped."""
    import databento as db

    return load_dbn_store(db.DBNStore.from_file(str(path)), str(path))


def load_dbn_store(store: Any, path: str = "<dbn>") -> ReplaySource:
    """`load_dbn` for an already-open `DBNStore` (e.g. a Historical API response)."""
    import databento_dbn as dbn

    ids = _dbn_symbol_map(store)
    counters = FeedCounters()
    by_kind: dict[str, list[Any]] = {"trades": [], "mbo": [], "mbp": [], "ohlcv": []}
    for record in store:
        if isinstance(record, dbn.SymbolMappingMsg):
            ids[record.instrument_id] = record.stype_out_symbol or record.stype_in_symbol
        elif isinstance(record, dbn.TradeMsg):
            by_kind["trades"].append(record)
        elif isinstance(record, dbn.MBOMsg):
            by_kind["mbo"].append(record)
        elif isinstance(record, (dbn.MBP1Msg, dbn.MBP10Msg)):
            by_kind["mbp"].append(record)
        elif isinstance(record, dbn.OHLCVMsg):
            by_kind["ohlcv"].append(record)
        else:
            counters.skipped_other_records += 1
    kind = next((k for k in ("trades", "mbo", "mbp", "ohlcv") if by_kind[k]), None)
    for other, records in by_kind.items():
        if other != kind:
            counters.skipped_other_records += len(records)
    symbol_cache: dict[int, str | None] = {}

    def symbol_of(instrument_id: int) -> str | None:
        if instrument_id not in symbol_cache:
            raw = ids.get(instrument_id)
            symbol_cache[instrument_id] = catalog_symbol_for_raw(raw) if raw else None
        return symbol_cache[instrument_id]

    trades: list[tuple[int, Trade]] = []
    for record in by_kind.get(kind or "", []):
        if kind != "ohlcv" and str(record.action) != "T":
            counters.skipped_other_records += 1
            continue
        ts_event = int(record.ts_event)
        if ts_event == UNDEF_TIMESTAMP or ts_event <= 0:
            counters.skipped_undefined_ts += 1
            continue
        symbol = symbol_of(record.instrument_id)
        if symbol is None:
            counters.skipped_unknown_symbol += 1
            continue
        if kind == "ohlcv":
            seconds = _ohlcv_seconds(record)
            prices = (record.open, record.high, record.low, record.close)
            if any(p == UNDEF_PRICE for p in prices) or seconds is None:
                counters.skipped_malformed += 1
                continue
            bar = Bar(symbol, "", ts_event, ts_event + seconds * 1_000_000_000,
                      *(p * PRICE_SCALE for p in prices), int(record.volume), 0)
            trades.extend((t.ts_ns, t) for t in bar_to_trades(bar))
            continue
        if record.price == UNDEF_PRICE or record.price <= 0 or record.size < 0:
            counters.skipped_malformed += 1
            continue
        # Order by receive time when known: that is the order the exchange published events in.
        ts_recv = int(getattr(record, "ts_recv", ts_event))
        order_ts = ts_recv if ts_recv != UNDEF_TIMESTAMP else ts_event
        trades.append((order_ts, Trade(symbol, ts_event, round(record.price * PRICE_SCALE, 9),
                                       int(record.size), int(record.sequence))))
    trades.sort(key=lambda pair: pair[0])  # stable: equal timestamps keep file order
    end = store.metadata.end
    end_ns = int(end.value) if end is not None and hasattr(end, "value") else (int(end) if end else None)
    return ReplaySource(str(path), trades, end_ns, counters)


def _ohlcv_seconds(record: Any) -> int | None:
    rtype = int(getattr(record, "rtype", -1))
    # DBN rtypes: 32 = ohlcv-1s, 33 = ohlcv-1m, 34 = ohlcv-1h, 35 = ohlcv-1d, 36 = ohlcv-eod
    return {32: 1, 33: 60, 34: 3600, 35: 86400, 36: 86400}.get(rtype)


def _csv_symbol(path: Path, default: str) -> str:
    token = path.name.split("-")[0].split(".")[0]
    try:
        return canonical_symbol(token)
    except UnknownSymbolError:
        return canonical_symbol(default)


def _parse_time(text: str) -> int:
    dt = datetime.fromisoformat(text.strip())
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int(dt.timestamp() * 1_000_000) * 1000


def read_csv_bars(path: str | Path, symbol: str, *, bar_seconds: int | None = None,
                  counters: FeedCounters | None = None) -> list[Bar]:
    """CSV bars in the layouts found in ../shared/data/bars:
    - `date,time,o,h,l,c,v[,oi]` rows (the 1-minute file whose header lacks Time): the time labels
      the bar's *end* (backtrader's convention: the 09:01 bar covers 09:00-09:01);
    - `Date,Open,High,Low,Close[,Adj Close],Volume` daily rows (the date is the session);
    - `Datetime,Open,High,Low,Close,Volume,...` ticks (O=H=L=C). Times without a zone are UTC.
    Malformed rows are skipped and counted."""
    counters = counters if counters is not None else FeedCounters()
    bars: list[Bar] = []
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = [h.strip().lower() for h in next(reader, [])]
        has_adj = "adj close" in header
        for row in reader:
            try:
                if len(row) >= 7 and ":" in row[1]:  # date,time,o,h,l,c,v,...
                    seconds = bar_seconds or 60
                    end = _parse_time(f"{row[0]}T{row[1]}")
                    o, h, l, c, v = (float(x) for x in row[2:7])
                    start = end - seconds * 1_000_000_000
                else:
                    seconds = bar_seconds or (86400 if "T" not in row[0] and " " not in row[0].strip() else 0)
                    start = _parse_time(row[0])
                    o, h, l, c = (float(x) for x in row[1:5])
                    v = float(row[6] if has_adj else row[5])
                    end = start + seconds * 1_000_000_000
                if not all(math.isfinite(x) for x in (o, h, l, c, v)) or min(o, h, l, c) <= 0 or h < l:
                    raise ValueError("bad prices")
                bars.append(Bar(symbol, "", start, end, o, h, l, c, int(v), 0))
            except (ValueError, IndexError):
                counters.skipped_malformed += 1
    return bars


def load_csv(path: str | Path, default_symbol: str = "/ES") -> ReplaySource:
    """CSV file -> trades. The symbol comes from the file name's first token when it is a catalog
    symbol ("nvda-1999-2014.daily.csv" -> NVDA), else `default_symbol`."""
    p = Path(path)
    symbol = _csv_symbol(p, default_symbol)
    counters = FeedCounters()
    trades: list[tuple[int, Trade]] = []
    for bar in read_csv_bars(p, symbol, counters=counters):
        if bar.end_ns == bar.start_ns:  # a tick
            trades.append((bar.start_ns, Trade(symbol, bar.start_ns, bar.close, bar.volume)))
        else:
            trades.extend((t.ts_ns, t) for t in bar_to_trades(bar))
    trades.sort(key=lambda pair: pair[0])
    return ReplaySource(str(p), trades, None, counters)


def load_replay_file(path: str | Path, default_symbol: str = "/ES") -> ReplaySource:
    name = str(path).lower()
    if name.endswith((".dbn", ".dbn.zst")):
        return load_dbn(path)
    if name.endswith(".csv"):
        return load_csv(path, default_symbol)
    raise ValueError(f"replay file {path} is neither DBN (.dbn, .dbn.zst) nor CSV")


class ReplayFeed(Feed):
    """Replays files (or prepared trades) in timestamp order. speed 0 = as fast as possible,
    N = N x real time. At the end it emits a Watermark at the latest end the files' metadata
    guarantees, so the final bars of a complete file are closed; then state = "finished"."""

    name = "replay"

    def __init__(self, files: Iterable[str | Path] = (), *, speed: float = 0.0, default_symbol: str = "/ES",
                 trades: Iterable[Trade] | None = None) -> None:
        super().__init__()
        self.speed = speed
        self.realtime = False  # bars close on data time, never on the wall clock
        self._files = [Path(f) for f in files]
        self._default_symbol = default_symbol
        self._prepared = trades
        self.finished = threading.Event()

    def _sources(self) -> tuple[list[Iterator[tuple[int, Trade]]], int | None]:
        iterators: list[Iterator[tuple[int, Trade]]] = []
        ends: list[int] = []
        for path in self._files:
            source = load_replay_file(path, self._default_symbol)
            for name, value in vars(source.counters).items():
                setattr(self.state.counters, name, getattr(self.state.counters, name) + value)
            iterators.append(iter(source.trades))
            if source.end_ns is not None:
                ends.append(source.end_ns)
        if self._prepared is not None:
            iterators.append((t.ts_ns, t) for t in self._prepared)
        return iterators, (min(ends) if ends and len(ends) == len(self._files) else None)

    def _run(self) -> None:
        iterators, end_ns = self._sources()
        merged = iterators[0] if len(iterators) == 1 else heapq.merge(*iterators, key=lambda pair: pair[0])
        started_wall = time.monotonic()
        first_ts: int | None = None
        emit = self._emit
        last_ts = 0
        for order_ts, trade in merged:
            if self._stop.is_set():
                return
            if self.speed > 0:
                if first_ts is None:
                    first_ts = order_ts
                due = started_wall + (order_ts - first_ts) / 1e9 / self.speed
                delay = due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            emit(trade)
            last_ts = max(last_ts, trade.ts_ns)
        if end_ns is not None and end_ns >= last_ts:
            self._event(Watermark(end_ns))
        self.state.state = "finished"
        self.finished.set()


class CompositeFeed(Feed):
    """Several feeds behind the one interface, each owning some symbols: e.g. Databento for the
    futures and equities plus the simulated/broker-quote feed for SPX (Databento has no index feed).
    `route(symbol)` picks the feed a subscription goes to."""

    name = "composite"

    def __init__(self, feeds: list[Feed], route: Callable[[str], Feed]) -> None:
        super().__init__()
        self.feeds = feeds
        self._route = route
        self.realtime = all(f.realtime for f in feeds)

    def start(self, on_trade: TradeCallback, on_event: EventCallback | None = None) -> None:
        self.state.state = "running"
        for feed in self.feeds:
            feed.start(on_trade, on_event)

    def stop(self, timeout: float = 5.0) -> None:
        for feed in self.feeds:
            feed.stop(timeout)
        self.state.state = "stopped"

    def subscribe(self, symbol: str) -> None:
        sym = canonical_symbol(symbol)
        self._subscribed.add(sym)
        self._route(sym).subscribe(sym)

    def backfill_from_ns(self) -> int | None:
        pending = [ns for ns in (f.backfill_from_ns() for f in self.feeds) if ns is not None]
        return min(pending) if pending else None

    def history(self, symbol: str, tf: Timeframe, n: int, end_ns: int, end_price: float | None = None) -> list[Bar]:
        return self._route(canonical_symbol(symbol)).history(symbol, tf, n, end_ns, end_price)

    def continue_from(self, prices: Mapping[str, float]) -> None:
        for feed in self.feeds:
            feed.continue_from(prices)

    def _run(self) -> None:  # pragma: no cover - the member feeds run their own threads
        return

    def status(self) -> dict[str, Any]:
        members = {f.name: f.status() for f in self.feeds}
        return {"feed": self.name, "state": self.state.state, "realtime": self.realtime, "feeds": members,
                "subscribed": sorted(self._subscribed)}
