"""Databento live trades (`databento.Live`, trades schema) with reconnect and gap backfill, and
Databento Historical warm-up bars.

One `databento.Live` session per dataset (a session carries one dataset): GLBX.MDP3 for the CME
futures, XNAS.ITCH for the equities, with raw symbols from `config.symbology.venue_symbols` for
today's front month. Databento has no index feed: SPX comes from the simulated feed or a broker.

Reconnect: the SDK reconnects by itself (`ReconnectPolicy.RECONNECT`) and then calls our reconnect
callback with (last ts_event before the drop, start of the new session). The callback runs on the
SDK's event loop, so it must not block: it starts a backfill thread and, until that finishes,
holds live records back. The backfill requests the missing range from `databento.Historical`
(trades, [gap_start, gap_end)), emits those trades first (dropping any at or before the last
trade we saw), then a `Gap(backfilled=True)` event, then the held live records — so no bar past
the gap is emitted before the gap is filled. If the backfill fails, a `Gap(backfilled=False)` is
emitted and the bar builders mark the open bars `gapped`.
"""
from __future__ import annotations

import logging
import math
import threading
from datetime import date, datetime, timedelta, timezone
from typing import Any, Callable

from config.instruments import CATALOG, canonical_symbol
from config.symbology import catalog_symbol_for_raw, venue_symbols
from config.timeframes import Timeframe
from domain.market import Bar, Trade
from market_data.bars import SessionGrid, build_bars, resample_bars
from market_data.feeds import PRICE_SCALE, UNDEF_PRICE, UNDEF_TIMESTAMP, Feed, Gap

log = logging.getLogger(__name__)

LiveFactory = Callable[[str], Any]  # api key -> databento.Live
HistoricalFactory = Callable[[str], Any]  # api key -> databento.Historical


def _default_live(key: str) -> Any:
    import databento as db

    return db.Live(key=key, reconnect_policy=db.ReconnectPolicy.RECONNECT)


def _default_historical(key: str) -> Any:
    import databento as db

    return db.Historical(key=key)


