"""Builds and runs the trading side of the process: market data, brokers, order manager, risk,
strategy engine and the maintenance thread. `app.main()` calls `TradingRuntime.build(...)`, then
`start()` before serving and `stop()` on SIGTERM.

Start-up order matters (issue: brokers): brokers connect, the order manager recovers in-flight
orders and reconciliation runs BEFORE any strategy resumes, so a restart never acts on a book
that disagrees with the broker. Tickers affected by a mismatch stay halted until an operator
adopts the broker's position or flattens it.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from api.services import Services
from brokers.base import BrokerAdapter
from brokers.errors import BrokerError
from brokers.paper import PaperBroker
from brokers.registry import BrokerRegistry
from brokers.token_store import TokenStore
from config.settings import MarketDataSource, Settings
from domain.market import Trade
from domain.orders import BROKERS, SCHWAB, TASTYTRADE, BrokerName
from engine.clock import spx_session_clock
from engine.executor import IntentExecutor
from engine.supervisor import StrategySupervisor
from market_data.service import MarketDataService
from domain.risk import allow_all
from oms.models import TargetOrder
from oms.order_manager import OrderManager
from oms.reconcile import ReconciliationReport, reconcile
from store.redis_store import Store

log = logging.getLogger("runtime")

RECONCILE_INTERVAL_SECONDS = 180.0  # "every few minutes"
MAINTENANCE_INTERVAL_SECONDS = 5.0  # ledger sync, loss limits, live order polling


@dataclass
class Halts:
    """Tickers halted by reconciliation: (strategy, symbol) -> reason. Persisted in Redis so a
    restart does not silently resume a ticker whose book disagreed with the broker."""

    store: Store
    _key: str = field(init=False)

    def __post_init__(self) -> None:
        self._key = self.store.key("engine", "halts")

    def set(self, strategy: str, symbol: str, reason: str) -> None:
        self.store.redis.hset(self._key, f"{strategy}|{symbol}", reason)

    def clear(self, strategy: str, symbol: str) -> bool:
        return bool(self.store.redis.hdel(self._key, f"{strategy}|{symbol}"))

    def reason(self, strategy: str, symbol: str) -> str | None:
        value = self.store.redis.hget(self._key, f"{strategy}|{symbol}")
        return None if value is None else str(value)

    def all(self) -> dict[str, str]:
        return {str(k): str(v) for k, v in self.store.redis.hgetall(self._key).items()}


def build_live_adapters(settings: Settings, store: Store, token_store: TokenStore) -> dict[BrokerName, BrokerAdapter]:
    """Real adapters for the brokers whose credentials are configured."""
    live: dict[BrokerName, BrokerAdapter] = {}
    if settings.schwab_api_key and settings.schwab_app_secret:
        from brokers.schwab import SchwabAdapter

        live[SCHWAB] = SchwabAdapter(settings, store, token_store)
    if settings.tastytrade_client_id and settings.tastytrade_client_secret:
        from brokers.tastytrade import TastytradeAdapter

        live[TASTYTRADE] = TastytradeAdapter(settings, store, token_store)
    return live


class TradingRuntime:
    def __init__(self, services: Services, *, market_data: MarketDataService, registry: BrokerRegistry,
                 orders: OrderManager, supervisor: StrategySupervisor, halts: Halts) -> None:
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

    @staticmethod
    def build(services: Services, *, market_data: MarketDataService | None = None,
              live_adapters: dict[BrokerName, BrokerAdapter] | None = None) -> "TradingRuntime":
        settings, store = services.settings, services.store
        md = market_data or MarketDataService(settings, store)
        token_store = TokenStore(store, settings.token_encryption_key)
        live = live_adapters if live_adapters is not None else build_live_adapters(settings, store, token_store)
        paper: dict[BrokerName, BrokerAdapter] = {
            name: PaperBroker(store, name, settings, md.last_price) for name in BROKERS
        }
        registry = BrokerRegistry(settings, live=live, paper=paper)
        orders = OrderManager(store, registry.trading_adapters(), pre_trade_check=services.risk or allow_all)
        halts = Halts(store)
        metrics = services.extras.get("metrics")
        executor = IntentExecutor(orders, chain_provider=registry.option_chain, halted=halts.reason)
        supervisor = StrategySupervisor(
            store=store, tickers=services.tickers, market_data=md, orders=orders, executor=executor,
            log_dir=settings.log_dir, clock_provider=spx_session_clock,
            skip_stale_signals=settings.market_data_source is not MarketDataSource.REPLAY,
            on_bar_to_order=metrics.observe_bar_to_order if metrics else None,
            on_restart=metrics.strategy_restarted if metrics else None,
        )
        runtime = TradingRuntime(services, market_data=md, registry=registry, orders=orders,
                                 supervisor=supervisor, halts=halts)
        if services.risk is not None:  # a breached loss limit flattens its scope through the OMS
            services.risk.flatten_callback = runtime.flatten_scope
        services.market_data = md
        services.brokers = registry
        services.orders = orders
        services.engine = supervisor
        services.extras["runtime"] = runtime
        services.extras["halts"] = halts
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
        """Market data writer thread: resting paper orders fill when price crosses."""
        for name, adapter in self.registry.paper.items():
            if not isinstance(adapter, PaperBroker):
                continue
            for update in adapter.on_trade(trade.symbol, trade.price, trade.ts_ns):
                if not self.services.settings.is_live:
                    self.orders.on_order_update(name, update)

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

    def reconcile_now(self) -> ReconciliationReport:
        report = reconcile(self.orders)
        self.last_reconciliation = report
        if self.on_reconciliation is not None:
            self.on_reconciliation(report)
        for broker in report.brokers:
            for mismatch in broker.mismatches:
                for strategy, symbol in mismatch.affected:
                    reason = (f"reconciliation mismatch at {broker.broker} {mismatch.key}: broker "
                              f"{mismatch.broker_quantity}, ours {mismatch.oms_quantity}")
                    self.halts.set(strategy, symbol, reason)
                    log.error("HALTED %s %s: %s", strategy, symbol, reason)
            if not broker.ok:
                log.warning("reconciliation could not read %s: %s", broker.broker, broker.error)
        return report

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
                ledger = self.services.extras.get("ledger")
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
        alerter = self.services.extras.get("alerter")
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
        }

