"""Databento live trades (`databento.Live`, trades schema) with reconnect and gap backfill, and
Databento warm-up bars, near real time.

Sessions: one `databento.Live` session per dataset (a session carries one dataset): GLBX.MDP3 for
the CME futures, EQUS.MINI for the equities. A dataset's session starts when the first of its
symbols is subscribed, before or after the feed started. Databento has no index feed: SPX comes
from a broker stream or the simulator.

Futures rolls: the book trades the front month under the catalog's roll rule on New York dates
(`config.symbology.front_month`). A future's trades are taken from the contract trading at the
trade's own time, so the feed moves to the new front month at the roll moment itself (New York
midnight starting the roll date); the next contract is subscribed from an hour before, so it is
already streaming then. Databento has no unsubscribe: the expiring contract keeps streaming and
its trades are counted and dropped (`skipped_other_contract`).

History (`DatabentoHistory`): Databento Historical serves data only up to the dataset's
*available end*, minutes behind real time: a request ending later is refused with a 422
`data_end_after_available_end`. So a request for [start, end) asks Historical for
[start, min(end, available end)) (the end is read from `metadata.get_dataset_range`, cached
briefly) and takes the rest from the live gateway's intraday replay: a short `Live` session
subscribed with `start=` (at most 24 hours back), read until its replay-completed system message.
Historical symbol mappings come from the response's metadata (a Historical stream carries no
mapping records); a Live session announces them as mapping records.

De-duplication: two sources overlap where one hands over to the other (Historical filters on
`ts_recv`, replay on `ts_event`, so the replay starts a few seconds early; a backfill overlaps
what the live session delivered before the drop and what it delivers after the reconnect).
Records are matched by identity (instrument, timestamps, sequence, price, size) as a multiset:
a record one source already delivered is dropped as many times as it was delivered. Distinct
trades sharing every timestamp and the sequence - a CME sweep prints one trade per price level
of one match event - are all kept.

Reconnect: the SDK reconnects by itself (`ReconnectPolicy.RECONNECT`, resubscribing without
replay) and then calls our reconnect callback with (last ts_event before the drop, start of the
new session). The callback runs on the SDK's event loop, so it must not block: it starts a
backfill thread and, until that finishes, holds live records back. The backfill replays the
dataset's contracts from just before the gap, emits what was not delivered yet, then a
`Gap(backfilled=True)` event, then the held live records that the replay did not already bring -
so no bar past the gap is emitted before the gap is filled. If the backfill fails, a
`Gap(backfilled=False)` is emitted and the bar builders mark the open bars `gapped`.
"""
from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Callable, Iterable

from config.instruments import CATALOG, AssetClass, canonical_symbol
from config.symbology import (NEW_YORK, FutureContract, catalog_symbol_for_raw, contract_from_venue, front_month,
                              new_york_date, roll_date, venue_symbols)
from config.timeframes import Timeframe
from domain.market import Bar, Trade
from market_data.bars import SessionGrid, bar_to_trades, build_bars, resample_bars
from market_data.feeds import PRICE_SCALE, UNDEF_PRICE, UNDEF_TIMESTAMP, CompositeFeed, Feed, Gap

log = logging.getLogger(__name__)

LiveFactory = Callable[[str], Any]  # api key -> databento.Live
HistoricalFactory = Callable[[str], Any]  # api key -> databento.Historical

NS = 1_000_000_000
# The gateway replays at most the last 24 hours (SDK `LiveSession.subscribe`: "Must be within 24
# hours"; docs, Live API, Intraday replay); an hour of margin for clock skew and weekend gaps.
REPLAY_WINDOW_NS = 23 * 3600 * NS
# A replay starts this much before where the other source stops: Historical's end filters on
# ts_recv, the replay's start on ts_event, so a record stamped before the boundary and received
# after it would otherwise fall between the two. The overlap is removed by record identity.
REPLAY_OVERLAP_NS = 5 * NS
REPLAY_TIMEOUT_S = 30.0  # a replay session that has not caught up by then is reported as failed
REPLAY_SESSIONS = 2  # replay sessions open at once (Databento limits sessions per dataset)
RANGE_TTL_NS = 300 * NS  # a cached available end only ever lags the true one: the replay covers the rest
TAIL_NS = 15 * NS  # live trade identities kept (by ts_recv) to recognise them in a backfill
ROLL_LEAD_NS = 3600 * NS  # the next contract is subscribed this long before the roll moment
RETRY_S = 30.0  # a session that could not be started or extended is tried again this soon
IDLE_S = 3600.0  # the session loop re-checks at least this often (clock jumps)


