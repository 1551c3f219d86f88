"""Prometheus metrics on a dedicated CollectorRegistry.

Not the global registry: tests and several app instances in one interpreter would otherwise
collide ("Duplicated timeseries"). The app builds one `Metrics` and hands its methods to the
components that report (order manager, adapters' `on_latency` hook, market data, supervisor).

Label values are bounded (brokers, states, reasons, strategies, catalog symbols, endpoint names),
never order ids or free text, so the series count stays small.
"""
from __future__ import annotations

from decimal import Decimal
from typing import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

# Broker REST calls: tens of ms normally, seconds when a venue struggles.
_BROKER_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Bar close -> order sent: our own pipeline, should be well under a second.
_PIPELINE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

TRADING_STATE_VALUES = {"ACTIVE": 0, "REDUCING": 1, "HALTED": 2}


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None, namespace: str = "trading") -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.orders = Counter("orders", "Order state transitions by broker and new state",
                              ["broker", "state"], namespace=ns, registry=r)
        self.fills = Counter("fills", "Fills received", ["broker", "strategy", "symbol"], namespace=ns, registry=r)
        self.filled_quantity = Counter("filled_quantity", "Contracts/shares filled",
                                       ["broker", "strategy", "symbol"], namespace=ns, registry=r)
        self.risk_decisions = Counter("risk_decisions", "Pre-trade risk decisions", ["decision", "reason"],
                                      namespace=ns, registry=r)
        self.risk_denials = Counter("risk_denials", "Orders denied by the risk engine, by reason", ["reason"],
                                    namespace=ns, registry=r)
        self.broker_latency = Histogram("broker_request_seconds", "Broker API call latency by endpoint",
                                        ["broker", "endpoint"], buckets=_BROKER_BUCKETS, namespace=ns, registry=r)
        self.bar_to_order = Histogram("bar_close_to_order_seconds", "Bar close to order sent",
                                      ["strategy", "symbol"], buckets=_PIPELINE_BUCKETS, namespace=ns, registry=r)
        self.feed_lag = Gauge("feed_lag_seconds", "Now minus the timestamp of the last trade received",
                              ["feed", "symbol"], namespace=ns, registry=r)
        self.feed_stale = Gauge("feed_stale", "1 when the feed for the symbol is stale", ["feed", "symbol"],
                                namespace=ns, registry=r)
        self.strategy_up = Gauge("strategy_thread_up", "1 while the strategy thread is alive",
                                 ["strategy", "symbol"], namespace=ns, registry=r)
        self.strategy_heartbeat = Gauge("strategy_last_heartbeat_timestamp_seconds",
                                        "Unix time of the strategy thread's last loop", ["strategy", "symbol"],
                                        namespace=ns, registry=r)
        self.strategy_restarts = Counter("strategy_restarts", "Strategy thread restarts by the supervisor",
                                         ["strategy", "symbol"], namespace=ns, registry=r)
        self.pnl_realized = Gauge("pnl_realized", "Realized P&L since session start (USD)", ["scope"],
                                  namespace=ns, registry=r)
        self.pnl_unrealized = Gauge("pnl_unrealized", "Unrealized P&L (USD)", ["scope"], namespace=ns, registry=r)
        self.trading_state = Gauge("trading_state", "0 ACTIVE, 1 REDUCING, 2 HALTED", ["scope"],
                                   namespace=ns, registry=r)
        self.broker_connected = Gauge("broker_connected", "1 when the broker session is usable", ["broker"],
                                      namespace=ns, registry=r)
        self.broker_token_expiry = Gauge("broker_token_expiry_timestamp_seconds",
                                         "Unix time the broker's refresh token expires", ["broker"],
                                         namespace=ns, registry=r)
        # 1 while the strategy, the OMS book and the broker disagree about the lane (a strategy
        # believing a position the book does not hold, or a confirmed reconciliation mismatch at a
        # key the lane holds), 0 once they agree. 1/0 rather than a quantity: both sources share the
        # series, and the quantities are in /api/status ("divergences").
        self.position_divergence = Gauge("position_divergence",
                                         "1 while the strategy, the book and the broker disagree about the lane",
                                         ["strategy", "symbol", "broker"], namespace=ns, registry=r)
        self.alerts = Counter("alerts", "Alerts raised", ["kind", "severity"], namespace=ns, registry=r)
        self.alert_webhook_failures = Counter("alert_webhook_failures", "Alerts the webhook never accepted",
                                              namespace=ns, registry=r)

    # --- reporting hooks (cheap; safe from any thread) ---
    def order_transition(self, broker: str, state: str) -> None:
        self.orders.labels(broker, state).inc()

    def fill(self, broker: str, strategy: str, symbol: str, quantity: int) -> None:
        self.fills.labels(broker, strategy, symbol).inc()
        self.filled_quantity.labels(broker, strategy, symbol).inc(quantity)

    def risk_decision(self, allowed: bool, reason: str) -> None:
        self.risk_decisions.labels("allowed" if allowed else "denied", reason).inc()
        if not allowed:
            self.risk_denials.labels(reason).inc()

    def observe_broker_latency(self, broker: str, endpoint: str, seconds: float) -> None:
        self.broker_latency.labels(broker, endpoint).observe(max(0.0, seconds))

    def latency_hook(self, broker: str) -> Callable[[str, float], None]:
        """The adapters' `on_latency(endpoint, seconds)` callback, bound to one broker."""
        return lambda endpoint, seconds: self.observe_broker_latency(broker, endpoint, seconds)

    def observe_bar_to_order(self, strategy: str, symbol: str, seconds: float) -> None:
        self.bar_to_order.labels(strategy, symbol).observe(max(0.0, seconds))

    def set_feed_lag(self, feed: str, symbol: str, seconds: float, stale: bool) -> None:
        self.feed_lag.labels(feed, symbol).set(seconds)
        self.feed_stale.labels(feed, symbol).set(1 if stale else 0)

    def strategy_alive(self, strategy: str, symbol: str, alive: bool, heartbeat_unix: float | None = None) -> None:
        self.strategy_up.labels(strategy, symbol).set(1 if alive else 0)
        if heartbeat_unix is not None:
            self.strategy_heartbeat.labels(strategy, symbol).set(heartbeat_unix)

    def strategy_restarted(self, strategy: str, symbol: str) -> None:
        self.strategy_restarts.labels(strategy, symbol).inc()

    def set_pnl(self, scope: str, realized: Decimal | float, unrealized: Decimal | float) -> None:
        self.pnl_realized.labels(scope).set(float(realized))
        self.pnl_unrealized.labels(scope).set(float(unrealized))

    def set_trading_state(self, scope: str, state: str) -> None:
        self.trading_state.labels(scope).set(TRADING_STATE_VALUES.get(state, -1))

    def set_broker(self, broker: str, connected: bool, refresh_expires_unix: float | None = None) -> None:
        self.broker_connected.labels(broker).set(1 if connected else 0)
        if refresh_expires_unix is not None:
            self.broker_token_expiry.labels(broker).set(refresh_expires_unix)

    def set_position_divergence(self, strategy: str, symbol: str, broker: str, diverging: bool) -> None:
        self.position_divergence.labels(strategy, symbol, broker).set(1 if diverging else 0)

    def alert_raised(self, kind: str, severity: str) -> None:
        self.alerts.labels(kind, severity).inc()

    def render(self) -> tuple[bytes, str]:
        """Exposition text and its content type, for GET /metrics."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
