"""Resampling the real 2006 1-minute index-future bars to 5m/15m/1h/4h/1d matches an independent
pandas computation. The CSV's header lacks the Time column (see ../shared/data/README.md): rows are
date,time,open,high,low,close,volume,openinterest and the time labels the bar's end."""
from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from config.timeframes import Timeframe
from market_data.bars import FixedGrid, resample_bars
from market_data.feeds import FeedCounters, read_csv_bars

CSV = "bars/index-future-2006.1min.csv"


def _pandas_resample(path: Path, rule: str) -> pd.DataFrame:
    df = pd.read_csv(path, header=None, skiprows=1,
                     names=["date", "time", "open", "high", "low", "close", "volume", "oi"])
    df["start"] = pd.to_datetime(df["date"] + " " + df["time"], utc=True) - pd.Timedelta(minutes=1)
    df = df.set_index("start")
    out = df.resample(rule, label="left", closed="left").agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"})
    return out.dropna(subset=["open"])


@pytest.mark.parametrize("tf_text,rule", [("5Min", "5min"), ("15Min", "15min"), ("1Hour", "1h"),
                                          ("4Hour", "4h"), ("1Day", "1D")])
def test_resample_matches_pandas(shared_data: Path, tf_text: str, rule: str) -> None:
    counters = FeedCounters()
    minute_bars = read_csv_bars(shared_data / CSV, "/ES", counters=counters)
    assert len(minute_bars) == 30_889 and counters.skipped_malformed == 0
    tf = Timeframe.parse(tf_text)
    ours = list(resample_bars(minute_bars, tf, FixedGrid(), include_partial=True))
    expected = _pandas_resample(shared_data / CSV, rule)
    assert len(ours) == len(expected)
    for bar, (start, row) in zip(ours, expected.iterrows()):
        assert bar.start_ns == start.value
        assert (bar.open, bar.high, bar.low, bar.close) == (row.open, row.high, row.low, row.close)
        assert bar.volume == row.volume
        assert bar.timeframe == tf.raw


def test_resample_rejects_tick_target() -> None:
    with pytest.raises(ValueError):
        list(resample_bars([], Timeframe.parse("512t"), FixedGrid()))
