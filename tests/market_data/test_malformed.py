"""Malformed records and undefined timestamps are skipped and counted, never crash the pipeline."""
from __future__ import annotations

import math
from pathlib import Path

import databento_dbn as dbn

from config.timeframes import Timeframe
from domain.market import Trade
from market_data.feeds import load_csv, load_dbn
from store.redis_store import Store
from tests.market_data import dbn_records as rec
from tests.market_data.conftest import ServiceFactory

BASE = 1_732_633_200_000_000_000  # 2024-11-26 15:00 UTC


def test_service_skips_and_counts_bad_trades(store: Store, make_service: ServiceFactory) -> None:
    svc = make_service(store)
    svc.ensure("/ES", Timeframe.parse("1t"))
    svc.process_now([
        Trade("/ES", BASE, math.nan, 1),
        Trade("/ES", BASE, math.inf, 1),
        Trade("/ES", BASE, -5.0, 1),
        Trade("/ES", BASE, 5000.0, -1),
        Trade("/ES", 0, 5000.0, 1),
        Trade("/ES", dbn.UNDEF_TIMESTAMP, 5000.0, 1),
        Trade("/ES", "soon", 5000.0, 1),  # type: ignore[arg-type]
        Trade("/XX", BASE, 5000.0, 1),
        Trade("/ES", BASE + 1, 5000.25, 2),
    ])
    c = svc.counters
    assert (c.skipped_malformed, c.skipped_undefined_ts, c.skipped_unknown_symbol) == (5, 2, 1)
    assert c.trades_accepted == 1
    assert [(b.close, b.volume) for b in svc.history("/ES", Timeframe.parse("1t"), 5)] == [(5000.25, 2)]
    assert store.redis.xlen(svc.trades_key("/ES")) == 1


def test_dbn_undefined_timestamp_unknown_instrument_and_undef_price(tmp_path: Path) -> None:
    path = tmp_path / "bad.trades.dbn"
    path.write_bytes(rec.encode(rec.metadata(), [
        rec.mapping(),
        rec.trade(dbn.UNDEF_TIMESTAMP, 5000.0, ts_recv=BASE - 1),
        rec.trade(BASE, 5000.0),
        rec.trade(BASE + 1, 5000.0, instrument_id=99),  # no symbol mapping
        rec.trade(BASE + 2, None),  # UNDEF_PRICE
        rec.trade(BASE + 3, 5000.5, size=4),
    ]))
    source = load_dbn(path)
    assert [(t.symbol, t.price, t.size) for _ts, t in source.trades] == [("/ES", 5000.0, 1), ("/ES", 5000.5, 4)]
    c = source.counters
    assert (c.skipped_undefined_ts, c.skipped_unknown_symbol, c.skipped_malformed) == (1, 1, 1)


def test_csv_malformed_rows_skipped(tmp_path: Path) -> None:
    path = tmp_path / "nvda-ticks.csv"
    path.write_text("Datetime,Open,High,Low,Close,Volume,OpenInterest\n"
                    "2015-09-23T20:57:42.146,3067,3067,3067,3067,180,0\n"
                    "garbage,row\n"
                    "2015-09-23T20:57:43.000,abc,1,1,1,1,0\n"
                    "2015-09-23T20:57:44.000,-1,-1,-1,-1,1,0\n"
                    "2015-09-23T20:57:46.151,3066,3066,3066,3066,2,0\n")
    source = load_csv(path)
    assert [(t.symbol, t.price, t.size) for _ts, t in source.trades] == [("NVDA", 3067.0, 180), ("NVDA", 3066.0, 2)]
    assert source.counters.skipped_malformed == 3
