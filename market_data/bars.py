"""Bar building: trades -> completed bars, and bars -> coarser bars (resampling).

Pure logic, no I/O: the service feeds trades in and writes what comes out to Redis.

Alignment (`BarGrid`):
- `SessionGrid(symbol)`: time bars start at the session open from the instrument's trading
  calendar (CME futures 18:00 ET, equities 09:30 ET) and step by the bar size; the last bar of a
  session is cut at the session close (e.g. the 4h bar from 14:00 ET ends at 17:00 ET on CME, or at
  the early close). Daily bars are one per trading session. A trade outside every session (the
  simulated feed at night, odd replay data) is placed on the same grid anchored at the instrument's
  session start time (18:00 / 09:30 ET) so it still lands in a well-aligned bar.
- `FixedGrid()`: plain epoch/UTC-midnight alignment, for data with no known calendar.

Ordering rule for trades (documented, tested):
- A time bar is emitted once and never revised (no repainting). A trade whose timestamp falls in a
  bar that was already emitted (or before the open bar's start) is *late*: it is not applied to any
  bar and is counted in `late_trades`.
- Inside the open bar, a trade that arrives out of order still counts toward high/low/volume/count;
  open is the price of the earliest-timestamped trade and close of the latest (ties: arrival order).
- Tick bars count trades (not contracts) in arrival order; a tick bar closes on its Nth trade.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Iterator, Protocol, Sequence

from config.timeframes import Timeframe
from domain.market import Bar, Trade
from market_data import calendars

NS = 1_000_000_000
DAY_NS = 86_400 * NS


class BarGrid(Protocol):
    def bucket(self, ts_ns: int, tf: Timeframe) -> tuple[int, int]:
        """[start, end) in ns of the time bar of timeframe `tf` containing `ts_ns`."""
        ...


class FixedGrid:
    """Buckets aligned to the Unix epoch (so to UTC midnight for sizes dividing a day)."""

    def bucket(self, ts_ns: int, tf: Timeframe) -> tuple[int, int]:
        size = tf.seconds * NS
        start = ts_ns - ts_ns % size
        return start, start + size


class SessionGrid:
    """Buckets aligned to the instrument's trading sessions (see module docstring)."""

    def __init__(self, symbol: str) -> None:
        self._calendar = calendars.calendar_for(symbol)
        self._anchor = calendars.session_anchor(symbol)
        self._session: calendars.Session | None = None
        self._fallback_day: tuple[int, int] = (0, 0)  # cached anchored day [start, end)

    def _current_session(self, ts_ns: int) -> calendars.Session | None:
        s = self._session
        if s is not None and s.open_ns <= ts_ns < s.close_ns:
            return s
        s = self._calendar.session_at(ts_ns)
        if s is not None:
            self._session = s
        return s

    def bucket(self, ts_ns: int, tf: Timeframe) -> tuple[int, int]:
        session = self._current_session(ts_ns)
        if session is not None:
            day_start, day_end = session.open_ns, session.close_ns
        else:
            day_start, day_end = self._fallback_day
            if not day_start <= ts_ns < day_end:
                day_start = calendars.anchored_day_start_ns(ts_ns, self._anchor)
                day_end = day_start + DAY_NS
                self._fallback_day = (day_start, day_end)
        if tf.is_daily:
            return day_start, day_end
        size = tf.seconds * NS
        start = day_start + (ts_ns - day_start) // size * size
        return start, min(start + size, day_end)


class _OpenBar:
    __slots__ = ("start", "end", "open", "high", "low", "close", "volume", "count", "open_ts", "close_ts", "gapped")

    def __init__(self, start: int, end: int, trade: Trade) -> None:
        self.start = start
        self.end = end
        self.open = self.high = self.low = self.close = trade.price
        self.volume = trade.size
        self.count = 1
        self.open_ts = self.close_ts = trade.ts_ns
        self.gapped = False

    def add(self, trade: Trade) -> None:
        price = trade.price
        if price > self.high:
            self.high = price
        if price < self.low:
            self.low = price
        self.volume += trade.size
        self.count += 1
        ts = trade.ts_ns
        if ts >= self.close_ts:
            self.close, self.close_ts = price, ts
        elif ts < self.open_ts:
            self.open, self.open_ts = price, ts

    def to_bar(self, symbol: str, tf_raw: str, end_ns: int) -> Bar:
        return Bar(symbol, tf_raw, self.start, end_ns, self.open, self.high, self.low, self.close,
                   self.volume, self.count, self.gapped)


