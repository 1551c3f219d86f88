"""The process wiring in app.py: monitoring hooks reach every real adapter and the order path; one
Redis prefix is one account book (one process, one mode)."""
from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client.parser import text_string_to_metric_families

import app
from app import attach_monitoring, create_app
from brokers.paper import PaperBroker
from config.settings import Settings, TradingMode
from domain.orders import (
    SCHWAB, TASTYTRADE, ClientOrderId, OrderRequest, OrderSide, OrderState, PositionEffect,
)
from monitoring.alerts import Alerter
from runtime import TradingRuntime
from store.instance_lock import PrefixModeError, acquire_instance_lock, mode_key
from store.redis_store import Store
from tests.oms.helpers import CLOCK


def _samples(metrics, name: str) -> dict[tuple, float]:
    text = metrics.render()[0].decode()
    return {tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples if s.name == name}


def test_attach_monitoring_wires_latency_of_both_real_adapters(fake_store, settings) -> None:
    configured = replace(settings, schwab_api_key="k" * 32, schwab_app_secret="s" * 16, schwab_account_id="12345678",
                         tastytrade_client_id="c" * 16, tastytrade_client_secret="t" * 16, tastytrade_account_id="5WX0001")
    services = create_app(configured, fake_store).extensions["services"]
    services.alerter = Alerter(configured, fake_store)  # never started: nothing is sent
    runtime = TradingRuntime.build(services)
    attach_monitoring(services, runtime)
    assert set(runtime.registry.live) == {SCHWAB, TASTYTRADE}
    for name, adapter in runtime.registry.live.items():
        adapter.on_latency("place_order", 0.02)
    counts = _samples(services.metrics, "trading_broker_request_seconds_count")
    brokers = {dict(labels)["broker"] for labels, value in counts.items() if value >= 1}
    assert brokers == {"schwab", "tastytrade"}
    runtime.registry.close()


# --- one prefix, one account book ----------------------------------------------------------------
def _main_exit(monkeypatch, capsys, settings, store) -> tuple[int, str]:
    """`app.main()` on these settings and store, up to the instance lock: (exit code, stderr)."""
    monkeypatch.setattr(app, "load_settings", lambda: settings)
    monkeypatch.setattr(app, "build_store", lambda s: store)
    monkeypatch.setattr(app, "configure_logging", lambda s: None)  # the root logger stays pytest's
    code = app.main()
    return code, capsys.readouterr().err


def _order_manager_records(store: Store, coid: str) -> None:
    """What oms/order_manager.py keeps of every order it sends, whichever broker gets it (ZADD
    oms:orders created_ns coid, next to the oms:order:<coid> hash)."""
    store.redis.zadd(store.key("oms", "orders"), {coid: 1})
    store.redis.hset(store.key("oms", "order", coid), mapping={"broker": TASTYTRADE, "state": "FILLED"})


def _paper_book(store: Store) -> None:
    """One filled paper order: the real paper broker records it (orders, positions, fills)."""
    coid = ClientOrderId("ema-MES-open-paper")
    broker = PaperBroker(store, TASTYTRADE, Settings(), {"/MES": 6000.0}.get, clock=CLOCK)
    assert broker.place_order(OrderRequest(coid, "/MES", OrderSide.BUY, 1, PositionEffect.OPEN)).state is OrderState.FILLED
    _order_manager_records(store, coid)


def _live_book(store: Store) -> None:
    """One order sent to a real broker: the order manager's records and no paper broker order."""
    _order_manager_records(store, "ema-MES-open-live")


def test_live_start_on_a_prefix_a_paper_process_holds_exits_2_naming_prefix_and_mode(
        monkeypatch, capsys, fake_store, settings) -> None:
    paper = acquire_instance_lock(fake_store, TradingMode.PAPER, heartbeat=False)  # the running paper process
    try:
        code, err = _main_exit(monkeypatch, capsys, replace(settings, trading_mode=TradingMode.LIVE), fake_store)
    finally:
        paper.release()
    (line,) = [ln for ln in err.splitlines() if ln.startswith("startup error:")]
    assert code == 2
    assert f"REDIS_PREFIX {settings.redis_prefix!r} is a paper account book" in line
    assert "Set another REDIS_PREFIX for live" in line


@pytest.mark.parametrize(("book", "held", "refused"), [
    (_paper_book, "paper", "live"),
    (_live_book, "live", "paper"),
])
def test_an_unrecorded_prefix_with_state_refuses_the_other_mode(
        monkeypatch, capsys, fake_store, settings, book, held, refused) -> None:
    """A prefix from before modes were recorded: its orders and positions decide its mode."""
    book(fake_store)
    assert fake_store.redis.get(mode_key(fake_store)) is None
    code, err = _main_exit(monkeypatch, capsys, replace(settings, trading_mode=TradingMode(refused)), fake_store)
    assert code == 2
    assert (f"startup error: REDIS_PREFIX {settings.redis_prefix!r} holds {held} orders/positions" in err
            and f"Set another REDIS_PREFIX for {refused}" in err), err
    assert fake_store.redis.get(mode_key(fake_store)) is None  # a refused start records nothing
    acquire_instance_lock(fake_store, TradingMode(held), heartbeat=False).release()  # its own mode adopts it
    assert fake_store.redis.get(mode_key(fake_store)) == held


def test_a_prefix_already_mixing_paper_and_live_orders_refuses_both_modes(fake_store) -> None:
    _paper_book(fake_store)
    # and a live order, mapped as brokers/tastytrade/adapter.py maps every order it places for real
    fake_store.redis.hset(fake_store.key("broker", "tastytrade", "order_ids"), "ema-MES-open-x", "901")
    for mode in TradingMode:
        with pytest.raises(PrefixModeError, match="holds both paper and live orders"):
            acquire_instance_lock(fake_store, mode, heartbeat=False)
    fake_store.redis.set(mode_key(fake_store), "paper")  # the operator checked the book and decided
    acquire_instance_lock(fake_store, TradingMode.PAPER, heartbeat=False).release()
