"""512t and 144t bars from the ESH4 MBO file's trades (action 'T' only) against an independent
pandas computation: count, OHLC and volume of every bar."""
from __future__ import annotations

import warnings
from pathlib import Path

import databento as db
import pandas as pd
import pytest

from config.timeframes import Timeframe
from market_data.bars import build_bars
from market_data.feeds import ReplayFeed, load_dbn
from store.redis_store import Store
from tests.market_data.conftest import ServiceFactory
from tests.market_data.helpers import wait_until

MBO = "databento/glbx-mdp3-esh4-20231225.mbo.dbn.zst"


def _expected(path: Path, n: int) -> pd.DataFrame:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        df = db.DBNStore.from_file(path).to_df()
    trades = df[df["action"] == "T"].reset_index(drop=True)  # file order; 'F' rows are not trades
    trades["bar"] = trades.index // n
    full = trades.groupby("bar").filter(lambda g: len(g) == n)
    return full.groupby("bar").agg(open=("price", "first"), high=("price", "max"), low=("price", "min"),
                                   close=("price", "last"), volume=("size", "sum"), count=("price", "size"))


@pytest.mark.parametrize("n", [512, 144])
def test_tick_bars_match_pandas(shared_data: Path, n: int) -> None:
    source = load_dbn(shared_data / MBO)
    assert len(source.trades) == 2973  # the 'T' records; the 6,371 'F' records add nothing
    bars = build_bars((t for _ts, t in source.trades), "/ES", Timeframe.parse(f"{n}t"))
    expected = _expected(shared_data / MBO, n)
    assert len(bars) == len(expected) == 2973 // n
    for bar, row in zip(bars, expected.itertuples()):
        assert bar.trade_count == row.count == n
        assert (bar.open, bar.high, bar.low, bar.close) == (row.open, row.high, row.low, row.close)
        assert bar.volume == row.volume
        assert bar.timeframe == f"{n}t" and bar.start_ns <= bar.end_ns


def test_tick_bars_through_the_service(real_store: Store, shared_data: Path, make_service: ServiceFactory) -> None:
    feed = ReplayFeed([shared_data / MBO])
    svc = make_service(real_store, feed)
    tf512, tf144 = Timeframe.parse("512t"), Timeframe.parse("144t")
    svc.ensure("/ES", tf512)
    svc.ensure("/ES", tf144)
    svc.start()
    assert feed.finished.wait(20)
    assert wait_until(lambda: len(svc.history("/ES", tf144, 100)) == 20)
    assert len(svc.history("/ES", tf512, 100)) == 5  # never mixed: separate keys per timeframe
    expected = _expected(shared_data / MBO, 512)
    assert [b.volume for b in svc.history("/ES", tf512, 100)] == list(expected["volume"])
    assert svc.bars_key("/ES", tf512) != svc.bars_key("/ES", tf144)