@dataclass
class BuilderCounters:
    trades: int = 0
    late_trades: int = 0
    bars: int = 0


class TimeBarBuilder:
    """Time bars for one (symbol, timeframe); see the module docstring for the ordering rule."""

    def __init__(self, symbol: str, tf: Timeframe, grid: BarGrid) -> None:
        if tf.is_tick:
            raise ValueError("TimeBarBuilder needs a time timeframe")
        self.symbol = symbol
        self.tf = tf
        self.tf_raw = tf.raw
        self._grid = grid
        self._bar: _OpenBar | None = None
        self._emitted_until = 0  # end of the last emitted bar: anything before it is late
        # Bars starting before this instant may have missed trades (the builder did not exist yet,
        # e.g. ensure() mid-bar or a service restart): they are marked gapped.
        self.partial_before_ns = 0
        self.counters = BuilderCounters()

    @property
    def deadline_ns(self) -> int | None:
        """When the open bar is due to close (its end), or None."""
        return self._bar.end if self._bar is not None else None

    @property
    def open_start_ns(self) -> int | None:
        """Start of the bar under way (the next one this builder emits), or None."""
        return self._bar.start if self._bar is not None else None

    def on_trade(self, trade: Trade) -> Bar | None:
        """Apply a trade; return the bar it completed (the previous one), if any."""
        bar = self._bar
        ts = trade.ts_ns
        if bar is not None and bar.start <= ts < bar.end:
            bar.add(trade)
            self.counters.trades += 1
            return None
        if ts < self._emitted_until or (bar is not None and ts < bar.start):
            self.counters.late_trades += 1
            return None
        completed = self._complete() if bar is not None else None
        start, end = self._grid.bucket(ts, self.tf)
        self._bar = _OpenBar(start, end, trade)
        if start < self.partial_before_ns:
            self._bar.gapped = True
        self.counters.trades += 1
        return completed

    def close_due(self, watermark_ns: int) -> Bar | None:
        """Complete the open bar if no more trades can arrive for it (its end <= watermark)."""
        if self._bar is not None and self._bar.end <= watermark_ns:
            return self._complete()
        return None

    def mark_gapped(self) -> None:
        if self._bar is not None:
            self._bar.gapped = True

    def _complete(self) -> Bar:
        assert self._bar is not None
        bar = self._bar.to_bar(self.symbol, self.tf_raw, self._bar.end)
        self._emitted_until = self._bar.end
        self._bar = None
        self.counters.bars += 1
        return bar


class TickBarBuilder:
    """One bar every N trades (trades, not contracts), in arrival order."""

    deadline_ns: int | None = None  # tick bars never close on a timer

    def __init__(self, symbol: str, tf: Timeframe) -> None:
        if not tf.is_tick:
            raise ValueError("TickBarBuilder needs a tick timeframe")
        self.symbol = symbol
        self.tf = tf
        self.tf_raw = tf.raw
        self._bar: _OpenBar | None = None
        self._gap_pending = False
        self.counters = BuilderCounters()

    def on_trade(self, trade: Trade) -> Bar | None:
        self.counters.trades += 1
        bar = self._bar
        if bar is None:
            bar = self._bar = _OpenBar(trade.ts_ns, trade.ts_ns, trade)
            bar.gapped = self._gap_pending
            self._gap_pending = False
        else:
            bar.add(trade)
        if bar.count < self.tf.size:
            return None
        # end_ns of a tick bar is the timestamp of the closing trade (domain.market.Bar).
        done = bar.to_bar(self.symbol, self.tf_raw, trade.ts_ns)
        self._bar = None
        self.counters.bars += 1
        return done

    def close_due(self, watermark_ns: int) -> Bar | None:
        return None

    @property
    def open_start_ns(self) -> int | None:
        """First trade time of the bar under way (the next one this builder emits), or None."""
        return self._bar.start if self._bar is not None else None

    def mark_gapped(self) -> None:
        if self._bar is not None:
            self._bar.gapped = True
        else:
            self._gap_pending = True


BarBuilder = TimeBarBuilder | TickBarBuilder


def make_builder(symbol: str, tf: Timeframe, grid: BarGrid | None = None) -> BarBuilder:
    if tf.is_tick:
        return TickBarBuilder(symbol, tf)
    return TimeBarBuilder(symbol, tf, grid if grid is not None else SessionGrid(symbol))