def _default_live(key: str) -> Any:
    import databento as db

    return db.Live(key=key, reconnect_policy=db.ReconnectPolicy.RECONNECT)


def _default_historical(key: str) -> Any:
    import databento as db

    return db.Historical(key=key)


def _iso(ts_ns: int) -> str:
    return datetime.fromtimestamp(ts_ns / NS, NEW_YORK).strftime("%Y-%m-%d %H:%M:%S %Z")


def _describe(exc: BaseException) -> str:
    return f"{exc.__class__.__name__}: {exc}".replace("\n", " ")


# ---- contracts and the roll -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Instrument:
    """What a Databento instrument id stands for: a catalog symbol and, for a future, its contract."""

    symbol: str
    contract: FutureContract | None = None  # None: not a dated contract (an equity): always current


def instrument_for_raw(raw: str, near: date) -> Instrument | None:
    """A Databento raw symbol ("ESZ4", "NVDA") as the catalog knows it; None for anything else
    (a spread, an option, a symbol not in the catalog)."""
    symbol = catalog_symbol_for_raw(raw)
    if symbol is None:
        return None
    if CATALOG[symbol].asset_class is AssetClass.FUTURE:
        contract = contract_from_venue(raw, near)
        return Instrument(symbol, contract) if contract is not None else None
    return Instrument(symbol)


def roll_moment_ns(contract: FutureContract) -> int:
    """When `contract` stops being the front month: New York midnight starting its roll date
    (`contract_key_at` reads the roll rule on New York dates)."""
    day = roll_date(contract.year, contract.month)
    return int(datetime(day.year, day.month, day.day, tzinfo=NEW_YORK).timestamp()) * NS


def _previous_quarter(contract: FutureContract) -> FutureContract:
    year, month = (contract.year, contract.month - 3) if contract.month > 3 else (contract.year - 1, contract.month + 9)
    return FutureContract(contract.root, year, month)


class FrontMonths:
    """The contract a futures root trades at a moment, cached between two roll moments: it is
    asked for every trade."""

    def __init__(self) -> None:
        self._spans: dict[str, tuple[int, int, FutureContract]] = {}

    def at(self, root: str, ts_ns: int) -> FutureContract:
        span = self._spans.get(root)
        if span is not None and span[0] <= ts_ns < span[1]:
            return span[2]
        contract = front_month(root, new_york_date(ts_ns))
        self._spans[root] = (roll_moment_ns(_previous_quarter(contract)), roll_moment_ns(contract), contract)
        return contract

    def between(self, root: str, start_ns: int, end_ns: int) -> list[FutureContract]:
        """The contracts that are the front month at some moment of [start_ns, end_ns]."""
        contracts = [self.at(root, start_ns)]
        while roll_moment_ns(contracts[-1]) <= end_ns:
            contracts.append(self.at(root, roll_moment_ns(contracts[-1])))
        return contracts

    def current(self, instrument: Instrument, ts_ns: int) -> bool:
        """Whether `instrument`'s trades at `ts_ns` are the symbol's trades: an equity always, a
        future while it is the front month."""
        contract = instrument.contract
        return contract is None or contract == self.at(contract.root, ts_ns)


def _dataset_of(symbol: str) -> str | None:
    return venue_symbols(symbol, date(2000, 1, 1)).databento_dataset


# ---- record identity ---------------------------------------------------------------------------
def record_key(record: Any) -> tuple[Any, ...]:
    """A record's identity across sources (live, replay, Historical carry the same normalised
    records). Not unique on its own: see `Seen`."""
    if hasattr(record, "open"):  # OHLCV
        return ("ohlcv", record.instrument_id, record.ts_event, record.open, record.high, record.low,
                record.close, record.volume)
    return ("trade", record.instrument_id, record.ts_event, getattr(record, "ts_recv", None),
            getattr(record, "sequence", None), getattr(record, "price", None), getattr(record, "size", None))


