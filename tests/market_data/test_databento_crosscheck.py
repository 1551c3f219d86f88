"""1-minute bars built from real ESU4 trades equal Databento's own ohlcv-1m bars, field by field,
going through the whole service path (replay feed -> trade stream -> bar builder -> bar stream)."""
from __future__ import annotations

import warnings
from pathlib import Path

import databento as db

from config.timeframes import Timeframe
from market_data.feeds import ReplayFeed
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import wait_until

TRADES = "databento/glbx-mdp3-esu4-20240701T2358.trades.dbn.zst"
OHLCV = "databento/glbx-mdp3-esu4-nqu4-20240701T2340.ohlcv-1m.dbn.zst"
MINUTES_UTC = ["2024-07-01T23:58:00Z", "2024-07-01T23:59:00Z", "2024-07-02T00:00:00Z", "2024-07-02T00:01:00Z"]


def _databento_bars(path: Path) -> dict[int, tuple[float, float, float, float, int]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = db.DBNStore.from_file(path).to_df()
    es = df[df["symbol"] == "ESU4"]
    return {int(ts.value): (float(r.open), float(r.high), float(r.low), float(r.close), int(r.volume))
            for ts, r in zip(es.index, es.itertuples())}


def test_one_minute_bars_equal_databento_ohlcv(store: Store, shared_data: Path, make_service: ServiceFactory) -> None:
    feed = ReplayFeed([shared_data / TRADES])
    svc = make_service(store, feed)
    tf = Timeframe.parse("1Min")
    svc.ensure("/ES", tf)
    svc.start()
    assert feed.finished.wait(10)
    # The file's metadata says its data ends at 00:02:00, so the 00:01 bar is closed too.
    assert wait_until(lambda: len(svc.history("/ES", tf, 10)) == 4)
    built = {b.start_ns: b for _id, b in svc.read_bars("/ES", tf, "0", 0)}
    reference = _databento_bars(shared_data / OHLCV)
    import pandas as pd

    for minute in MINUTES_UTC:
        start = int(pd.Timestamp(minute).value)
        bar = built[start]
        o, h, l, c, v = reference[start]
        assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (o, h, l, c, v), minute
        assert bar.end_ns == start + 60_000_000_000
        assert bar.symbol == "/ES" and bar.timeframe == "1" and not bar.gapped
    assert sum(b.trade_count for b in built.values()) == 120
    # The stream IDs are the bar starts (idempotent writes) and the trade stream holds every trade.
    assert [i for i, _ in svc.read_bars("/ES", tf, "0", 0)] == [f"{int(pd.Timestamp(m).value) // 10**6}-0" for m in MINUTES_UTC]
    assert store.redis.xlen(svc.trades_key("/ES")) == 120
    assert svc.last_price("/ES") == 5529.25
