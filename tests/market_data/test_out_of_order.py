"""Out-of-order and duplicate trades follow the documented rule (market_data/bars.py, service.py):
inside the open bar they count (open = earliest, close = latest timestamp); trades for an emitted
bar are late and never revise it; strictly older feed sequences are duplicates and dropped."""
from __future__ import annotations

from config.timeframes import Timeframe
from domain.market import Trade
from market_data.bars import FixedGrid, TimeBarBuilder
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory

S = 1_000_000_000
BASE = 1_732_633_200 * S  # 2024-11-26 15:00:00 UTC


def test_out_of_order_inside_bar_and_late_after_emit() -> None:
    builder = TimeBarBuilder("/ES", Timeframe.parse("1Min"), FixedGrid())
    for offset, price in ((10, 100.0), (5, 99.0), (30, 101.0), (20, 105.0)):
        assert builder.on_trade(Trade("/ES", BASE + offset * S, price, 1)) is None
    bar = builder.on_trade(Trade("/ES", BASE + 70 * S, 102.0, 1))
    assert bar is not None
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume, bar.trade_count) == (99.0, 105.0, 99.0, 101.0, 4, 4)
    assert builder.on_trade(Trade("/ES", BASE + 50 * S, 90.0, 1)) is None  # belongs to the emitted bar
    assert builder.counters.late_trades == 1
    last = builder.close_due(BASE + 120 * S)
    assert last is not None and (last.low, last.trade_count) == (102.0, 1)  # the late trade changed nothing


def test_sequence_duplicates_dropped_equal_sequences_kept(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store)
    tf = Timeframe.parse("3t")
    svc.ensure("/ES", tf)
    svc.process_now([
        Trade("/ES", BASE, 100.0, 1, sequence=10),
        Trade("/ES", BASE + 1, 100.25, 1, sequence=11),
        Trade("/ES", BASE + 1, 100.5, 2, sequence=11),  # same match event, second level: kept
        Trade("/ES", BASE, 100.0, 1, sequence=10),  # re-delivered after a reconnect: dropped
    ])
    assert svc.counters.duplicates_dropped == 1
    assert svc.counters.trades_accepted == 3
    bars = svc.history("/ES", tf, 10)
    assert [(b.open, b.high, b.close, b.volume, b.trade_count) for b in bars] == [(100.0, 100.5, 100.5, 4, 3)]
    assert store.redis.xlen(svc.trades_key("/ES")) == 3


def test_late_trades_counted_by_service(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store)
    tf = Timeframe.parse("1Min")
    svc.ensure("/ES", tf)
    svc.process_now([Trade("/ES", BASE + 10 * S, 100.0, 1), Trade("/ES", BASE + 70 * S, 101.0, 1),
                     Trade("/ES", BASE + 20 * S, 50.0, 1)])
    assert svc.counters.late_trades == 1
    assert [(b.low, b.volume) for b in svc.history("/ES", tf, 10)] == [(100.0, 1)]
