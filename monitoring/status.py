"""GET /api/status: one document a dashboard can poll, assembled from pluggable providers.

Each provider is a no-argument callable returning JSON-able data. A provider that raises yields
`{"error": ...}` for its section only: one broken component must not blank the whole status page
(exactly when the operator needs it most). Components that are not wired yet report
`{"available": false}`.
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Callable

from store.persistence import redis_persistence

if TYPE_CHECKING:
    from engine.services import Services

log = logging.getLogger(__name__)

Provider = Callable[[], Any]


class StatusBuilder:
    def __init__(self, clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._providers: dict[str, Provider] = {}
        self._clock = clock

    def register(self, name: str, provider: Provider) -> None:
        self._providers[name] = provider

    def unregister(self, name: str) -> None:
        self._providers.pop(name, None)

    @property
    def sections(self) -> list[str]:
        return list(self._providers)

    def build(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"generated_at": self._clock().isoformat()}
        for name, provider in self._providers.items():
            try:
                doc[name] = provider()
            except Exception as exc:  # noqa: BLE001 - isolate each section
                log.exception("status provider %s failed", name)
                doc[name] = {"error": f"{exc.__class__.__name__}: {exc}"[:300]}
        return doc


def _unavailable() -> dict[str, Any]:
    return {"available": False}


def _json(value: Any) -> Any:
    """BrokerReport / OmsPosition style objects -> JSON."""
    if hasattr(value, "to_json"):
        return value.to_json()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json(v) for v in value]
    return value


def positions_rows(orders: Any) -> list[dict[str, Any]]:
    """The order manager's non-flat positions as plain rows (strategy, symbol, broker, quantity)."""
    if orders is None or not hasattr(orders, "positions"):
        return []
    return [{"strategy": p.strategy, "symbol": p.symbol, "broker": p.broker, "key": p.key,
             "quantity": p.quantity} for p in orders.positions()]


def default_status_builder(services: Services) -> StatusBuilder:
    """Providers for every component the service container may hold (`engine.services.Services`).

    Reads: settings, store, risk, orders, brokers, market_data, engine, alerter, instance_lock and
    runtime (its `position_truth()`: the standing divergences, book vs broker and strategy vs
    book, and the halts with their causes). Attribute lookups happen when the document is built,
    so components attached after this call are picked up."""
    builder = StatusBuilder()
    settings = services.settings

    def mode() -> dict[str, Any]:
        return {"trading_mode": settings.trading_mode.value, "live": settings.is_live,
                "market_data_source": settings.market_data_source.value,
                "redis": {**redis_persistence(services.store).to_json(), "ok": services.store.ping()}}

    def trading() -> Any:
        return services.risk.states() if services.risk is not None else _unavailable()

    def risk() -> Any:
        if services.risk is None:
            return _unavailable()
        return services.risk.usage(positions=positions_rows(services.orders))

    def feeds() -> Any:
        return services.market_data.status() if services.market_data is not None else _unavailable()

    def brokers() -> Any:
        out: dict[str, Any] = {}
        if services.brokers is not None:
            out["accounts"] = services.brokers.statuses()
        if services.orders is not None and hasattr(services.orders, "paused_brokers"):
            out["paused"] = services.orders.paused_brokers()
        return out or _unavailable()

    def strategies() -> Any:
        return services.engine.strategies_status() if services.engine is not None else _unavailable()

    def alerts() -> Any:
        alerter = services.alerter
        return alerter.recent(20) if alerter is not None else _unavailable()

    def last_errors() -> Any:
        from monitoring.alerts import Severity

        alerter = services.alerter
        return alerter.recent(20, min_severity=Severity.ERROR) if alerter is not None else _unavailable()

    def instance() -> Any:
        lock = services.instance_lock
        if lock is None:
            return _unavailable()
        return {"name": lock.name, "lost": lock.lost,
                "holder": {k: v for k, v in lock.holder.items() if k != "token"}}

    def divergences() -> Any:
        runtime = services.runtime
        return runtime.position_truth() if runtime is not None else _unavailable()

    for name, provider in (("mode", mode), ("trading_state", trading), ("risk", risk), ("feeds", feeds),
                           ("brokers", brokers), ("strategies", strategies), ("divergences", divergences),
                           ("alerts", alerts), ("last_errors", last_errors), ("instance", instance)):
        builder.register(name, provider)
    return builder