class DatabentoLiveFeed(Feed):
    name = "databento"
    realtime = True

    def __init__(self, api_key: str, *, live_factory: LiveFactory = _default_live,
                 historical_factory: HistoricalFactory = _default_historical,
                 today: Callable[[], date] = lambda: datetime.now(timezone.utc).date()) -> None:
        super().__init__()
        self._key = api_key
        self._live_factory = live_factory
        self._historical_factory = historical_factory
        self._today = today
        self._clients: dict[str, Any] = {}  # dataset -> databento.Live
        self._raw: dict[str, tuple[str, str]] = {}  # catalog symbol -> (dataset, raw symbol)
        self._ids: dict[int, str | None] = {}  # instrument_id -> catalog symbol
        self._emit_lock = threading.RLock()  # serialises live, held and backfilled trades
        self._holding = False
        self._holding_from_ns: int | None = None  # gap start of the backfill in flight
        self._held: list[Any] = []
        self._last_ts_event: dict[str, int] = {}  # per symbol: backfill drops trades at or before it
        self.backfills: list[dict[str, Any]] = []  # history of gaps, for status and tests

    # ---- subscriptions -------------------------------------------------------------------
    def subscribe(self, symbol: str) -> None:
        sym = canonical_symbol(symbol)
        codes = venue_symbols(sym, self._today())
        if codes.databento is None or codes.databento_dataset is None:
            log.info("databento has no feed for %s (index); it comes from a broker or the simulator", sym)
            return
        with self._lock:
            if sym in self._raw:
                return
            self._subscribed.add(sym)
            self._raw[sym] = (codes.databento_dataset, codes.databento)
            client = self._clients.get(codes.databento_dataset)
        if client is not None:  # already running: add to the live session
            client.subscribe(dataset=codes.databento_dataset, schema="trades", stype_in="raw_symbol",
                             symbols=[codes.databento])

    def _run(self) -> None:
        with self._lock:
            by_dataset: dict[str, list[str]] = {}
            for dataset, raw in self._raw.values():
                by_dataset.setdefault(dataset, []).append(raw)
        for dataset, raws in by_dataset.items():
            self._start_client(dataset, raws)
        self._stop.wait()

    def _start_client(self, dataset: str, raws: list[str]) -> None:
        client = self._live_factory(self._key)
        client.add_callback(self.on_record, self._on_callback_error)
        # Bind the dataset so a reconnect backfills only what that session missed.
        client.add_reconnect_callback(lambda start, end: self.on_reconnect(start, end, dataset),
                                      self._on_callback_error)
        client.subscribe(dataset=dataset, schema="trades", stype_in="raw_symbol", symbols=raws)
        client.start()
        with self._lock:
            self._clients[dataset] = client

    def _on_stop(self) -> None:
        with self._lock:
            clients = list(self._clients.values())
            self._clients.clear()
        for client in clients:
            try:
                client.stop()
            except Exception:  # already closed / never connected
                log.debug("databento client stop failed", exc_info=True)

    def _on_callback_error(self, exc: Exception) -> None:
        log.error("databento callback error: %s", exc)
        self.state.error = f"{exc.__class__.__name__}: {exc}"

    # ---- records -------------------------------------------------------------------------
    def on_record(self, record: Any) -> None:
        """SDK callback (event-loop thread) for every live record."""
        with self._emit_lock:
            if self._holding:
                self._held.append(record)
                return
            self._handle(record)

    def _handle(self, record: Any, *, seen_until: dict[str, int] | None = None) -> None:
        import databento_dbn as dbn

        if isinstance(record, dbn.SymbolMappingMsg):
            self._ids[record.instrument_id] = catalog_symbol_for_raw(record.stype_out_symbol or record.stype_in_symbol)
            return
        if not isinstance(record, dbn.TradeMsg):
            if isinstance(record, dbn.ErrorMsg):
                self.state.error = str(getattr(record, "err", record))
            return  # heartbeats, system messages
        trade = self.to_trade(record)
        if trade is None or (seen_until is not None and trade.ts_ns <= seen_until.get(trade.symbol, 0)):
            return
        if trade.ts_ns > self._last_ts_event.get(trade.symbol, 0):
            self._last_ts_event[trade.symbol] = trade.ts_ns
        self._emit(trade)

    def to_trade(self, record: Any) -> Trade | None:
        counters = self.state.counters
        ts = int(record.ts_event)
        if ts == UNDEF_TIMESTAMP or ts <= 0:
            counters.skipped_undefined_ts += 1
            return None
        symbol = self._ids.get(record.instrument_id)
        if symbol is None:
            counters.skipped_unknown_symbol += 1
            return None
        price = record.price
        if price == UNDEF_PRICE or price <= 0 or record.size < 0 or not math.isfinite(price * PRICE_SCALE):
            counters.skipped_malformed += 1
            return None
        return Trade(symbol, ts, round(price * PRICE_SCALE, 9), int(record.size), int(record.sequence))

    # ---- reconnect and backfill ------------------------------------------------------------
    def on_reconnect(self, gap_start: Any, gap_end: Any, dataset: str | None = None) -> None:
        """SDK reconnect callback (event-loop thread): must not block, so backfill on a thread."""
        with self._emit_lock:
            self._holding = True
            start = int(gap_start.value)
            self._holding_from_ns = start if self._holding_from_ns is None else min(self._holding_from_ns, start)
        self.state.state = "reconnecting"
        thread = threading.Thread(target=self.backfill, args=(int(gap_start.value), int(gap_end.value), dataset),
                                  name="md-databento-backfill", daemon=True)
        thread.start()

    def backfill(self, start_ns: int, end_ns: int, dataset: str | None = None) -> None:
        """Fetch [start_ns, end_ns) from Historical (no lock held: live records keep being queued
        meanwhile), then emit backfilled trades, the Gap event and the held live records in order."""
        symbols = tuple(sorted(s for s, (d, _raw) in list(self._raw.items()) if dataset in (None, d)))
        report: dict[str, Any] = {"dataset": dataset, "start_ns": start_ns, "end_ns": end_ns, "trades": 0,
                                  "ok": False}
        stores: list[Any] = []
        try:
            historical = self._historical_factory(self._key)
            by_dataset: dict[str, list[str]] = {}
            for ds, raw in list(self._raw.values()):
                if dataset in (None, ds):
                    by_dataset.setdefault(ds, []).append(raw)
            for ds, raws in by_dataset.items():
                stores.append(historical.timeseries.get_range(dataset=ds, schema="trades", symbols=raws,
                                                              stype_in="raw_symbol", start=start_ns, end=end_ns))
            report["ok"] = True
        except Exception as exc:  # offline, entitlement, outage: mark the bars instead
            log.warning("databento backfill %s..%s failed: %s", start_ns, end_ns, exc)
            report["error"] = f"{exc.__class__.__name__}: {exc}"
        with self._emit_lock:
            seen_until = dict(self._last_ts_event)  # trades at or before these were already delivered
            before = self.state.counters.trades
            try:
                for store in stores:
                    self._learn_mappings(store)
                    for rec in store:
                        self._handle(rec, seen_until=seen_until)
            except Exception as exc:  # a corrupt response: treat as not backfilled
                report["ok"], report["error"] = False, f"{exc.__class__.__name__}: {exc}"
            report["trades"] = self.state.counters.trades - before
            self._event(Gap(symbols, start_ns, end_ns, backfilled=bool(report["ok"])))
            held, self._held = self._held, []
            for rec in held:
                self._handle(rec)
            self._holding = False
            self._holding_from_ns = None
        self.backfills.append(report)
        if not self._stop.is_set():
            self.state.state = "running"

    def backfill_from_ns(self) -> int | None:
        return self._holding_from_ns

    def _learn_mappings(self, store: Any) -> None:
        for raw, intervals in (store.metadata.mappings or {}).items():
            for interval in intervals:
                try:
                    self._ids[int(interval["symbol"])] = catalog_symbol_for_raw(raw)
                except (KeyError, ValueError, TypeError):
                    continue

    def status(self) -> dict[str, Any]:
        out = super().status()
        out["backfills"] = list(self.backfills[-10:])
        out["datasets"] = sorted({d for d, _r in self._raw.values()})
        return out