class Seen:
    """A multiset of record identities: `take` consumes one delivery of a key, so a record two
    sources deliver is kept once, and N distinct records with one identity are kept N times.
    With `horizon_ns`, identities older (by `ts`) than that behind the newest are forgotten."""

    def __init__(self, horizon_ns: int | None = None) -> None:
        self._counts: Counter[tuple[Any, ...]] = Counter()
        self._order: deque[tuple[int, tuple[Any, ...]]] = deque()
        self._horizon = horizon_ns

    def add(self, key: tuple[Any, ...], ts: int = 0) -> None:
        self._counts[key] += 1
        if self._horizon is None:
            return
        self._order.append((ts, key))
        while self._order and self._order[0][0] < ts - self._horizon:
            _old_ts, old = self._order.popleft()
            if self._counts[old] > 1:
                self._counts[old] -= 1
            else:
                self._counts.pop(old, None)

    def take(self, key: tuple[Any, ...]) -> bool:
        count = self._counts.get(key, 0)
        if count <= 0:
            return False
        if count == 1:
            del self._counts[key]
        else:
            self._counts[key] = count - 1
        return True


def _is_data(record: Any) -> bool:
    """A trade or an OHLCV bar (not a mapping, system, error or heartbeat record)."""
    import databento_dbn as dbn

    return isinstance(record, (dbn.TradeMsg, dbn.OHLCVMsg))


def _ts_recv(record: Any) -> int:
    ts = getattr(record, "ts_recv", None)
    return int(ts) if ts is not None and ts != UNDEF_TIMESTAMP else int(record.ts_event)


# ---- history: Historical up to the available end, then intraday replay ------------------------
@dataclass
class HistoryRecords:
    """Records of one dataset over a time range, oldest first: Historical's, then the replay's."""

    records: list[Any] = field(default_factory=list)
    instruments: dict[int, Instrument] = field(default_factory=dict)
    note: str | None = None  # what is missing and why; None: the range is complete


@dataclass(frozen=True)
class HistoryBars:
    bars: list[Bar]
    note: str | None  # why the bars may be incomplete (a source failed, a hole before now)


def _range_end_ns(answer: dict[str, Any], schema: str) -> int:
    """The exclusive end of the available range of `schema` in a `get_dataset_range` answer: the
    per-schema end when given (a schema may end earlier than the dataset), else the dataset's
    (databento.com/docs/api-historical/metadata/metadata-get-dataset-range)."""
    import pandas as pd

    per_schema = (answer.get("schema") or {}).get(schema) or {}
    stamp = pd.Timestamp(per_schema.get("end") or answer["end"])
    return int((stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp).value)