def build_bars(trades: Iterable[Trade], symbol: str, tf: Timeframe, grid: BarGrid | None = None,
               watermark_ns: int | None = None) -> list[Bar]:
    """Offline helper: all completed bars from `trades` (the last one only if `watermark_ns` says
    it is complete)."""
    builder = make_builder(symbol, tf, grid)
    out = [b for b in (builder.on_trade(t) for t in trades) if b is not None]
    if watermark_ns is not None:
        last = builder.close_due(watermark_ns)
        if last is not None:
            out.append(last)
    return out


def resample_bars(bars: Iterable[Bar], tf: Timeframe, grid: BarGrid, *, include_partial: bool = False) -> Iterator[Bar]:
    """Aggregate finer time bars (ordered by start) into `tf` bars on `grid`.

    A source bar goes to the target bucket containing its start. The last bucket is yielded only
    with `include_partial` (the caller knows the data is complete)."""
    if tf.is_tick:
        raise ValueError("cannot resample time bars into tick bars")
    tf_raw = tf.raw
    current: list[float] | None = None  # [start, end, o, h, l, c, v, n, gapped]
    symbol = ""
    for b in bars:
        start, end = grid.bucket(b.start_ns, tf)
        if current is not None and current[0] == start:
            current[3] = max(current[3], b.high)
            current[4] = min(current[4], b.low)
            current[5] = b.close
            current[6] += b.volume
            current[7] += b.trade_count
            current[8] = current[8] or b.gapped
            continue
        if current is not None:
            yield _bar_from(symbol, tf_raw, current)
        symbol = b.symbol
        current = [start, end, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.gapped]
    if current is not None and include_partial:
        yield _bar_from(symbol, tf_raw, current)


def resample_complete(bars: Sequence[Bar], tf: Timeframe, grid: BarGrid) -> list[Bar]:
    """`tf` bars aggregated from finer time bars (one timeframe, ordered by start), for warm-up
    history. The first and the last bucket are kept only when the source bars reach its start and
    its end: a run of source bars usually begins inside a bucket (its builder started mid-bucket)
    and ends inside one (the bucket still under way), and such a bar would be wrong, not old. A
    bucket with a hole inside (source bars missing) is kept and marked gapped."""
    buckets: list[tuple[list[float], int, int, int]] = []  # (aggregate, first source start, last source end, covered ns)
    for b in bars:
        start, end = grid.bucket(b.start_ns, tf)
        if buckets and buckets[-1][0][0] == start:
            agg, first, _last, covered = buckets[-1]
            agg[3] = max(agg[3], b.high)
            agg[4] = min(agg[4], b.low)
            agg[5] = b.close
            agg[6] += b.volume
            agg[7] += b.trade_count
            agg[8] = agg[8] or b.gapped
            buckets[-1] = (agg, first, b.end_ns, covered + b.end_ns - b.start_ns)
            continue
        agg = [start, end, b.open, b.high, b.low, b.close, b.volume, b.trade_count, b.gapped]
        buckets.append((agg, b.start_ns, b.end_ns, b.end_ns - b.start_ns))
    if buckets and buckets[0][1] != buckets[0][0][0]:
        buckets.pop(0)
    if buckets and buckets[-1][2] != buckets[-1][0][1]:
        buckets.pop()
    symbol = bars[0].symbol if bars else ""
    out: list[Bar] = []
    for agg, _first, _last, covered in buckets:
        agg[8] = agg[8] or covered < agg[1] - agg[0]
        out.append(_bar_from(symbol, tf.raw, agg))
    return out


def _bar_from(symbol: str, tf_raw: str, c: list[float]) -> Bar:
    return Bar(symbol, tf_raw, int(c[0]), int(c[1]), c[2], c[3], c[4], c[5], int(c[6]), int(c[7]), bool(c[8]))


def bar_to_trades(bar: Bar) -> list[Trade]:
    """Synthesize 4 trades (O, then L/H in the likely order, then C) from an OHLCV bar so bar data
    (ohlcv schemas, CSV bars) can drive the same bar builder. Volume is split so it sums exactly.
    Tick bars built from these are not meaningful; time bars of the same or coarser size are."""
    span = max(bar.end_ns - bar.start_ns, 4)
    first, second = (bar.low, bar.high) if bar.close >= bar.open else (bar.high, bar.low)
    q, r = divmod(max(bar.volume, 0), 4)
    sizes = [q + (1 if i < r else 0) for i in range(4)]
    prices = (bar.open, first, second, bar.close)
    return [Trade(bar.symbol, bar.start_ns + span * i // 4, prices[i], sizes[i]) for i in range(4)]