def historical_bars(client: Any | None, api_key: str | None, symbol: str, tf: Timeframe, n: int,
                    now: datetime | None = None) -> list[Bar]:
    """Warm-up bars from Databento Historical: ohlcv-1m resampled to `tf` for time bars, trades for
    tick bars. The look-back is sized generously (bars x duration, plus weekends/holidays)."""
    sym = canonical_symbol(symbol)
    if client is None:
        if not api_key:
            return []
        client = _default_historical(api_key)
    now = now or datetime.now(timezone.utc)
    codes = venue_symbols(sym, now.date())
    if codes.databento is None or codes.databento_dataset is None:
        return []
    if tf.is_tick:
        start = now - timedelta(days=4)
        schema = "trades"
    else:
        session_hours = 23 if CATALOG[sym].is_future else 6.5
        days = math.ceil(n * tf.seconds / (session_hours * 3600)) * 7 / 5 + 4
        start = now - timedelta(days=days)
        schema = "ohlcv-1m"
    store = client.timeseries.get_range(dataset=codes.databento_dataset, schema=schema, symbols=[codes.databento],
                                        stype_in="raw_symbol", start=start, end=now)
    from market_data.feeds import load_dbn_store

    source = load_dbn_store(store, path=f"databento:{schema}")
    trades = [t for _ts, t in source.trades if t.symbol == sym]
    if tf.is_tick:
        return build_bars(trades, sym, tf)[-n:]
    # ohlcv-1m records arrive as synthetic O/L/H/C trades (load_dbn_store): rebuild the 1-minute
    # bars from them, then resample on the session grid so warm-up bars match live-built bars.
    now_ns = int(now.timestamp() * 1e9)
    ones = build_bars(trades, sym, Timeframe.parse("1Min"), SessionGrid(sym), watermark_ns=now_ns)
    resampled = resample_bars(ones, tf, SessionGrid(sym), include_partial=True)
    return [b for b in resampled if b.end_ns <= now_ns][-n:]