class DatabentoHistory:
    """Past records of a dataset up to real time (see the module docstring), and warm-up bars."""

    def __init__(self, api_key: str, *, historical_factory: HistoricalFactory = _default_historical,
                 live_factory: LiveFactory = _default_live, clock_ns: Callable[[], int] = time.time_ns,
                 replay_timeout_s: float = REPLAY_TIMEOUT_S) -> None:
        self._key = api_key
        self._historical_factory = historical_factory
        self._live_factory = live_factory
        self._clock = clock_ns
        self._replay_timeout_s = replay_timeout_s
        self._lock = threading.Lock()
        self._ranges: dict[tuple[str, str], tuple[int, int]] = {}  # (dataset, schema) -> (asked at, end)
        self._replay_slots = threading.BoundedSemaphore(REPLAY_SESSIONS)
        self._fronts = FrontMonths()

    def available_end_ns(self, client: Any, dataset: str, schema: str) -> int:
        """Where `dataset`'s `schema` ends in Historical now (exclusive), asked at most every
        RANGE_TTL_NS."""
        now = self._clock()
        with self._lock:
            cached = self._ranges.get((dataset, schema))
        if cached is not None and now - cached[0] < RANGE_TTL_NS:
            return cached[1]
        end = _range_end_ns(client.metadata.get_dataset_range(dataset=dataset), schema)
        with self._lock:
            self._ranges[(dataset, schema)] = (now, end)
        return end

    def fetch(self, dataset: str, schema: str, raws: list[str], start_ns: int, end_ns: int | None) -> HistoryRecords:
        """Records of the raw symbols `raws` from `start_ns` to `end_ns` (exclusive; None: until
        the replay has caught up with real time)."""
        now = self._clock()
        until = now if end_ns is None else min(end_ns, now)
        out = HistoryRecords()
        notes: list[str] = []
        covered = start_ns  # Historical delivered [start_ns, covered)
        try:
            client = self._historical_factory(self._key)
            stop = min(until, self.available_end_ns(client, dataset, schema))
            if start_ns < stop:
                store = client.timeseries.get_range(dataset=dataset, schema=schema, symbols=raws,
                                                    stype_in="raw_symbol", start=start_ns, end=stop)
                # Instrument ids from the metadata: a Historical stream carries no mapping records.
                out.instruments.update(self._from_metadata(store.metadata.mappings, stop))
                out.records.extend(r for r in store if _is_data(r))
                covered = stop
        except Exception as exc:  # offline, entitlement, outage: the replay brings what it can
            log.warning("databento historical %s %s failed: %s", dataset, schema, _describe(exc))
            notes.append(f"Databento Historical failed ({_describe(exc)})")
        if end_ns is None or covered < until:
            earliest = now - REPLAY_WINDOW_NS
            begin = max(start_ns, covered - REPLAY_OVERLAP_NS if covered > start_ns else start_ns, earliest)
            if begin > covered:
                notes.append(f"no data from {_iso(covered)} to {_iso(begin)}: the live gateway replays only the "
                             "last 24 hours")
            self._add_replay(out, notes, dataset, schema, raws, begin, end_ns)
        out.note = "; ".join(notes) or None
        return out

    def _add_replay(self, out: HistoryRecords, notes: list[str], dataset: str, schema: str, raws: list[str],
                    begin: int, end_ns: int | None) -> None:
        try:
            replayed, instruments, problem = self._replay(dataset, schema, raws, begin)
        except Exception as exc:  # the gateway refused the session: what Historical gave is all there is
            log.warning("databento replay %s %s failed: %s", dataset, schema, _describe(exc))
            notes.append(f"Databento live replay failed ({_describe(exc)})")
            return
        if problem:
            notes.append(problem)
        out.instruments.update(instruments)
        overlap = Seen()
        for record in out.records:
            if record.ts_event >= begin:
                overlap.add(record_key(record))
        out.records.extend(r for r in replayed if not overlap.take(record_key(r))
                           and (end_ns is None or r.ts_event < end_ns))

    def _replay(self, dataset: str, schema: str, raws: list[str],
                start_ns: int) -> tuple[list[Any], dict[int, Instrument], str | None]:
        """One intraday-replay session from `start_ns`, read until the gateway says the replay has
        caught up with real time (a replay-completed system message per schema)."""
        import databento_dbn as dbn

        records: list[Any] = []
        instruments: dict[int, Instrument] = {}
        errors: list[str] = []
        done = threading.Event()
        guard = threading.Lock()  # the SDK's thread appends, this one reads once done
        near = new_york_date(start_ns)

        def on_record(record: Any) -> None:
            with guard:
                if done.is_set():  # past the replay: real-time records are the live session's
                    return
                if isinstance(record, dbn.SymbolMappingMsg):
                    instrument = instrument_for_raw(record.stype_out_symbol or record.stype_in_symbol, near)
                    if instrument is not None:
                        instruments[record.instrument_id] = instrument
                elif isinstance(record, dbn.SystemMsg):
                    if record.code == dbn.SystemCode.REPLAY_COMPLETED:
                        done.set()
                elif isinstance(record, dbn.ErrorMsg):
                    errors.append(str(record.err))
                    done.set()
                elif _is_data(record):
                    records.append(record)

        def on_error(exc: Exception) -> None:
            with guard:
                errors.append(_describe(exc))
                done.set()

        with self._replay_slots:
            client = self._live_factory(self._key)
            client.add_callback(on_record, on_error)
            client.subscribe(dataset=dataset, schema=schema, symbols=raws, stype_in="raw_symbol", start=start_ns)
            try:
                client.start()
                completed = done.wait(self._replay_timeout_s)
            finally:
                with guard:
                    done.set()
                try:
                    client.stop()
                except Exception:  # already closed by the gateway
                    log.debug("databento replay stop failed", exc_info=True)
        if errors:
            return records, instruments, f"Databento live replay failed ({'; '.join(errors)})"
        if not completed:
            return records, instruments, f"Databento live replay did not catch up within {self._replay_timeout_s:.0f}s"
        return records, instruments, None

    def _from_metadata(self, mappings: dict[str, list[dict[str, Any]]] | None, near_ns: int) -> dict[int, Instrument]:
        """Instrument ids from a Historical response's metadata (raw symbol -> id intervals)."""
        out: dict[int, Instrument] = {}
        near = new_york_date(near_ns)
        for raw, intervals in (mappings or {}).items():
            instrument = instrument_for_raw(raw, near)
            if instrument is None:
                continue
            for interval in intervals:
                try:
                    out[int(interval["symbol"])] = instrument
                except (KeyError, ValueError, TypeError):
                    continue
        return out

    # ---- warm-up bars -------------------------------------------------------------------------
    def bars(self, symbol: str, tf: Timeframe, n: int, now_ns: int | None = None) -> HistoryBars:
        """Up to `n` completed bars ending by now: ohlcv-1m resampled to `tf` for time bars, trades
        for tick bars, of the contract the book traded at each moment (a warm-up across a roll
        takes the expiring contract before the roll moment, the new one after). The look-back is
        sized generously (bars x duration, plus weekends/holidays)."""
        sym = canonical_symbol(symbol)
        dataset = _dataset_of(sym)
        if dataset is None:
            return HistoryBars([], None)
        now = self._clock() if now_ns is None else now_ns
        instrument = CATALOG[sym]
        if tf.is_tick:
            start, schema = now - 4 * 86_400 * NS, "trades"
        else:
            session_hours = 23 if instrument.is_future else 6.5
            days = math.ceil(n * tf.seconds / (session_hours * 3600)) * 7 / 5 + 4
            start, schema = now - int(timedelta(days=days).total_seconds()) * NS, "ohlcv-1m"
        if instrument.asset_class is AssetClass.FUTURE:
            raws = [c.databento for c in self._fronts.between(instrument.root, start, now)]
        else:
            raws = [instrument.root]
        fetched = self.fetch(dataset, schema, raws, start, now)
        trades = self._trades(fetched, sym)
        if tf.is_tick:
            return HistoryBars(build_bars(trades, sym, tf)[-n:], fetched.note)
        # ohlcv-1m records arrive as synthetic O/L/H/C trades: rebuild the 1-minute bars from them,
        # then resample on the session grid so warm-up bars match live-built bars.
        ones = build_bars(trades, sym, Timeframe.parse("1Min"), SessionGrid(sym), watermark_ns=now)
        resampled = resample_bars(ones, tf, SessionGrid(sym), include_partial=True)
        return HistoryBars([b for b in resampled if b.end_ns <= now][-n:], fetched.note)

    def _trades(self, fetched: HistoryRecords, sym: str) -> list[Trade]:
        trades: list[Trade] = []
        for record in fetched.records:
            instrument = fetched.instruments.get(record.instrument_id)
            ts = int(record.ts_event)
            if instrument is None or instrument.symbol != sym or ts <= 0 or ts == UNDEF_TIMESTAMP:
                continue
            if not self._fronts.current(instrument, ts):
                continue
            if hasattr(record, "open"):  # ohlcv-1m
                prices = (record.open, record.high, record.low, record.close)
                if any(p == UNDEF_PRICE for p in prices):
                    continue
                bar = Bar(sym, "", ts, ts + 60 * NS, *(p * PRICE_SCALE for p in prices), int(record.volume), 0)
                trades.extend(bar_to_trades(bar))
            elif record.price != UNDEF_PRICE and record.price > 0 and record.size >= 0:
                trades.append(Trade(sym, ts, round(record.price * PRICE_SCALE, 9), int(record.size),
                                    int(record.sequence)))
        return trades


