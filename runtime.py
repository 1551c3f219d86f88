"""Builds and runs the trading side of the process: market data, brokers, order manager, risk,
strategy engine and the maintenance thread. `app.main()` calls `TradingRuntime.build(...)`, then
`start()` before serving and `stop()` on SIGTERM.

Start-up order matters (issue: brokers): brokers connect, the order manager recovers in-flight
orders and reconciliation runs BEFORE any strategy resumes, so a restart never acts on a book
that disagrees with the broker. A mismatch halts the tickers it affects only once it held on a
second read (orders fill while reconciliation reads); such a halt lifts itself when a later
reconciliation agrees at that key, or when an operator adopts the broker's position or flattens
it. Every standing disagreement (book vs broker from reconciliation, strategy vs book from the
strategy engine) is kept in `divergences` and shown in /api/status.
"""
from __future__ import annotations

import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from brokers.base import BrokerAdapter
from brokers.errors import BrokerError
from brokers.paper import PaperBroker
from brokers.registry import BrokerRegistry
from brokers.token_store import TokenStore
from config.settings import FuturesRoll, MarketDataSource, Settings
from domain.market import Trade
from domain.orders import BROKERS, SCHWAB, TASTYTRADE, BrokerName
from domain.tickers import TickerConfig
from engine.clock import spx_session_clock
from engine.executor import IntentExecutor
from engine.runner import Divergence as StrategyDivergence
from engine.services import Services
from engine.supervisor import PriceRefusal, StrategySupervisor
from market_data.index_feed import NO_SPX_SOURCE, FirstConnectedSource, IndexSource, SourceChoice, index_feed_for
from market_data.service import MarketDataService, build_feed
from domain.risk import allow_all
from monitoring.divergence import Divergences
from oms.journal import event_entry
from oms.models import BrokerReport, OmsPosition, TargetOrder
from oms.order_manager import OrderManager
from oms.reconcile import ReconciliationReport, adopt_broker_position, flatten_mismatch, reconcile
from store.redis_store import Store

log = logging.getLogger("runtime")

RECONCILE_INTERVAL_SECONDS = 180.0  # "every few minutes"
MAINTENANCE_INTERVAL_SECONDS = 5.0  # ledger sync, loss limits, live order polling
# Wait before the confirmation read of a candidate mismatch: long enough for an order sent or
# filled during the first read to be booked (a paper fill is booked within milliseconds, a live
# fill on the next poll), short enough that a real mismatch halts at once.
RECONCILE_SETTLE_SECONDS = 1.5


MISMATCH = "mismatch"  # cause prefix of a halt reconciliation raised (and so may lift)
OTHER = "other"  # any other cause: never lifted by reconciliation
_LEGACY_REASON = re.compile(r"^reconciliation mismatch at (\S+) (.+?): broker ")


@dataclass(frozen=True, slots=True)
class Halt:
    strategy: str
    symbol: str
    reason: str  # one standing cause's reason (what the executor answers with)
    causes: dict[str, str]  # cause -> reason; "mismatch\x1f<broker>\x1f<key>" or "other"

    def mismatch_keys(self) -> list[tuple[str, str]]:
        return sorted(tuple(c.split("\x1f")[1:3]) for c in self.causes if c.startswith(MISMATCH))  # type: ignore[misc]

    def to_json(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "symbol": self.symbol, "reason": self.reason,
                "causes": [{"cause": MISMATCH, "broker": c.split("\x1f")[1], "key": c.split("\x1f")[2], "reason": r}
                           if c.startswith(MISMATCH) else {"cause": c, "reason": r}
                           for c, r in sorted(self.causes.items())]}


