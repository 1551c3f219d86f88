"""MarketDataService: owns the feed, the bar builders and the Redis trade/bar streams.

Threads (both stoppable with `stop()`, neither polls):
- the feed thread (see `market_data/feeds.py`) hands each trade to `_on_trade`, which only appends
  it to an in-memory inbox and sets an Event;
- the writer thread waits on that Event (with a timeout equal to the next bar boundary when the
  feed is real-time), drains the inbox, runs the bar builders, calls in-process trade listeners and
  writes everything to Redis in one pipeline. A completed bar is flushed immediately (together with
  the trades before it) so consumers blocked in XREAD see it within milliseconds.

Trade acceptance rules (counted in `status()["counters"]`):
- malformed (non-finite or non-positive price, negative size, non-int timestamp) -> skipped;
- undefined timestamp (0 or Databento UNDEF_TIMESTAMP) -> skipped;
- symbol not in the catalog -> skipped;
- duplicate: a trade whose feed sequence is strictly below the last sequence seen for the symbol
  (re-delivered after a reconnect or backfill overlap) -> dropped. Equal sequences are kept: one
  aggressor order matching several resting orders yields several trades with the same sequence;
- late (belongs to a time bar already emitted) -> written to the trade stream, not to bars (see
  `market_data/bars.py`).

Redis briefly unavailable: the flush is retried with back-off until Redis answers (trades keep
queueing in memory meanwhile); IDs are explicit, so a retried batch never duplicates bars.
"""
from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any, Callable

import numpy as np
import redis

from config.instruments import CATALOG, UnknownSymbolError, canonical_symbol
from config.settings import MarketDataSource, Settings
from config.timeframes import ALLOWED_HOURS, ALLOWED_MINUTES, BarKind, Timeframe
from domain.market import Bar, Trade
from market_data import calendars
from market_data.bars import (BarBuilder, SessionGrid, TickBarBuilder, TimeBarBuilder, build_bars, make_builder,
                              resample_bars, resample_complete)
from market_data.feeds import (UNDEF_TIMESTAMP, CompositeFeed, Feed, FeedEvent, Gap, QuoteSource, ReplayFeed, SimulatedFeed,
                               Watermark, load_replay_file)
from market_data.redis_buffer import HIST_MAXLEN, IdAllocator, RedisMarketBuffer, WriteBatch
from store.redis_store import Store

log = logging.getLogger(__name__)

TradeListener = Callable[[Trade], None]
_NO_LIMIT_NS = 2**63 - 1
NS = 1_000_000_000
TRADE_READ_CHUNK = 20_000  # trade-stream entries per read when a warm-up rebuilds bars from trades


@dataclass
class ServiceCounters:
    trades_received: int = 0
    trades_accepted: int = 0
    skipped_malformed: int = 0
    skipped_undefined_ts: int = 0
    skipped_unknown_symbol: int = 0
    duplicates_dropped: int = 0
    late_trades: int = 0
    bars_emitted: int = 0
    bars_rejected_duplicate: int = 0
    redis_errors: int = 0
    listener_errors: int = 0
    flushes: int = 0


def build_feed(settings: Settings, quote_sources: dict[str, QuoteSource] | None = None, *,
               index_feed: Feed | None = None) -> Feed:
    """`index_feed`: SPX next to Databento (a broker stream, market_data/index_feed.py); None: the
    broker quote in `quote_sources` or the simulator."""
    source = settings.market_data_source
    if source is MarketDataSource.REPLAY:
        return ReplayFeed(settings.replay_files, speed=settings.replay_speed)
    if source is MarketDataSource.DATABENTO:
        from market_data.databento_feed import DatabentoLiveFeed

        # Databento has no index feed: SPX comes from a broker (stream or quote) or the simulator.
        databento = DatabentoLiveFeed(settings.databento_api_key or "")
        index = index_feed if index_feed is not None else SimulatedFeed(
            settings.simulated_trades_per_second, symbols=["SPX"], quote_sources=quote_sources)
        return CompositeFeed([databento, index], lambda sym: index if sym == "SPX" else databento)
    return SimulatedFeed(settings.simulated_trades_per_second, quote_sources=quote_sources)