# ---- the live feed -------------------------------------------------------------------------------
class DatabentoLiveFeed(Feed):
    name = "databento"
    realtime = True

    def __init__(self, api_key: str, *, live_factory: LiveFactory = _default_live,
                 historical_factory: HistoricalFactory = _default_historical,
                 clock_ns: Callable[[], int] = time.time_ns, replay_timeout_s: float = REPLAY_TIMEOUT_S) -> None:
        super().__init__()
        self._key = api_key
        self._live_factory = live_factory
        self._clock = clock_ns
        self.history = DatabentoHistory(api_key, historical_factory=historical_factory, live_factory=live_factory,
                                        clock_ns=clock_ns, replay_timeout_s=replay_timeout_s)
        self._fronts = FrontMonths()
        self._datasets: dict[str, str] = {}  # catalog symbol -> dataset
        self._clients: dict[str, Any] = {}  # dataset -> databento.Live
        self._live_raws: dict[str, set[str]] = {}  # dataset -> raw symbols its session carries
        self._ids: dict[str, dict[int, Instrument]] = {}  # dataset -> instrument id -> instrument
        self._tails: dict[str, Seen] = {}  # dataset -> identities of the latest live trades
        self._sessions_lock = threading.Lock()  # serialises starting and extending sessions
        self._running = False
        self._sync_failed = False
        self._wake = threading.Event()
        self._emit_lock = threading.RLock()  # serialises live, held and backfilled trades
        self._holding = 0  # backfills in flight; live records are held while > 0
        self._holding_from_ns: int | None = None  # earliest gap start of the backfills in flight
        self._held: list[tuple[Any, str]] = []
        self._backfilled = Seen()  # identities a backfill emitted: the held records drop them
        self.skipped_other_contract = 0
        self.backfills: list[dict[str, Any]] = []  # history of gaps, for status and tests

    # ---- subscriptions -------------------------------------------------------------------
    def subscribe(self, symbol: str) -> None:
        sym = canonical_symbol(symbol)
        dataset = _dataset_of(sym)
        if dataset is None:
            log.info("databento has no feed for %s (index); it comes from a broker or the simulator", sym)
            return
        with self._lock:
            if sym in self._datasets:
                return
            self._subscribed.add(sym)
            self._datasets[sym] = dataset
        self.sync_sessions()  # running: its dataset's session starts or takes it now

    def _wanted(self, now_ns: int) -> dict[str, set[str]]:
        """Raw symbols per dataset: each equity, each future's front month, and from ROLL_LEAD_NS
        before a roll the contract that follows."""
        with self._lock:
            datasets = dict(self._datasets)
        wanted: dict[str, set[str]] = {}
        for sym, dataset in datasets.items():
            instrument = CATALOG[sym]
            if instrument.asset_class is AssetClass.FUTURE:
                raws = {self._fronts.at(instrument.root, now_ns).databento,
                        self._fronts.at(instrument.root, now_ns + ROLL_LEAD_NS).databento}
            else:
                raws = {instrument.root}
            wanted.setdefault(dataset, set()).update(raws)
        return wanted

    def next_roll_check_ns(self) -> int | None:
        """When the sessions next need another contract: ROLL_LEAD_NS before the next roll moment
        of a subscribed future (None: no future subscribed)."""
        now = self._clock()
        with self._lock:
            roots = {CATALOG[s].root for s in self._datasets if CATALOG[s].asset_class is AssetClass.FUTURE}
        moments = [roll_moment_ns(self._fronts.at(root, now + ROLL_LEAD_NS)) - ROLL_LEAD_NS for root in roots]
        return min(moments) if moments else None

    def sync_sessions(self) -> None:
        """Make every dataset's session carry what its symbols need now (a no-op before the feed
        runs: `_run` starts the sessions)."""
        with self._sessions_lock:
            if not self._running or self._stop.is_set():
                return
            failed = False
            for dataset, raws in sorted(self._wanted(self._clock()).items()):
                new = sorted(raws - self._live_raws.get(dataset, set()))
                if not new:
                    continue
                try:
                    client = self._clients.get(dataset)
                    if client is None:
                        self._start_client(dataset, new)
                    else:  # a started session takes new symbols (without replay)
                        client.subscribe(dataset=dataset, schema="trades", stype_in="raw_symbol", symbols=new)
                    self._live_raws.setdefault(dataset, set()).update(new)
                    log.info("databento %s: streaming %s", dataset, ", ".join(new))
                except Exception as exc:  # gateway unreachable, key refused: tried again soon
                    failed = True
                    log.error("databento %s: could not subscribe %s: %s", dataset, ", ".join(new), _describe(exc))
                    self.state.error = _describe(exc)
            self._sync_failed = failed

    def recheck(self) -> None:
        """Re-check the sessions now (e.g. after the wall clock jumped) instead of at the next roll."""
        self._wake.set()

    def _run(self) -> None:
        with self._sessions_lock:
            self._running = True
        self.sync_sessions()
        while not self._stop.is_set():
            self._wake.wait(self._loop_timeout_s())
            self._wake.clear()
            if not self._stop.is_set():
                self.sync_sessions()

    def _loop_timeout_s(self) -> float:
        deadline = self.next_roll_check_ns()
        wait = IDLE_S if deadline is None else (deadline - self._clock()) / NS
        if self._sync_failed:
            wait = min(wait, RETRY_S)
        return max(0.0, min(wait, IDLE_S))

    def _start_client(self, dataset: str, raws: list[str]) -> None:
        client = self._live_factory(self._key)
        client.add_callback(lambda record: self.on_record(record, dataset), self._on_callback_error)
        # Bind the dataset so a reconnect backfills only what that session missed.
        client.add_reconnect_callback(lambda start, end: self.on_reconnect(start, end, dataset),
                                      self._on_callback_error)
        try:
            client.subscribe(dataset=dataset, schema="trades", stype_in="raw_symbol", symbols=raws)
            client.start()
        except Exception:
            try:
                client.stop()
            except Exception:  # never connected
                log.debug("databento client stop failed", exc_info=True)
            raise
        self._clients[dataset] = client

    def _on_stop(self) -> None:
        with self._sessions_lock:
            self._running = False
            clients = list(self._clients.values())
            self._clients.clear()
            self._live_raws.clear()
        self._wake.set()
        for client in clients:
            try:
                client.stop()
            except Exception:  # already closed / never connected
                log.debug("databento client stop failed", exc_info=True)

    def _on_callback_error(self, exc: Exception) -> None:
        log.error("databento callback error: %s", exc)
        self.state.error = _describe(exc)

    # ---- records -------------------------------------------------------------------------
    def on_record(self, record: Any, dataset: str) -> None:
        """SDK callback (event-loop thread) for every live record of `dataset`'s session."""
        with self._emit_lock:
            if self._holding:
                self._held.append((record, dataset))
                return
            self._handle(record, dataset)

    def _handle(self, record: Any, dataset: str) -> None:
        import databento_dbn as dbn

        if isinstance(record, dbn.SymbolMappingMsg):
            instrument = instrument_for_raw(record.stype_out_symbol or record.stype_in_symbol, new_york_date(self._clock()))
            if instrument is not None:
                self._ids.setdefault(dataset, {})[record.instrument_id] = instrument
            return
        if not isinstance(record, dbn.TradeMsg):
            if isinstance(record, dbn.ErrorMsg):
                self.state.error = str(getattr(record, "err", record))
            return  # heartbeats, system messages
        self._emit_record(record, dataset)

    def _emit_record(self, record: Any, dataset: str) -> None:
        trade = self.to_trade(record, dataset)
        self._tails.setdefault(dataset, Seen(TAIL_NS)).add(record_key(record), _ts_recv(record))
        if trade is not None:
            self._emit(trade)

    def to_trade(self, record: Any, dataset: str) -> Trade | None:
        counters = self.state.counters
        ts = int(record.ts_event)
        if ts == UNDEF_TIMESTAMP or ts <= 0:
            counters.skipped_undefined_ts += 1
            return None
        instrument = self._ids.get(dataset, {}).get(record.instrument_id)
        if instrument is None:
            counters.skipped_unknown_symbol += 1
            return None
        if not self._fronts.current(instrument, ts):
            self.skipped_other_contract += 1
            return None
        price = record.price
        if price == UNDEF_PRICE or price <= 0 or record.size < 0 or not math.isfinite(price * PRICE_SCALE):
            counters.skipped_malformed += 1
            return None
        return Trade(instrument.symbol, ts, round(price * PRICE_SCALE, 9), int(record.size), int(record.sequence))

    # ---- reconnect and backfill ------------------------------------------------------------
    def on_reconnect(self, gap_start: Any, gap_end: Any, dataset: str) -> None:
        """SDK reconnect callback (event-loop thread): must not block, so backfill on a thread."""
        start, end = int(gap_start.value), int(gap_end.value)
        with self._emit_lock:
            self._holding += 1
            self._holding_from_ns = start if self._holding_from_ns is None else min(self._holding_from_ns, start)
        self.state.state = "reconnecting"
        threading.Thread(target=self.backfill, args=(start, end, dataset), name="md-databento-backfill",
                         daemon=True).start()

    def backfill(self, start_ns: int, end_ns: int, dataset: str) -> None:
        """Fetch what `dataset`'s session missed from just before `start_ns` until the replay has
        caught up (no lock held: live records keep being queued meanwhile), then emit what was not
        delivered yet, the Gap event and the held live records the backfill did not bring."""
        with self._lock:
            symbols = tuple(sorted(s for s, d in self._datasets.items() if d == dataset))
        with self._sessions_lock:
            raws = sorted(self._live_raws.get(dataset, set()))
        report: dict[str, Any] = {"dataset": dataset, "start_ns": start_ns, "end_ns": end_ns, "trades": 0, "ok": False}
        fetched = self.history.fetch(dataset, "trades", raws, start_ns - REPLAY_OVERLAP_NS, None)
        report["ok"] = fetched.note is None
        if fetched.note:
            log.warning("databento backfill %s %s..%s incomplete: %s", dataset, _iso(start_ns), _iso(end_ns),
                        fetched.note)
            report["error"] = fetched.note
        import databento_dbn as dbn

        with self._emit_lock:
            self._ids.setdefault(dataset, {}).update(fetched.instruments)
            tail = self._tails.setdefault(dataset, Seen(TAIL_NS))
            before = self.state.counters.trades
            for record in fetched.records:
                if not isinstance(record, dbn.TradeMsg):
                    continue
                key = record_key(record)
                if tail.take(key):  # delivered before the drop
                    continue
                self._backfilled.add(key)
                self._emit_record(record, dataset)
            report["trades"] = self.state.counters.trades - before
            self._event(Gap(symbols, start_ns, end_ns, backfilled=bool(report["ok"])))
            self._holding -= 1
            if self._holding == 0:
                held, self._held = self._held, []
                for record, held_dataset in held:
                    if isinstance(record, dbn.TradeMsg) and self._backfilled.take(record_key(record)):
                        continue  # the replay brought it already
                    self._handle(record, held_dataset)
                self._backfilled = Seen()
                self._holding_from_ns = None
        self.backfills.append(report)
        if not self._stop.is_set() and self._holding == 0:
            self.state.state = "running"

    def backfill_from_ns(self) -> int | None:
        return self._holding_from_ns

    def status(self) -> dict[str, Any]:
        out = super().status()
        now = self._clock()
        with self._lock:
            symbols = dict(self._datasets)
        out["backfills"] = list(self.backfills[-10:])
        out["datasets"] = sorted(set(symbols.values()))
        out["contracts"] = {s: self._fronts.at(CATALOG[s].root, now).key for s in sorted(symbols)
                            if CATALOG[s].asset_class is AssetClass.FUTURE}
        out["skipped_other_contract"] = self.skipped_other_contract
        return out


# ---- the service's warm-up ---------------------------------------------------------------------
_STANDALONE: "weakref.WeakKeyDictionary[Feed, DatabentoHistory]" = weakref.WeakKeyDictionary()
_STANDALONE_LOCK = threading.Lock()


def history_for(feed: Feed, api_key: str | None, historical: Callable[[], Any] | None = None) -> DatabentoHistory:
    """The Databento history of the running feed (its clients and its available-end cache); for a
    feed that is not Databento's (a simulated run with a Databento key), one kept with that feed."""
    members: Iterable[Feed] = feed.feeds if isinstance(feed, CompositeFeed) else (feed,)
    for member in members:
        if isinstance(member, DatabentoLiveFeed):
            return member.history
    with _STANDALONE_LOCK:
        history = _STANDALONE.get(feed)
        if history is None:
            factory: HistoricalFactory = (lambda _key: historical()) if historical is not None else _default_historical
            history = _STANDALONE[feed] = DatabentoHistory(api_key or "", historical_factory=factory)
        return history