@dataclass
class Halts:
    """Halted tickers: (strategy, symbol) -> reason, persisted in Redis so a restart does not
    silently resume a ticker whose book disagreed with the broker.

    Each halt remembers its causes (`engine:halt_causes`, one JSON object per ticker). A ticker
    halted by reconciliation mismatches resumes when every one of them is released (a later
    reconciliation agrees at the key, or an operator adopted or flattened there); a cause set with
    `set` (anything else) is only lifted by `clear`. `engine:halts` keeps the plain reason per
    ticker, which the executor reads before every intent. One process writes these (the instance
    lock); the lock below serialises its threads."""

    store: Store
    _key: str = field(init=False)
    _causes_key: str = field(init=False)
    _lock: threading.Lock = field(init=False, default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self._key = self.store.key("engine", "halts")
        self._causes_key = self.store.key("engine", "halt_causes")

    @staticmethod
    def _pair(strategy: str, symbol: str) -> str:
        return f"{strategy}|{symbol}"

    def _causes(self, pair: str, reason: str | None) -> dict[str, str]:
        raw = self.store.redis.hget(self._causes_key, pair)
        if raw is not None:
            return dict(json.loads(raw))
        if reason is None:
            return {}
        legacy = _LEGACY_REASON.match(reason)  # written before causes were recorded
        return {"\x1f".join((MISMATCH, legacy[1], legacy[2])): reason} if legacy else {OTHER: reason}

    def _write(self, pair: str, causes: dict[str, str]) -> None:
        pipe = self.store.redis.pipeline(transaction=True)
        if causes:
            pipe.hset(self._key, pair, next(iter(causes.values())))
            pipe.hset(self._causes_key, pair, json.dumps(causes))
        else:
            pipe.hdel(self._key, pair)
            pipe.hdel(self._causes_key, pair)
        pipe.execute()

    def set(self, strategy: str, symbol: str, reason: str) -> None:
        """Halt for a cause reconciliation does not own: only `clear` lifts it."""
        self._add(strategy, symbol, OTHER, reason)

    def set_mismatch(self, strategy: str, symbol: str, broker: str, key: str, reason: str) -> bool:
        """Halt because the book and `broker` disagree at `key`. True when this cause is new."""
        return self._add(strategy, symbol, "\x1f".join((MISMATCH, broker, key)), reason)

    def _add(self, strategy: str, symbol: str, cause: str, reason: str) -> bool:
        pair = self._pair(strategy, symbol)
        with self._lock:
            causes = self._causes(pair, self.reason(strategy, symbol))
            new = cause not in causes
            causes[cause] = reason
            self._write(pair, causes)
        return new

    def release_mismatch(self, broker: str, key: str, reason: str) -> list[tuple[str, str]]:
        """The book and `broker` agree at `key` again: drop that cause from every halt; returns the
        tickers that are no longer halted (none while another cause stands)."""
        cause = "\x1f".join((MISMATCH, broker, key))
        resumed: list[tuple[str, str]] = []
        with self._lock:
            for halt in self.standing():
                if cause not in halt.causes:
                    continue
                causes = {c: r for c, r in halt.causes.items() if c != cause}
                self._write(self._pair(halt.strategy, halt.symbol), causes)
                if not causes:
                    resumed.append((halt.strategy, halt.symbol))
        if resumed:
            log.warning("RESUMED %s: %s %s: %s", resumed, broker, key, reason)
        return resumed

    def clear(self, strategy: str, symbol: str) -> bool:
        with self._lock:
            pair = self._pair(strategy, symbol)
            had = self.store.redis.hexists(self._key, pair)
            self._write(pair, {})
        return bool(had)

    def reason(self, strategy: str, symbol: str) -> str | None:
        value = self.store.redis.hget(self._key, self._pair(strategy, symbol))
        return None if value is None else str(value)

    def all(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.store.redis.hgetall(self._key).items()}

    def standing(self) -> list[Halt]:
        """Every halt with its causes."""
        out = []
        for pair, reason in sorted(self.all().items()):
            strategy, _, symbol = pair.partition("|")
            out.append(Halt(strategy, symbol, reason, self._causes(pair, reason)))
        return out

    def mismatch_keys(self) -> set[tuple[str, str]]:
        """Every (broker, key) some halt is waiting on."""
        return {k for h in self.standing() for k in h.mismatch_keys()}


def build_live_adapters(settings: Settings, store: Store, token_store: TokenStore) -> dict[BrokerName, BrokerAdapter]:
    """Real adapters for the brokers whose credentials are configured."""
    live: dict[BrokerName, BrokerAdapter] = {}
    if settings.schwab_api_key and settings.schwab_app_secret:
        from brokers.schwab.adapter import SchwabAdapter

        live[SCHWAB] = SchwabAdapter(settings, store, token_store)
    if settings.tastytrade_client_id and settings.tastytrade_client_secret:
        from brokers.tastytrade.adapter import TastytradeAdapter

        live[TASTYTRADE] = TastytradeAdapter(settings, store, token_store)
    return live


class TradingRuntime:
    def __init__(self, services: Services, *, market_data: MarketDataService, registry: BrokerRegistry,
                 orders: OrderManager, supervisor: StrategySupervisor, halts: Halts,
                 divergences: Divergences | None = None,
                 reconcile_settle: Callable[[], object] | None = None) -> None:
        self.services = services
        self.market_data = market_data
        self.registry = registry
        self.orders = orders
        self.supervisor = supervisor
        self.halts = halts
        self.last_reconciliation: ReconciliationReport | None = None
        self.on_reconciliation: Callable[[ReconciliationReport], None] | None = None  # alerts hook
        self._stop = threading.Event()
        self._maintenance: threading.Thread | None = None
        # The settle wait is on the stop event: never a busy loop, and a stop cuts it short.
        self._settle = reconcile_settle or (lambda: self._stop.wait(RECONCILE_SETTLE_SECONDS))
        # One reconciliation or operator resolution at a time (maintenance thread, start-up and web
        # requests): a comparison read before an adopt must not re-halt what the adopt cleared.
        self._reconcile_lock = threading.RLock()
        self.divergences = divergences or build_divergences(services)

    @staticmethod
    def build(services: Services, *, market_data: MarketDataService | None = None,
              live_adapters: dict[BrokerName, BrokerAdapter] | None = None) -> "TradingRuntime":
        settings, store = services.settings, services.store
        token_store = TokenStore(store, settings.token_encryption_key)
        live = live_adapters if live_adapters is not None else build_live_adapters(settings, store, token_store)
        # SPX from a broker's stream (market data cannot import brokers, so the source is made here);
        # an injected market data service brings its own feeds, so no stream is known to it.
        index_source = build_index_source(settings, live) if market_data is None else None
        md = market_data or MarketDataService(
            settings, store, source=build_feed(settings, index_feed=index_feed_for(settings, index_source)))
        paper: dict[BrokerName, BrokerAdapter] = {
            name: PaperBroker(store, name, settings, md.last_price) for name in BROKERS
        }
        registry = BrokerRegistry(settings, live=live, paper=paper)
        orders = OrderManager(store, registry.trading_adapters(), pre_trade_check=services.risk or allow_all)
        halts = Halts(store)
        divergences = build_divergences(services)
        metrics = services.metrics
        executor = IntentExecutor(orders, chain_provider=registry.option_chain, halted=halts.reason)
        supervisor = StrategySupervisor(
            store=store, tickers=services.tickers, market_data=md, orders=orders, executor=executor,
            log_dir=settings.log_dir, clock_provider=spx_session_clock,
            skip_stale_signals=settings.market_data_source is not MarketDataSource.REPLAY,
            on_bar_to_order=metrics.observe_bar_to_order if metrics else None,
            on_restart=metrics.strategy_restarted if metrics else None,
            roll_reopens=settings.futures_roll is FuturesRoll.REOPEN,
            broker_stops=settings.broker_stops,
            on_divergence=lambda d, strategy, symbol: strategy_divergence(divergences, d, strategy, symbol),
            price_refusal=live_price_refusal(settings, index_source),
        )
        runtime = TradingRuntime(services, market_data=md, registry=registry, orders=orders,
                                 supervisor=supervisor, halts=halts, divergences=divergences)
        if services.risk is not None:  # a breached loss limit flattens its scope through the OMS
            services.risk.flatten_callback = runtime.flatten_scope
        services.market_data = md
        services.brokers = registry
        services.orders = orders
        services.engine = supervisor
        services.runtime = runtime
        services.halts = halts
        return runtime

    # --- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        if self.services.risk is not None:
            # Loads the trading calendar (~0.1 s) now, not inside the first order's risk check.
            try:
                self.services.risk.session_start()
            except Exception:  # the check itself will say what is wrong; starting must go on
                log.exception("risk: could not compute the session start")
        for name, adapter in self.registry.live.items():
            try:
                status = adapter.connect()
                log.info("%s: %s", name, "connected" if status.connected else f"not connected ({status.message})")
            except BrokerError as exc:  # a misconfigured broker must not stop paper trading
                log.error("%s connect failed: %s", name, exc.message)
        self.market_data.add_trade_listener(self._on_trade)
        self.supervisor.ensure_bars_for_enabled_tickers()
        self.market_data.start()
        self.reconcile_now()
        resumed = self.supervisor.resume()
        if resumed:
            log.info("resumed strategies: %s", {k: v.started for k, v in resumed.items()})
        self._maintenance = threading.Thread(target=self._maintain, name="maintenance", daemon=True)
        self._maintenance.start()

    def stop(self) -> None:
        """Graceful: strategy threads stop (state saved), then market data, then brokers."""
        self._stop.set()
        self.supervisor.shutdown()
        self.market_data.stop()
        if self._maintenance:
            self._maintenance.join(5)
        self.registry.close()

    # --- events -----------------------------------------------------------------------------
    def _on_trade(self, trade: Trade) -> None:
        """Market data writer thread: the trading adapters see each trade (the paper accounts fill
        their resting orders when it crosses them; a live broker fills at the broker)."""
        for name, adapter in self.registry.trading_adapters().items():
            for update in adapter.on_trade(trade.symbol, trade.price, trade.ts_ns):
                rec = self.orders.on_order_update(name, update)
                if rec is not None and rec.leg == "stop" and rec.filled_quantity:
                    # A resting stop got the position out: its strategy follows the book now.
                    self.supervisor.book_moved(rec.strategy, rec.symbol)

    def flatten_scope(self, strategy: str | None, reason: str) -> dict[str, Any]:
        """Close every position of one strategy (or of all, when None) through the normal order
        path, and tell the strategies they are flat. Used by loss limits and the kill switch."""
        now = time.time_ns()
        targets = [
            TargetOrder(p.strategy, p.symbol, BrokerName(p.broker), 0, now, reason, f"{reason}: flatten")
            for p in self.orders.positions() if strategy is None or p.strategy == strategy
        ]
        results = self.orders.move_all(targets)
        self.supervisor.sync_with_book(strategy)
        return {"orders": [r.to_json() for r in results], "ok": all(r.ok for r in results)}

    # --- reconciliation, halts and divergences ------------------------------------------------
    def reconcile_now(self) -> ReconciliationReport:
        """Compare the book with every broker (a candidate mismatch is read again after the settle
        wait), halt the tickers a confirmed mismatch affects, lift mismatch halts whose key now
        agrees, and keep the standing book-vs-broker divergences."""
        with self._reconcile_lock:
            report = reconcile(self.orders, settle=self._settle)
            self.last_reconciliation = report
            if self.on_reconciliation is not None:
                self.on_reconciliation(report)
            for broker in report.brokers:
                if not broker.ok:
                    log.warning("reconciliation could not read %s: %s", broker.broker, broker.error)
                for mismatch in broker.mismatches:
                    self._halt_mismatch(broker.broker, mismatch.key, mismatch.affected, mismatch.broker_quantity,
                                        mismatch.oms_quantity)
            for broker_name, key in sorted(self.halts.mismatch_keys() | self.divergences.reconciliation_keys()):
                seen = report.broker(broker_name)
                if seen is not None and seen.agrees(key):
                    self._release(broker_name, key, "a later reconciliation agrees")
        if self.supervisor is not None:
            # Every reconciliation also checks each running strategy against the book (the
            # housekeeping tick does the comparison on the strategy's own thread).
            self.supervisor.housekeeping_now()
        return report

    def _halt_mismatch(self, broker: str, key: str, affected: tuple[tuple[str, str], ...], broker_qty: int,
                       oms_qty: int) -> None:
        reason = f"reconciliation mismatch at {broker} {key}: broker {broker_qty}, ours {oms_qty}"
        self.divergences.report_reconciliation(broker, key, affected, oms_qty, broker_qty,
                                               "confirmed on two reads")
        for strategy, symbol in affected:
            if self.halts.set_mismatch(strategy, symbol, broker, key, reason):
                log.error("HALTED %s %s: %s", strategy, symbol, reason)
                self._journal("ticker_halted", broker, strategy, symbol, reason, key)

    def _release(self, broker: str, key: str, why: str) -> list[list[str]]:
        """The book and `broker` agree at `key`: lift the halts waiting only on that, clear its
        divergences. Returns the resumed tickers as [strategy, symbol] pairs."""
        self.divergences.clear_reconciliation(broker, key, why)
        resumed = self.halts.release_mismatch(broker, key, why)
        alerter = self.services.alerter
        for strategy, symbol in resumed:
            message = f"{strategy} {symbol} resumed: {why} at {broker} {key}"
            self._journal("halt_cleared", broker, strategy, symbol, why, key)
            if alerter is not None:
                alerter.alert("halt_cleared", message, "info", strategy=strategy, symbol=symbol, broker=broker,
                              key=key)
        return [[s, sym] for s, sym in resumed]

    def _journal(self, event: str, broker: str, strategy: str, symbol: str, reason: str, key: str) -> None:
        """Halts go into the OMS journal next to the orders they stopped (GET /api/journal)."""
        try:
            self.orders.store.redis.xadd(self.orders.k_journal,
                                         event_entry(event, time.time_ns(), broker, strategy, symbol, reason, key=key))
        except Exception:  # the halt itself is already in Redis; the journal line is the extra
            log.exception("could not journal %s for %s %s", event, strategy, symbol)

    def adopt(self, broker: str, key: str, strategy: str, symbol: str | None = None) -> tuple[OmsPosition, list[list[str]]]:
        """Operator: the book takes the broker's position at `key` into `strategy`'s lane; the
        halts waiting only on that key resume. Raises oms.reconcile.NothingAtKey, or the broker's
        error when its positions cannot be read."""
        with self._reconcile_lock:
            position = adopt_broker_position(self.orders, broker, key, strategy, symbol)
            return position, self._release(broker, key, "operator adopted the broker position")

    def flatten(self, broker: str, key: str) -> tuple[BrokerReport, list[list[str]]]:
        """Operator: close the broker's whole position at `key`. Halts resume only when every close
        order went through."""
        with self._reconcile_lock:
            report = flatten_mismatch(self.orders, broker, key)
            if not report.ok:
                return report, []
            return report, self._release(broker, key, "operator flattened the position")

    def report_divergence(self, strategy: str, symbol: str, broker: str, strategy_qty: int, book_qty: int,
                          broker_qty: int | None = None, note: str = "") -> bool:
        """The strategy engine found the strategy believing `strategy_qty` where the book holds
        `book_qty` (signed contracts/shares; `broker_qty` when it read the broker). Kept until
        `clear_divergence`; True when it newly appeared (logged and alerted then). Thread-safe,
        no Redis round trip when nothing changed."""
        return self.divergences.report_strategy(strategy, symbol, broker, strategy_qty, book_qty, broker_qty, note)

    def clear_divergence(self, strategy: str, symbol: str, broker: str, note: str = "") -> bool:
        """The strategy and the book agree again; True when a divergence stood. Cheap when none did."""
        return self.divergences.clear_strategy(strategy, symbol, broker, note)

    def position_truth(self) -> dict[str, Any]:
        """Standing divergences (both sources) and halts with their causes, for /api/status."""
        divergences = self.divergences.to_json()
        halts = [h.to_json() for h in self.halts.standing()]
        return {"ok": not divergences and not halts, "divergences": divergences, "halts": halts}

    def _maintain(self) -> None:
        """Timer thread (Event.wait, not a busy loop). Every few seconds: fold new fills into the
        trade ledger and evaluate loss limits on realized + unrealized P&L; in live mode advance
        working orders. Every few minutes: reconcile with the brokers."""
        since_reconcile = 0.0
        while not self._stop.wait(MAINTENANCE_INTERVAL_SECONDS):
            since_reconcile += MAINTENANCE_INTERVAL_SECONDS
            try:
                if self.services.settings.is_live:
                    self.orders.poll_open_orders()
                ledger = self.services.ledger
                if ledger is not None:
                    ledger.sync()
                if self.services.risk is not None:
                    self.services.risk.refresh_pnl()
                if since_reconcile >= RECONCILE_INTERVAL_SECONDS:
                    since_reconcile = 0.0
                    self.reconcile_now()
                    self._alert_on_broker_tokens()
            except Exception:  # keep the maintenance thread alive; the error is in the log
                log.exception("maintenance pass failed")

    def _alert_on_broker_tokens(self) -> None:
        """Token expiry warnings (Schwab's 7-day refresh token from day 6) and disconnects."""
        alerter = self.services.alerter
        if alerter is None:
            return
        for name, adapter in self.registry.live.items():
            try:
                status = adapter.status()
            except BrokerError as exc:
                alerter.alert("broker_error", f"{name}: {exc.message}", "warning", dedupe_key=f"status:{name}")
                continue
            for warning in status.warnings:
                alerter.alert("token_expiry", f"{name}: {warning}", "warning", dedupe_key=f"token:{name}")

    def status(self) -> dict[str, Any]:
        return {
            "halts": self.halts.all(),
            "reconciliation": self.last_reconciliation.to_json() if self.last_reconciliation else None,
            "paused_brokers": self.orders.paused_brokers(),
            "divergences": self.divergences.to_json(),
        }


def build_index_source(settings: Settings, live: dict[BrokerName, BrokerAdapter]) -> IndexSource | None:
    """Where real SPX values come from when the rest of the data is real (Databento): the streams
    of the configured brokers, Schwab's first. With both, the one that runs is the first whose
    broker is connected when market data starts (after `start()` connected the brokers), and a
    stream whose broker went away gives way to the other (`FirstConnectedSource`). None without a
    streaming broker; simulated and replayed runs price SPX with the rest of their data."""
    if settings.market_data_source is not MarketDataSource.DATABENTO:
        return None
    choices: list[SourceChoice] = []
    schwab, tastytrade = live.get(SCHWAB), live.get(TASTYTRADE)
    if schwab is not None:
        from brokers.schwab.adapter import SchwabAdapter
        from brokers.schwab.stream import SchwabIndexStream

        if isinstance(schwab, SchwabAdapter):
            choices.append(SourceChoice(SchwabIndexStream(schwab.streaming_client), lambda: schwab.status().connected))
    if tastytrade is not None:
        from brokers.tastytrade.adapter import TastytradeAdapter
        from brokers.tastytrade.stream import TastytradeIndexStream

        if isinstance(tastytrade, TastytradeAdapter):
            choices.append(SourceChoice(TastytradeIndexStream(tastytrade.start_on_session),
                                        lambda: tastytrade.status().connected))
    if len(choices) > 1:
        return FirstConnectedSource(choices)
    return choices[0].source if choices else None


def live_price_refusal(settings: Settings, index_source: IndexSource | None) -> PriceRefusal:
    """The supervisor's check before a ticker takes new positions: in live mode SPX needs a broker
    stream (settings already refuse a simulated or replayed source for everything else)."""
    def refusal(config: TickerConfig) -> str | None:
        if settings.is_live and config.symbol == "SPX" and index_source is None:
            return f"{config.strategy.value} cannot trade live on SPX: {NO_SPX_SOURCE}"
        return None

    return refusal


def strategy_divergence(divergences: Divergences, d: StrategyDivergence | None, strategy: str, symbol: str) -> None:
    """The runners' `on_divergence` callback: one entry per broker where the strategy's expected
    position and the book differ; None (they agree again) clears the ticker's entries."""
    for broker in BROKERS:
        expected = d.expected.get(broker, 0) if d is not None else 0
        book = d.book.get(broker, 0) if d is not None else 0
        if d is not None and expected != book:
            divergences.report_strategy(strategy, symbol, broker, expected, book, None,
                                        f"strategy {d.strategy_target}: {d.note}")
        else:
            divergences.clear_strategy(strategy, symbol, broker, d.note if d is not None else "")


def build_divergences(services: Services) -> Divergences:
    """The divergence registry, reporting to the services' metrics and alerter (looked up when
    used: the alerter may be attached after the runtime is built)."""
    def alert(*args: Any, **kwargs: Any) -> object:
        alerter = services.alerter
        return alerter.alert(*args, **kwargs) if alerter is not None else None

    def lane(strategy: str, symbol: str, broker: str, diverging: bool) -> None:
        metrics = services.metrics
        if metrics is not None:
            metrics.set_position_divergence(strategy, symbol, broker, diverging)

    return Divergences(services.store, alert=alert, on_lane=lane)