class MarketDataService:
    # Bars of a real-time feed close this long after their boundary when no trade crosses it, to let
    # trades stamped just before the boundary arrive (network + gateway latency).
    TIMER_GRACE_NS = 200_000_000
    FLUSH_MAX_TRADES = 2_000  # trades per pipeline
    BAR_FLUSH_MAX_TRADES = 256  # a completed bar waits behind at most this many further trades
    INBOX_HIGH_WATER = 50_000  # a non-real-time feed (replay) blocks above this: bounded memory

    def __init__(self, settings: Settings, store: Store, source: Feed | None = None, *,
                 quote_sources: dict[str, QuoteSource] | None = None,
                 historical: Callable[[], Any] | None = None,
                 wall_clock: Callable[[], float] = time.time,
                 time_ns: Callable[[], int] = time.time_ns,
                 trades_maxlen: int | None = None, bars_maxlen: int | None = None) -> None:
        self.settings = settings
        self.store = store
        self.feed = source if source is not None else build_feed(settings, quote_sources)
        self.buffer = RedisMarketBuffer(store, **{k: v for k, v in (("trades_maxlen", trades_maxlen),
                                                                     ("bars_maxlen", bars_maxlen)) if v})
        self.counters = ServiceCounters()
        self._historical = historical
        self._history_notes: dict[tuple[str, str], str | None] = {}  # why vendor history was short
        self._wall_clock = wall_clock  # for status/staleness (seconds)
        self._time_ns = time_ns  # for bar timers (exchange-time ns); injectable for tests
        self._lock = threading.Lock()  # guards builders and listeners (writer thread vs ensure())
        self._builders: dict[str, dict[str, BarBuilder]] = {}  # symbol -> tf_raw -> builder
        self._listeners: list[TradeListener] = []
        self._inbox: deque[Trade | FeedEvent] = deque()
        self._wake = threading.Event()
        self._room = threading.Event()
        self._room.set()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        self._last_seq: dict[str, int] = {}
        self._last_trade: dict[str, Trade] = {}
        self._last_wall: dict[str, float] = {}
        self._trade_ids: dict[str, IdAllocator] = {}
        self._pending = WriteBatch()
        self._started_wall: float | None = None
        self._running = False
        self.on_flush: Callable[[WriteBatch], None] | None = None  # test/bench hook, after a write

    # ---- lifecycle ----------------------------------------------------------------------
    def start(self) -> None:
        if self._running:
            return
        self._stop.clear()
        self._running = True
        self._started_wall = self._wall_clock()
        self._writer = threading.Thread(target=self._writer_loop, name="md-writer", daemon=True)
        self._writer.start()
        self.feed.continue_from(self._published_prices())
        self.feed.start(self._on_trade, self._on_event)

    def _published_prices(self) -> dict[str, float]:
        """The last price published for each catalog instrument (by an earlier run), for a feed
        that makes its prices up to continue from (`Feed.continue_from`)."""
        symbols = list(CATALOG)
        try:
            with self.store.redis.pipeline(transaction=False) as pipe:
                for sym in symbols:
                    pipe.hget(self.buffer.last_key(sym), "p")
                replies = pipe.execute()
        except redis.RedisError:
            return {}
        prices: dict[str, float] = {}
        for sym, price in zip(symbols, replies):
            try:
                if price is not None:
                    prices[sym] = float(price)
            except ValueError:
                continue
        return prices

    def stop(self, timeout: float = 5.0) -> None:
        self.feed.stop(timeout)
        self._stop.set()
        self._wake.set()
        self._room.set()
        if self._writer is not None:
            self._writer.join(timeout)
        self._running = False

    # ---- subscriptions ------------------------------------------------------------------
    def ensure(self, symbol: str, timeframe: Timeframe) -> None:
        """Subscribe to `symbol` and make sure a bar builder for `timeframe` runs. Idempotent and
        safe while running (the builder starts with the next trade)."""
        sym = canonical_symbol(symbol)
        with self._lock:
            per_symbol = self._builders.setdefault(sym, {})
            if timeframe.raw not in per_symbol:
                builder = make_builder(sym, timeframe)
                if self.feed.realtime and isinstance(builder, TimeBarBuilder):
                    # A live bar already under way when the builder starts lacks its earlier trades.
                    builder.partial_before_ns = self._time_ns()
                per_symbol[timeframe.raw] = builder
        self.feed.subscribe(sym)
        self._wake.set()  # the timer may need an earlier deadline

    def add_trade_listener(self, callback: TradeListener) -> None:
        """`callback(trade)` runs on the writer thread for every accepted trade, before it is
        written to Redis. Keep it short; exceptions are logged and counted, never propagated."""
        with self._lock:
            self._listeners.append(callback)

    def remove_trade_listener(self, callback: TradeListener) -> None:
        with self._lock:
            if callback in self._listeners:
                self._listeners.remove(callback)

    # ---- keys and reads -----------------------------------------------------------------
    def bars_key(self, symbol: str, tf: Timeframe) -> str:
        return self.buffer.bars_key(canonical_symbol(symbol), tf.raw)

    def trades_key(self, symbol: str) -> str:
        return self.buffer.trades_key(canonical_symbol(symbol))

    def read_bars(self, symbol: str, tf: Timeframe, last_id: str = "$", block_ms: int = 0) -> list[tuple[str, Bar]]:
        """Bars after `last_id` ("$" = only new ones; "0" = from the start), waiting up to
        `block_ms` (XREAD BLOCK; 0 = do not block) for the first one."""
        key = self.bars_key(symbol, tf)
        block = self.store.safe_block_ms(block_ms) if block_ms > 0 else None
        reply = self.store.redis.xread({key: last_id}, block=block, count=1000)
        out: list[tuple[str, Bar]] = []
        for _key, entries in reply or []:
            out.extend((entry_id, Bar.from_fields(fields)) for entry_id, fields in entries)
        return out

    def history(self, symbol: str, tf: Timeframe, n: int, through_id: str = "+") -> list[Bar]:
        """The last `n` completed bars from Redis, oldest first; with `through_id`, the last `n`
        up to and including the bars-stream entry of that id (a bar has one id in both streams)."""
        if n <= 0:
            return []
        key = self.buffer.hist_key(canonical_symbol(symbol), tf.raw)
        entries = self.store.redis.xrevrange(key, max=through_id, count=n)
        return [Bar.from_fields(fields) for _id, fields in reversed(entries)]

    def last_price(self, symbol: str) -> float | None:
        """The latest trade price: this process's own feed when it has seen a trade (no round trip,
        and never older than what it published), else the last one published to Redis (e.g. right
        after a restart, before the first trade)."""
        sym = canonical_symbol(symbol)
        trade = self._last_trade.get(sym)
        if trade is not None:
            return trade.price
        try:
            price = self.store.redis.hget(self.buffer.last_key(sym), "p")
            if price is not None:
                return float(price)
        except redis.RedisError:
            pass
        return None

    def warmup(self, symbol: str, tf: Timeframe, n: int, through_id: str = "+") -> list[Bar]:
        """The last `n` completed bars before the live ones, oldest first, from (newest first):
        1. this timeframe's Redis history, up to the bars-stream entry `through_id` (a strategy
           reads the later bars live);
        2. what Redis holds of the instrument otherwise: finer timeframes' bars resampled (a
           ticker moved from 1Min to 5Min warms on the 1Min bars), then the trade stream;
        3. Databento Historical (ohlcv-1m resampled for time bars, trades for tick bars), else the
           replay files;
        4. the feed's own past (`Feed.history`: the simulated feed generates one that closes at the
           price its live walk continues from).
        Each source only adds bars older than the oldest found so far. Sources 2 and 4 end where
        this timeframe's live bars begin (`_live_start_ns`), so no bar is both history and live."""
        sym = canonical_symbol(symbol)
        self._history_notes.pop((sym, tf.raw), None)
        bars = self.history(sym, tf, n, through_id)
        if len(bars) >= n:
            return bars
        live_start = self._live_start_ns(sym, tf, bars)
        if live_start is not None:
            bars = self._rebuilt_from_redis(sym, tf, n - len(bars), live_start) + bars
        if len(bars) < n:
            bars = _prepend_older(self._vendor_history(sym, tf, n), bars)
        if len(bars) < n and (bars or live_start is not None):
            end_ns = bars[0].start_ns if bars else live_start
            end_price = bars[0].open if bars else self.last_price(sym)
            assert end_ns is not None
            try:
                bars = self.feed.history(sym, tf, n - len(bars), end_ns, end_price) + bars
            except Exception:  # a feed's history is a bonus: warm up on what there is
                log.warning("%s history for %s %s failed", self.feed.name, sym, tf.raw, exc_info=True)
        return bars[-n:]

    def _live_start_ns(self, sym: str, tf: Timeframe, held: list[Bar]) -> int | None:
        """Where this timeframe's bars in Redis or still to come begin: bars rebuilt or generated
        for a warm-up end there. (Time bars: a start on the session grid; tick bars: the time of
        their first trade.) None when it cannot be known (a replay that has not reached `sym`)."""
        if held:
            return held[0].start_ns  # fewer than asked for: every bar of the stream up to `through_id`
        try:
            oldest = self.store.redis.xrange(self.buffer.hist_key(sym, tf.raw), count=1)
        except redis.RedisError:
            return None
        if oldest:
            return Bar.from_fields(oldest[0][1]).start_ns
        with self._lock:
            builder = self._builders.get(sym, {}).get(tf.raw)
            under_way = builder.open_start_ns if builder is not None else None
            partial_before = builder.partial_before_ns if isinstance(builder, TimeBarBuilder) else 0
        if under_way is not None:
            return under_way
        last = self._last_trade.get(sym)
        if tf.is_tick:  # the builder's first bar opens with the next trade
            if last is not None:
                return last.ts_ns + 1
            return self._time_ns() if self.feed.realtime else None
        if self.feed.realtime:
            reference = partial_before or self._time_ns()
        elif last is not None:
            reference = last.ts_ns
        else:
            return None
        return SessionGrid(sym).bucket(reference, tf)[0]

    def _rebuilt_from_redis(self, sym: str, tf: Timeframe, need: int, end_ns: int) -> list[Bar]:
        """Up to `need` bars of `tf` ending by `end_ns`, rebuilt from the finer timeframes' bars and
        the trades Redis holds of `sym` (session bars only: bars outside the sessions are never
        evaluated, and resampling them would spill them into the session's buckets). The source
        reaching closest to `end_ns` goes first; each next one adds only older bars."""
        sources: list[tuple[int, int, Callable[[int, int], list[Bar]]]] = []  # (newest ns, rank, build)
        try:
            if not tf.is_tick:
                finer = _finer_timeframes(tf)
                with self.store.redis.pipeline(transaction=False) as pipe:
                    for lower in finer:
                        pipe.xrevrange(self.buffer.hist_key(sym, lower.raw), max=_id_before(end_ns), count=1)
                    newest = pipe.execute()
                for rank, (lower, top) in enumerate(zip(finer, newest)):
                    if top:
                        sources.append((Bar.from_fields(top[0][1]).end_ns, rank,
                                        lambda want, end, lower=lower: self._resampled(sym, lower, tf, want, end)))
            top_trade = self.store.redis.xrevrange(self.buffer.trades_key(sym), max=_id_before(end_ns), count=1)
            if top_trade:
                sources.append((int(top_trade[0][1]["t"]), len(sources) + 1,
                                lambda want, end: self._from_trades(sym, tf, want, end)))
            bars: list[Bar] = []
            for _newest, _rank, build in sorted(sources, key=lambda s: (-s[0], s[1])):
                if len(bars) >= need:
                    break
                bars = build(need - len(bars), bars[0].start_ns if bars else end_ns) + bars
            return bars[-need:] if need > 0 else []
        except redis.RedisError:
            log.warning("warm-up could not read %s from Redis", sym, exc_info=True)
            return []

    def _resampled(self, sym: str, lower: Timeframe, tf: Timeframe, need: int, end_ns: int) -> list[Bar]:
        per_bar = 86_400 // lower.seconds if tf.is_daily else tf.seconds // lower.seconds
        entries = self.store.redis.xrevrange(self.buffer.hist_key(sym, lower.raw), max=_id_before(end_ns),
                                             count=min(HIST_MAXLEN, (need + 1) * per_bar))
        source = [Bar.from_fields(fields) for _id, fields in reversed(entries)]
        source = [b for b in source if b.end_ns <= end_ns]
        source = _in_session(sym, source)
        return resample_complete(source, tf, SessionGrid(sym))[-need:]

    def _from_trades(self, sym: str, tf: Timeframe, need: int, end_ns: int) -> list[Bar]:
        """Bars built from the trade stream before `end_ns`, exactly as the live builder would
        have built them; the oldest (partial) time bar is left out, tick bars are counted from
        the newest trade back."""
        key = self.buffer.trades_key(sym)
        want_ticks = need * tf.size if tf.is_tick else None
        reach_ns = None if tf.is_tick else end_ns - (need + 1) * tf.seconds * NS
        newest_first: list[Trade] = []
        top = _id_before(end_ns)
        while True:
            chunk = self.store.redis.xrevrange(key, max=top, count=TRADE_READ_CHUNK)
            for entry_id, fields in chunk:
                trade = Trade.from_fields(sym, fields)
                if trade.ts_ns < end_ns:
                    newest_first.append(trade)
            if len(chunk) < TRADE_READ_CHUNK or not newest_first:
                break
            if want_ticks is not None and len(newest_first) >= want_ticks:
                break
            if reach_ns is not None and newest_first[-1].ts_ns <= reach_ns:
                break
            top = _id_below(chunk[-1][0])
        trades = newest_first[::-1]
        if trades:
            mask = calendars.open_mask(sym, np.fromiter((t.ts_ns for t in trades), dtype=np.int64, count=len(trades)))
            trades = [t for t, inside in zip(trades, mask) if inside]
        if tf.is_tick:
            if want_ticks is not None:
                trades = trades[-want_ticks:]
            trades = trades[len(trades) % tf.size:]
            return build_bars(trades, sym, tf)[-need:]
        bars = build_bars(trades, sym, tf, SessionGrid(sym), watermark_ns=end_ns)[1:]
        return [b for b in bars if b.end_ns <= end_ns][-need:]

    def _vendor_history(self, sym: str, tf: Timeframe, n: int) -> list[Bar]:
        """Databento Historical when a key (or client) is configured, else the replay files."""
        older: list[Bar] = []
        if self._historical is not None or self.settings.databento_api_key:
            try:
                older = self._warmup_from_databento(sym, tf, n)
            except Exception as exc:  # offline / entitlement / outage: fall through to the next source
                log.warning("databento warm-up for %s %s failed", sym, tf.raw, exc_info=True)
                self._history_notes[(sym, tf.raw)] = f"Databento history failed ({exc.__class__.__name__}: {exc})"
        if len(older) < n and self.settings.replay_files:
            older = self._warmup_from_replay(sym, tf)
        return older

    def _warmup_from_replay(self, sym: str, tf: Timeframe) -> list[Bar]:
        """Bars from the replay files that lie before the replay's current position. When the
        replay is the live source, later bars are the strategy's future: handing them over as
        history would make it skip the very bars the replay is about to emit."""
        trades: list[Trade] = []
        for path in self.settings.replay_files:
            trades.extend(t for _ts, t in load_replay_file(path).trades if t.symbol == sym)
        trades.sort(key=lambda t: t.ts_ns)
        if self.settings.market_data_source is not MarketDataSource.REPLAY:
            return build_bars(trades, sym, tf)
        seen = self._last_trade.get(sym)
        if seen is None:  # the replay has not reached this symbol yet: no history exists
            return []
        position = seen.ts_ns
        return [b for b in build_bars([t for t in trades if t.ts_ns <= position], sym, tf) if b.end_ns <= position]

    def _warmup_from_databento(self, sym: str, tf: Timeframe, n: int) -> list[Bar]:
        from market_data.databento_feed import history_for

        found = history_for(self.feed, self.settings.databento_api_key, self._historical).bars(sym, tf, n)
        self._history_notes[(sym, tf.raw)] = found.note
        return found.bars

    def warmup_note(self, symbol: str, tf: Timeframe, got: int, needed: int) -> str | None:
        """For the strategy status and log after `warmup`: how many of the bars needed it found and
        what the Databento history lacked (a source that failed, a hole before now); None when it
        had every bar and nothing is missing."""
        why = self._history_notes.get((canonical_symbol(symbol), tf.raw))
        if got < needed:
            return f"warmed up on {got} of {needed} bars: {why or 'no more history available'}"
        return None if why is None else f"warmed up on {got} bars, but the history is incomplete: {why}"

    # ---- status -------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        now = self._wall_clock()
        stale_after = self.settings.stale_feed_seconds
        with self._lock:
            subscribed = sorted(self._builders)
        symbols: dict[str, Any] = {}
        for sym in subscribed:
            last = self._last_trade.get(sym)
            last_wall = self._last_wall.get(sym)
            silent_since = last_wall if last_wall is not None else self._started_wall
            market_open = calendars.is_open(sym, int(now * NS))
            stale = bool(self._running and self.feed.realtime and market_open and silent_since is not None
                         and now - silent_since > stale_after)
            symbols[sym] = {"last_trade_ns": last.ts_ns if last else None, "last_trade_wall": last_wall,
                            "market_open": market_open, "stale": stale,
                            "timeframes": sorted(self._builders.get(sym, {}))}
        top = self.feed.status()
        feeds: dict[str, Any] = dict(top["feeds"]) if isinstance(self.feed, CompositeFeed) else {self.feed.name: top}
        for name, feed_status in feeds.items():
            owned = set(feed_status.get("subscribed", ())) or set(symbols)
            feed_status["stale"] = any(s["stale"] for sym, s in symbols.items() if sym in owned)
        return {"source": self.feed.name, "running": self._running, "feeds": feeds,
                "symbols": symbols, "counters": asdict(self.counters), "inbox": len(self._inbox),
                "stale_feed_seconds": stale_after}

    # ---- feed callbacks (feed thread) ----------------------------------------------------
    def _on_trade(self, trade: Trade) -> None:
        self._inbox.append(trade)
        # Setting an Event takes its lock and notifies: skipped while it is still set. The writer
        # clears it before it drains, so a trade appended before this check is always drained.
        if not self._wake.is_set():
            self._wake.set()
        if not self.feed.realtime and len(self._inbox) > self.INBOX_HIGH_WATER:
            # Back-pressure for replay: wait until the writer has drained (bounded memory).
            self._room.clear()
            while len(self._inbox) > self.INBOX_HIGH_WATER // 2 and not self._stop.is_set():
                self._room.wait(1.0)
                self._room.clear()

    def _on_event(self, event: FeedEvent) -> None:
        self._inbox.append(event)
        self._wake.set()

    # ---- writer thread ------------------------------------------------------------------
    def _timer_limit_ns(self) -> int:
        """How far bar timers may close bars: up to the start of a gap whose backfill is in flight
        (its trades may belong to those bars), else without limit."""
        gap_from = self.feed.backfill_from_ns()
        return _NO_LIMIT_NS if gap_from is None else gap_from

    def _next_timeout(self) -> float | None:
        if not self.feed.realtime:
            return None
        with self._lock:
            deadlines = [b.deadline_ns for per in self._builders.values() for b in per.values()
                         if b.deadline_ns is not None]
        limit = self._timer_limit_ns()  # bars past it wait for the backfill, whose events wake us
        deadlines = [d for d in deadlines if d <= limit]
        if not deadlines:
            return None
        due = min(deadlines) + self.TIMER_GRACE_NS
        return max(0.0, (due - self._time_ns()) / NS)

    def _writer_loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._next_timeout())
            self._wake.clear()
            try:
                self._drain()
                if self.feed.realtime:
                    self._close_due(min(self._time_ns() - self.TIMER_GRACE_NS, self._timer_limit_ns()))
                self._flush()
            except Exception:  # never let the writer die: log, count, keep going
                log.exception("market data writer error")
                self.counters.redis_errors += 1
                self._stop.wait(0.1)
        try:  # final best-effort flush of what was processed
            self._drain()
            self._flush(retry=False)
        except Exception:
            log.warning("final market data flush failed", exc_info=True)

    def _drain(self, inbox: deque[Trade | FeedEvent] | None = None) -> None:
        """Apply everything queued. A completed bar is published as soon as the trades already
        received are applied (microseconds), not the moment it completes: bars of many symbols
        closing together then reach Redis - and wake the strategy threads - in one round trip
        instead of one each, which is what keeps the last of them fast when 30 tickers share the
        GIL. BAR_FLUSH_MAX_TRADES bounds how long a bar can wait behind a backlog."""
        inbox = self._inbox if inbox is None else inbox
        since_bar = -1  # trades applied since the oldest unpublished completed bar (-1: none)
        while inbox:
            item = inbox.popleft()
            if isinstance(item, Trade):
                if self._process(item) and since_bar < 0:
                    since_bar = 0
                elif since_bar >= 0:
                    since_bar += 1
                if ((since_bar >= 0 and (not inbox or since_bar >= self.BAR_FLUSH_MAX_TRADES))
                        or self._pending.trade_count >= self.FLUSH_MAX_TRADES):
                    self._flush()
                    since_bar = -1
            elif isinstance(item, Watermark):
                self._close_due(item.ts_ns)
                self._flush()
                since_bar = -1
            elif isinstance(item, Gap):
                self._mark_gap(item)
            if len(inbox) < self.INBOX_HIGH_WATER // 2:
                self._room.set()
        self._room.set()

    def _valid(self, trade: Trade) -> bool:
        ts, price, size = trade.ts_ns, trade.price, trade.size
        if not isinstance(ts, int) or isinstance(ts, bool):
            self.counters.skipped_malformed += 1
            return False
        if ts <= 0 or ts >= UNDEF_TIMESTAMP:
            self.counters.skipped_undefined_ts += 1
            return False
        if not isinstance(price, float) or not math.isfinite(price) or price <= 0 or not isinstance(size, int) or size < 0:
            self.counters.skipped_malformed += 1
            return False
        if trade.symbol not in CATALOG:
            try:
                canonical_symbol(trade.symbol)
            except UnknownSymbolError:
                pass
            self.counters.skipped_unknown_symbol += 1
            return False
        return True

    def _process(self, trade: Trade) -> bool:
        """Apply one trade; True when it completed a bar (so the caller flushes now)."""
        self.counters.trades_received += 1
        if type(trade.price) is int:  # ints are fine prices; normalise before validation
            trade = Trade(trade.symbol, trade.ts_ns, float(trade.price), trade.size, trade.sequence)
        if not self._valid(trade):
            return False
        sym = trade.symbol
        if trade.sequence:
            last_seq = self._last_seq.get(sym, 0)
            if trade.sequence < last_seq:
                self.counters.duplicates_dropped += 1
                return False
            self._last_seq[sym] = trade.sequence
        self.counters.trades_accepted += 1
        self._last_trade[sym] = trade
        self._last_wall[sym] = self._wall_clock()
        if self._listeners:
            for listener in list(self._listeners):
                try:
                    listener(trade)
                except Exception:
                    self.counters.listener_errors += 1
                    log.exception("trade listener failed")
        batch = self._pending
        alloc = self._trade_ids.get(sym)
        if alloc is None:
            alloc = self._trade_ids[sym] = self._seed_allocator(self.buffer.trades_key(sym))
        flat = batch.trades.get(sym)
        if flat is None:
            flat = batch.trades[sym] = []
        flat += (alloc.next(trade.ts_ns // 1_000_000), str(trade.ts_ns), repr(trade.price), str(trade.size),
                 str(trade.sequence))
        batch.trade_count += 1
        batch.last[sym] = trade
        completed = False
        builders = self._builders.get(sym)
        if builders:
            with self._lock:
                for builder in builders.values():
                    before = builder.counters.late_trades if not isinstance(builder, TickBarBuilder) else 0
                    bar = builder.on_trade(trade)
                    if not isinstance(builder, TickBarBuilder) and builder.counters.late_trades != before:
                        self.counters.late_trades += 1
                    if bar is not None:
                        self._add_bar(builder, bar)
                        completed = True
        return completed

    def _seed_allocator(self, key: str) -> IdAllocator:
        try:
            return self.buffer.allocator(key)
        except redis.RedisError:
            # Redis is down right now: start from the trade time; a later flush that collides
            # with older IDs is rejected by Redis rather than duplicated.
            return IdAllocator()

    def _add_bar(self, builder: BarBuilder, bar: Bar) -> None:
        try:
            stream_id = self.buffer.bar_id(bar, builder.tf.is_tick)
        except redis.RedisError:
            stream_id = f"{bar.start_ns // 1_000_000}-0"
        self._pending.bars.append((stream_id, builder.tf_raw, bar))
        self.counters.bars_emitted += 1

    def _close_due(self, watermark_ns: int) -> None:
        with self._lock:
            for per in self._builders.values():
                for builder in per.values():
                    bar = builder.close_due(watermark_ns)
                    if bar is not None:
                        self._add_bar(builder, bar)

    def _mark_gap(self, gap: Gap) -> None:
        with self._lock:
            targets = gap.symbols or tuple(self._builders)
            for sym in targets:
                for builder in self._builders.get(sym, {}).values():
                    if not gap.backfilled:
                        builder.mark_gapped()

    def _flush(self, retry: bool = True) -> None:
        batch = self._pending
        if not batch:
            return
        self._pending = WriteBatch()
        delay = 0.05
        while True:
            try:
                result = self.buffer.write(batch)
                break
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                self.counters.redis_errors += 1
                log.warning("redis unavailable (%s); retrying market data write in %.2fs", exc.__class__.__name__, delay)
                if not retry or self._stop.wait(delay):
                    self._pending = _merge(batch, self._pending)
                    return
                delay = min(delay * 2, 1.0)
        self.counters.flushes += 1
        self.counters.bars_rejected_duplicate += result.bars_rejected_duplicate
        if self.on_flush is not None:
            self.on_flush(batch)

    # ---- helpers for tests / offline use -------------------------------------------------
    def process_now(self, trades: list[Trade]) -> None:
        """Run trades through the same path synchronously (no threads). For tests and tools."""
        self._drain(deque(trades))
        self._flush()


def _prepend_older(older: list[Bar], bars: list[Bar]) -> list[Bar]:
    """`older` bars that start before the first of `bars` (and are not among them), then `bars`."""
    have = {b.start_ns for b in bars}
    first = bars[0].start_ns if bars else None
    return [b for b in older if b.start_ns not in have and (first is None or b.start_ns < first)] + bars


def _finer_timeframes(tf: Timeframe) -> list[Timeframe]:
    """The time timeframes whose bars resample exactly into `tf` bars, finest first: they divide
    it, so their session-grid buckets nest in its buckets (any of them nests in a daily bar)."""
    sizes = sorted({m * 60 for m in ALLOWED_MINUTES} | {h * 3600 for h in ALLOWED_HOURS})
    return [Timeframe(BarKind.TIME, s) for s in sizes
            if s < tf.seconds and (tf.is_daily or tf.seconds % s == 0)]


def _id_before(ts_ns: int) -> str:
    """The largest stream id of an entry stamped (ms) before `ts_ns`: bar ids are their start's ms,
    trade ids their time's ms."""
    return str(-(-ts_ns // 1_000_000) - 1)


def _id_below(stream_id: str) -> str:
    """The largest stream id below `stream_id` (an exclusive XREVRANGE bound for any Redis)."""
    ms, _, seq = stream_id.partition("-")
    return f"{ms}-{int(seq) - 1}" if seq and int(seq) > 0 else str(int(ms) - 1)


def _in_session(sym: str, bars: list[Bar]) -> list[Bar]:
    if not bars:
        return bars
    starts = np.fromiter((b.start_ns for b in bars), dtype=np.int64, count=len(bars))
    ends = np.fromiter((b.end_ns for b in bars), dtype=np.int64, count=len(bars))
    return [b for b, inside in zip(bars, calendars.bars_in_session(sym, starts, ends)) if inside]


def _merge(first: WriteBatch, second: WriteBatch) -> WriteBatch:
    for sym, flat in second.trades.items():
        first.trades.setdefault(sym, []).extend(flat)
    first.bars.extend(second.bars)
    first.last.update(second.last)
    first.trade_count += second.trade_count
    return first


__all__ = ["MarketDataService", "ServiceCounters", "build_feed", "resample_bars", "SessionGrid"]
